"""The gateway's nginx.conf rendered from lab data: routes, limits, ids, errors, TLS."""

import re
from collections.abc import Mapping
from typing import Any

import pytest

from seawall import defaults, inventory
from seawall.components import gateway


@pytest.fixture(scope="module")
def conf(lab: inventory.Topology) -> str:
    apps = [h.address for h in lab.group("app")]
    # As the deploy renders it: with the host's inventory name (the redirect's default).
    data = lab.host("gw-1").data
    return gateway.render(gateway.NGINX_CONF, gateway.context(data, apps, host_name="gw-1"))


def service_port(lab: inventory.Topology, name: str) -> int:
    return next(s["port"] for s in lab.host("gw-1").data["services"] if s["name"] == name)


def location(conf: str, match: str) -> str:
    # Locations of the HTTPS server (the redirect server has its own `location /`).
    conf = conf[conf.index("listen 443") :]
    found = re.search(r"location " + re.escape(match) + r" \{(.*?)\n        \}", conf, re.S)
    assert found, match
    return found.group(1)


def test_first_line_names_the_target(conf: str) -> None:
    assert conf.splitlines()[0] == "# /etc/nginx/nginx.conf - managed by seawall"


@pytest.mark.parametrize(
    ("match", "upstream"),
    [
        ("/api/ai/", "svc_ai_engine/"),
        ("/api/execution/", "svc_execution/"),
        ("/api/risk/", "svc_risk_safety/"),
        ("/api/portfolio/", "svc_portfolio_intelligence/"),
        ("/api/rl/", "svc_rl_training/"),
        ("/api/marketdata/", "svc_marketdata/"),
        # The public listener's /api/health is the status only (test_gateway_edge.py).
        ("= /api/health", "svc_monitoring_health/health/public"),
        ("/", "svc_backend/"),
        ("^~ /api/execution/orders", "svc_execution/orders"),
    ],
)
def test_every_route_goes_to_its_service(conf: str, match: str, upstream: str) -> None:
    assert f"proxy_pass http://{upstream};" in location(conf, match)


def test_upstreams_span_both_app_hosts(lab: inventory.Topology, conf: str) -> None:
    block = re.search(r"upstream svc_execution \{(.*?)\}", conf, re.S)
    assert block
    body = block.group(1)
    assert "least_conn;" in body and "keepalive 32;" in body
    apps = lab.group("app")
    assert len(apps) == 2 and body.count("server ") == len(apps)
    port = service_port(lab, "execution")
    for app in apps:
        assert f"server {app.address}:{port} max_fails=2 fail_timeout=5s;" in body


def test_rate_limit_zones_and_bursts(conf: str) -> None:
    for name, rate in (("general", 100), ("execution", 20), ("trading", 10)):
        assert f"zone={name}:10m rate={rate}r/s;" in conf
    orders = location(conf, "^~ /api/execution/orders")
    for name, burst in (("general", 200), ("execution", 40), ("trading", 20)):
        assert f"limit_req zone={name} burst={burst} nodelay;" in orders
    ai = location(conf, "/api/ai/")
    assert "zone=general" in ai and "zone=execution" not in ai
    assert "limit_req_status 429;" in conf and "limit_conn per_client 100;" in conf


def test_post_is_never_retried_on_another_host(conf: str) -> None:
    assert "proxy_next_upstream error timeout;" in conf
    assert "non_idempotent" not in conf


def test_request_id_kept_or_generated_sent_and_returned(conf: str) -> None:
    assert '"~^[A-Za-z0-9._:-]{1,128}$" $http_x_request_id;' in conf
    assert "default $request_id;" in conf
    assert "proxy_set_header X-Request-ID $req_id;" in conf
    assert "add_header X-Request-ID $req_id always;" in conf
    assert '"request_id":"$req_id"' in conf


def test_json_access_log_with_upstream_timings(conf: str) -> None:
    assert "log_format seawall_json escape=json" in conf
    for field in ("upstream_connect_time", "upstream_header_time", "upstream_response_time"):
        assert f'"{field}":"${field}"' in conf
    assert f"access_log {defaults.GATEWAY['gateway_access_log']} seawall_json" in conf


def log_format(conf: str) -> str:
    start = conf.index("log_format seawall_json")
    return conf[start : conf.index("';\n", start)]


def test_the_access_log_has_the_path_never_the_query_string(conf: str) -> None:
    # $request_uri carries ?token=...; $uri is the path alone.
    assert '"uri":"$uri"' in log_format(conf)
    assert "$request_uri" not in log_format(conf) and "$args" not in log_format(conf)
    assert "$query_string" not in log_format(conf)


def journal_unit(data: Mapping[str, Any], lab: inventory.Topology) -> str:
    apps = [h.address for h in lab.group("app")]
    return gateway.render(gateway.JOURNAL_UNIT, gateway.context(data, apps))


def test_the_access_line_reaches_the_journal_from_the_file(
    conf: str, lab: inventory.Topology
) -> None:
    data = lab.host("gw-1").data
    unit = journal_unit(data, lab)
    assert unit.startswith(f"# {gateway.JOURNAL_UNIT} - managed by seawall")
    log = defaults.GATEWAY["gateway_access_log"]
    # NGINX writes one buffered file, at http level (every server logs there; the
    # stub_status server turns it off), and sends nothing per request to syslog.
    http = conf[conf.index("http {") : conf.index("    server {")]
    assert f"access_log {log} seawall_json buffer=64k flush=1s;" in http
    assert "syslog:" not in conf
    # The copier follows that file (by name, from its end: tail in the copier), tagged,
    # in batches of the configured size.
    assert (
        f"ExecStart=/usr/bin/python3 {gateway.JOURNAL_COPIER} --tag {data['gateway_journal_tag']}"
        f" --max-lines {defaults.GATEWAY['gateway_journal_batch_lines']}"
        f" --max-bytes {defaults.GATEWAY['gateway_journal_batch_bytes']}"
        f" --max-wait {defaults.GATEWAY['gateway_journal_batch_wait']} {log}\n"
    ) in unit
    assert f"SyslogIdentifier={data['gateway_journal_tag']}\n" in unit
    assert "StandardOutput=journal\n" in unit and "Restart=always\n" in unit


def test_the_copier_s_lines_pass_journald_s_rate_limit(lab: inventory.Topology) -> None:
    unit = journal_unit(lab.host("gw-1").data, lab)
    assert "LogRateLimitIntervalSec=30s\nLogRateLimitBurst=300000\n" in unit
    # Above the site-wide limit every other unit keeps, by the gateway's load.
    site_wide = defaults.COMMON["journald_rate_limit_burst"]
    assert defaults.GATEWAY["gateway_journal_rate_limit_burst"] >= 10 * site_wide


def test_without_a_journal_tag_the_file_log_only(lab: inventory.Topology) -> None:
    data = {**lab.host("gw-1").data, "gateway_journal_tag": ""}
    apps = [h.address for h in lab.group("app")]
    conf = gateway.render(gateway.NGINX_CONF, gateway.context(data, apps))
    assert "syslog:" not in conf
    assert f"access_log {defaults.GATEWAY['gateway_access_log']} seawall_json" in conf


@pytest.mark.parametrize("code", [429, 502, 504, 413])
def test_errors_answer_json(conf: str, code: int) -> None:
    assert f"error_page {code} @error_{code};" in conf
    body = location(conf, f"@error_{code}")
    assert "default_type application/json;" in body and f"return {code} '{{" in body


def test_tls_redirect_headers_and_body_limit(conf: str) -> None:
    assert "return 301 https://gw-1$request_uri;" in conf
    assert "listen 443 ssl http2 default_server;" in conf
    assert "ssl_certificate /etc/nginx/tls/gateway.crt;" in conf
    for header in ("Strict-Transport-Security", "X-Content-Type-Options", "X-Frame-Options"):
        assert f"add_header {header} " in conf
    assert "client_max_body_size 1m;" in conf


def test_route_timeouts(conf: str) -> None:
    assert "proxy_read_timeout 5s;" in location(conf, "/api/marketdata/")
    assert "proxy_read_timeout 120s;" in location(conf, "/api/rl/")
    assert "proxy_read_timeout 10s;" in location(conf, "/api/execution/")


def test_stub_status_on_loopback_only(conf: str) -> None:
    assert "listen 127.0.0.1:8081;" in conf
    assert "allow 127.0.0.1;" in location(conf, "= /stub_status")


def test_production_certificate_paths_are_used_when_set() -> None:
    data = {"gateway_tls_certificate": "/etc/ssl/a.crt", "gateway_tls_certificate_key": "/k"}
    assert gateway.tls_paths(data) == ("/etc/ssl/a.crt", "/k", False)


def test_internal_listener_has_the_same_routes_on_the_private_address(
    lab: inventory.Topology, conf: str
) -> None:
    gw = lab.host("gw-1")
    listen = f"listen {gw.address}:{gw.data['gateway_internal_http_port']};"
    internal = conf[conf.index(listen) : conf.index("listen 443")]
    assert "location ^~ /api/execution/orders {" in internal
    assert "limit_req zone=trading burst=20 nodelay;" in internal
    assert "return 301" not in internal


def test_worker_limits_come_from_the_inventory(lab: inventory.Topology, conf: str) -> None:
    data = lab.host("gw-1").data
    assert f"worker_processes {data['gateway_worker_processes']};" in conf
    assert f"worker_connections {data['gateway_worker_connections']};" in conf
    assert f"worker_rlimit_nofile {data['gateway_worker_rlimit_nofile']};" in conf

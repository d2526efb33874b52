"""The gateway's public edge (issue 14 item 3), rendered from lab data.

Mozilla intermediate TLS, a redirect to a configured name, the trading limit on
every order path, and a public listener that serves only public paths.
"""

import re
from pathlib import Path
from typing import Any

import pytest

from seawall import defaults, inventory
from seawall.components import gateway
from tests.unit.test_inventory_rules import write_site

# Mozilla's "intermediate" TLS 1.2 suites (ssl-config.mozilla.org, guidelines 5.7),
# written out here so a changed default shows as a failure, not a new truth.
MOZILLA_INTERMEDIATE = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
)


def render(data: Any, apps: list[str], host_name: str | None = "gw-1") -> str:
    return gateway.render(gateway.NGINX_CONF, gateway.context(data, apps, host_name=host_name))


@pytest.fixture(scope="module")
def conf(lab: inventory.Topology) -> str:
    return render(lab.host("gw-1").data, [h.address for h in lab.group("app")])


def servers(conf: str, lab: inventory.Topology) -> tuple[str, str, str]:
    """(redirect server, internal listener, public HTTPS server) of ``conf``."""
    gw = lab.host("gw-1")
    internal = conf.index(f"listen {gw.address}:{gw.data['gateway_internal_http_port']};")
    https = conf.index("listen 443 ssl")
    status = conf.index("listen 127.0.0.1:")
    redirect = conf.index("listen 80 default_server")
    return conf[redirect:internal], conf[internal:https], conf[https:status]


def locations(server: str) -> dict[str, str]:
    """{match: body} of a server's locations."""
    found = re.findall(r"\n        location (.*?) \{(.*?)\n        \}", server, re.S)
    assert found
    return dict(found)


def prefix_routes(lab: inventory.Topology) -> list[dict[str, Any]]:
    return [s for s in lab.host("gw-1").data["services"] if s["route"].endswith("/")]


def upstream(service: dict[str, Any]) -> str:
    return "svc_" + service["name"].replace("-", "_")


def test_tls_is_mozilla_intermediate(conf: str) -> None:
    assert defaults.GATEWAY["gateway_tls_ciphers"] == MOZILLA_INTERMEDIATE
    assert f"ssl_ciphers {MOZILLA_INTERMEDIATE};" in conf
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in conf
    assert "ssl_ecdh_curve X25519:prime256v1:secp384r1;" in conf
    assert "ssl_prefer_server_ciphers off;" in conf and "ssl_session_tickets off;" in conf
    # Forward secrecy and AEAD only: no RSA key exchange, no CBC, no SHA-1 MAC.
    for suite in MOZILLA_INTERMEDIATE.split(":"):
        assert suite.startswith(("ECDHE-", "DHE-")) and ("GCM" in suite or "CHACHA20" in suite)


def test_the_redirect_goes_to_the_configured_name_never_the_host_header(
    lab: inventory.Topology, conf: str
) -> None:
    data = lab.host("gw-1").data
    apps = [h.address for h in lab.group("app")]
    assert "$host" not in servers(conf, lab)[0] and "$http_host" not in conf
    assert "return 301 https://gw-1$request_uri;" in conf
    named = render({**data, "gateway_server_name": "trade.example.com"}, apps)
    assert "return 301 https://trade.example.com$request_uri;" in named
    port = render({**data, "gateway_server_name": "t.example", "gateway_https_port": 8443}, apps)
    assert "return 301 https://t.example:8443$request_uri;" in port


def test_the_default_name_is_the_gateway_host_then_its_address(lab: inventory.Topology) -> None:
    data = lab.host("gw-1").data
    assert gateway.server_name(data, "gw-1") == "gw-1"
    assert gateway.server_name({**data, "gateway_server_name": "x.example"}, "gw-1") == "x.example"
    assert gateway.server_name(data) == lab.host("gw-1").address


def test_every_order_path_of_every_service_is_in_the_trading_zone(
    lab: inventory.Topology, conf: str
) -> None:
    burst = defaults.GATEWAY["gateway_rate_zones"]["trading"]["burst"]
    _, internal, public = servers(conf, lab)
    routes = prefix_routes(lab)
    assert len(routes) >= 7  # the backend on / and every /api/<svc>/
    for server in (internal, public):
        found = locations(server)
        for service in routes:
            for path in defaults.GATEWAY["gateway_order_paths"]:
                match = f"^~ {service['route']}{path.lstrip('/')}"
                assert match in found, match
                body = found[match]
                assert f"limit_req zone=trading burst={burst} nodelay;" in body, match
                assert f"proxy_pass http://{upstream(service)}{path};" in body, match
    # Nothing else is in the trading zone.
    trading = [m for m, b in locations(public).items() if "zone=trading" in b]
    assert sorted(trading) == sorted(
        f"^~ {p}" for p in gateway.trading_paths(lab.host("gw-1").data)
    )


def test_a_new_service_gets_its_order_path_limited_without_a_second_edit(
    lab: inventory.Topology,
) -> None:
    data = dict(lab.host("gw-1").data)
    data["services"] = [*data["services"], {"name": "fx", "port": 8010, "route": "/api/fx/"}]
    assert "/api/fx/orders" in gateway.trading_paths(data)


def test_the_public_listener_answers_404_for_internal_paths_and_knobs(
    lab: inventory.Topology, conf: str
) -> None:
    _, internal, public = servers(conf, lab)
    found = locations(public)
    route_matches = [m for m in found if not m.startswith(("@", "^~", "="))]
    for service in prefix_routes(lab):
        for path in ("/health", "/openapi.json", "/docs", "/redoc", "/slow"):
            match = f"^~ {service['route']}{path.lstrip('/')}"
            assert match in found, match
            assert found[match].strip() == "return 404;", match
            # ^~ and longer than the route's own prefix: nginx picks it, and no
            # regex location exists that could be tried instead.
            prefix = match[3:]
            assert all(len(prefix) > len(m) for m in route_matches if prefix.startswith(m))
    assert not [m for m in found if m.startswith("~")]
    # 404 answers with the JSON body like every error nginx answers.
    assert "error_page 404 @error_404;" in public
    # The internal listener (private address, ops and admins only) keeps them.
    assert "return 404;" not in internal


def test_only_the_trimmed_health_is_public(lab: inventory.Topology, conf: str) -> None:
    _, internal, public = servers(conf, lab)
    assert (
        "proxy_pass http://svc_monitoring_health/health/public;"
        in locations(public)["= /api/health"]
    )
    assert "proxy_pass http://svc_monitoring_health/health;" in locations(internal)["= /api/health"]
    assert "/health;" not in public.replace("/health/public;", "")


def test_the_public_listener_marks_its_requests_and_no_client_can_forge_it(
    lab: inventory.Topology, conf: str
) -> None:
    _, internal, public = servers(conf, lab)
    # proxy_set_header replaces a client's header of the same name; "" sends none.
    assert 'proxy_set_header X-Seawall-Edge "public";' in public
    assert 'proxy_set_header X-Seawall-Edge "";' in internal
    # Set at server level only: a proxy_set_header in a location would drop the rest.
    for body in locations(public).values():
        assert "proxy_set_header" not in body


def test_a_public_upstream_path_must_belong_to_an_exact_route(tmp_path: Path) -> None:
    path = write_site(
        tmp_path, group_data="gateway_public_upstream_paths = {'/api/nope': '/health/public'}\n"
    )
    problems = [(p.key, p.message) for p in inventory.validate(inventory.load(path))]
    assert (
        "gateway_public_upstream_paths./api/nope",
        "no service has this exact route",
    ) in problems

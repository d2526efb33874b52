"""Metrics on the lab: every Prometheus target up after the site deploy, no secret shown, no drift.

Prometheus is asked itself (its HTTP API on ops-1's private address, from the
controller, once the lab's bridge is checked), not its files. Every wait is bounded.

tests/prometheus/metric_names.txt was built from the Debian 12 exporters run on
loopback; here the lab's own Prometheus says that every job alerts.yml's header
names has targets (and no other job is scraped), that every alert rule is loaded
and evaluates without error, and that every metric a rule or dashboard queries
exists, except those that only exist after an event (named below).
"""

import base64
import json
import shlex
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest

from seawall import redis_acl, secrets
from seawall.components import metrics
from seawall.facts.metrics import BasicAuthHash
from seawall.inventory import Topology
from seawall.netguard import require_lab_bridge
from seawall.settings import setting
from seawall.ssh import run as ssh
from tests.lab.conftest import changed_operations, run_deploy
from tests.prometheus import promql

# A first scrape of every target needs one interval (15 s); the nginx exporter
# may be retrying NGINX, Patroni's replica may still be catching up.
TARGETS_WITHIN_S = 120
# Series written only when something happens, so a fresh lab may lack them.
# Their rules are covered by the promtool cases; the writers by their own tests.
AFTER_AN_EVENT = {
    # seawall-record-failure writes it at a unit's first unclean stop.
    "seawall_unit_failures_total",
    # The drift cron writes these after its first run (the lab's runs once a night).
    "seawall_drift_operations",
    "seawall_drift_last_run_success",
    "seawall_drift_last_run_timestamp_seconds",
    # seawall-restart.service writes these after the timer's first run (04:00 UTC).
    "seawall_restart_ok",
    "seawall_restart_last_success_timestamp_seconds",
}
# The blackbox probes and mtail's counters need a request or two through the
# gateway first, and a scrape or two after.
METRICS_WITHIN_S = 180


def prometheus_url(topology: Topology, path: str) -> str:
    require_lab_bridge(topology)
    ops = topology.group("ops")[0]
    return f"http://{ops.address}:{setting(ops.data, 'prometheus_port')}{path}"


def api_login(topology: Topology) -> tuple[str, str]:
    """Prometheus's API login: its user and the prometheus_api_password secret."""
    ops = topology.group("ops")[0]
    password = secrets.require([metrics.API_SECRET], setting(ops.data, "secrets_file"), "lab")
    return str(setting(ops.data, "prometheus_api_user")), password[metrics.API_SECRET]


def status_of(url: str, login: tuple[str, str] | None) -> int:
    """GET ``url`` with basic auth ``login`` (or none); return the HTTP status."""
    request = urllib.request.Request(url)
    if login:
        token = base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def api(topology: Topology, path: str, **params: str) -> Any:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    request = urllib.request.Request(prometheus_url(topology, path + query))
    # Prometheus admits only its API user (basic auth); the header never reaches a log.
    token = base64.b64encode(":".join(api_login(topology)).encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]


def query(topology: Topology, expr: str) -> list[dict[str, Any]]:
    return list(api(topology, "/api/v1/query", query=expr)["result"])


def wanted_targets(topology: Topology) -> set[tuple[str, str]]:
    """(job, scrape address or probed URL) of every target the inventory implies."""
    want = {
        (job["name"], target["address"])
        for job in metrics.scrape_jobs(topology)
        for target in job["targets"]
    }
    return want | {("blackbox", probe["url"]) for probe in metrics.probe_targets(topology)}


def active_targets(topology: Topology) -> list[dict[str, Any]]:
    return list(api(topology, "/api/v1/targets?state=active")["activeTargets"])


def key(target: dict[str, Any]) -> tuple[str, str]:
    labels = target["labels"]
    if labels["job"] == "blackbox":
        return ("blackbox", labels["instance"])
    return (labels["job"], target["discoveredLabels"]["__address__"])


def test_every_prometheus_target_is_up(deployed_lab: Topology) -> None:
    want = wanted_targets(deployed_lab)
    # Up means answered; these say the exporter also got into its server
    # (passwords, peer authentication, the Sentinel's /scrape).
    inside = (
        ('redis_up{job="redis"}', len(deployed_lab.group("redis"))),
        ('redis_up{job="sentinel"}', len(deployed_lab.group("sentinel"))),
        ('pg_up{job="postgres"}', len(deployed_lab.group("postgres"))),
        (
            'redis_sentinel_master_ckquorum_status{job="sentinel"}',
            len(deployed_lab.group("sentinel")),
        ),
    )

    def problems() -> list[str]:
        targets = active_targets(deployed_lab)
        found = {key(t) for t in targets}
        down = {key(t): t.get("lastError") or t["health"] for t in targets if t["health"] != "up"}
        wrong = [f"target down {down}"] if down else []
        if found != want:
            wrong.append(f"missing {sorted(want - found)}, unexpected {sorted(found - want)}")
        for expr, count in inside:
            values = [float(r["value"][1]) for r in query(deployed_lab, expr)]
            if values != [1.0] * count:
                wrong.append(f"{expr} = {values}")
        return wrong

    # Waited for as a whole: an earlier test's restart (the rolling restart's
    # Postgres switchover) drops an exporter's connection until its next scrape.
    deadline = time.monotonic() + TARGETS_WITHIN_S
    while wrong := problems():
        if time.monotonic() > deadline:
            pytest.fail(f"not every target up and inside within {TARGETS_WITHIN_S} s: {wrong}")
        time.sleep(3)
    # Every /health answered 200 (OK or DEGRADED) through the blackbox exporter.
    probes = {r["metric"]["instance"]: r["value"][1] for r in query(deployed_lab, "probe_success")}
    assert probes == {p["url"]: "1" for p in metrics.probe_targets(deployed_lab)}
    # The failure recorder's metric comes through node_exporter's textfile directory.
    assert query(deployed_lab, 'node_textfile_scrape_error{job="node"} == 0')


def test_prometheus_scrapes_exactly_the_documented_jobs(deployed_lab: Topology) -> None:
    scraped = {target["labels"]["job"] for target in active_targets(deployed_lab)}
    assert scraped == promql.documented_jobs() | {"prometheus"}


def test_every_alert_rule_is_loaded_and_evaluates(deployed_lab: Topology) -> None:
    groups = api(deployed_lab, "/api/v1/rules", type="alert")["groups"]
    loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
    names = {rule["alert"] for rule in promql.alert_rules()}
    assert sorted(names - set(loaded)) == []
    # A rule whose query errors (a wrong function, a type clash) reads "err".
    broken = {
        name: loaded[name].get("lastError") for name in names if loaded[name]["health"] == "err"
    }
    assert broken == {}


def test_every_metric_the_rules_and_dashboards_query_exists(deployed_lab: Topology) -> None:
    used = promql.used_metric_names()
    expected = set(used) - AFTER_AN_EVENT
    # The list the unit tests check against has them all too.
    assert sorted(expected - promql.known_metric_names()) == []
    deadline = time.monotonic() + METRICS_WITHIN_S
    while True:
        present = set(api(deployed_lab, "/api/v1/label/__name__/values"))
        missing = {name: sorted(used[name]) for name in sorted(expected - present)}
        if not missing:
            return
        assert time.monotonic() < deadline, f"metrics no target exposes: {missing}"
        time.sleep(5)


def test_exporters_listen_on_the_private_address_only(deployed_lab: Topology) -> None:
    for host, port_keys in (
        ("data-1", ("node_exporter_port", "redis_exporter_port", "postgres_exporter_port")),
        ("gw-1", ("node_exporter_port", "nginx_exporter_port", "mtail_port")),
        ("ops-1", ("node_exporter_port", "blackbox_exporter_port", "prometheus_port")),
    ):
        member = deployed_lab.host(host)
        for port_key in port_keys:
            port = setting(member.data, port_key)
            listening = ssh(deployed_lab, host, f"ss -ltnH 'sport = :{port}'", check=True)
            local = {line.split()[3] for line in listening.stdout.splitlines() if line.strip()}
            assert local == {f"{member.address}:{port}"}, (host, port_key, local)


def test_no_redis_password_on_a_command_line_or_in_the_environment(
    deployed_lab: Topology,
) -> None:
    host = deployed_lab.host("data-1")
    values, missing = secrets.resolve(
        ["redis_password", "sentinel_password", redis_acl.EXPORTER_SECRET],
        setting(host.data, "secrets_file"),
    )
    assert not missing and all(len(v) >= 8 for v in values.values())
    pid = ssh(
        deployed_lab, host.name, f"systemctl show -p MainPID --value {metrics.REDIS}", check=True
    ).stdout.strip()
    # Read on the host, compared on the controller: the secret itself never travels.
    seen = ssh(
        deployed_lab,
        host.name,
        f"ps -eo args; tr '\\0' '\\n' < /proc/{pid}/environ; cat /etc/default/{metrics.REDIS}",
        check=True,
    ).stdout
    assert f"REDIS_PASSWORD_FILE={metrics.REDIS_PASSWORD_FILE}" in seen
    for value in values.values():
        assert value not in seen
    modes = ssh(
        deployed_lab,
        host.name,
        f"stat -c '%a %U' {metrics.redis_secret_file(host.data)} {metrics.REDIS_PASSWORD_FILE}",
        check=True,
    ).stdout.split("\n")
    assert modes[:2] == ["600 root", "400 prometheus"], modes


def test_a_second_metrics_deploy_changes_nothing(deployed_lab: Topology) -> None:
    assert changed_operations(run_deploy("deploys/metrics.py")) == {}


# Run on ops-1 by root: the password is read there from Prometheus's own file,
# never on a command line; the script prints only the two HTTP statuses.
_AUTH_PROBE = """
import base64, sys, urllib.error, urllib.request
url, user, password_file = sys.argv[1:4]
password = open(password_file).read().strip()
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
for auth in (None, (user, password)):
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(("%s:%s" % auth).encode()).decode()
        request.add_header("Authorization", "Basic " + token)
    try:
        print(opener.open(request, timeout=10).status)
    except urllib.error.HTTPError as error:
        print(error.code)
"""


def test_node_exporter_admits_only_prometheus_with_the_scrape_password(
    deployed_lab: Topology,
) -> None:
    app, ops = deployed_lab.host("app-1"), deployed_lab.group("ops")[0]
    url = f"http://{app.address}:{setting(app.data, 'node_exporter_port')}/metrics"
    user = setting(app.data, "metrics_scrape_user")
    args = " ".join(shlex.quote(a) for a in (url, user, metrics.SCRAPE_PASSWORD_FILE))
    statuses = ssh(
        deployed_lab, ops.name, f"python3 -c {shlex.quote(_AUTH_PROBE)} {args}", check=True
    ).stdout.split()
    assert statuses == ["401", "200"], statuses
    # Files: only the exporters' user reads them; the web config holds a hash of the
    # secret and never the secret (read on the controller, compared there).
    values, missing = secrets.resolve([metrics.SCRAPE_SECRET], setting(app.data, "secrets_file"))
    assert not missing
    password = values[metrics.SCRAPE_SECRET]
    web = metrics.web_config_file(metrics.NODE)
    modes = ssh(
        deployed_lab, ops.name, f"stat -c '%a %U %G' {metrics.SCRAPE_PASSWORD_FILE}", check=True
    ).stdout.split("\n")[0]
    assert modes == "640 root prometheus", modes
    seen = ssh(
        deployed_lab,
        app.name,
        f"stat -c '%a %U %G' {web}; cat {web}; ps -eo args; cat /etc/default/{metrics.NODE}",
        check=True,
    ).stdout
    assert seen.startswith("640 root prometheus\n"), seen.splitlines()[0]
    assert password not in seen
    hashed = BasicAuthHash().process([user, *seen.splitlines()[1:]])
    assert hashed is not None and metrics.hash_verifies(hashed, password)


def test_prometheus_admits_only_its_api_user(deployed_lab: Topology) -> None:
    # Its API, its UI and its own /metrics: each refuses no login, a wrong
    # password and the exporters' login, and takes its own.
    user, password = api_login(deployed_lab)
    ops = deployed_lab.group("ops")[0]
    scrape_user = str(setting(ops.data, "metrics_scrape_user"))
    for path in ("/api/v1/query?query=up", "/graph", "/metrics"):
        url = prometheus_url(deployed_lab, path)
        assert status_of(url, None) == 401, path
        assert status_of(url, (user, password + "x")) == 401, path
        assert status_of(url, (scrape_user, password)) == 401, path
        assert status_of(url, (user, password)) == 200, path
    # Its self-scrape gets in (the password from its 0640 file).
    up = query(deployed_lab, 'up{job="prometheus"}')
    assert [sample["value"][1] for sample in up] == ["1"], up
    # Files: the password only in its own file, the web config a hash of it.
    seen = ssh(
        deployed_lab,
        ops.name,
        f"stat -c '%a %U %G' {metrics.API_PASSWORD_FILE} {metrics.PROMETHEUS_WEB_CONFIG}; "
        f"cat {metrics.PROMETHEUS_WEB_CONFIG}; ps -eo args; cat /etc/default/{metrics.PROMETHEUS}",
        check=True,
    ).stdout
    assert seen.splitlines()[:2] == ["640 root prometheus"] * 2, seen.splitlines()[:2]
    assert password not in seen
    hashed = BasicAuthHash().process([user, *seen.splitlines()[2:]])
    assert hashed is not None and metrics.hash_verifies(hashed, password)

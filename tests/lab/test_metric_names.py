"""The metric names the alert rules and dashboards query exist in the lab's Prometheus.

tests/prometheus/metric_names.txt was built from the Debian 12 exporters run on
loopback; here the lab's own Prometheus (ops host, prometheus_port) is asked,
after a full deploy, through its HTTP API:

- every job alerts.yml's header names has targets, and no other job is scraped;
- every alert rule of alerts.yml is loaded and evaluates without error;
- every metric a rule or dashboard queries is in /api/v1/label/__name__/values
  (within a bounded wait: a blackbox probe and mtail's first gateway line take
  a few scrapes), except those that only exist after an event, named below.

Requests go to the lab only once its bridge is known to be up.
"""

import json
import time
import urllib.parse
import urllib.request
from typing import Any

import pytest

from seawall.inventory import Topology
from seawall.netguard import require_lab_network
from seawall.settings import setting
from tests.prometheus import promql

# Series written only when something happens, so a fresh lab may lack them.
# Their rules are covered by the promtool cases; the writers by their own tests.
AFTER_AN_EVENT = {
    # seawall-record-failure writes it at a unit's first unclean stop.
    "seawall_unit_failures_total",
    # The drift cron writes it after its first run.
    "seawall_drift_operations",
}
# Prometheus scrapes every 15 s; the blackbox probes and mtail's counters need
# a request or two through the gateway first.
WAIT_S = 180


def prometheus_api(topology: Topology, path: str, **params: str) -> Any:
    """GET the ops host's Prometheus API and return its `data`."""
    require_lab_network(topology)  # the bridge is up: lab addresses route to the lab
    ops = topology.group("ops")[0]
    port = int(setting(ops.data, "prometheus_port"))
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    url = f"http://{ops.address}:{port}{path}{query}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]


def _wait_for(check: Any, what: str) -> Any:
    """Call check() until it returns an empty collection, for WAIT_S at most."""
    deadline = time.monotonic() + WAIT_S
    while True:
        missing = check()
        if not missing or time.monotonic() > deadline:
            assert not missing, f"{what} after {WAIT_S} s: {missing}"
            return missing
        time.sleep(5)


@pytest.fixture(scope="module")
def topology(deployed_lab: Topology) -> Topology:
    return deployed_lab


def test_prometheus_scrapes_exactly_the_documented_jobs(topology: Topology) -> None:
    jobs = promql.documented_jobs()

    def missing() -> list[str]:
        active = prometheus_api(topology, "/api/v1/targets", state="active")["activeTargets"]
        scraped = {target["labels"]["job"] for target in active}
        # Every scraped job is one the rules know; every documented job is scraped.
        assert scraped <= jobs | {"prometheus"}, sorted(scraped - jobs)
        return sorted(jobs - scraped)

    _wait_for(missing, "jobs without a target")


def test_every_alert_rule_is_loaded_and_evaluates(topology: Topology) -> None:
    groups = prometheus_api(topology, "/api/v1/rules", type="alert")["groups"]
    loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
    names = {rule["alert"] for rule in promql.alert_rules()}
    assert sorted(names - set(loaded)) == []
    # A rule whose query errors (a wrong function, a type clash) reads "err".
    broken = {
        name: loaded[name].get("lastError") for name in names if loaded[name]["health"] == "err"
    }
    assert broken == {}


def test_every_metric_the_rules_and_dashboards_query_exists(topology: Topology) -> None:
    used = promql.used_metric_names()
    expected = set(used) - AFTER_AN_EVENT
    # The list the unit tests check against has them all too.
    assert sorted(expected - promql.known_metric_names()) == []

    def missing() -> dict[str, list[str]]:
        present = set(prometheus_api(topology, "/api/v1/label/__name__/values"))
        return {name: sorted(used[name]) for name in sorted(expected - present)}

    _wait_for(missing, "metrics no target exposes")

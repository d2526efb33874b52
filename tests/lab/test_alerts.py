"""Alerts on the lab (issue 12, item 7): Prometheus on the ops host raises a real alert.

redis-server stopped on the Redis master: its exporter answers with ``redis_up 0``,
so ``InstanceDown`` (seawall/files/metrics/alerts.yml) goes pending, then firing once
its ``for:`` has passed, and resolves after redis-server is started again. The
Sentinels fail over meanwhile; the old master comes back as a replica.

Prometheus is asked itself (``/api/v1/alerts`` and ``/api/v1/rules`` on the ops host's
private address, from the controller, once the lab's bridge is checked). The test
holds the data-fault lock (no drill or benchmark injects a fault on the data hosts
meanwhile); every wait is bounded, derived from the live rule's ``for:`` and the
scrape and evaluation intervals of the inventory, and fails with what it saw.
"""

import time
from datetime import datetime
from typing import Any

import pytest

from seawall.inventory import Topology
from seawall.lab import faults
from seawall.redis.drill import wait_healthy
from seawall.schema import seconds
from seawall.settings import setting
from seawall.ssh import run as ssh_run
from tests.lab.test_metrics import api

ALERT = "InstanceDown"
LOCK_WAIT_S = 1800
POLL_S = 2
# Beyond one scrape and one evaluation: the exporter's scrape of a stopped server,
# a slow answer on a loaded machine, redis-server starting again.
SLACK_S = 20


def _intervals(topology: Topology) -> tuple[float, float]:
    ops = topology.group("ops")[0]
    return (
        seconds(setting(ops.data, "prometheus_scrape_interval")),
        seconds(setting(ops.data, "prometheus_evaluation_interval")),
    )


def _rule_for_s(topology: Topology) -> float:
    """The ``for:`` of the rule Prometheus has loaded, in seconds."""
    rules = [
        rule
        for group in api(topology, "/api/v1/rules")["groups"]
        for rule in group["rules"]
        if rule["name"] == ALERT
    ]
    assert len(rules) == 1, rules
    return float(rules[0]["duration"])


def _redis_alerts(topology: Topology, host: str) -> list[dict[str, Any]]:
    """The active (pending or firing) InstanceDown alerts of ``host``'s redis job."""
    return [
        alert
        for alert in api(topology, "/api/v1/alerts")["alerts"]
        if alert["labels"].get("alertname") == ALERT
        and alert["labels"].get("job") == "redis"
        and alert["labels"].get("host") == host
    ]


def _wait(
    topology: Topology, host: str, state: str | None, within: float
) -> tuple[dict[str, Any] | None, float]:
    """Poll until ``host``'s alert is in ``state`` (None: no alert at all); return it and
    when it was seen (Unix time). Fails with every state seen on the way."""
    seen: list[str] = []
    deadline = time.monotonic() + within
    while True:
        alerts = _redis_alerts(topology, host)
        now = time.time()
        states = sorted(a["state"] for a in alerts)
        if not seen or seen[-1] != str(states):
            seen.append(str(states))
        if state is None and not alerts:
            return None, now
        if state is not None and [a["state"] for a in alerts] == [state]:
            return alerts[0], now
        if time.monotonic() > deadline:
            pytest.fail(
                f"{ALERT} for redis on {host} not {state or 'gone'} within {within:.0f} s; "
                f"states seen in order: {seen}; last alerts: {alerts}"
            )
        time.sleep(POLL_S)


def _active_at(alert: dict[str, Any]) -> float:
    # RFC 3339 with nanoseconds and a Z; fromisoformat takes microseconds and an offset.
    stamp = alert["activeAt"].replace("Z", "+00:00")
    head, _, zone = stamp.partition("+")
    if "." in head:
        whole, fraction = head.split(".")
        head = f"{whole}.{fraction[:6]}"
    return datetime.fromisoformat(f"{head}+{zone}").timestamp()


def test_redis_master_down_alert_goes_pending_then_firing_then_resolves(
    deployed_lab: Topology,
) -> None:
    scrape, evaluation = _intervals(deployed_lab)
    for_s = _rule_for_s(deployed_lab)
    # A change shows in the next scrape, then the next evaluation.
    noticed_within = scrape + evaluation + SLACK_S
    with faults.exclusive_lock(faults.DATA_FAULT_LOCK, timeout=LOCK_WAIT_S):
        master = wait_healthy(deployed_lab, 120).master_host
        assert master is not None
        # Nothing left over from an earlier fault on this host.
        _wait(deployed_lab, master, None, noticed_within)
        try:
            stopped = ssh_run(deployed_lab, master, "systemctl stop redis-server")
            assert stopped.returncode == 0, stopped.stderr
            stopped_at = time.time()

            pending, pending_seen = _wait(deployed_lab, master, "pending", noticed_within)
            assert pending is not None
            assert pending["annotations"]["summary"] == f"redis down on {master}", pending
            assert float(pending["value"]) == 0.0, pending
            active_at = _active_at(pending)
            # Active from an evaluation after the stop (the clocks are one: containers).
            assert stopped_at - 1 <= active_at <= pending_seen, (stopped_at, pending)

            firing, firing_seen = _wait(
                deployed_lab, master, "firing", for_s + evaluation + SLACK_S
            )
            assert firing is not None
            # The same alert, held for its whole `for:` before firing.
            assert _active_at(firing) == pytest.approx(active_at, abs=0.001), (pending, firing)
            assert firing_seen >= active_at + for_s, (active_at, firing_seen, for_s)
        finally:
            started = ssh_run(deployed_lab, master, "systemctl start redis-server")
            assert started.returncode == 0, started.stderr
            # The Sentinels failed over: the old master rejoins as a replica.
            wait_healthy(deployed_lab, 120)

        _wait(deployed_lab, master, None, noticed_within)

"""`seawall restart --rolling` on the lab: nothing fails or is lost under load; a failed gate stops.

Each test runs the command as the ops host's timer does (`seawall restart
--rolling --yes --json -i inventories/lab.py`) and holds the lab's data- and
app-fault locks (data first) for its whole length, so no other session's fault
lands in it. The load (tests/lab/restart_load.py) is bounded in rate, count
and time. Every fault is undone and the gateway redeployed in ``finally``.
"""

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from seawall.inventory import Topology
from seawall.postgres import failover as pg_failover
from seawall.redis.failover import wait_healthy
from seawall.ssh import run as ssh
from tests.lab.conftest import ROOT, changed_operations, run_deploy
from tests.lab.restart_load import GatewayClient, RestartLoad, gateway_tls
from tests.lab.test_services import PREFIX

SEAWALL = str(Path(sys.executable).with_name("seawall"))
# The whole lab's rolling restart: app hosts (drain up to 150 s each, gates 60 s),
# data tier (gates 120 s each): minutes, bounded far below this.
RESTART_TIMEOUT_S = 2400
DRIFT_TIMEOUT_S = 240
NGINX_OP = "Configure NGINX as the gateway (checked with nginx -t first)"
FAILING_HOST, FAILING_SERVICE = "app-2", "marketdata"
DROPIN = f"/etc/systemd/system/{PREFIX}{FAILING_SERVICE}.service.d/zz-restart-test.conf"


def seawall(*args: str, timeout: float) -> tuple[int, dict[str, Any], str]:
    """Run a seawall command with --json on the lab; return exit code, report, stderr."""
    result = subprocess.run(
        [SEAWALL, *args, "-i", "inventories/lab.py", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"{args}: exit {result.returncode}, no JSON: {result.stderr[-3000:]}")
    return result.returncode, report, result.stderr


def restart() -> tuple[int, dict[str, Any], str]:
    return seawall("restart", "--rolling", "--yes", timeout=RESTART_TIMEOUT_S)


def nginx_conf(topology: Topology) -> str:
    return ssh(topology, "gw-1", "cat /etc/nginx/nginx.conf", check=True).stdout


def down_addresses(conf: str) -> set[str]:
    return set(re.findall(r"server ([0-9.]+):[0-9]+ [^;]* down;", conf))


def test_a_rolling_restart_under_load_fails_and_loses_nothing(quiet_lab: Topology) -> None:
    redis_before = wait_healthy(quiet_lab, 60).master_host
    _, pg_before = pg_failover.wait_healthy(quiet_lab, 60)
    load = RestartLoad(quiet_lab)
    try:
        time.sleep(5)  # a baseline of traffic before the first step
        code, report, stderr = restart()
        time.sleep(5)  # and after the last
    finally:
        result = load.stop()
    summary = result.summary()
    print(json.dumps({"phase_seconds": report.get("phase_seconds"), **summary}, indent=2))
    assert code == 0, stderr[-4000:] + json.dumps(report.get("failed"), indent=2)
    assert report["ok"] is True and report["drained"] == []
    assert len(report["results"]) == len(report["plan"]["steps"]) == 20
    assert summary["gets"] > 100 and summary["posts"] > 10 and summary["events"] > 100
    assert result.failed_gets == 0, result.get_failures[:10]
    assert result.posts_unacknowledged == 0
    assert result.orders_not_once == {}
    assert result.events_lost == 0 and result.events_duplicated == 0
    assert result.rows_committed > 0 and result.rows_lost == 0
    # The roles are valid afterwards: one master with linked replicas and agreeing
    # Sentinels, a Postgres leader with a streaming synchronous replica; both moved.
    assert wait_healthy(quiet_lab, 60).master_host != redis_before
    healthy, pg_after = pg_failover.wait_healthy(quiet_lab, 60)
    assert healthy and pg_after != pg_before
    # Nothing left drained, nothing drifted.
    assert down_addresses(nginx_conf(quiet_lab)) == set()
    code, drift, stderr = seawall("drift", timeout=DRIFT_TIMEOUT_S)
    assert code == 0, stderr + json.dumps(drift, indent=2)


def test_a_failed_gate_stops_the_run_and_leaves_the_host_drained(quiet_lab: Topology) -> None:
    drained = quiet_lab.host(FAILING_HOST).address
    serving = quiet_lab.host("app-1").address
    unit = f"{PREFIX}{FAILING_SERVICE}.service"
    try:
        # The unit's next start fails: app-2's restart step cannot pass its gate.
        ssh(
            quiet_lab,
            FAILING_HOST,
            f"mkdir -p {Path(DROPIN).parent} && "
            f"printf '[Service]\\nExecStartPre=/bin/false\\n' > {DROPIN} && "
            "systemctl daemon-reload",
            check=True,
        )
        code, report, stderr = restart()
        assert code == 1, stderr[-4000:]
        failed = report["failed"]
        assert (failed["host"], failed["action"], failed["phase"]) == (
            FAILING_HOST,
            "restart",
            "app",
        )
        assert unit in failed["error"]
        assert report["drained"] == [FAILING_HOST]
        # It stopped there: no data host was touched.
        assert [r["phase"] for r in report["results"]] == ["app"] * 5
        conf = nginx_conf(quiet_lab)
        assert down_addresses(conf) == {drained}
        assert serving not in down_addresses(conf)
        # The others serve: every GET through the gateway answers, from app-1.
        address, context = gateway_tls(quiet_lab)
        client = GatewayClient(address, context)
        token = f"drained-{time.time_ns()}"
        try:
            statuses = [
                client.request("GET", "/api/risk/items/1", {"X-Request-ID": f"{token}-{n}"})
                for n in range(20)
            ]
        finally:
            client.close()
        assert statuses == [200] * 20
        logged = ssh(
            quiet_lab,
            "gw-1",
            f"sleep 1.2; grep -F {token} /var/log/nginx/access-json.log",
            check=True,
        ).stdout.splitlines()
        assert len(logged) == 20
        assert {json.loads(line)["upstream_addr"].split(":")[0] for line in logged} == {serving}
        # Left drained, it is drift: the normal deploy renders it undrained.
        code, drift, stderr = seawall("drift", timeout=DRIFT_TIMEOUT_S)
        assert code == 1, stderr
        # pyinfra names it "file | deploy | op", with its arguments appended if any.
        names = [op.rsplit(" | ", 1)[-1] for op in drift["drift"].get("gw-1", [])]
        assert any(n == NGINX_OP or n.startswith(f"{NGINX_OP} (") for n in names), drift
    finally:
        ssh(
            quiet_lab,
            FAILING_HOST,
            f"rm -f {DROPIN} && systemctl daemon-reload && systemctl reset-failed {unit}; "
            f"systemctl restart {unit}",
            check=True,
        )
        changed_operations(run_deploy("deploys/gateway.py"))
    assert down_addresses(nginx_conf(quiet_lab)) == set()

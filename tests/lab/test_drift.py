"""`seawall drift` on the lab: clean after a deploy, a hand edit named, a failover not drift.

Each test runs the command as cron on the ops host would (`seawall drift -i
inventories/lab.py --json`, from the directory holding deploys/) and holds the
lab's data- and app-fault locks (data first) for its whole length, so another
session's fault never reads as drift or as an unreachable host here. Every hand
edit is undone by a redeploy and every fault restored in ``finally``; every wait
is bounded.
"""

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from seawall.drift import TEXTFILE_NAME
from seawall.inventory import Topology
from seawall.lab import faults
from seawall.lab.config import lab_config
from seawall.lab.faults import DATA_FAULT_LOCK, app_fault_lock, exclusive_lock
from seawall.names import patroni_config_path
from seawall.postgres import drill as pg_drill
from seawall.postgres.status import cluster, leader_of
from seawall.redis.drill import switchover, wait_healthy
from seawall.settings import setting
from seawall.ssh import run as ssh
from tests.lab.conftest import ROOT, changed_operations, run_site_deploy

SEAWALL = str(Path(sys.executable).with_name("seawall"))
LOCK_WAIT_S = 1800
# What a dry run of the 7-host lab may take here (target 15 s, bench/drift.py).
DRIFT_TIMEOUT_S = 180
CRASHED = "data-3"
NGINX_OP = "Configure NGINX as the gateway (checked with nginx -t first)"
ROLE_MARKER_OP = "Write the role marker"


def seawall_drift(*extra: str) -> tuple[int, dict[str, Any], str]:
    """Run `seawall drift --json` on the lab; return exit code, report and stderr."""
    result = subprocess.run(
        [SEAWALL, "drift", "-i", "inventories/lab.py", "--json", *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=DRIFT_TIMEOUT_S + 30,
    )
    return result.returncode, json.loads(result.stdout), result.stderr


def redeploy() -> None:
    """A site deploy that must succeed (it is what clears drift)."""
    changed_operations(run_site_deploy("--json"))


def _has(operations: list[str], name: str) -> bool:
    # pyinfra prefixes the deploy file and the deploy's name ("file | deploy | op"),
    # and appends an operation's arguments to its name when it has any.
    ops = [op.rsplit(" | ", 1)[-1] for op in operations]
    return any(op == name or op.startswith(f"{name} (") for op in ops)


@pytest.fixture(scope="module")
def redeployed(deployed_lab: Topology) -> Topology:
    """The deployed lab, redeployed once for this module (so clean): each test that
    changes something puts it back itself, so one redeploy serves them all."""
    with exclusive_lock(DATA_FAULT_LOCK, timeout=LOCK_WAIT_S), app_fault_lock(LOCK_WAIT_S):
        assert faults.active_faults(lab_config(deployed_lab)) == []
        wait_healthy(deployed_lab, 120)
        redeploy()
    return deployed_lab


@pytest.fixture
def quiet_lab(redeployed: Topology) -> Iterator[Topology]:
    """The clean lab, with no other session's fault in it while the test runs."""
    with exclusive_lock(DATA_FAULT_LOCK, timeout=LOCK_WAIT_S), app_fault_lock(LOCK_WAIT_S):
        assert faults.active_faults(lab_config(redeployed)) == []
        wait_healthy(redeployed, 120)
        yield redeployed


def _patroni_switchover(topology: Topology) -> str:
    """Switch the Patroni leader to the replica (as seawall/postgres/drill.py does); return it."""
    healthy, leader = pg_drill.wait_healthy(topology, 120)
    assert healthy and leader is not None, "Patroni is not healthy before the switchover"
    replica = next(h.name for h in topology.group("postgres") if h.name != leader)
    config = patroni_config_path(topology.host(leader).data)
    ssh(
        topology,
        leader,
        f"patronictl -c {config} switchover --leader {leader} --candidate {replica} --force",
        check=True,
    )
    deadline = time.monotonic() + 60
    while leader_of(cluster(topology).members) != replica:
        assert time.monotonic() < deadline, f"{replica} did not lead within 60 s"
        time.sleep(1)
    healthy, _ = pg_drill.wait_healthy(topology, 120)
    assert healthy, "Patroni is not whole again within 120 s of the switchover"
    return replica


def test_an_unreachable_host_is_exit_2_naming_it(quiet_lab: Topology) -> None:
    config = lab_config(quiet_lab)
    try:
        faults.crash(config, CRASHED)
        code, report, stderr = seawall_drift()
        assert code == 2, stderr + json.dumps(report, indent=2)
        assert list(report["unreachable"]) == [CRASHED]
        assert CRASHED in report["error"] and CRASHED in stderr
        # The others were still checked (and are clean).
        assert sorted(report["checked"]) == sorted(h.name for h in quiet_lab if h.name != CRASHED)
        assert report["drift"] == {}
    finally:
        faults.restore(config)
    # The next test's runs find it back and clean.
    wait_healthy(quiet_lab, 120)


def test_failovers_are_not_drift_a_hand_edit_is_until_a_redeploy(
    quiet_lab: Topology, tmp_path: Path
) -> None:
    # Sentinel rewrites redis.conf and sentinel.conf, Patroni its dynamic
    # configuration: the daemons own that state, no deploy re-templates it. One
    # drift run after both failovers and the hand edits: it must name exactly the
    # two edits, so no data host's failover state reads as drift.
    before = wait_healthy(quiet_lab, 120).master
    assert switchover(quiet_lab) != before
    wait_healthy(quiet_lab, 120)
    _patroni_switchover(quiet_lab)
    marker = setting(quiet_lab.host("app-2").data, "role_marker_path")
    try:
        for host, command in (
            ("gw-1", "echo '# edited by hand' >> /etc/nginx/nginx.conf"),
            ("app-2", f"echo 'edited-by-hand' >> {marker}"),
        ):
            edited = ssh(quiet_lab, host, command)
            assert edited.returncode == 0, edited.stderr

        code, report, stderr = seawall_drift()
        assert code == 1, stderr + json.dumps(report, indent=2)
        assert sorted(report["drift"]) == ["app-2", "gw-1"], report["drift"]
        assert _has(report["drift"]["gw-1"], NGINX_OP), report["drift"]
        assert _has(report["drift"]["app-2"], ROLE_MARKER_OP), report["drift"]
        assert report["error"] is None
        # A dry run: the edits are still there.
        still = ssh(quiet_lab, "gw-1", "grep -c '^# edited by hand' /etc/nginx/nginx.conf")
        assert still.stdout.strip() == "1"
    finally:
        redeploy()

    code, report, stderr = seawall_drift("--textfile-dir", str(tmp_path))
    assert code == 0, stderr + json.dumps(report, indent=2)
    hosts = sorted(host.name for host in quiet_lab)
    assert sorted(report["checked"]) == hosts
    assert report["drift"] == {} and report["unreachable"] == {} and report["error"] is None
    metrics = (tmp_path / TEXTFILE_NAME).read_text()
    for host in hosts:
        assert f'seawall_drift_operations{{drift_host="{host}"}} 0' in metrics
    assert "seawall_drift_last_run_success 1" in metrics
    print(f"drift of the clean lab: {report['duration_seconds']:.1f} s")

"""Redeploys on a degraded lab (issue 11, item 6): what ops run while something is broken.

Each test holds the data-fault lock (no drill or benchmark injects a fault on the
data hosts meanwhile) and restores every fault in ``finally``.
"""

import json
import subprocess
import time

import pytest

from seawall.inventory import Topology
from seawall.lab import faults
from seawall.lab.config import lab_config
from seawall.postgres import drill as pg_drill
from seawall.postgres.status import cluster, leader_of
from seawall.redis.drill import wait_healthy
from seawall.redis.topology import RedisStatus, redis_status
from seawall.ssh import run as ssh_run
from tests.lab.conftest import PYINFRA, ROOT, changed_operations, run_site_deploy

CRASHED = "data-3"
LOCK_WAIT_S = 1800


def _roles(status: RedisStatus) -> dict[str, str]:
    return {node.host: node.role for node in status.nodes if node.role in ("master", "replica")}


def _redis_settled_without(topology: Topology, down: str, timeout: float = 60) -> RedisStatus:
    """Wait (bounded) until the Sentinels left agree on a master that is not ``down``."""
    deadline = time.monotonic() + timeout
    while True:
        status = redis_status(topology)
        if status.master_host not in (None, down) and status.agreeing >= 2:
            return status
        assert time.monotonic() < deadline, f"no master without {down} within {timeout} s"
        time.sleep(1)


def _patroni_leader(topology: Topology) -> str | None:
    healthy, leader = pg_drill.wait_healthy(topology, 120)
    assert healthy, "Patroni is not healthy"
    return leader


def test_site_redeploy_with_a_data_host_crashed_keeps_every_role(deployed_lab: Topology) -> None:
    config = lab_config(deployed_lab)
    wait_healthy(deployed_lab)
    with faults.exclusive_lock(faults.DATA_FAULT_LOCK, timeout=LOCK_WAIT_S):
        try:
            faults.crash(config, CRASHED)
            before = _redis_settled_without(deployed_lab, CRASHED)
            leader = _patroni_leader(deployed_lab)

            # The reachable hosts deploy to the end: data-3's Sentinel is a missing vote.
            result = run_site_deploy("--json", "--exclude", CRASHED)
            changed_operations(result)  # exit 0, no operation failed
            after = redis_status(deployed_lab)
            assert after.master == before.master
            assert _roles(after) == _roles(before)
            assert leader_of(cluster(deployed_lab).members) == leader

            # Without --exclude pyinfra fails the host it cannot reach (exit 1), and
            # only that one: every other host still deploys.
            plain = run_site_deploy("--json")
            assert plain.returncode == 1, plain.stderr[-4000:]
            results = json.loads(plain.stdout)["results"]
            assert results["failed_hosts"] == [CRASHED]
            assert results["totals"]["error"] == 0
            assert redis_status(deployed_lab).master == before.master
            assert leader_of(cluster(deployed_lab).members) == leader
        finally:
            faults.restore(config)

    wait_healthy(deployed_lab, 120)
    leader = _patroni_leader(deployed_lab)
    master = redis_status(deployed_lab).master
    assert changed_operations(run_site_deploy("--json")) == {}
    assert redis_status(deployed_lab).master == master
    assert leader_of(cluster(deployed_lab).members) == leader


def _etcd(topology: Topology, host: str, command: str) -> subprocess.CompletedProcess[str]:
    return ssh_run(topology, host, f"ETCDCTL_API=3 etcdctl {command}")


def _run_etcd_deploy() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYINFRA, "-y", "--json", "inventories/lab.py", "deploys/etcd.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_rebuilt_etcd_member_rejoins_as_a_new_member(deployed_lab: Topology) -> None:
    first = deployed_lab.group("etcd")[0].name
    data_dir = deployed_lab.host(CRASHED).data["etcd_data_dir"]
    leader = _patroni_leader(deployed_lab)
    old_ids = _etcd(deployed_lab, first, "member list").stdout
    with faults.exclusive_lock(faults.DATA_FAULT_LOCK, timeout=LOCK_WAIT_S):
        try:
            # A rebuilt host: etcd installed and configured, its data gone.
            wiped = ssh_run(deployed_lab, CRASHED, f"systemctl stop etcd && rm -rf {data_dir}")
            assert wiped.returncode == 0, wiped.stderr
            changed = changed_operations(_run_etcd_deploy())
            rejoins = [hosts for name, hosts in changed.items() if "Rejoin the running" in name]
            assert rejoins == [[CRASHED]], changed
        finally:
            faults.restore(config=lab_config(deployed_lab))

    health = _etcd(deployed_lab, first, "endpoint health --cluster")
    assert health.returncode == 0, health.stderr
    assert (health.stdout + health.stderr).count("is healthy") == 3
    members = _etcd(deployed_lab, first, "member list").stdout
    rejoined = [line for line in members.splitlines() if f", {CRASHED}, " in line]
    assert len(rejoined) == 1 and ", started, " in rejoined[0], members
    # A new member ID: it did not come back under its old identity.
    assert rejoined[0].split(",")[0] not in old_ids
    assert leader_of(cluster(deployed_lab).members) == leader
    assert changed_operations(_run_etcd_deploy()) == {}


@pytest.fixture(autouse=True)
def _no_fault_left(deployed_lab: Topology) -> None:
    assert faults.active_faults(lab_config(deployed_lab)) == []

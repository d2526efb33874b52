"""Redeploys on a degraded lab (issue 11, item 6): what ops run while something is broken.

Each test holds the data-fault lock (no drill or benchmark injects a fault on the
data hosts meanwhile) and restores every fault in ``finally``.
"""

import json
import subprocess
import time

import pytest
import redis

from seawall import names
from seawall.components.redis import MANAGED_CONF, REDIS_CONF, REDIS_DIR
from seawall.facts.redis import shadowed_command
from seawall.inventory import Topology
from seawall.lab import faults
from seawall.lab.config import lab_config
from seawall.postgres import drill as pg_drill
from seawall.postgres.remote_writer import role_password
from seawall.postgres.status import cluster, leader_of
from seawall.redis.client import redis_settings
from seawall.redis.drill import switchover, wait_healthy
from seawall.redis.topology import RedisStatus, redis_status
from seawall.runtime.reconnect import RedisUnavailableError, connect
from seawall.ssh import run as ssh_run
from tests.lab.conftest import changed_operations, remote_python, run_deploy, run_site_deploy

CRASHED = "data-3"
# Down with it in the redeploy: every host reads the ops host's keys.
OPS_CRASHED = "ops-1"
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


def test_site_redeploy_with_a_data_host_and_the_ops_host_crashed_keeps_every_role(
    deployed_lab: Topology,
) -> None:
    config = lab_config(deployed_lab)
    wait_healthy(deployed_lab)
    with faults.exclusive_lock(faults.DATA_FAULT_LOCK, timeout=LOCK_WAIT_S):
        try:
            faults.crash(config, CRASHED)
            faults.crash(config, OPS_CRASHED)
            before = _redis_settled_without(deployed_lab, CRASHED)
            leader = _patroni_leader(deployed_lab)

            # pyinfra fails the hosts it cannot reach (exit 1), and only those:
            # every other host deploys to the end (data-3's Sentinel is a missing
            # vote, ops-1's keys and journal CA wait) and keeps its role.
            plain = run_site_deploy("--json")
            assert plain.returncode == 1, plain.stderr[-4000:]
            results = json.loads(plain.stdout)["results"]
            assert sorted(results["failed_hosts"]) == sorted([CRASHED, OPS_CRASHED])
            assert results["totals"]["error"] == 0
            after = redis_status(deployed_lab)
            assert after.master == before.master
            assert _roles(after) == _roles(before)
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
    # Over HTTPS with that member's own certificate (etcd takes no client without one).
    return ssh_run(topology, host, f"{names.etcdctl(topology.host(host).data)} {command}")


def _run_etcd_deploy() -> subprocess.CompletedProcess[str]:
    return run_deploy("deploys/etcd.py", timeout=600)


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


def _redis_roles(topology: Topology) -> dict[str, str]:
    """Each Redis host's role, asked of Redis itself (no Sentinel); "down": no answer."""
    password = redis_settings(topology).password
    roles = {}
    for host in topology.group("redis"):
        try:
            conn = connect(host.address, int(host.data["redis_port"]), password, 2)
            roles[host.name] = str(conn.info("replication")["role"])
            conn.close()
        except (RedisUnavailableError, redis.exceptions.ConnectionError):
            roles[host.name] = "down"
    return roles


def _sentinels(topology: Topology, action: str) -> None:
    for host in topology.group("sentinel"):
        done = ssh_run(topology, host.name, f"systemctl {action} redis-sentinel")
        assert done.returncode == 0, done.stderr


def test_no_sentinel_answering_never_starts_an_empty_master(deployed_lab: Topology) -> None:
    master = wait_healthy(deployed_lab).master_host
    assert master is not None
    fresh = next(h.name for h in reversed(deployed_lab.group("redis")) if h.name != master)
    with faults.exclusive_lock(faults.DATA_FAULT_LOCK, timeout=LOCK_WAIT_S):
        try:
            # A rebuilt replica: Redis installed, its data and marker gone.
            wiped = ssh_run(
                deployed_lab, fresh, f"systemctl stop redis-server && rm -rf {REDIS_DIR}/*"
            )
            assert wiped.returncode == 0, wiped.stderr
            for bootstrap, reason in (
                ("False", "no Sentinel names a master and redis_bootstrap is off"),
                # On, as in the lab's group data: the other hosts hold data, so still no.
                ("True", "already hold Redis data"),
            ):
                _sentinels(deployed_lab, "stop")
                refused = run_deploy(
                    "deploys/redis.py", "--data", f"redis_bootstrap={bootstrap}", timeout=600
                )
                assert refused.returncode != 0
                assert reason in refused.stdout + refused.stderr, refused.stderr[-3000:]
                roles = _redis_roles(deployed_lab)
                assert roles[fresh] == "down", roles
                assert roles[master] == "master", roles
                assert list(roles.values()).count("master") == 1, roles
        finally:
            _sentinels(deployed_lab, "start")
            faults.restore(config=lab_config(deployed_lab))

    # With the Sentinels back, the rebuilt host joins the master they name.
    changed = changed_operations(run_deploy("deploys/redis.py", timeout=600))
    assert changed, "the rebuilt host was not set up"
    status = wait_healthy(deployed_lab, 120)
    assert status.master_host == master
    assert _redis_roles(deployed_lab)[fresh] == "slave"
    assert changed_operations(run_deploy("deploys/redis.py", timeout=600)) == {}


def _shadowed(topology: Topology, host: str) -> list[str]:
    """The settings of seawall.conf that lines after its include override (names only)."""
    found = ssh_run(topology, host, shadowed_command(REDIS_CONF, MANAGED_CONF))
    assert found.returncode == 0, found.stderr
    assert "no-include" not in found.stdout, f"{host}: {REDIS_CONF} lost its include"
    return sorted(found.stdout.split())


def test_the_managed_redis_file_wins_after_a_real_failover(deployed_lab: Topology) -> None:
    before = wait_healthy(deployed_lab).master
    with faults.exclusive_lock(faults.DATA_FAULT_LOCK, timeout=LOCK_WAIT_S):
        new_master = switchover(deployed_lab)
        assert new_master != before
        status = wait_healthy(deployed_lab, 120)
        replica = next(node.host for node in status.nodes if node.role == "replica")
        host = deployed_lab.host(replica)
        password = redis_settings(deployed_lab).password
        conn = connect(host.address, int(host.data["redis_port"]), password, 2)
        managed = str(conn.config_get("maxmemory")["maxmemory"])
        # What Sentinel's CONFIG REWRITE leaves at a failover when a setting is new to
        # redis.conf: a line after the include, here with a value that differs from
        # seawall.conf (as an old password would after a rotation). Appended by hand:
        # a rewrite updates a line in place once an earlier deploy moved the include
        # below it, so the rewrite alone does not always recreate the case.
        other = int(managed) + 1024 * 1024
        conn.config_set("maxmemory", other)
        conn.close()
        appended = ssh_run(deployed_lab, replica, f"echo 'maxmemory {other}' >> {REDIS_CONF}")
        assert appended.returncode == 0, appended.stderr
        assert _shadowed(deployed_lab, replica) == ["maxmemory"]

        changed = changed_operations(run_deploy("deploys/redis.py", timeout=600))
        assert list(changed.values()).count([replica]) >= 1, changed
        for node in deployed_lab.group("redis"):
            assert _shadowed(deployed_lab, node.name) == [], node.name
        # At its next start, the replica runs what seawall.conf says.
        restarted = ssh_run(deployed_lab, replica, "systemctl restart redis-server")
        assert restarted.returncode == 0, restarted.stderr
        assert wait_healthy(deployed_lab, 120).master == new_master
        conn = connect(host.address, int(host.data["redis_port"]), password, 2)
        assert conn.config_get("maxmemory")["maxmemory"] == managed
        conn.close()
    assert changed_operations(run_deploy("deploys/redis.py", timeout=600)) == {}
    assert redis_status(deployed_lab).master == new_master


def test_a_debian_cluster_over_patroni_data_is_refused_not_dropped(
    deployed_lab: Topology,
) -> None:
    leader = _patroni_leader(deployed_lab)
    replica = next(h.name for h in deployed_lab.group("postgres") if h.name != leader)
    data = deployed_lab.host(replica).data
    version, name = data["postgres_version"], data["postgres_cluster"]
    conf_dir = f"/etc/postgresql/{version}/{name}"
    data_dir = f"/var/lib/postgresql/{version}/{name}"
    with faults.exclusive_lock(faults.DATA_FAULT_LOCK, timeout=LOCK_WAIT_S):
        try:
            # A Debian cluster registration over Patroni's directory (a postgresql-common
            # reinstall, or an admin's pg_createcluster): what pg_dropcluster would delete.
            planted = ssh_run(
                deployed_lab,
                replica,
                f"mkdir -p {conf_dir} && echo \"data_directory = '{data_dir}'\" "
                f"> {conf_dir}/postgresql.conf",
            )
            assert planted.returncode == 0, planted.stderr
            refused = run_deploy("deploys/postgres.py", timeout=600)
            assert refused.returncode == 1, refused.stderr[-3000:]
            results = json.loads(refused.stdout)["results"]
            assert results["failed_hosts"] == [replica]
            assert "refusing to drop the Debian cluster" in refused.stderr + refused.stdout
            kept = ssh_run(deployed_lab, replica, f"test -s {data_dir}/PG_VERSION")
            assert kept.returncode == 0, "the data directory was touched"
        finally:
            ssh_run(deployed_lab, replica, f"rm -rf {conf_dir}")
    healthy, after = pg_drill.wait_healthy(deployed_lab, 120)
    assert healthy and after == leader
    assert changed_operations(run_deploy("deploys/postgres.py", timeout=600)) == {}


# Runs on an app host: reloads HAProxy and, for a window after each reload, opens
# new connections to the read-write port and asks each server whether it is a replica.
_RELOAD_PROBE = r"""
import json, subprocess, sys, time
import psycopg
s = json.loads(sys.stdin.readline())
hits = {"leader": 0, "replica": 0, "refused": 0}
for _ in range(s["reloads"]):
    subprocess.run(["systemctl", "reload", "haproxy"], check=True)
    end = time.monotonic() + s["window"]
    while time.monotonic() < end:
        try:
            # HAProxy's port: TLS to whichever member leads, checked against the CA.
            with psycopg.connect(host="127.0.0.1", port=s["port"], dbname=s["dbname"],
                                 user=s["user"], password=s["password"], connect_timeout=2,
                                 sslmode="verify-ca", sslrootcert=s["ca"]) as c:
                recovery = c.execute("select pg_is_in_recovery()").fetchone()[0]
            hits["replica" if recovery else "leader"] += 1
        except psycopg.OperationalError:
            hits["refused"] += 1
            time.sleep(0.01)
    time.sleep(s["pause"])
print(json.dumps(hits))
"""


def test_haproxy_reloads_never_send_a_new_session_to_the_replica(deployed_lab: Topology) -> None:
    healthy, _ = pg_drill.wait_healthy(deployed_lab, 120)
    assert healthy
    app = deployed_lab.group("app")[0]
    role = str(app.data["postgres_drill_role"])
    settings = {
        "reloads": 5,
        "window": 1.0,
        "pause": 2.0,
        "port": app.data["haproxy_rw_port"],
        "ca": names.postgres_tls_files(app.data)["ca"],
        "dbname": app.data["postgres_drill_database"],
        "user": role,
        "password": role_password(deployed_lab, role),
    }
    hits = remote_python(deployed_lab, app.name, _RELOAD_PROBE, settings, timeout=60)
    print(f"new sessions in the 1 s after each of 5 reloads: {hits}")
    assert hits["replica"] == 0, hits
    assert hits["leader"] >= 5 * 10, hits


@pytest.fixture(autouse=True)
def _no_fault_left(deployed_lab: Topology) -> None:
    assert faults.active_faults(lab_config(deployed_lab)) == []

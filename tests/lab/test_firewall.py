"""The firewall in the lab: tested from the wrong hosts, and its safe load.

Reachability is probed from the hosts themselves over SSH, one bounded connect
each (`timeout 2 bash -c '</dev/tcp/ADDR/PORT'`): exit 0 connected, 124 no
answer (dropped by the firewall), anything else refused. The broken-ruleset and
missed-confirmation cases run on app-2 only, under the app-fault lock, and end
with a normal firewall deploy that puts the intended table back. Every wait is bounded.
"""

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from seawall import defaults
from seawall.components import firewall
from seawall.facts.firewall import ROLLBACK_UNIT
from seawall.inventory import Topology
from seawall.lab.faults import app_fault_lock
from seawall.settings import setting
from seawall.ssh import run as ssh
from tests.lab.conftest import changed_operations, run_deploy

CONNECTED, DROPPED = 0, 124
# The host the load drills change; its services keep running throughout.
DRILL_HOST = "app-2"
DRILL_ROLLBACK_S = 30


def connect(topology: Topology, source: str, target: str, key: str) -> int:
    """Exit code of one bounded connect from ``source`` to ``target``'s ``key`` port."""
    address = topology.host(target).address
    port = setting(topology.host(target).data, key)
    result = ssh(topology, source, f"timeout 2 bash -c '</dev/tcp/{address}/{port}'", timeout=30)
    return result.returncode


def live_comment(topology: Topology, host: str) -> str:
    listed = ssh(topology, host, "nft list table inet seawall", check=True).stdout
    (line,) = [line for line in listed.splitlines() if line.startswith("\tcomment ")]
    return line.strip().removeprefix('comment "').removesuffix('"')


def intended(topology: Topology, host: str) -> tuple[str, str]:
    member = topology.host(host)
    return firewall.ruleset(member.name, member.groups, member.data, list(topology))


def ruleset_sha(topology: Topology, host: str) -> str:
    return ssh(topology, host, f"sha256sum {firewall.RULESET}", check=True).stdout.split()[0]


@pytest.fixture
def drill_host(deployed_lab: Topology) -> Iterator[str]:
    """app-2 under the app-fault lock; the intended firewall is back (and confirmed) after."""
    with app_fault_lock(300):
        yield DRILL_HOST
        result = run_deploy("deploys/firewall.py", "--limit", DRILL_HOST)
        changed_operations(result)
        assert live_comment(deployed_lab, DRILL_HOST) == intended(deployed_lab, DRILL_HOST)[1]


def test_every_host_runs_its_table_loaded_at_boot(deployed_lab: Topology) -> None:
    for host in deployed_lab:
        _, comment = intended(deployed_lab, host.name)
        assert live_comment(deployed_lab, host.name) == comment, host.name
        listed = ssh(deployed_lab, host.name, "nft list chain inet seawall input", check=True)
        assert "policy drop;" in listed.stdout
        enabled = ssh(deployed_lab, host.name, f"systemctl is-enabled {firewall.UNIT}")
        assert enabled.stdout.strip() == "enabled", host.name
        pending = ssh(deployed_lab, host.name, f"systemctl is-active {ROLLBACK_UNIT}.timer")
        assert pending.stdout.strip() != "active", host.name


def test_the_gateway_reaches_no_data_port(deployed_lab: Topology) -> None:
    # The probe itself connects from gw-1 where it should: the services it routes to.
    backend = defaults.SERVICES["services"][0]
    address = deployed_lab.host("app-1").address
    routed = ssh(deployed_lab, "gw-1", f"timeout 2 bash -c '</dev/tcp/{address}/{backend['port']}'")
    assert routed.returncode == CONNECTED
    # Exporters are Prometheus's alone.
    assert connect(deployed_lab, "gw-1", "app-1", "node_exporter_port") == DROPPED
    for target in deployed_lab.group("redis"):
        keys = [
            "redis_port",
            "sentinel_port",
            "etcd_client_port",
            "etcd_peer_port",
            "etcd_metrics_port",
        ]
        if "postgres" in target.groups:
            keys += ["postgres_port", "patroni_rest_port"]
        for key in keys:
            assert connect(deployed_lab, "gw-1", target.name, key) == DROPPED, (target.name, key)


def test_an_app_host_reaches_what_it_needs_and_no_more(deployed_lab: Topology) -> None:
    for target in deployed_lab.group("redis"):
        for key in ("redis_port", "sentinel_port"):
            assert connect(deployed_lab, "app-1", target.name, key) == CONNECTED, (target, key)
        # etcd is Patroni's, never a service's.
        for key in (
            "etcd_client_port",
            "etcd_peer_port",
            "etcd_metrics_port",
            "redis_exporter_port",
        ):
            assert connect(deployed_lab, "app-1", target.name, key) == DROPPED, (target, key)
    for target in deployed_lab.group("postgres"):
        # HAProxy's route: Postgres itself and the Patroni checks.
        for key in ("postgres_port", "patroni_rest_port"):
            assert connect(deployed_lab, "app-1", target.name, key) == CONNECTED, (target, key)
    # The whole path as the services use it: Redis through Sentinel, Postgres
    # through PgBouncer and HAProxy, answered within the bound.
    backend = defaults.SERVICES["services"][0]
    address = deployed_lab.host("app-1").address
    deadline = time.monotonic() + 30
    health: dict[str, Any] = {}
    while time.monotonic() < deadline:
        out = ssh(deployed_lab, "app-1", f"curl -s -m 3 http://{address}:{backend['port']}/health")
        health = json.loads(out.stdout or "{}")
        deps = health.get("dependencies", {})
        if all(deps.get(d, {}).get("status") == "OK" for d in ("redis", "postgres")):
            break
        time.sleep(1)
    else:
        pytest.fail(f"backend on app-1 not OK on redis and postgres within 30 s: {health}")
    # The other app host's services are the gateway's and ops', not app-1's.
    other = deployed_lab.host("app-2").address
    sibling = ssh(deployed_lab, "app-1", f"timeout 2 bash -c '</dev/tcp/{other}/{backend['port']}'")
    assert sibling.returncode == DROPPED


def test_a_second_firewall_deploy_changes_nothing(deployed_lab: Topology) -> None:
    assert changed_operations(run_deploy("deploys/firewall.py")) == {}


def test_a_broken_ruleset_leaves_the_old_one_in_force(
    deployed_lab: Topology, drill_host: str, tmp_path: Path
) -> None:
    before = (live_comment(deployed_lab, drill_host), ruleset_sha(deployed_lab, drill_host))
    # The real deploy, its rendered ruleset broken by one rule nft refuses.
    broken = tmp_path / "broken_firewall.py"
    broken.write_text(
        "from seawall.components import firewall\n"
        "_ruleset = firewall.ruleset\n"
        "def _broken(*args):\n"
        "    content, comment = _ruleset(*args)\n"
        "    bad = 'policy drop;\\n\\t\\ttcp dport 1 ip saddr 10.77.0.300 accept'\n"
        "    return content.replace('policy drop;', bad), comment + '0'\n"
        "firewall.ruleset = _broken\n"
        "firewall.deploy_firewall()\n"
    )
    result = run_deploy(broken, "--limit", drill_host)
    assert result.returncode != 0
    # nft -c's complaint, naming the bad rule: the validator refused it.
    assert "10.77.0.300" in result.stdout + result.stderr
    after = (live_comment(deployed_lab, drill_host), ruleset_sha(deployed_lab, drill_host))
    assert after == before
    leftovers = ssh(deployed_lab, drill_host, f"ls {firewall.RULESET}.seawall-new 2>&1")
    assert leftovers.returncode != 0
    pending = ssh(deployed_lab, drill_host, f"systemctl is-active {ROLLBACK_UNIT}.timer")
    assert pending.stdout.strip() != "active"
    # And the host still answers what it should.
    assert connect(deployed_lab, "gw-1", drill_host, "node_exporter_port") == DROPPED
    assert ssh(deployed_lab, drill_host, "true").returncode == 0


def test_the_rollback_fires_when_the_deploy_never_confirms(
    deployed_lab: Topology, drill_host: str, tmp_path: Path
) -> None:
    old = live_comment(deployed_lab, drill_host)
    scratch = "/etc/seawall/firewall-drill.nft"
    # Load a valid, different ruleset through the operation, and never cancel.
    unconfirmed = tmp_path / "unconfirmed_firewall.py"
    unconfirmed.write_text(
        "from pyinfra import host, inventory\n"
        "from seawall.components import firewall\n"
        "from seawall.operations.files import validated_file\n"
        "from seawall.operations.firewall import ruleset_loaded\n"
        "data = {**host.data.dict(), 'firewall_admin_sources': "
        "[*host.data.get('firewall_admin_sources'), '192.0.2.1']}\n"
        "content, comment = firewall.ruleset(host.name, list(host.groups), data, "
        "list(inventory))\n"
        "validated_file(name='Install a drill ruleset', src=content, "
        f"dest={scratch!r}, validate='nft -c -f {{path}}')\n"
        "ruleset_loaded(name='Load it, and never confirm', "
        f"path={scratch!r}, comment=comment, rollback_seconds={DRILL_ROLLBACK_S}, "
        f"boot_file={firewall.RULESET!r})\n"
    )
    changed_operations(run_deploy(unconfirmed, "--limit", drill_host))
    loaded = live_comment(deployed_lab, drill_host)
    assert loaded != old
    pending = ssh(deployed_lab, drill_host, f"systemctl is-active {ROLLBACK_UNIT}.timer")
    assert pending.stdout.strip() == "active"
    deadline = time.monotonic() + DRILL_ROLLBACK_S + 20
    while time.monotonic() < deadline and live_comment(deployed_lab, drill_host) != old:
        time.sleep(1)
    assert live_comment(deployed_lab, drill_host) == old, "not rolled back in time"
    # The boot file holds the restored table too: a reboot keeps the old one.
    boot = ssh(deployed_lab, drill_host, f"cat {firewall.RULESET}", check=True).stdout
    assert boot.startswith("table inet seawall\ndelete table inet seawall\n")
    assert f'comment "{old}"' in boot
    ssh(deployed_lab, drill_host, f"rm -f {scratch}", check=True)

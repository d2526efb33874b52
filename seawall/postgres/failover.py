"""Patroni role changes from the controller, for drills and production alike (no lab code).

``wait_healthy`` waits for a leader and every replica streaming;
``switchover`` moves the leader with ``patronictl switchover`` on the leader,
as an operator would. The rolling restart (``seawall.restart``) and the
drills (``seawall.postgres.drill``) share them.
"""

import shlex
import time

from seawall.inventory import Topology
from seawall.names import patroni_config_path
from seawall.postgres.status import cluster, leader_of
from seawall.ssh import run as ssh_run

# How often the cluster is asked while waiting (s).
POLL = 0.2


def wait_healthy(topology: Topology, timeout: float) -> tuple[bool, str | None]:
    """Wait until every Postgres member runs, one leads, and replicas stream with a known lag.

    Returns (healthy, leader).
    """
    expected = {host.name for host in topology.group("postgres")}
    # In synchronous mode Patroni promotes only the synchronous standby: a
    # fault before a rejoined replica is synchronous again would (rightly)
    # leave the cluster without a leader. Wait for one.
    synchronous = bool(topology.group("postgres")[0].data.get("patroni_synchronous_mode"))
    started = time.monotonic()
    leader = None
    while time.monotonic() - started < timeout:
        members = cluster(topology).members
        leader = leader_of(members)
        running = {m["name"] for m in members if m.get("state") in ("running", "streaming")}
        replicas_streaming = all(
            isinstance(m.get("lag"), int) for m in members if m.get("name") != leader
        )
        has_sync = not synchronous or any(m.get("role") == "sync_standby" for m in members)
        if leader and running == expected and replicas_streaming and has_sync:
            return True, leader
        time.sleep(POLL)
    return False, leader


def wait_leader(topology: Topology, not_leader: str | None, timeout: float) -> str | None:
    """Wait for a running leader other than ``not_leader`` (any leader if None)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leader = leader_of(cluster(topology).members)
        if leader and leader != not_leader:
            return leader
        time.sleep(POLL)
    return None


def switchover(topology: Topology, leader: str, candidate: str, timeout: float) -> str | None:
    """Hand the leader role from ``leader`` to ``candidate``; return the new leader, if any.

    Runs ``patronictl switchover`` on the leader (Patroni checks the candidate
    is a healthy synchronous standby before it moves anything) and waits up
    to ``timeout`` seconds for a running leader other than ``leader``.

    Raises:
        SeawallError: patronictl refused or ran past its bound.
    """
    data = topology.host(leader).data
    ssh_run(
        topology,
        leader,
        f"patronictl -c {shlex.quote(patroni_config_path(data))} switchover "
        f"--leader {shlex.quote(leader)} --candidate {shlex.quote(candidate)} --force",
        timeout=max(timeout, 60),
        check=True,
    )
    return wait_leader(topology, leader, timeout)

"""Where the Postgres cluster stands: Patroni's leader, replica lag, etcd health.

Asks the services themselves (Patroni's REST API ``GET /cluster``, etcd's
``GET /health`` on its plain metrics listener: its client port wants a client
certificate) over the hosts' private addresses, never a file.
"""

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from seawall.inventory import Host, Topology
from seawall.netguard import require_lab_network
from seawall.settings import setting

HTTP_TIMEOUT = 2.0
LEADER_ROLES = ("leader", "master")
# The problem a cluster in maintenance mode (``patronictl pause``) is reported with.
PAUSED = "Patroni is paused (maintenance mode): no automatic failover"


def http_json(url: str, timeout: float = HTTP_TIMEOUT) -> tuple[int, Any]:
    """GET ``url``; return (status, parsed JSON or None). Status 0 means no answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    except (OSError, ValueError):
        return 0, None
    try:
        return status, json.loads(body or b"null")
    except ValueError:
        return status, None


@dataclass
class Member:
    name: str
    host: str
    role: str
    state: str
    timeline: int | None
    lag_bytes: int | None


@dataclass
class EtcdMember:
    name: str
    address: str
    healthy: bool


@dataclass
class PostgresStatus:
    """The Patroni cluster as its REST API reports it, and each etcd member's health."""

    leader: str | None
    members: list[Member] = field(default_factory=list)
    etcd: list[EtcdMember] = field(default_factory=list)
    source: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def replicas(self) -> list[Member]:
        return [m for m in self.members if m.role in ("replica", "sync_standby")]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def to_text(self) -> str:
        from seawall.output import table

        rows = [
            (
                m.name,
                m.host,
                m.role,
                m.state,
                m.timeline,
                "-" if m.lag_bytes is None else m.lag_bytes,
            )
            for m in self.members
        ]
        lines = [table(["member", "host", "role", "state", "tl", "lag bytes"], rows)]
        lines.append(
            "etcd: "
            + ", ".join(f"{e.name} {'healthy' if e.healthy else 'UNHEALTHY'}" for e in self.etcd)
        )
        lines += [f"problem: {p}" for p in self.problems]
        return "\n".join(lines)


class ClusterView(NamedTuple):
    """The cluster as one member's Patroni reports it, and who holds the leader lock now.

    ``paused``: that member's Patroni is in maintenance mode (``patronictl
    pause``): it fails nothing over.
    """

    source: str | None
    members: list[dict[str, Any]]
    primaries: list[str]
    paused: bool = False


def _ask(host: Host) -> tuple[int, Any, int]:
    base = f"http://{host.address}:{host.data['patroni_rest_port']}"
    status, body = http_json(f"{base}/cluster")
    primary = http_json(f"{base}/primary")[0] if status == 200 else 0
    return status, body, primary


def cluster(topology: Topology) -> ClusterView:
    """Return the cluster as the member holding the leader lock sees it.

    Every member is asked, not the first that answers: a leader cut off from
    etcd demotes itself but keeps serving its last view, in which it still
    leads, long after the others elected a new leader (seen on the lab for a
    whole partition). Only a member whose ``/primary`` answers 200 holds the
    lock now (the check HAProxy routes by), so its view wins; with no such
    member nobody leads, and a leader named in the view left is marked
    ``unconfirmed``.
    """
    hosts = topology.group("postgres")
    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        answers = list(zip(hosts, pool.map(_ask, hosts), strict=True))
    views = [
        (host.name, list(body.get("members", [])), primary == 200, body.get("pause") is True)
        for host, (status, body, primary) in answers
        if status == 200 and isinstance(body, dict)
    ]
    primaries = [name for name, _, primary, _ in views if primary]
    for name, members, primary, paused in views:
        if primary:
            return ClusterView(name, members, primaries, paused)
    if not views:
        return ClusterView(None, [], [])
    name, members, _, paused = views[0]
    unconfirmed = [
        {**m, "state": "unconfirmed"} if m.get("role") in LEADER_ROLES else m for m in members
    ]
    return ClusterView(name, unconfirmed, [], paused)


def etcd_health_url(host: Host) -> str:
    """Return etcd's ``GET /health`` on ``host``'s plain metrics listener (no certificate)."""
    return f"http://{host.address}:{setting(host.data, 'etcd_metrics_port')}/health"


def leader_of(members: list[dict[str, Any]]) -> str | None:
    for member in members:
        if member.get("role") in LEADER_ROLES and member.get("state") == "running":
            return str(member["name"])
    return None


def postgres_status(topology: Topology) -> PostgresStatus:
    """Report Patroni's leader, each member's role, state and lag, and etcd's health.

    Raises:
        SeawallError: on a lab inventory whose bridge is missing.
    """
    require_lab_network(topology)
    source, raw, primaries, paused = cluster(topology)
    members = [
        Member(
            name=str(m.get("name")),
            host=str(m.get("host")),
            role=str(m.get("role")),
            state=str(m.get("state")),
            timeline=m.get("timeline"),
            lag_bytes=m.get("lag") if isinstance(m.get("lag"), int) else None,
        )
        for m in raw
    ]
    report = PostgresStatus(leader=leader_of(raw), members=members, source=source)
    if source is None:
        report.problems.append("no Patroni REST API answered")
    elif report.leader is None:
        report.problems.append("the cluster has no running leader")
    if len(primaries) > 1:
        report.problems.append(f"more than one member says it is the primary: {primaries}")
    if paused:
        # Postgres serves, but a lost leader is never replaced: flagged until
        # resumed (the deploy resumes a pause of its own, docs/security.md).
        report.problems.append(PAUSED)
    expected = {host.name for host in topology.group("postgres")}
    running = {m.name for m in members if m.state in ("running", "streaming")}
    for name in sorted(expected - running):
        report.problems.append(f"{name}: not a running cluster member")
    for m in report.replicas:
        limit = topology.host(m.name).data.get("patroni_maximum_lag_on_failover")
        if m.lag_bytes is not None and isinstance(limit, int) and m.lag_bytes > limit:
            report.problems.append(f"{m.name}: {m.lag_bytes} bytes behind (limit {limit})")
    for host in topology.group("etcd"):
        url = etcd_health_url(host)
        status, body = http_json(url)
        healthy = status == 200 and isinstance(body, dict) and body.get("health") == "true"
        report.etcd.append(EtcdMember(host.name, host.address, healthy))
        if not healthy:
            report.problems.append(f"{host.name}: etcd member unhealthy")
    return report

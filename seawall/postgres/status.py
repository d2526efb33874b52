"""Where the Postgres cluster stands: Patroni's leader, replica lag, etcd health.

Asks the services themselves (Patroni's REST API ``GET /cluster``, etcd's
``GET /health``) over the hosts' private addresses, never a file.
"""

import json
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any

from seawall.inventory import Topology

HTTP_TIMEOUT = 2.0


def require_lab_network(topology: Topology) -> None:
    """Send lab traffic only once the lab's own bridge is there (no-op for other inventories).

    Raises:
        SeawallError: the lab's bridge is missing.
    """
    if topology.hosts and "lab" in topology.hosts[0].groups:
        from seawall.lab.config import lab_config
        from seawall.lab.network import require_bridge

        require_bridge(lab_config(topology))


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


def _dash(value: Any) -> Any:
    return "-" if value is None else value


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


def cluster(topology: Topology) -> tuple[str | None, list[dict[str, Any]]]:
    """Return (member asked, members) from the first Postgres host whose Patroni answers."""
    for host in topology.group("postgres"):
        url = f"http://{host.address}:{host.data['patroni_rest_port']}/cluster"
        status, body = http_json(url)
        if status == 200 and isinstance(body, dict):
            return host.name, list(body.get("members", []))
    return None, []


def leader_of(members: list[dict[str, Any]]) -> str | None:
    for member in members:
        if member.get("role") in ("leader", "master") and member.get("state") == "running":
            return str(member["name"])
    return None


def postgres_status(topology: Topology) -> PostgresStatus:
    """Report Patroni's leader, each member's role, state and lag, and etcd's health.

    Raises:
        SeawallError: on a lab inventory whose bridge is missing.
    """
    require_lab_network(topology)
    source, raw = cluster(topology)
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
    expected = {host.name for host in topology.group("postgres")}
    running = {m.name for m in members if m.state in ("running", "streaming")}
    for name in sorted(expected - running):
        report.problems.append(f"{name}: not a running cluster member")
    for m in report.replicas:
        limit = topology.host(m.name).data.get("patroni_maximum_lag_on_failover")
        if m.lag_bytes is not None and isinstance(limit, int) and m.lag_bytes > limit:
            report.problems.append(f"{m.name}: {m.lag_bytes} bytes behind (limit {limit})")
    for host in topology.group("etcd"):
        url = f"http://{host.address}:{host.data['etcd_client_port']}/health"
        status, body = http_json(url)
        healthy = status == 200 and isinstance(body, dict) and body.get("health") == "true"
        report.etcd.append(EtcdMember(host.name, host.address, healthy))
        if not healthy:
            report.problems.append(f"{host.name}: etcd member unhealthy")
    return report

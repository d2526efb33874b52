"""Promises that span hosts, asked of the services themselves and pinned on one host each.

Redis replication and Sentinel agreement come from ``seawall status``'s
:func:`redis_status`, Patroni and etcd from :func:`postgres_status`, every
service's ``/health`` from ``seawall health``'s :func:`collect`. Each finding
names the host it is about: the replica that is not replicating, the Sentinel
that names another master, the member without etcd health.
"""

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from seawall.health_report import HealthSummary
from seawall.inventory import Host, Topology
from seawall.postgres.status import LEADER_ROLES, PAUSED, PostgresStatus
from seawall.redis.topology import RedisStatus
from seawall.verify.report import Check

# Seconds one gateway request may take.
HTTP_TIMEOUT = 3.0

# Replica states Patroni reports for a member that follows the leader.
_FOLLOWING = ("running", "streaming")

Findings = dict[str, list[Check]]


def _add(findings: Findings, host: str, check: Check) -> None:
    findings.setdefault(host, []).append(check)


def failed_everywhere(hosts: list[Host], name: str, error: BaseException) -> Findings:
    """Pin a collector that could not run at all on every host it is about."""
    detail = f"could not ask: {type(error).__name__}: {error}"[:300]
    return {host.name: [Check(name, False, detail)] for host in hosts}


def redis_findings(topology: Topology, status: RedisStatus) -> Findings:
    """One ``redis replication`` check per Redis host, one ``sentinel agreement`` per Sentinel."""
    findings: Findings = {}
    by_address = {node.address: node.host for node in status.nodes}
    master = status.master
    master_name = by_address.get(master or "", master or "none")
    connected = sum(
        1
        for n in status.nodes
        if n.role == "replica" and n.master == master and n.link == "connected"
    )
    for node in status.nodes:
        name = "redis replication"
        if master is None:
            check = Check(name, False, f"{node.role}; no master named by a majority of Sentinels")
        elif node.role == "master":
            ok = node.address == master
            detail = (
                f"master, {connected}/{len(status.nodes) - 1} replicas connected"
                if ok
                else f"master, but the Sentinels name {master_name} ({master})"
            )
            check = Check(name, ok and connected == len(status.nodes) - 1, detail)
        elif node.role == "replica":
            follows = by_address.get(node.master or "", node.master or "-")
            ok = node.master == master and node.link == "connected"
            lag = "-" if node.lag_bytes is None else f"{node.lag_bytes} bytes"
            detail = f"replica of {follows}, link {node.link}, lag {lag}"
            if node.master != master:
                detail += f" (the Sentinels name {master_name})"
            check = Check(name, ok, detail)
        else:
            check = Check(name, False, node.role)
        _add(findings, node.host, check)
    for view in status.sentinels:
        if view.master is None:
            check = Check("sentinel agreement", False, f"no answer: {view.error}")
        else:
            says = by_address.get(view.master, view.master)
            ok = master is not None and view.master == master
            detail = f"names {says} ({view.master})"
            if not ok:
                detail += f"; the majority names {master_name}"
            check = Check("sentinel agreement", ok, detail)
        _add(findings, view.host, check)
    return findings


def postgres_findings(topology: Topology, status: PostgresStatus) -> Findings:
    """One ``patroni`` check per Postgres host, one ``etcd health`` per etcd member.

    The leader's check holds when it runs and (in synchronous mode) has a
    synchronous standby; a standby's when it follows, within the lag Patroni
    allows a failover candidate.
    """
    findings: Findings = {}
    members = {m.name: m for m in status.members}
    sync_standbys = [m.name for m in status.members if m.role == "sync_standby"]
    cluster_problem = next(
        (p for p in status.problems if p.startswith(("no Patroni", "the cluster has no"))), None
    )
    for host in topology.group("postgres"):
        member = members.get(host.name)
        name = "patroni"
        if cluster_problem:
            check = Check(name, False, cluster_problem)
        elif member is None:
            check = Check(name, False, "not a member of the cluster Patroni reports")
        elif member.role in LEADER_ROLES:
            problems = []
            if member.name != status.leader or member.state != "running":
                problems.append(f"state {member.state}")
            if host.data.get("patroni_synchronous_mode") and len(sync_standbys) != 1:
                problems.append(f"synchronous standbys {sync_standbys or 'none'} (want one)")
            if PAUSED in status.problems:
                # Postgres serves, but nothing would replace this leader if it failed.
                problems.append("paused: no automatic failover")
            detail = f"leader, {member.state}, timeline {member.timeline}"
            detail += f", sync standby {', '.join(sync_standbys) or 'none'}"
            check = Check(name, not problems, "; ".join([detail, *problems]))
        else:
            limit = host.data.get("patroni_maximum_lag_on_failover")
            lag = member.lag_bytes
            problems = []
            if member.state not in _FOLLOWING:
                problems.append(f"state {member.state}")
            if lag is None or (isinstance(limit, int) and lag > limit):
                problems.append(f"lag {lag} bytes (limit {limit})")
            if member.role not in ("replica", "sync_standby"):
                problems.append(f"role {member.role}")
            detail = f"{member.role}, {member.state}, lag {lag} bytes of {limit}"
            check = Check(name, not problems, "; ".join([detail, *problems]))
        _add(findings, host.name, check)
    many = [p for p in status.problems if p.startswith("more than one member says")]
    for primary in _many_primaries(status):
        _add(findings, primary, Check("patroni single primary", False, many[0]))
    for etcd in status.etcd:
        detail = "GET /health: true" if etcd.healthy else "GET /health: not healthy or no answer"
        _add(findings, etcd.name, Check("etcd health", etcd.healthy, detail))
    return findings


def _many_primaries(status: PostgresStatus) -> list[str]:
    for problem in status.problems:
        if problem.startswith("more than one member says it is the primary"):
            return [m.name for m in status.members if m.name in problem]
    return []


def leader_of(topology: Topology, status: PostgresStatus | None) -> tuple[str, str] | None:
    """Return (host, address) of Patroni's running leader, or None."""
    if status is None or status.leader is None:
        return None
    for host in topology.group("postgres"):
        if host.name == status.leader:
            return host.name, host.address
    member = next(m for m in status.members if m.name == status.leader)
    return member.name, member.host


def health_findings(summary: HealthSummary) -> Findings:
    """One ``service NAME`` check per service per app host: its /health answers, not DOWN."""
    findings: Findings = {}
    for s in summary.services:
        deps = ", ".join(f"{n} {st}" for n, st in sorted(s.dependencies.items()))
        time = "" if s.latency_ms is None else f", {s.latency_ms:.0f} ms"
        detail = (
            f"{s.status}{time}"
            + (f"; {deps}" if deps else "")
            + (f"; {s.error}" if s.error else "")
        )
        _add(findings, s.host, Check(f"service {s.service}", not s.down, detail))
    return findings


@dataclass(frozen=True)
class RouteTarget:
    service: str
    route: str
    url: str
    # True when the route proxies to the service's /health, whose body names it.
    names_service: bool


def route_targets(host: Host) -> list[RouteTarget]:
    """Return the request that exercises each service's route on gateway ``host``.

    A prefix route (``/api/execution/``) is stripped before proxying, so
    ``/api/execution/health`` reaches the service's /health; an exact route
    reaches its ``upstream_path``. Plain HTTP on the private address when the
    gateway has an internal listener, else HTTPS.
    """
    data = host.data
    health = str(data["services_health_path"])
    internal = data.get("gateway_internal_http_port")
    if internal is not None:
        base = f"http://{host.address}:{internal}"
    else:
        base = f"https://{host.address}:{data['gateway_https_port']}"
    targets = []
    for service in data["services"]:
        route = str(service["route"])
        if route.endswith("/"):
            path, names = route + health.lstrip("/"), True
        else:
            path, names = route, service.get("upstream_path") == health
        targets.append(RouteTarget(str(service["name"]), route, base + path, names))
    return targets


def ask_route(target: RouteTarget) -> Check:
    """GET one route with our own X-Request-ID: it must come back, from the right service."""
    import ssl

    request_id = f"seawall-verify-{uuid.uuid4().hex[:12]}"
    request = urllib.request.Request(target.url, headers={"X-Request-ID": request_id})
    # The lab's certificate is self-signed; this is a reachability check, not a TLS one.
    context = ssl._create_unverified_context() if target.url.startswith("https") else None
    name = f"route {target.route}"
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT, context=context) as response:
            code, headers, raw = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        code, headers, raw = error.code, error.headers, error.read()
    except OSError as error:
        return Check(name, False, f"{target.url}: no answer ({error})"[:300])
    echoed = headers.get("X-Request-ID")
    body: Any
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    answered_by = body.get("service") if isinstance(body, Mapping) else None
    problems = []
    if echoed != request_id:
        problems.append(f"X-Request-ID {echoed!r} (sent {request_id})")
    if target.names_service and answered_by != target.service:
        problems.append(f"answered by {answered_by!r}, not {target.service}")
    elif not target.names_service and code >= 500:
        problems.append("server error")
    detail = f"HTTP {code} from {answered_by or '-'}, X-Request-ID passed through"
    if problems:
        return Check(name, False, "; ".join(problems) + f" (HTTP {code})")
    return Check(name, True, detail)


def gateway_findings(topology: Topology) -> Findings:
    """One ``route ROUTE`` check per service route per gateway host."""
    from concurrent.futures import ThreadPoolExecutor

    work = [(host.name, t) for host in topology.group("gateway") for t in route_targets(host)]
    findings: Findings = {}
    if not work:
        return findings
    with ThreadPoolExecutor(max_workers=min(16, len(work))) as pool:
        checks = list(pool.map(lambda item: ask_route(item[1]), work))
    for (host, _), check in zip(work, checks, strict=True):
        _add(findings, host, check)
    return findings

"""Ask every host, over SSH and through its services, whether each promise of the deploys holds.

Per host, in one SSH session (and one admin login): the common baseline
(:mod:`seawall.verify.common`), the firewall (:mod:`seawall.verify.firewall`:
its boot unit, its live table against the rendered ruleset, no rollback left
armed), and what its roles promise
(:mod:`seawall.verify.roles`): units running and enabled, timers scheduled,
listening sockets exactly as configured, on app hosts PgBouncer and HAProxy
reaching the Postgres leader, and on the first ops host the drift cron and the
rolling restart's last results (:mod:`seawall.verify.ops`). Beside those
sessions, at the same time, the cluster-wide promises
(:mod:`seawall.verify.cluster`): Redis replication and Sentinel agreement,
Patroni's leader and synchronous standby with lag, etcd health, every
service's /health and every gateway route, each pinned on the host it is about.

A pass with a failure is run again ``CONFIRM_AFTER_S`` later, and a check fails
only if it failed in both: one slow probe on a loaded host is not an outage.
"""

import subprocess
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from seawall import ssh
from seawall.errors import SeawallError
from seawall.health_report import collect
from seawall.inventory import Host, Topology
from seawall.netguard import require_lab_network
from seawall.postgres.status import PostgresStatus, postgres_status
from seawall.redis.topology import redis_status
from seawall.verify import cluster, common, firewall, ops, roles
from seawall.verify.common import CHECKS, judge, parse_sshd_t
from seawall.verify.probe import Probe, parse_probes, probe_of, probe_script
from seawall.verify.report import Check, HostReport, VerifyReport, confirmed

__all__ = [
    "CHECKS",
    "Check",
    "HostReport",
    "Probe",
    "VerifyReport",
    "judge",
    "parse_probes",
    "parse_sshd_t",
    "probe_script",
    "verify",
]

# Seconds one host's probe session may take.
TIMEOUT = 30
# Seconds before a pass with a failure is run again to confirm it.
CONFIRM_AFTER_S = 2.0

T = TypeVar("T")


def host_script(topology: Topology, host: Host) -> str:
    """Return the one script run on ``host``: common probes, the firewall's, its roles', ops'."""
    return probe_script(
        common.probe_commands(host)
        | firewall.probe_commands(topology, host)
        | roles.probe_commands(topology, host)
        | ops.probe_commands(topology, host)
    )


def _ssh(
    topology: Topology, host: Host, command: str, user: str | None = None
) -> subprocess.CompletedProcess[str]:
    # As ssh.run, but without its bridge check on every call: verify() checks the
    # lab's network once, before any of its 2 x hosts sessions (each check is two
    # `ip` processes, on cores every session shares).
    args = [*ssh.ssh_args(topology, host.name, user), command]
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise SeawallError(f"{host.name}: no answer over SSH within {TIMEOUT} s") from None


def _probe(topology: Topology, host: Host) -> dict[str, Probe]:
    result = _ssh(topology, host, host_script(topology, host))
    # ssh itself exits 255 when it cannot connect or log in.
    if result.returncode == 255:
        raise SeawallError(f"{host.name}: unreachable over SSH: {result.stderr.strip()}")
    return parse_probes(result.stdout)


def _admin(topology: Topology, host: Host) -> Probe:
    login = _ssh(topology, host, "sudo -n true && id -un", user=str(host.data["admin_user"]))
    return Probe(login.returncode, (login.stdout + login.stderr).strip())


def host_checks(
    topology: Topology,
    host: Host,
    probes: dict[str, Probe],
    admin: Probe,
    leader: tuple[str, str] | None,
) -> list[Check]:
    """Judge one host's probe session: common checks, firewall, units, timers, listeners, route.

    On the first ops host also its drift cron's and rolling restart's last runs.
    """
    want = roles.expected(topology, host)
    checks = list(judge(host.data, list(host.roles), probes, admin))
    checks += firewall.judge(firewall.intended(topology, host), probes)
    checks += roles.judge_units(want, probe_of(probes, "units"))
    checks.append(
        roles.judge_listeners(want, probe_of(probes, "listeners"), probe_of(probes, "sshd"))
    )
    if "app" in host.roles and roles.postgres_client_service(host.data) is not None:
        checks += roles.judge_pg_route(probe_of(probes, "pg_route"), leader)
    if ops.controls(topology, host):
        checks += ops.judge(host.data, probes)
    return checks


def _collected(
    future: Future[T] | None,
    hosts: list[Host],
    name: str,
    findings: Callable[[T], cluster.Findings],
) -> cluster.Findings:
    if future is None:
        return {}
    try:
        return findings(future.result())
    except SeawallError:
        raise
    except Exception as error:  # one collector failing must not hide the others' findings
        return cluster.failed_everywhere(hosts, name, error)


def verify(topology: Topology, confirm_after_s: float = CONFIRM_AFTER_S) -> VerifyReport:
    """Run every check on every host; confirm any failure with a second pass.

    Raises:
        SeawallError: a host cannot be reached as its configured SSH user, a lab
            inventory's bridge is missing, or secrets the checks need are missing.
    """
    first = _verify_once(topology)
    if first.ok or confirm_after_s <= 0:
        return first
    time.sleep(confirm_after_s)
    return confirmed(first, _verify_once(topology), confirm_after_s)


def _verify_once(topology: Topology) -> VerifyReport:
    """Run every check on every host: host sessions and cluster checks all at once."""
    require_lab_network(topology)
    hosts = topology.hosts
    with ThreadPoolExecutor(max_workers=2 * len(hosts) + 4) as pool:
        sessions = [pool.submit(_probe, topology, host) for host in hosts]
        admins = [pool.submit(_admin, topology, host) for host in hosts]
        has = {role: bool(topology.group(role)) for role in ("redis", "postgres", "app")}
        redis = pool.submit(redis_status, topology) if has["redis"] else None
        pg = pool.submit(postgres_status, topology) if has["postgres"] else None
        health = pool.submit(collect, topology) if has["app"] else None
        gateway = pool.submit(cluster.gateway_findings, topology)
        findings: list[cluster.Findings] = [
            _collected(
                redis,
                topology.group("redis") + topology.group("sentinel"),
                "redis replication",
                lambda status: cluster.redis_findings(topology, status),
            ),
            _collected(
                pg,
                topology.group("postgres") + topology.group("etcd"),
                "patroni",
                lambda status: cluster.postgres_findings(topology, status),
            ),
            _collected(health, topology.group("app"), "services", cluster.health_findings),
            _collected(gateway, topology.group("gateway"), "routes", lambda f: f),
        ]
        pg_status: PostgresStatus | None = None
        if pg is not None and pg.exception() is None:
            pg_status = pg.result()
        leader = cluster.leader_of(topology, pg_status)
        reports = []
        for host, session, admin in zip(hosts, sessions, admins, strict=True):
            checks = host_checks(topology, host, session.result(), admin.result(), leader)
            for found in findings:
                checks += found.get(host.name, [])
            reports.append(HostReport(host.name, tuple(checks)))
    return VerifyReport(tuple(reports))


def verify_settled(
    topology: Topology,
    within: float,
    every: float = 5.0,
    log: Callable[[str], None] = lambda _: None,
) -> VerifyReport:
    """Verify, and while something fails ask again every ``every`` s for up to ``within`` s.

    Right after a deploy, services restarted a moment ago may still report DOWN:
    this waits for the site to settle, bounded, and returns the last answer.

    Raises:
        SeawallError: as :func:`verify`.
    """
    give_up = time.monotonic() + within
    while True:
        report = verify(topology)
        if report.ok or time.monotonic() + every > give_up:
            return report
        failing = ", ".join(f"{host} {check}" for host, check in report.failures()[:5])
        log(f"not settled yet ({failing}); asking again in {every:.0f} s")
        time.sleep(every)

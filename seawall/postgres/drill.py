"""`seawall drill postgres`: real faults on the lab's Postgres cluster, a bounded writer.

Each scenario starts from a healthy cluster, runs a writer on an app host that
commits numbered rows through the real path (PgBouncer -> HAProxy -> leader),
injects one fault, waits for Patroni to recover, undoes the fault and waits
until every member is back as a running member (an old leader as a replica,
through pg_rewind). The report gives, per scenario, the write outage (longest
gap between two acknowledged commits), committed rows lost (acknowledged but
not in the table afterwards), unexpected or missing failovers, and how long
the old leader took to rejoin.

Faults go through ``seawall.lab.faults`` and hold the lab's data-fault lock
(``/tmp/seawall-data-faults.lock``) so two drills never overlap.
"""

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import Any

from seawall.errors import SeawallError
from seawall.inventory import Topology
from seawall.lab import faults, lab_config
from seawall.names import data_dir
from seawall.netguard import require_lab_network
from seawall.plot import Mark, Timeline, longest_gap, recovery_mark, timeline

# Moved below the drills so production code (the rolling restart) uses them too.
from seawall.postgres.failover import switchover, wait_leader
from seawall.postgres.failover import wait_healthy as wait_healthy
from seawall.postgres.remote_writer import Writer, writer_settings
from seawall.postgres.remote_writer import role_password as role_password
from seawall.ssh import run as ssh_run

Log = Callable[[str], None]

LOCK_FILE = faults.DATA_FAULT_LOCK
# Scenario -> whether Patroni must move the leader to another member.
SCENARIOS: dict[str, bool] = {
    "switchover": True,
    "leader-process-kill": False,
    "leader-host-crash": True,
    "leader-partitioned": True,
    "replica-down": False,
    "etcd-member-down": False,
}


@dataclass
class DrillResult:
    """One scenario's outcome."""

    scenario: str
    old_leader: str
    new_leader: str | None
    committed: int
    lost: int
    failed_attempts: int
    write_outage_s: float
    outage_limit_s: float | None
    recovered_s: float | None
    rejoin_s: float | None
    problems: list[str] = field(default_factory=list)
    timeline: Timeline | None = None  # for --plot; judged by nothing

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


@dataclass
class DrillReport:
    results: list[DrillResult]

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.results)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "results": [result.to_json() for result in self.results]}

    def to_text(self) -> str:
        from seawall.output import table

        rows = [
            (
                r.scenario,
                f"{r.old_leader}->{r.new_leader or '?'}",
                f"{r.write_outage_s:.2f}",
                "-" if r.outage_limit_s is None else r.outage_limit_s,
                r.committed,
                r.lost,
                "-" if r.rejoin_s is None else f"{r.rejoin_s:.1f}",
                "ok" if r.ok else "FAIL",
            )
            for r in self.results
        ]
        headers = ["scenario", "leader", "outage s", "limit s", "committed", "lost", "rejoin s", ""]
        lines = [table(headers, rows)]
        for r in self.results:
            lines += [f"{r.scenario}: {problem}" for problem in r.problems]
        return "\n".join(lines)


def data_fault_lock(log: Log) -> AbstractContextManager[None]:
    """Hold the lab-wide lock that keeps two data-host drills from overlapping."""
    return faults.exclusive_lock(
        LOCK_FILE, on_wait=lambda: log(f"waiting for {LOCK_FILE} (another drill is running)")
    )


def _read_present(topology: Topology, host: str, run: str) -> set[int]:
    reader = Writer(topology, host, writer_settings(topology, "read", run, 60))
    return set(reader.stop()["present"])


def write_outage(acks: list[list[float]], since: float) -> float:
    """Return the longest gap between consecutive acknowledged commits that ends after ``since``."""
    times = sorted(t for _, t in acks)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False) if b >= since]
    return max(gaps, default=0.0)


def run_scenario(
    topology: Topology, scenario: str, log: Log, rejoin_timeout: float = 150
) -> DrillResult:
    """Run one scenario; the caller holds the data-fault lock."""
    config = lab_config(topology)
    healthy, leader = wait_healthy(topology, 120)
    if not healthy or leader is None:
        raise SeawallError("the Postgres cluster is not healthy before the drill: see status")
    members = [host.name for host in topology.group("postgres")]
    replica = next(name for name in members if name != leader)
    data = topology.host(leader).data
    limits = dict(data.get("postgres_drill_outage_limits") or {})
    writer_host = topology.group("app")[0].name
    run = f"{scenario}-{int(time.time())}"
    expect_failover = SCENARIOS[scenario]

    log(f"{scenario}: leader {leader}, writer on {writer_host}")
    begun = time.time()  # the timeline's zero; the writer's acks carry the same clock
    heal_at: float | None = None  # when the fault was undone (wall clock), if it is
    writer = Writer(topology, writer_host, writer_settings(topology, "write", run, 240))
    problems: list[str] = []
    try:
        time.sleep(3)  # a baseline of commits before the fault
        fault_at = time.time()
        started = time.monotonic()
        new_leader: str | None = leader
        if scenario == "switchover":
            new_leader = switchover(topology, leader, replica, 30)
        elif scenario == "leader-process-kill":
            ssh_run(
                topology, leader, f"kill -9 $(head -1 {data_dir(data)}/postmaster.pid)", check=True
            )
            time.sleep(1)
            new_leader = wait_leader(topology, None, 60)
        elif scenario == "leader-host-crash":
            faults.crash(config, leader)
            new_leader = wait_leader(topology, leader, 90)
        elif scenario == "leader-partitioned":
            faults.isolate(config, leader)
            new_leader = wait_leader(topology, leader, 90)
        elif scenario == "replica-down":
            faults.crash(config, replica)
            time.sleep(12)  # the leader drops its synchronous standby and goes on
            new_leader = wait_leader(topology, None, 30)
        elif scenario == "etcd-member-down":
            ssh_run(topology, leader, "systemctl stop etcd", check=True)
            time.sleep(10)
            new_leader = wait_leader(topology, None, 30)
        recovered_s = time.monotonic() - started if new_leader else None
        log(f"{scenario}: leader now {new_leader} after {recovered_s or 0:.1f} s")
        time.sleep(3)  # commits through the recovered route
        # Undo the fault; the old leader must rejoin by itself.
        undo_started = time.monotonic()
        if scenario in ("leader-host-crash", "leader-partitioned", "replica-down"):
            heal_at = time.time()
            faults.restore(config)
        elif scenario == "etcd-member-down":
            heal_at = time.time()
            ssh_run(topology, leader, "systemctl start etcd", check=True)
        rejoined, _ = wait_healthy(topology, rejoin_timeout)
        rejoin_s = time.monotonic() - undo_started if rejoined else None
        if not rejoined:
            problems.append(f"the cluster was not whole again within {rejoin_timeout:.0f} s")
        time.sleep(2)
    finally:
        result = writer.stop()
    acks = result["acks"]
    present = _read_present(topology, writer_host, run)
    acked = {n for n, _ in acks}
    lost = len(acked - present)
    outage = write_outage(acks, fault_at)
    if not acks or max(t for _, t in acks) < fault_at:
        problems.append("no commit succeeded after the fault")
    if lost:
        problems.append(f"{lost} acknowledged commits are missing")
    if new_leader is None:
        problems.append("no running leader after the fault")
    elif expect_failover and new_leader == leader:
        problems.append("the leader did not move")
    elif not expect_failover and new_leader != leader:
        problems.append(f"unexpected failover to {new_leader}")
    limit = limits.get(scenario)
    if limit is not None and outage > float(limit):
        problems.append(f"write outage {outage:.2f} s over the {limit} s limit")
    return DrillResult(
        scenario=scenario,
        old_leader=leader,
        new_leader=new_leader,
        committed=len(acked),
        lost=lost,
        failed_attempts=len(result["errors"]),
        write_outage_s=round(outage, 3),
        outage_limit_s=limit,
        recovered_s=None if recovered_s is None else round(recovered_s, 2),
        rejoin_s=None if rejoin_s is None else round(rejoin_s, 2),
        problems=problems,
        timeline=_timeline(
            result,
            begun,
            fault_at,
            new_leader if new_leader != leader else None,
            recovered_s,
            heal_at,
        ),
    )


def _timeline(
    result: dict[str, Any],
    begun: float,
    fault_at: float,
    promoted: str | None,
    recovered_s: float | None,
    heal_at: float | None,
) -> Timeline:
    """The run for --plot: commits per bucket and its moments, from the writer's start.

    Detection is the writer's first failed commit after the fault (Patroni
    reports no such moment); promotion, when the new leader was first seen.
    """
    marks = [Mark(fault_at - begun, "fault")]
    failed = [error[1] for error in result["errors"] if error[1] >= fault_at]
    if failed:
        marks.append(Mark(min(failed) - begun, "detection", "the writer's first failed commit"))
    if promoted is not None and recovered_s is not None:
        marks.append(Mark(fault_at + recovered_s - begun, "promotion", f"{promoted} leads"))
    if heal_at is not None:
        marks.append(Mark(heal_at - begun, "heal", "fault undone"))
    times = [at for _, at in result["acks"]]
    marks += recovery_mark(longest_gap(times, since=fault_at), offset=begun)
    return timeline((at - begun for at in times), marks)


def drill_postgres(
    topology: Topology, scenarios: list[str] | None = None, log: Log = print
) -> DrillReport:
    """Run the given scenarios (all by default) on the lab, one after another.

    Raises:
        SeawallError: not a lab inventory, the lab is down, an unknown scenario,
            or the cluster is unhealthy before a scenario.
    """
    chosen = list(scenarios or SCENARIOS)
    unknown = [name for name in chosen if name not in SCENARIOS]
    if unknown:
        raise SeawallError(f"unknown scenario {', '.join(unknown)} (known: {', '.join(SCENARIOS)})")
    if not topology.hosts or "lab" not in topology.hosts[0].groups:
        raise SeawallError(f"{topology.path}: drills inject real faults: lab inventories only")
    require_lab_network(topology)
    results = []
    with data_fault_lock(log):
        for scenario in chosen:
            try:
                results.append(run_scenario(topology, scenario, log))
            finally:
                # Whatever happened, leave no fault behind for the next drill.
                faults.restore(lab_config(topology))
    return DrillReport(results)

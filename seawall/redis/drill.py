"""`seawall drill redis`: a real fault under a bounded writer, measured from the client's side.

The writer publishes numbered events through the runtime's EventPublisher
(majority Sentinel discovery, WAIT 1, disk spool), exactly as a service would.
Sentinel's own events (+odown, +switch-master) give the detection and
failover times. Afterwards the stream is read back from the new master: every
acknowledged event must be there, every spooled one too once replayed, and
none twice. Afterwards the Sentinels' journals give the number of
``+switch-master`` per fault: more than one is a failover storm, and fails the
run, as does a client write outage over the scenario's limit
(``sentinel_drill_outage_limits_s``).

Every run holds the lab's data-fault lock (``faults.DATA_FAULT_LOCK``), so it
never overlaps another session's drill or test, and undoes every fault in
``finally``.

Issue 15 scenarios cut every data host off the bridge at once:
``cut-heals-<N>s`` for N seconds, ``lagging-replica-then-cut`` after pausing
one replica's redis-server for 4 s so that it lags when the cut starts (the
LAB-NOTES sequence that lost acknowledged events).

Beyond single faults (issue 10):
- ``long-outage``: every data host cut for 60 s under load;
- ``disk-full``: the same cut for 10 s with the spool on a 64 KiB tmpfs, so it
  fills: publish() raises SpoolFullError (counted as refused: the caller was
  told), and nothing reported acked or spooled may go;
- ``writer-killed-mid-replay``: the writer is a separate process, SIGKILLed as
  soon as its replay reaches Redis after an 8 s cut; a second process opens
  the same spool and replays the rest;
- ``flapping-partition``: the current master cut from its peers three times;
- ``second-fault-during-failover``: the master host crashed, then 2 s later,
  while Sentinel is failing over, one replica's redis-server killed.
"""

import multiprocessing
import os
import random
import signal
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from typing import Any

from seawall.errors import SeawallError
from seawall.inventory import Topology
from seawall.lab import faults
from seawall.lab.config import LabConfig, lab_config
from seawall.local import run as run_local
from seawall.netguard import require_lab_network
from seawall.plot import Mark, Timeline, longest_gap, recovery_mark, timeline
from seawall.redis.client import redis_settings

# Moved below the drills so production code (the rolling restart) uses them too.
from seawall.redis.failover import switchover as switchover
from seawall.redis.failover import wait_healthy as wait_healthy
from seawall.redis.sentinel_log import count_switches
from seawall.redis.topology import redis_status
from seawall.runtime.reconnect import EventPublisher, MajorityClient, RedisSettings, connect
from seawall.runtime.spool import DiskSpool, SpoolFullError
from seawall.ssh import run as ssh

SINGLE_FAULTS = (
    "master-process-kill",
    "master-host-crash",
    "master-isolated",
    "master-partitioned-from-peers",
    "sentinel-down",
    "replica-down",
    "switchover",
)
# Issue 15: every data host cut off at once, for this many seconds.
CUTS = {"cut-heals-5s": 5.0, "cut-heals-9s": 9.0, "cut-heals-20s": 20.0}
LAGGING = "lagging-replica-then-cut"
# Issue 10: every data host cut for this long, for each of these.
OUTAGES = {"long-outage": 60.0, "disk-full": 10.0, "writer-killed-mid-replay": 8.0}
FLAPPING = "flapping-partition"
SECOND_FAULT = "second-fault-during-failover"
SCENARIOS = SINGLE_FAULTS + (LAGGING, *CUTS, *OUTAGES, FLAPPING, SECOND_FAULT)
# Scenarios whose master is expected to change, so the old one must rejoin. Not
# SECOND_FAULT: when the replica Sentinel picked dies, the failover can time
# out and the old master, healed, stays master (healthy_after still judges it).
FAILOVERS = (*(s for s in SINGLE_FAULTS if s.startswith("master")), "switchover")
# flapping-partition: cycles, each a cut of this long, one starting every FLAP_EVERY_S.
FLAP_CYCLES = 3
FLAP_CUT_S = 4.0
FLAP_EVERY_S = 12.0
# second-fault-during-failover: the replica's kill, this long after the master's crash
# (down-after 1.5 s + Sentinel's start delay: mid-election).
SECOND_FAULT_AFTER_S = 2.0
# disk-full: the spool's filesystem; about 400 spooled events fit.
DISK_FULL_BYTES = 64 * 1024
# writer-killed-mid-replay: its writer offers this many events/s (a longer replay),
# and is killed once a random 1..KILL_WITHIN_EVENTS of its spooled events reached Redis.
WRITER_KILL_RATE = 500.0
KILL_WITHIN_EVENTS = 2000
# ... and the longest wait for its replay to reach Redis after the heal.
KILL_WAIT_S = 60.0
# lagging-replica-then-cut: replica paused this long, then every data host cut this long.
LAG_PAUSE_S = 4.0
LAG_CUT_S = 9.0
# Longest wait for another session's drill or test to let go of the data-fault lock.
LOCK_WAIT_S = 3600.0
# After the last heal the writer goes on this long (failover, replay, re-publish).
AFTER_HEAL_S = 8.0
# second-fault-during-failover: longer, so that the writer sees writes
# acknowledged again and its outage is measured, not cut off by its end.
SECOND_FAULT_AFTER_HEAL_S = 20.0

Log = Callable[[str], None]


@dataclass
class DrillResult:
    scenario: str
    old_master: str
    new_master: str | None
    detect_s: float | None  # fault -> first +odown from a Sentinel
    new_master_s: float | None  # fault -> first +switch-master
    outage_s: float  # longest time with no write acknowledged
    writes: int
    acked: int
    spooled: int
    lost_acked: int
    lost_spooled: int
    duplicated: int
    old_master_rejoined: bool | None  # None where the master is not touched
    healthy_after: bool
    notes: list[str] = field(default_factory=list)
    outage_limit_s: float | None = None  # sentinel_drill_outage_limits_s; None: no limit
    switch_masters: int | None = 0  # +switch-master for this fault; None: logs unread
    republished: int = 0  # acked events the publisher re-sent to a new master
    refused: int = 0  # publish() raised SpoolFullError: the caller knows it was not taken
    publish_p99_ms: float | None = None  # publish() latency, fsync included
    faults: int = 1  # separate faults, each allowed one master switch
    timeline: Timeline | None = None  # for --plot; judged by nothing

    @property
    def storm(self) -> bool:
        """More master switches than faults (or no way to tell)."""
        return self.switch_masters is None or self.switch_masters > self.faults

    @property
    def within_limit(self) -> bool:
        return self.outage_limit_s is None or self.outage_s <= self.outage_limit_s

    @property
    def ok(self) -> bool:
        return (
            self.lost_acked == 0
            and self.lost_spooled == 0
            and self.duplicated == 0
            and self.old_master_rejoined is not False
            and self.healthy_after
            and self.within_limit
            and not self.storm
        )

    def to_json(self) -> dict:
        return {**asdict(self), "ok": self.ok}


class _SentinelEvents:
    """Listen to every Sentinel's event channels; keep the first time of each event."""

    CHANNELS = ("+sdown", "+odown", "+switch-master")

    def __init__(self, settings: RedisSettings) -> None:
        self.first: dict[str, float] = {}
        self.counts: Counter[str] = Counter()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._listen, args=(host, port, settings), daemon=True)
            for host, port in settings.sentinels
        ]
        for thread in self._threads:
            thread.start()

    def _listen(self, host: str, port: int, settings: RedisSettings) -> None:
        conn = connect(host, port, settings.sentinel_password, 0.5)
        try:
            pubsub = conn.pubsub()
            pubsub.subscribe(*self.CHANNELS)
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=0.2)
                if not message or message["type"] != "message":
                    continue
                channel = message["channel"].decode()
                data = message["data"].decode()
                # +sdown/+odown also fire for replicas and Sentinels: keep the master's.
                if channel == "+switch-master" or data.startswith("master "):
                    self.first.setdefault(channel, time.monotonic())
                    self.counts[channel] += 1
        except Exception:  # this Sentinel went away with its host: the others report
            return
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2)


def false_failovers(topology: Topology, seconds: float = 60) -> dict[str, int]:
    """Watch a quiet cluster for ``seconds``; count Sentinel's down/failover events for its master.

    Any count above zero means the timing is too tight for this machine.
    """
    require_lab_network(topology)
    wait_healthy(topology)
    settings = redis_settings(topology)
    events = _SentinelEvents(settings)
    time.sleep(seconds)
    events.stop()
    return {channel: events.counts.get(channel, 0) for channel in _SentinelEvents.CHANNELS}


def _host_of(topology: Topology, address: str) -> str:
    for host in topology.group("redis"):
        if address.startswith(host.address + ":"):
            return host.name
    raise SeawallError(f"{address} is not a Redis host of {topology.path}")


# One flock per process: a bench holding the lock around several runs (and a
# Sentinel setting it changes) calls run_drill, which takes it again.
_lock_depth = 0
_lock_guard = threading.Lock()


@contextmanager
def data_fault_lock(log: Log = lambda _: None) -> Iterator[None]:
    """Hold the lab-wide data-fault lock (re-entrant within this process)."""
    global _lock_depth
    with _lock_guard:
        outer = _lock_depth == 0
        _lock_depth += 1
    try:
        if outer:
            # Polled, never a blocking flock: under pyinfra's gevent patching (the
            # lab tests) a blocking flock would stall the whole process.
            with faults.exclusive_lock(
                faults.DATA_FAULT_LOCK,
                timeout=LOCK_WAIT_S,
                on_wait=lambda: log(f"waiting for {faults.DATA_FAULT_LOCK} (another drill)"),
            ):
                yield
        else:
            yield
    finally:
        with _lock_guard:
            _lock_depth -= 1


def _signal_redis(config: LabConfig, host: str, signal: str) -> None:
    # Through lxc-attach, not SSH: the host may be cut off the bridge.
    run_local(
        [
            "lxc-attach",
            "-n",
            config.host(host).container,
            "--",
            "systemctl",
            "kill",
            "-s",
            signal,
            "redis-server",
        ],
        timeout=20,
    )


Step = tuple[float, str, Callable[[], object]]  # (seconds after start, what, action)


def _plan(
    topology: Topology,
    config: LabConfig,
    scenario: str,
    master: str,
    replica: str,
    fault_at: float,
    heal_after: float,
) -> list[Step]:
    """Return the scenario's timed steps, the last one its heal."""
    data_hosts = [h.name for h in topology.group("redis")]
    peers = [name for name in data_hosts if name != master]

    def on(host: str, command: str) -> Callable[[], object]:
        return lambda: ssh(topology, host, command, check=True)

    def partition_from_peers() -> None:
        for peer in peers:
            faults.partition(config, master, peer)

    def cut_all() -> None:
        for name in data_hosts:
            faults.cut(config, name)

    def restore() -> None:
        faults.restore(config)

    def partition_current_master() -> None:
        # The master of the moment: after the first cycle it may have moved.
        status = redis_status(topology, timeout=0.5)
        current = _host_of(topology, status.master) if status.master else master
        for peer in data_hosts:
            if peer != current:
                faults.partition(config, current, peer)

    def nothing() -> None:
        # systemd restarts a killed Redis (redis_restart_sec); a switchover needs no heal.
        return None

    cuts = {**CUTS, **OUTAGES}
    if scenario in cuts:
        return [
            (fault_at, "cut every data host", cut_all),
            (fault_at + cuts[scenario], "heal", restore),
        ]
    if scenario == FLAPPING:
        steps: list[Step] = []
        for cycle in range(FLAP_CYCLES):
            at = fault_at + cycle * FLAP_EVERY_S
            what = f"cut the master from its peers ({cycle + 1}/{FLAP_CYCLES})"
            steps += [(at, what, partition_current_master), (at + FLAP_CUT_S, "heal", restore)]
        return steps
    if scenario == SECOND_FAULT:
        return [
            (fault_at, f"crash {master}", lambda: faults.crash(config, master)),
            (
                fault_at + SECOND_FAULT_AFTER_S,
                f"SIGKILL {replica}'s redis-server",
                lambda: _signal_redis(config, replica, "KILL"),
            ),
            (fault_at + heal_after, "heal", restore),
        ]
    if scenario == LAGGING:
        cut_at = fault_at + LAG_PAUSE_S
        return [
            (
                fault_at,
                f"SIGSTOP {replica}'s redis-server",
                lambda: _signal_redis(config, replica, "STOP"),
            ),
            (cut_at, "cut every data host", cut_all),
            (
                cut_at + 1,
                f"SIGCONT {replica}'s redis-server",
                lambda: _signal_redis(config, replica, "CONT"),
            ),
            (cut_at + LAG_CUT_S, "heal", restore),
        ]
    options: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
        "master-process-kill": (on(master, "systemctl kill -s KILL redis-server"), nothing),
        "master-host-crash": (lambda: faults.crash(config, master), restore),
        "master-isolated": (lambda: faults.cut(config, master), restore),
        "master-partitioned-from-peers": (partition_from_peers, restore),
        "sentinel-down": (
            on(replica, "systemctl stop redis-sentinel"),
            on(replica, "systemctl start redis-sentinel"),
        ),
        "replica-down": (
            on(replica, "systemctl stop redis-server"),
            on(replica, "systemctl start redis-server"),
        ),
        "switchover": (lambda: switchover(topology), nothing),
    }
    inject, heal = options[scenario]
    return [(fault_at, "fault", inject), (fault_at + heal_after, "heal", heal)]


def _run_steps(
    steps: list[Step], started: float, errors: list[str], log: Log, done: threading.Event
) -> threading.Thread:
    """Run the steps in order, each at its time after ``started``, in one background thread."""

    def run() -> None:
        try:
            for at, what, action in steps:
                pause = started + at - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                log(f"  +{time.monotonic() - started:.1f} s: {what}")
                try:
                    action()
                except Exception as error:  # reported in the result, never silently
                    errors.append(f"{what}: {type(error).__name__}: {error}")
        finally:
            done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def sentinel_switches(
    topology: Topology, since: float
) -> tuple[int | None, dict[str, int], list[str]]:
    """Count ``+switch-master`` in every Sentinel's journal since ``since`` (wall clock).

    Returns (switches over all Sentinels or None if a journal was unreadable,
    per-Sentinel counts, problems).
    """
    logs: dict[str, str] = {}
    problems = []
    for host in topology.group("sentinel"):
        try:
            result = ssh(
                topology,
                host.name,
                f"journalctl -u redis-sentinel --since @{int(since)} -o cat --no-pager",
                check=True,
            )
            logs[host.name] = result.stdout
        except Exception as error:  # one unreadable journal makes the count unknown
            problems.append(f"{host.name}: Sentinel journal unreadable: {error}")
    per = {name: count_switches({name: text}) for name, text in logs.items()}
    if problems:
        return None, per, problems
    return count_switches(logs), per, problems


def run_drill(
    topology: Topology,
    scenario: str,
    *,
    rate: float = 100,
    duration: float = 20,
    fault_at: float = 3,
    heal_after: float = 8,
    log: Log = lambda _: None,
) -> DrillResult:
    """Run one scenario on the lab and measure it, holding the data-fault lock.

    Scenarios beyond single faults lengthen ``duration`` so the writer runs ``AFTER_HEAL_S``
    past the heal.

    Raises:
        SeawallError: the lab is not up, or Redis is unhealthy before the drill.
    """
    if scenario not in SCENARIOS:
        raise SeawallError(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")
    require_lab_network(topology)
    config = lab_config(topology)
    with data_fault_lock(log):
        try:
            return _run_drill(topology, config, scenario, rate, duration, fault_at, heal_after, log)
        finally:
            # Whatever happened, leave no fault behind (a paused Redis included).
            for host in topology.group("redis") if scenario == LAGGING else []:
                # A host whose Redis is not running has nothing to resume.
                with suppress(SeawallError):
                    _signal_redis(config, host.name, "CONT")
            faults.restore(config)


@dataclass
class _Tally:
    """What the writer was told for each event."""

    acked: dict[str, float] = field(default_factory=dict)  # event -> when (monotonic)
    spooled: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)  # SpoolFullError: the caller knows
    spooled_at: list[float] = field(default_factory=list)  # when (monotonic), for the timeline
    latencies: list[float] = field(default_factory=list)
    # A killed writer's outage ends when its replay, resumed, reaches Redis.
    resumed_at: float | None = None
    # When the writer stopped: a writer still spooling then was in an outage up to it.
    ended_at: float | None = None
    # The fault, where the writer may have had nothing acknowledged before it.
    fault_at: float | None = None

    def add(self, outcome: str, event_id: str, at: float, latency: float) -> None:
        if outcome == "acked":
            self.acked[event_id] = at
        elif outcome == "spooled":
            self.spooled.add(event_id)
            self.spooled_at.append(at)
        else:
            self.refused.add(event_id)
        self.latencies.append(latency)

    @classmethod
    def read(cls, path: str) -> "_Tally":
        """The tally a writer process left in ``path`` (a torn last line is skipped)."""
        tally = cls()
        with open(path) as lines:
            for line in lines:
                parts = line.split()
                if len(parts) == 4 and line.endswith("\n"):
                    tally.add(parts[0], parts[1], float(parts[2]), float(parts[3]))
        return tally


def _write(
    publisher: EventPublisher,
    stream: str,
    run_id: str,
    rate: float,
    duration: float,
    started: float,
    record: Callable[[str, str, float, float], None],
) -> str | None:
    """Offer ``rate`` events/s for ``duration`` s (bounded in time too); report each outcome.

    Returns why the writer stopped early, or None.
    """
    for number in range(int(rate * duration)):
        now = time.monotonic() - started
        if now > duration * 3:
            return f"writer stopped after {now:.0f} s at event {number}"
        event_id = f"{run_id}-{number}"
        before = time.monotonic()
        try:
            result = publisher.publish(stream, {"n": number}, event_id=event_id, maxlen=10_000_000)
            outcome = result.status
        except SpoolFullError:
            outcome = "refused"
        after = time.monotonic()
        record(outcome, event_id, after, after - before)
        pause = started + (number + 1) / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    return None


def _writer_process(
    settings: RedisSettings,
    spool_dir: str,
    stream: str,
    run_id: str,
    rate: float,
    duration: float,
    started: float,
    record_path: str,
) -> None:
    """writer-killed-mid-replay's writer: a process of its own, to be SIGKILLed."""
    fd = os.open(record_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def record(outcome: str, event_id: str, at: float, latency: float) -> None:
        # One write per line: whatever the kill interrupts is a whole line or none.
        os.write(fd, f"{outcome} {event_id} {at:.6f} {latency:.6f}\n".encode())

    publisher = EventPublisher(MajorityClient(settings), DiskSpool(spool_dir))
    _write(publisher, stream, run_id, rate, duration, started, record)
    publisher.close()


def kill_threshold(spooled: int, rng: random.Random | None = None) -> int:
    """How many replayed events to wait for before the kill: always mid-replay.

    At most half of what is spooled (a writer slow to start spools less), and
    at most KILL_WITHIN_EVENTS.
    """
    return (rng or random).randint(1, max(1, min(KILL_WITHIN_EVENTS, spooled // 2)))


def _kill_when_replay_starts(
    client: MajorityClient, stream: str, record_path: str, process: Any, errors: list[str]
) -> float | None:
    """SIGKILL the writer process as soon as its replay reaches Redis (bounded: KILL_WAIT_S).

    Returns when the replay was seen reaching Redis: the end of the writer's outage.
    """
    at_heal = _Tally.read(record_path)
    before_cut = len(at_heal.acked)
    # Anywhere in the first few replay batches, not always after the first event.
    kill_after = kill_threshold(len(at_heal.spooled))
    deadline = time.monotonic() + KILL_WAIT_S
    while process.is_alive() and time.monotonic() < deadline:
        with suppress(Exception):  # mid-failover: ask again
            length = int(client.call(lambda m: m.xlen(stream), deadline=1))
            if length - before_cut >= kill_after:
                seen = time.monotonic()
                try:
                    os.kill(process.pid, signal.SIGKILL)
                except ProcessLookupError:  # it had just ended: no kill this run
                    break
                process.join(timeout=10)
                errors.append(f"writer killed with {length - before_cut} spooled events replayed")
                return seen
        time.sleep(0.01)
    errors.append(
        f"the writer was not killed mid-replay (replay not seen within {KILL_WAIT_S:.0f} s)"
    )
    if process.is_alive():
        with suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.join(timeout=10)
    return None


@contextmanager
def _spool_directory(scenario: str) -> Iterator[str]:
    """A fresh spool directory: on a tmpfs of DISK_FULL_BYTES for disk-full."""
    directory = tempfile.mkdtemp(prefix="seawall-drill-")
    if scenario != "disk-full":
        yield directory
        return
    run_local(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_FULL_BYTES},mode=0700", "tmpfs", directory]
    )
    try:
        yield directory
    finally:
        run_local(["umount", directory])


def _run_drill(
    topology: Topology,
    config: LabConfig,
    scenario: str,
    rate: float,
    duration: float,
    fault_at: float,
    heal_after: float,
    log: Log,
) -> DrillResult:
    before = wait_healthy(topology)
    assert before.master is not None
    old_master = _host_of(topology, before.master)
    replicas = [n.host for n in before.nodes if n.role == "replica"]
    replica = random.choice(replicas) if scenario in (LAGGING, SECOND_FAULT) else replicas[0]
    steps = _plan(topology, config, scenario, old_master, replica, fault_at, heal_after)
    if scenario not in SINGLE_FAULTS:
        tail = SECOND_FAULT_AFTER_HEAL_S if scenario == SECOND_FAULT else AFTER_HEAL_S
        duration = max(duration, steps[-1][0] + tail)
    if scenario == "writer-killed-mid-replay":
        rate = max(rate, WRITER_KILL_RATE)
    limits = topology.value("sentinel_drill_outage_limits_s") or {}
    with _spool_directory(scenario) as spool_dir:
        return _measure(
            topology, scenario, old_master, steps, rate, duration, limits, spool_dir, log
        )


def _measure(
    topology: Topology,
    scenario: str,
    old_master: str,
    steps: list[Step],
    rate: float,
    duration: float,
    limits: dict[str, float],
    spool_dir: str,
    log: Log,
) -> DrillResult:
    settings = redis_settings(topology)
    run_id = uuid.uuid4().hex[:8]
    stream = f"seawall:drill:{run_id}"
    client = MajorityClient(settings)
    since = time.time() - 1  # the Sentinels' journals are read from here
    events = _SentinelEvents(settings)
    errors: list[str] = []
    tally = _Tally()
    total = int(rate * duration)
    log(f"{scenario}: master {old_master}; writing {total} events over {duration:.0f} s")
    started = time.monotonic()
    started_wall = time.time()  # stream entry ids carry the master's wall clock (ms)
    steps_done = threading.Event()
    runner = _run_steps(steps, started, errors, log, steps_done)
    fault_time = started + steps[0][0]
    publisher: EventPublisher | None = None
    try:
        if scenario == "writer-killed-mid-replay":
            record_path = os.path.join(tempfile.mkdtemp(prefix="seawall-drill-"), "tally")
            # It writes on past the planned end until killed (the killer's 60 s
            # bound): a failover slow after the heal must not see it end first.
            process = multiprocessing.get_context("spawn").Process(
                target=_writer_process,
                args=(
                    settings,
                    spool_dir,
                    stream,
                    run_id,
                    rate,
                    duration + KILL_WAIT_S,
                    started,
                    record_path,
                ),
                daemon=True,
            )
            process.start()
            steps_done.wait(timeout=steps[-1][0] + 180)
            replayed_at = _kill_when_replay_starts(client, stream, record_path, process, errors)
            tally = _Tally.read(record_path)
            tally.resumed_at = replayed_at
            # The process may start writing only after the cut began (its
            # interpreter starts slowly): the outage runs from the fault at least.
            tally.fault_at = fault_time
            # The second process: this one, on the spool the dead writer held.
            publisher = EventPublisher(MajorityClient(settings), DiskSpool(spool_dir))
        else:
            publisher = EventPublisher(MajorityClient(settings), DiskSpool(spool_dir))
            stopped = _write(publisher, stream, run_id, rate, duration, started, tally.add)
            tally.ended_at = time.monotonic()
            if stopped:
                errors.append(stopped)
        runner.join(timeout=180)
        if not steps_done.is_set():
            errors.append("the fault steps did not finish within 180 s")

        # Settle (bounded), then replay what the spool holds (bounded).
        after_ok = True
        try:
            after = wait_healthy(topology, timeout=90)
        except SeawallError as error:
            errors.append(str(error))
            after_ok = False
            after = redis_status(topology)
        spool = publisher.spool
        assert spool is not None
        drain_deadline = time.monotonic() + 60
        while not spool.is_empty() and time.monotonic() < drain_deadline:
            publisher.drain(budget_seconds=5)
            time.sleep(0.2)
        if not spool.is_empty():
            errors.append("the spool was not drained within 60 s")
        # One more event, as a service would send: on a new master this is
        # where the publisher checks the master's mark and re-publishes.
        publisher.publish(stream, {"n": -1}, event_id=f"{run_id}-end", maxlen=10_000_000)
    finally:
        events.stop()
        if publisher is not None:
            publisher.close()
            if publisher.spool is not None:
                publisher.spool.close()  # its lock and files
    rejoined: bool | None = None
    if scenario in FAILOVERS:
        node = next(n for n in after.nodes if n.host == old_master)
        rejoined = node.role == "replica" and node.link == "connected"
    switches, per_sentinel, problems = sentinel_switches(topology, since)
    errors += problems
    allowed = FLAP_CYCLES if scenario == FLAPPING else 1
    if switches is not None and switches > allowed:
        errors.append(
            f"failover storm: {switches} +switch-master for {allowed} fault(s) {per_sentinel}"
        )

    entries: Any = client.call(lambda m: m.xrange(stream), deadline=30)
    seen = Counter(fields[b"event_id"].decode() for _, fields in entries)
    client.call(lambda m: m.delete(stream), deadline=30)
    client.close()
    points = [tally.resumed_at, tally.ended_at, tally.fault_at]
    acked_at = sorted([*tally.acked.values(), *filter(None, points)])
    gaps = [b - a for a, b in zip(acked_at, acked_at[1:], strict=False)]
    latencies = sorted(tally.latencies)
    if publisher.stats.lost_beyond_window:
        errors.append(f"publisher: {publisher.stats.lost_beyond_window} lost beyond its window")
    return DrillResult(
        scenario=scenario,
        old_master=old_master,
        new_master=after.master_host,
        detect_s=_since(events.first.get("+odown"), fault_time),
        new_master_s=_since(events.first.get("+switch-master"), fault_time),
        outage_s=round(max(gaps, default=0.0), 3),
        writes=len(tally.acked) + len(tally.spooled) + len(tally.refused),
        acked=len(tally.acked),
        spooled=len(tally.spooled),
        lost_acked=sum(1 for event in tally.acked if event not in seen),
        lost_spooled=sum(1 for event in tally.spooled if event not in seen),
        duplicated=sum(1 for count in seen.values() if count > 1),
        old_master_rejoined=rejoined,
        healthy_after=after_ok,
        notes=errors,
        outage_limit_s=limits.get(scenario),
        switch_masters=switches,
        republished=publisher.stats.republished,
        refused=len(tally.refused),
        publish_p99_ms=(
            round(latencies[int(len(latencies) * 0.99)] * 1000, 2) if latencies else None
        ),
        faults=allowed,
        timeline=_timeline(tally, steps, events, entries, started, started_wall),
    )


def _timeline(
    tally: _Tally,
    steps: list[Step],
    events: _SentinelEvents,
    entries: Any,
    started: float,
    started_wall: float,
) -> Timeline:
    """The run for --plot: acks, spooled and replayed events per bucket, and its moments."""
    marks = [Mark(at, "heal" if what == "heal" else "fault", what) for at, what, _ in steps]
    for channel, kind in (("+odown", "detection"), ("+switch-master", "promotion")):
        if channel in events.first:
            marks.append(Mark(events.first[channel] - started, kind, f"first {channel}"))
    # The gap outage_s measures; a writer that stopped while still spooling never recovered.
    points = [tally.resumed_at, tally.fault_at, *tally.acked.values()]
    gap = longest_gap([p for p in (*points, tally.ended_at) if p is not None])
    if gap is not None and gap[1] != tally.ended_at:
        marks += recovery_mark(gap, offset=started)
    # A spooled event reached Redis when its entry was added: the entry id's milliseconds.
    replayed: dict[str, float] = {}
    for entry_id, fields in entries:
        event = fields[b"event_id"].decode()
        if event in tally.spooled and event not in replayed:
            replayed[event] = int(entry_id.split(b"-")[0]) / 1000 - started_wall
    return timeline(
        (at - started for at in tally.acked.values()),
        marks,
        spooled=(at - started for at in tally.spooled_at),
        replayed=replayed.values(),
    )


def _since(moment: float | None, fault_time: float | None) -> float | None:
    if moment is None or fault_time is None:
        return None
    return round(moment - fault_time, 3)


@dataclass
class DrillReport:
    """Every run of `seawall drill redis`: ok when every run is."""

    results: list[DrillResult]

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.results)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "results": [result.to_json() for result in self.results]}

    def to_text(self) -> str:
        """One table, one row per run, then each run's notes."""
        from seawall.output import table

        def seconds(value: float | None) -> str:
            return "-" if value is None else f"{value:.2f}"

        rows = [
            (
                r.scenario,
                f"{r.old_master}->{r.new_master}",
                seconds(r.detect_s),
                seconds(r.new_master_s),
                seconds(r.outage_s),
                seconds(r.outage_limit_s),
                "?" if r.switch_masters is None else r.switch_masters,
                r.acked,
                r.spooled,
                r.refused,
                r.lost_acked + r.lost_spooled,
                r.duplicated,
                {True: "yes", False: "NO", None: "-"}[r.old_master_rejoined],
                "ok" if r.ok else "FAIL",
            )
            for r in self.results
        ]
        headers = [
            "scenario",
            "master",
            "detect s",
            "new master s",
            "outage s",
            "limit s",
            "switches",
            "acked",
            "spooled",
            "refused",
            "lost",
            "dup",
            "rejoined",
            "result",
        ]
        notes = [f"{r.scenario}: {note}" for r in self.results for note in r.notes]
        return table(headers, rows) + ("\n" + "\n".join(notes) if notes else "")

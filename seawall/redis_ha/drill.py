"""`seawall drill redis`: a real fault under a bounded writer, measured from the client's side.

The writer publishes numbered events through the runtime's EventPublisher
(majority Sentinel discovery, WAIT 1, disk spool), exactly as a service would.
Sentinel's own events (+odown, +switch-master) give the detection and
failover times. Afterwards the stream is read back from the new master: every
acknowledged event must be there, every spooled one too once replayed, and
none twice.
"""

import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from redis import exceptions as redis_exceptions

from seawall.errors import SeawallError
from seawall.inventory import Topology
from seawall.lab import faults
from seawall.lab.config import LabConfig, lab_config
from seawall.lab.network import require_lab_network
from seawall.lab.ssh import run as ssh
from seawall.redis_ha.client import redis_settings
from seawall.redis_ha.topology import RedisStatus, redis_status
from seawall.runtime.reconnect import EventPublisher, MajorityClient, RedisSettings, connect
from seawall.runtime.spool import DiskSpool

SCENARIOS = (
    "master-process-kill",
    "master-host-crash",
    "master-isolated",
    "master-partitioned-from-peers",
    "sentinel-down",
    "replica-down",
    "switchover",
)

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

    @property
    def ok(self) -> bool:
        return (
            self.lost_acked == 0
            and self.lost_spooled == 0
            and self.duplicated == 0
            and self.old_master_rejoined is not False
            and self.healthy_after
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


def wait_healthy(topology: Topology, timeout: float = 60) -> RedisStatus:
    """Wait until one master, all replicas connected to it and all Sentinels agree.

    Raises:
        SeawallError: not healthy within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        status = redis_status(topology, timeout=0.5)
        if status.ok:
            return status
        if time.monotonic() > deadline:
            raise SeawallError(f"Redis is not healthy after {timeout:.0f} s: {status.to_json()}")
        time.sleep(0.5)


def switchover(topology: Topology, timeout: float = 30) -> str:
    """Move the master role to a replica without losing an acknowledged write.

    Writes on the old master are paused first, so nothing lands there between
    the promotion and the old master's demotion; paused clients then get
    READONLY and follow the Sentinels to the new master.

    Raises:
        SeawallError: the cluster is unhealthy, or no new master within ``timeout``.
    """
    status = wait_healthy(topology, timeout=timeout)
    assert status.master is not None
    settings = redis_settings(topology)
    host, port = status.master.split(":")

    def on_old_master(*command: object) -> Any:
        # Redis drops its clients' connections when Sentinel demotes it: a
        # command cut off that way is sent once more on a fresh connection
        # (CLIENT PAUSE/UNPAUSE and ROLE act on the server, not the connection).
        for attempt in (1, 2):
            conn = connect(host, int(port), settings.password, 2)
            try:
                return conn.execute_command(*command)
            except (OSError, redis_exceptions.ConnectionError):  # OSError covers ConnectionError
                if attempt == 2:
                    raise
            finally:
                conn.close()

    on_old_master("CLIENT", "PAUSE", int(timeout * 1000), "WRITE")
    try:
        sentinel_host, sentinel_port = settings.sentinels[0]
        sentinel = connect(sentinel_host, sentinel_port, settings.sentinel_password, 2)
        try:
            sentinel.execute_command("SENTINEL", "FAILOVER", settings.master_name)
        finally:
            sentinel.close()
        deadline = time.monotonic() + timeout
        client = MajorityClient(settings)
        try:
            while True:
                try:
                    new = client.discover()
                    if f"{new[0]}:{new[1]}" != status.master:
                        break
                except Exception:  # mid-failover the majority may not name anyone yet
                    pass
                if time.monotonic() > deadline:
                    raise SeawallError(f"no new master within {timeout:.0f} s of SENTINEL FAILOVER")
                time.sleep(0.05)
            # Sentinel demotes the old master right after; unpause only then.
            while time.monotonic() < deadline:
                if on_old_master("ROLE")[0] in (b"slave", "slave"):
                    break
                time.sleep(0.05)
        finally:
            client.close()
    finally:
        on_old_master("CLIENT", "UNPAUSE")
    return f"{new[0]}:{new[1]}"


def _host_of(topology: Topology, address: str) -> str:
    for host in topology.group("redis"):
        if address.startswith(host.address + ":"):
            return host.name
    raise SeawallError(f"{address} is not a Redis host of {topology.path}")


def _fault(
    topology: Topology, config: LabConfig, scenario: str, master: str, replica: str
) -> tuple[Callable[[], object], Callable[[], object]]:
    """Return (inject, heal) for a scenario."""
    peers = [h.name for h in topology.group("redis") if h.name != master]

    def on(host: str, command: str) -> Callable[[], object]:
        return lambda: ssh(topology, host, command, check=True)

    def partition_from_peers() -> None:
        for peer in peers:
            faults.partition(config, master, peer)

    def restore() -> None:
        faults.restore(config)

    def nothing() -> None:
        # systemd restarts a killed Redis (redis_restart_sec); a switchover needs no heal.
        return None

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
    return options[scenario]


def _in_background(action: Callable[[], object], errors: list[str]) -> threading.Thread:
    def wrapped() -> None:
        try:
            action()
        except Exception as error:  # reported in the result, never silently
            errors.append(f"{type(error).__name__}: {error}")

    thread = threading.Thread(target=wrapped, daemon=True)
    thread.start()
    return thread


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
    """Run one scenario on the lab and measure it.

    Raises:
        SeawallError: the lab is not up, or Redis is unhealthy before the drill.
    """
    if scenario not in SCENARIOS:
        raise SeawallError(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")
    require_lab_network(topology)
    config = lab_config(topology)
    before = wait_healthy(topology)
    assert before.master is not None
    old_master = _host_of(topology, before.master)
    replica = next(n.host for n in before.nodes if n.role == "replica")
    inject, heal = _fault(topology, config, scenario, old_master, replica)

    settings = redis_settings(topology)
    run_id = uuid.uuid4().hex[:8]
    stream = f"seawall:drill:{run_id}"
    client = MajorityClient(settings)
    spool_dir = tempfile.mkdtemp(prefix="seawall-drill-")
    publisher = EventPublisher(client, DiskSpool(spool_dir), dedup_ttl_seconds=3600)
    events = _SentinelEvents(settings)
    errors: list[str] = []
    threads: list[threading.Thread] = []
    acked_at: list[float] = []
    acked, spooled = set(), set()
    total = int(rate * duration)
    log(f"{scenario}: master {old_master}; writing {total} events over {duration:.0f} s")
    started = time.monotonic()
    fault_time = heal_time = None
    for number in range(total):
        now = time.monotonic() - started
        if fault_time is None and now >= fault_at:
            fault_time = time.monotonic()
            threads.append(_in_background(inject, errors))
        if heal_time is None and fault_time and now >= fault_at + heal_after:
            heal_time = time.monotonic()
            threads.append(_in_background(heal, errors))
        if now > duration * 3:  # bounded in time as well as in count
            errors.append(f"writer stopped after {now:.0f} s at event {number}")
            break
        event_id = f"{run_id}-{number}"
        result = publisher.publish(stream, {"n": number}, event_id=event_id, maxlen=10_000_000)
        if result.status == "acked":
            acked.add(event_id)
            acked_at.append(time.monotonic())
        else:
            spooled.add(event_id)
        pause = started + (number + 1) / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    if heal_time is None:
        threads.append(_in_background(heal, errors))
    for thread in threads:
        thread.join(timeout=180)
    # Replay what the spool holds, bounded.
    drain_deadline = time.monotonic() + 60
    while not publisher.spool.is_empty() and time.monotonic() < drain_deadline:  # type: ignore[union-attr]
        publisher.drain(budget_seconds=5)
        time.sleep(0.2)
    events.stop()

    after_ok = True
    try:
        after = wait_healthy(topology, timeout=90)
    except SeawallError as error:
        errors.append(str(error))
        after_ok = False
        after = redis_status(topology)
    rejoined: bool | None = None
    if scenario.startswith("master") or scenario == "switchover":
        node = next(n for n in after.nodes if n.host == old_master)
        rejoined = node.role == "replica" and node.link == "connected"

    entries: Any = client.call(lambda m: m.xrange(stream), deadline=30)
    seen = Counter(fields[b"event_id"].decode() for _, fields in entries)
    client.call(lambda m: m.delete(stream), deadline=30)
    client.close()
    gaps = [b - a for a, b in zip(acked_at, acked_at[1:], strict=False)]
    return DrillResult(
        scenario=scenario,
        old_master=old_master,
        new_master=after.master_host,
        detect_s=_since(events.first.get("+odown"), fault_time),
        new_master_s=_since(events.first.get("+switch-master"), fault_time),
        outage_s=round(max(gaps, default=0.0), 3),
        writes=len(acked) + len(spooled),
        acked=len(acked),
        spooled=len(spooled),
        lost_acked=sum(1 for event in acked if event not in seen),
        lost_spooled=sum(1 for event in spooled if event not in seen),
        duplicated=sum(1 for count in seen.values() if count > 1),
        old_master_rejoined=rejoined,
        healthy_after=after_ok,
        notes=errors,
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
                r.acked,
                r.spooled,
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
            "acked",
            "spooled",
            "lost",
            "dup",
            "rejoined",
            "result",
        ]
        notes = [f"{r.scenario}: {note}" for r in self.results for note in r.notes]
        return table(headers, rows) + ("\n" + "\n".join(notes) if notes else "")

"""EventPublisher and MajorityClient against real redis-server processes on loopback."""

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from seawall.runtime import jsonlog
from seawall.runtime.reconnect import (
    _PUBLISH_LUA,
    EventPublisher,
    EventRejectedError,
    MajorityClient,
    RedisUnavailableError,
)
from seawall.runtime.spool import DiskSpool, SpoolFullError
from tests.unit.redis_server import (
    RedisServer,
    Servers,
    copy_keys,
    majority_client,
    promote,
    servers,
    wait_for_link,
)

__all__ = ["servers"]  # the fixture, imported for pytest

STREAM = "seawall:test:events"
ROOT = Path(__file__).resolve().parents[2]


def entries(server: RedisServer, stream: str = STREAM) -> list[str]:
    return [f[b"event_id"].decode() for _, f in server.client().xrange(stream)]


def until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.02)


@pytest.fixture
def publishers() -> Iterator[list[EventPublisher]]:
    made: list[EventPublisher] = []
    yield made
    for publisher in made:
        publisher.close()
        publisher.client.close()


def publisher_for(
    made: list[EventPublisher], sentinel: RedisServer, spool: DiskSpool | None, **options: object
) -> EventPublisher:
    defaults: dict[str, object] = {
        "publish_deadline": 2.0,
        "probe_interval": 0.2,
        "check_interval": 0.2,
    }
    defaults.update(options)
    publisher = EventPublisher(majority_client(sentinel), spool, **defaults)  # type: ignore[arg-type]
    made.append(publisher)
    return publisher


def test_majority_client_follows_what_most_sentinels_say(servers: Servers) -> None:
    right, wrong = servers.redis(), servers.redis()
    sentinels = [servers.sentinel(right), servers.sentinel(wrong), servers.sentinel(right)]
    client = majority_client(sentinels[0])
    majority = MajorityClient(
        client.settings.__class__(
            sentinels=tuple(("127.0.0.1", s.port) for s in sentinels), master_name="seawall"
        )
    )
    try:
        assert majority.discover() == ("127.0.0.1", right.port)
        assert majority.call(lambda conn: conn.set("k", "v"))
        assert right.client().get("k") == b"v"
        assert majority.connections == 1
    finally:
        majority.close()
        client.close()


def test_an_event_is_acknowledged_by_a_replica_and_stored_once(
    servers: Servers, publishers: list[EventPublisher], tmp_path: Path
) -> None:
    master, replica = servers.pair()
    publisher = publisher_for(publishers, servers.sentinel(master), DiskSpool(tmp_path))
    result = publisher.publish(STREAM, {"n": 1}, event_id="a")
    assert result.status == "acked"
    # The stream id, unless a slow WAIT made it a retry (then the id is the first try's).
    ((stream_id, _),) = master.client().xrange(STREAM)
    assert result.stream_id in (stream_id.decode(), None)
    assert entries(master) == ["a"]
    until(lambda: entries(replica) == ["a"], 5, "the replica has the event")
    assert master.client().hgetall("seawall:producers") == {
        publisher.producer_id.encode(): b"%d" % publisher._last_seq
    }


def test_a_replay_after_a_crash_stores_nothing_twice(
    servers: Servers, publishers: list[EventPublisher], tmp_path: Path
) -> None:
    master, _ = servers.pair()
    sentinel = servers.sentinel(master)
    spool = DiskSpool(tmp_path / "spool")
    for number in range(50):
        spool.append(f"r{number}", STREAM, {"n": number}, 100_000)
    spool.close()
    # The state a crash before the position was recorded leaves: all 50
    # pending again, for a new process with no memory of what was sent.
    shutil.copytree(tmp_path / "spool", tmp_path / "crashed")
    publisher = publisher_for(publishers, sentinel, DiskSpool(tmp_path / "spool"), background=False)
    assert publisher.drain(budget_seconds=5) == 50
    again = DiskSpool(tmp_path / "crashed")
    assert len(again) == 50
    second = publisher_for(publishers, sentinel, again, background=False)
    second.drain(budget_seconds=5)
    assert entries(master) == [f"r{n}" for n in range(50)]
    assert again.is_empty()


def test_outage_spools_fast_and_the_drainer_replays_in_order(
    servers: Servers, publishers: list[EventPublisher], tmp_path: Path
) -> None:
    master, replica = servers.pair()
    publisher = publisher_for(publishers, servers.sentinel(master), DiskSpool(tmp_path))
    statuses = [publisher.publish(STREAM, {"n": n}, event_id=f"e{n}").status for n in range(5)]
    assert statuses == ["acked"] * 5
    publisher.publish_deadline = 0.5
    master.stop()
    # The first event finds Redis gone (it pays the publish deadline); after
    # that the breaker is open and every publish is a disk append.
    assert publisher.publish(STREAM, {"n": 5}, event_id="e5").status == "spooled"
    times = []
    for number in range(6, 106):
        started = time.perf_counter()
        assert publisher.publish(STREAM, {"n": number}, event_id=f"e{number}").status == "spooled"
        times.append(time.perf_counter() - started)
    assert sorted(times)[-2] < 0.1, "a publish waited on Redis while it was known away"
    # It comes back empty (a crash without persistence, the worst case): the
    # replica resyncs from it and drops e0-e4 too. The publisher re-publishes
    # them from its window of acknowledged events, then replays the spool.
    master.start()
    wait_for_link(master, 1)
    # No new event: the background thread alone replays the spool.
    until(lambda: len(entries(master)) >= 106, 15, "the spool replayed")
    assert entries(master) == [f"e{n}" for n in range(106)]
    until(publisher.spool.is_empty, 5, "the spool confirmed empty")  # type: ignore[union-attr]
    # New events go to Redis again (acked at once, or replayed if a WAIT of the
    # just-resynced replica was slow on a loaded machine).
    publisher.publish(STREAM, {"n": 106}, event_id="e106")
    until(lambda: len(entries(master)) >= 107, 10, "the last event stored")
    # e0-e4 included: the restart had lost them (and the replica's resync too).
    assert entries(master) == [f"e{n}" for n in range(107)]


def test_out_of_memory_spools_the_event_instead_of_dropping_it(
    servers: Servers, publishers: list[EventPublisher], tmp_path: Path
) -> None:
    master, _ = servers.pair()
    admin = master.client()
    publisher = publisher_for(publishers, servers.sentinel(master), DiskSpool(tmp_path))
    assert publisher.publish(STREAM, {"n": 0}, event_id="e0").status == "acked"
    admin.config_set("maxmemory", "1")  # every write is now refused with OOM
    admin.config_set("maxmemory-policy", "noeviction")
    results = [publisher.publish(STREAM, {"n": n}, event_id=f"e{n}") for n in range(1, 4)]
    assert [r.status for r in results] == ["spooled"] * 3
    assert entries(master) == ["e0"]
    admin.config_set("maxmemory", "0")
    until(lambda: len(entries(master)) == 4, 10, "the spooled events replayed")
    assert entries(master) == ["e0", "e1", "e2", "e3"]


def test_without_a_spool_a_refusal_raises_instead_of_vanishing(
    servers: Servers, publishers: list[EventPublisher]
) -> None:
    master, _ = servers.pair()
    publisher = publisher_for(publishers, servers.sentinel(master), None)
    master.client().config_set("maxmemory", "1")
    with pytest.raises(RedisUnavailableError, match="OOM"):
        publisher.publish(STREAM, {"n": 0}, event_id="e0")


def test_a_promoted_replica_missing_acknowledged_events_gets_them_again(
    servers: Servers, publishers: list[EventPublisher], tmp_path: Path
) -> None:
    old, _ = servers.pair()
    new, new_replica = servers.pair()
    sentinel = servers.sentinel(old)
    publisher = publisher_for(publishers, sentinel, DiskSpool(tmp_path))
    for number in range(10):
        assert publisher.publish(STREAM, {"n": number}, event_id=f"e{number}").status == "acked"
    # The replica that will be promoted stopped receiving here...
    copy_keys(old, new, STREAM, "seawall:producers")
    for number in range(10, 20):
        assert publisher.publish(STREAM, {"n": number}, event_id=f"e{number}").status == "acked"
    # ...and Sentinel promotes it anyway; the old master is gone.
    promote(sentinel, new, old)
    assert entries(new) == [f"e{n}" for n in range(10)]
    # No new event needed: the publisher notices and re-publishes the ten.
    until(lambda: len(entries(new)) >= 20, 10, "the lost events re-published")
    assert publisher.publish(STREAM, {"n": 20}, event_id="e20").status == "acked"
    assert entries(new) == [f"e{n}" for n in range(21)]
    until(lambda: entries(new_replica) == entries(new), 5, "the new replica caught up")
    assert publisher.stats.lost_beyond_window == 0


KILLED_WRITER = """
import sys
from seawall.runtime.reconnect import EventPublisher, MajorityClient
from seawall.runtime.spool import DiskSpool
from tests.unit.redis_server import settings_at

client = MajorityClient(settings_at(int(sys.argv[1])))
publisher = EventPublisher(client, DiskSpool(sys.argv[2]))
for number in range(20):
    if number == 10:
        print("ten", flush=True)
        sys.stdin.readline()
    assert publisher.publish(STREAM, {"n": number}, event_id=f"e{number}").status == "acked"
print("twenty", flush=True)
sys.stdin.readline()  # until killed
"""


def test_a_writer_killed_before_a_late_failover_leaves_its_window_to_the_next(
    servers: Servers, publishers: list[EventPublisher], tmp_path: Path
) -> None:
    old, _ = servers.pair()
    new, new_replica = servers.pair()
    sentinel = servers.sentinel(old)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            KILLED_WRITER.replace("STREAM", repr(STREAM)),
            str(sentinel.port),
            str(tmp_path / "spool"),
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdin is not None and child.stdout is not None
        assert child.stdout.readline() == "ten\n"
        # The replica that will be promoted stopped receiving here...
        copy_keys(old, new, STREAM, "seawall:producers")
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline() == "twenty\n"
    finally:
        child.kill()  # SIGKILL: no close, no flush
        child.wait(timeout=10)
    assert entries(old) == [f"e{n}" for n in range(20)]
    # ...and Sentinel promotes it after the writer is gone.
    promote(sentinel, new, old)
    # The next process of the spool re-publishes the ten without a publish of its own.
    publisher = publisher_for(publishers, sentinel, DiskSpool(tmp_path / "spool"))
    until(lambda: len(entries(new)) >= 20, 10, "the dead writer's lost events re-published")
    assert publisher.publish(STREAM, {"n": 20}, event_id="e20").status == "acked"
    assert entries(new) == [f"e{n}" for n in range(21)]
    until(lambda: entries(new_replica) == entries(new), 5, "the new replica caught up")
    assert publisher.stats.republished == 10
    assert publisher.stats.lost_beyond_window == 0


def test_a_gap_is_refused_and_the_missing_events_sent_first(
    servers: Servers, publishers: list[EventPublisher], tmp_path: Path
) -> None:
    master, _ = servers.pair()
    sentinel = servers.sentinel(master)
    publisher = publisher_for(publishers, sentinel, DiskSpool(tmp_path), check_interval=3600)
    for number in range(5):
        publisher.publish(STREAM, {"n": number}, event_id=f"e{number}")
    # The master loses the last two (a restart short of its AOF tail, same address).
    admin = master.client()
    for stream_id, _ in admin.xrange(STREAM)[3:]:
        admin.xdel(STREAM, stream_id)
    admin.hset("seawall:producers", publisher.producer_id, publisher._last_seq - 2)
    assert publisher.publish(STREAM, {"n": 5}, event_id="e5").status == "acked"
    assert entries(master) == [f"e{n}" for n in range(6)]


def script(conn: redis.Redis, prev: int, *seqs: int, stream: str = STREAM) -> list[object]:
    """Run the publish script for producer "p": one event per seq, ids "x<seq>"."""
    batch = [[seq, stream, "100", f"x{seq}", ["n", str(seq)]] for seq in seqs]
    done, ids, failure = conn.eval(
        _PUBLISH_LUA, 1, "seawall:producers", "p", prev, json.dumps(batch)
    )
    return [done, ids.decode(), failure.decode()]


def test_the_script_refuses_an_event_whose_predecessor_is_missing(servers: Servers) -> None:
    conn = servers.redis().client()
    done, _, failure = script(conn, 6, 7)
    assert done == 0 and failure.startswith("SEAWALLGAP")
    assert conn.exists(STREAM) == 0
    assert script(conn, 0, 7)[0] == 1
    # In a batch, a refusal stops it there: nothing after a gap slips in.
    done, _, failure = script(conn, 7, 8, 9)
    assert done == 2 and failure == ""
    conn.set("not-a-stream", "x")
    done, _, failure = script(conn, 9, 10, stream="not-a-stream")
    assert done == 0 and "WRONGTYPE" in failure
    assert conn.hget("seawall:producers", "p") == b"9"
    assert conn.xlen(STREAM) == 3


def test_a_duplicate_still_writes_so_wait_covers_the_original(servers: Servers) -> None:
    conn = servers.pair()[0].client()
    script(conn, 0, 1)

    def offset() -> int:
        return int(conn.info("replication")["master_repl_offset"])

    before = offset()
    done, ids, _ = script(conn, 0, 1)
    assert done == 1 and ids == ""  # done, as a duplicate
    assert offset() > before  # a propagated write: WAIT waits for the replicas to reach it
    assert conn.xlen(STREAM) == 1


def test_wait_all_needs_every_connected_replica(
    servers: Servers, publishers: list[EventPublisher], tmp_path: Path
) -> None:
    master, _ = servers.pair()
    lagging = servers.redis("--replicaof", "127.0.0.1", str(master.port))
    wait_for_link(master, 2)
    sentinel = servers.sentinel(master)
    one = publisher_for(publishers, sentinel, None)
    every = publisher_for(
        publishers, sentinel, DiskSpool(tmp_path), wait_timeout_ms=100, publish_deadline=0.5
    )
    lagging.freeze()
    try:
        assert one.publish(STREAM, {"n": 0}, event_id="one").status == "acked"
        assert every.publish(STREAM, {"n": 1}, event_id="every").status == "acked"
        every.wait_replicas = "all"
        assert every.publish(STREAM, {"n": 2}, event_id="all").status == "spooled"
    finally:
        lagging.thaw()
    until(every.spool.is_empty, 10, "replayed once the replica is back")  # type: ignore[union-attr]


def test_redis_memory_grows_with_producers_not_events(
    servers: Servers, publishers: list[EventPublisher]
) -> None:
    master, _ = servers.pair()
    sentinel = servers.sentinel(master)
    producers = [publisher_for(publishers, sentinel, None, safe=False) for _ in range(3)]
    for number in range(600):
        producers[number % 3].publish(STREAM, {"n": number}, maxlen=100)
    conn = master.client()
    assert conn.hlen("seawall:producers") == 3
    assert sorted(k.decode() for k in conn.keys("*")) == ["seawall:producers", STREAM]
    assert conn.xlen(STREAM) < 300  # MAXLEN ~ 100 trims whole nodes of 100


def test_a_bad_record_in_the_spool_does_not_stop_replay(
    servers: Servers, publishers: list[EventPublisher], tmp_path: Path
) -> None:
    master, _ = servers.pair()
    spool = DiskSpool(tmp_path)
    for number in range(4):
        spool.append(f"e{number}", STREAM, {"n": number}, 1000)
    spool.close()
    segment = sorted(tmp_path.glob("*.seg"))[-1]
    lines = segment.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1][:20] + b"#" + lines[1][21:]
    segment.write_bytes(b"".join(lines))
    spool = DiskSpool(tmp_path)
    publisher = publisher_for(publishers, servers.sentinel(master), spool, background=False)
    assert publisher.drain(budget_seconds=5) == 3
    assert entries(master) == ["e0", "e2", "e3"]
    assert spool.is_empty() and spool.quarantined == 1


def test_an_event_redis_refuses_for_good_is_quarantined_not_blocking(
    servers: Servers, publishers: list[EventPublisher], tmp_path: Path
) -> None:
    master, _ = servers.pair()
    master.client().set("not-a-stream", "x")
    spool = DiskSpool(tmp_path)
    spool.append("e0", STREAM, {"n": 0}, 1000)
    spool.append("bad", "not-a-stream", {"n": 1}, 1000)
    spool.append("e2", STREAM, {"n": 2}, 1000)
    publisher = publisher_for(publishers, servers.sentinel(master), spool, background=False)
    publisher.drain(budget_seconds=5)
    assert entries(master) == ["e0", "e2"]
    assert spool.is_empty()
    assert b"WRONGTYPE" in (tmp_path / "quarantine").read_bytes()
    with pytest.raises(EventRejectedError, match="WRONGTYPE"):
        publisher.publish("not-a-stream", {"n": 3}, event_id="direct")


def test_a_full_spool_is_an_error_to_the_caller(
    servers: Servers, publishers: list[EventPublisher], tmp_path: Path
) -> None:
    master, _ = servers.pair()
    spool = DiskSpool(tmp_path, max_bytes=1000)
    publisher = publisher_for(
        publishers, servers.sentinel(master), spool, publish_deadline=0.2, background=False
    )
    master.stop()
    with pytest.raises(SpoolFullError):
        for number in range(100):
            publisher.publish(STREAM, {"n": number}, event_id=f"e{number}")
    assert 0 < len(spool) < 100


def test_without_a_background_thread_drain_closes_the_breaker(
    servers: Servers, publishers: list[EventPublisher], tmp_path: Path
) -> None:
    master, _ = servers.pair()
    master.client().config_set("maxmemory", "1")
    publisher = publisher_for(
        publishers, servers.sentinel(master), DiskSpool(tmp_path), background=False
    )
    assert publisher.publish(STREAM, {"n": 0}, event_id="e0").status == "spooled"
    master.client().config_set("maxmemory", "0")
    assert publisher.drain(budget_seconds=5) == 1
    assert publisher.publish(STREAM, {"n": 1}, event_id="e1").status == "acked"
    assert entries(master) == ["e0", "e1"]


def test_losses_older_than_the_window_are_counted_and_do_not_wedge(
    servers: Servers, publishers: list[EventPublisher], tmp_path: Path
) -> None:
    master, _ = servers.pair()
    publisher = publisher_for(
        publishers, servers.sentinel(master), DiskSpool(tmp_path), window_events=2
    )
    for number in range(5):
        assert publisher.publish(STREAM, {"n": number}, event_id=f"e{number}").status == "acked"
    # The master comes back from a restart without any of it.
    admin = master.client()
    admin.delete(STREAM, "seawall:producers")
    admin.client_kill_filter(_type="normal", skipme=True)
    assert publisher.publish(STREAM, {"n": 5}, event_id="e5").status == "acked"
    # The last two came back from the window; three were older than it.
    assert entries(master) == ["e3", "e4", "e5"]
    assert publisher.stats.lost_beyond_window == 3
    assert publisher.publish(STREAM, {"n": 6}, event_id="e6").status == "acked"


def test_a_flushed_script_cache_is_reloaded(
    servers: Servers, publishers: list[EventPublisher], tmp_path: Path
) -> None:
    master, _ = servers.pair()
    publisher = publisher_for(publishers, servers.sentinel(master), DiskSpool(tmp_path))
    assert publisher.publish(STREAM, {"n": 0}, event_id="e0").status == "acked"
    master.client().script_flush()
    assert publisher.publish(STREAM, {"n": 1}, event_id="e1").status == "acked"
    assert entries(master) == ["e0", "e1"]


def test_the_background_thread_ends_with_its_client(
    servers: Servers, publishers: list[EventPublisher], tmp_path: Path
) -> None:
    master, _ = servers.pair()
    publisher = publisher_for(publishers, servers.sentinel(master), DiskSpool(tmp_path))
    publisher.publish(STREAM, {"n": 0}, event_id="e0")
    thread = publisher._thread
    assert thread is not None and thread.is_alive()
    publisher.client.close()
    until(lambda: not thread.is_alive(), 5, "the drainer stopped")


def test_a_write_to_a_demoted_master_follows_the_sentinels(servers: Servers) -> None:
    # A failover demotes the master this client is connected to: its next write
    # gets READONLY (redis-py's ReadOnlyError, whose text lacks the code) and
    # must rediscover, not fail (the drill's cleanup DEL did, on the lab).
    old, new = servers.pair()
    sentinel = servers.sentinel(old)
    client = majority_client(sentinel)
    try:
        assert client.call(lambda conn: conn.set("k", "1"))
        new.client().execute_command("REPLICAOF", "NO", "ONE")
        old.client().execute_command("REPLICAOF", "127.0.0.1", str(new.port))
        sentinel.client().execute_command("SENTINEL", "REMOVE", "seawall")
        sentinel.client().execute_command(
            "SENTINEL", "MONITOR", "seawall", "127.0.0.1", new.port, 1
        )
        assert client.call(lambda conn: conn.set("k", "2"), deadline=5)
        assert new.client().get("k") == b"2"
        assert client.master_address == ("127.0.0.1", new.port)
    finally:
        client.close()


def fields_of(server: RedisServer, stream: str = STREAM) -> dict[str, dict[str, str]]:
    return {
        f[b"event_id"].decode(): {k.decode(): v.decode() for k, v in f.items()}
        for _, f in server.client().xrange(stream)
    }


def test_events_published_while_serving_a_request_carry_its_id(
    servers: Servers, publishers: list[EventPublisher], tmp_path: Path
) -> None:
    master, _ = servers.pair()
    publisher = publisher_for(
        publishers, servers.sentinel(master), DiskSpool(tmp_path), background=False
    )
    given = {"n": 1}
    token = jsonlog.bind_request_id("req-events-1")
    try:
        assert publisher.publish(STREAM, given, event_id="acked").status == "acked"
        # The caller's own request_id is kept.
        publisher.publish(STREAM, {"n": 2, "request_id": "mine"}, event_id="own")
        # Spooled while Redis refuses writes: the id is in the spool, and so in the replay.
        master.client().config_set("maxmemory", "1")
        assert publisher.publish(STREAM, {"n": 3}, event_id="spooled").status == "spooled"
    finally:
        jsonlog.reset_request_id(token)
    master.client().config_set("maxmemory", "0")
    assert publisher.drain(budget_seconds=5) == 1
    publisher.publish(STREAM, {"n": 4}, event_id="outside")
    stored = fields_of(master)
    assert stored["acked"]["request_id"] == "req-events-1"
    assert stored["own"]["request_id"] == "mine"
    assert stored["spooled"]["request_id"] == "req-events-1"
    assert "request_id" not in stored["outside"]
    assert list(stored) == ["acked", "own", "spooled", "outside"]
    assert given == {"n": 1}  # the caller's dict is left alone

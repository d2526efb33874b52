"""Orders and the outbox against a real Postgres and redis-server on loopback."""

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from seawall.refservice import outbox
from seawall.refservice.outbox import OutboxRelay, OutboxStalledError, RequestConflictError
from seawall.runtime.reconnect import EventPublisher
from seawall.runtime.spool import DiskSpool
from tests.unit.postgres_server import PostgresServer, pg, postgres_server
from tests.unit.redis_server import (
    RedisServer,
    Servers,
    copy_keys,
    majority_client,
    promote,
    servers,
)

__all__ = ["pg", "postgres_server", "servers"]  # fixtures, imported for pytest

SERVICE = "execution"


def stream_event_ids(server: RedisServer) -> list[str]:
    entries = server.client().xrange(outbox.ORDER_STREAM)
    return [fields[b"event_id"].decode() for _, fields in entries]


def until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.02)


class Lab:
    """A Postgres with the schema, a Redis master + replica + Sentinel, relays to close."""

    def __init__(self, pg: PostgresServer, servers: Servers) -> None:
        self.pg = pg
        self.master, self.replica = servers.pair()
        self.sentinel = servers.sentinel(self.master)
        self.conn = pg.connect()
        outbox.migrate(self.conn, SERVICE)
        self.closing: list[Any] = []

    def publisher(self) -> EventPublisher:
        publisher = outbox.publisher(majority_client(self.sentinel), SERVICE, publish_deadline=2.0)
        self.closing.append(publisher)
        return publisher

    def relay(self, cls: type[OutboxRelay] = OutboxRelay, **options: Any) -> OutboxRelay:
        relay = cls(self.pg.connect, self.publisher(), SERVICE, **options)
        self.closing.append(relay)
        return relay

    def order(self, request_id: str, body: dict[str, Any] | None = None) -> outbox.PlacedOrder:
        return outbox.place_order(self.conn, SERVICE, request_id, json.dumps(body or {}))

    def count(self, sql: str) -> int:
        with self.pg.connect() as conn:
            row = conn.execute(sql).fetchone()
        assert row is not None
        return int(row[0])

    def close(self) -> None:
        for item in reversed(self.closing):
            item.close()
            if isinstance(item, EventPublisher):
                item.client.close()
        self.conn.close()


@pytest.fixture
def lab(pg: PostgresServer, servers: Servers) -> Iterator[Lab]:
    made = Lab(pg, servers)
    try:
        yield made
    finally:
        made.close()


def test_a_request_id_places_one_order_and_one_event(lab: Lab) -> None:
    first = lab.order("req-1", {"qty": 1})
    again = lab.order("req-1", {"qty": 1})
    assert first.created and first.outbox_id is not None
    assert not again.created and again.order_id == first.order_id and again.outbox_id is None
    assert lab.count("SELECT count(*) FROM refservice_orders") == 1
    assert lab.count("SELECT count(*) FROM refservice_outbox") == 1
    with pytest.raises(RequestConflictError):
        lab.order("req-1", {"qty": 2})
    assert lab.count("SELECT count(*) FROM refservice_orders") == 1


def test_concurrent_retries_of_one_request_place_one_order(lab: Lab) -> None:
    results: list[outbox.PlacedOrder] = []

    def place() -> None:
        with lab.pg.connect() as conn:
            results.append(outbox.place_order(conn, SERVICE, "same", "{}"))

    workers = [threading.Thread(target=place) for _ in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert len(results) == 6
    assert len({r.order_id for r in results}) == 1
    assert sum(r.created for r in results) == 1
    assert lab.count("SELECT count(*) FROM refservice_outbox") == 1


def test_an_order_without_an_event_writes_no_outbox_row(lab: Lab) -> None:
    placed = outbox.place_order(lab.conn, SERVICE, "quiet", "{}", event=False)
    assert placed.created and placed.outbox_id is None
    assert lab.count("SELECT count(*) FROM refservice_outbox") == 0


def test_the_relay_publishes_in_order_and_marks_rows(lab: Lab) -> None:
    placed = [lab.order(f"r{n}") for n in range(5)]
    relay = lab.relay()
    assert relay.run_once() == 5
    assert stream_event_ids(lab.master) == [outbox.event_id(SERVICE, p.order_id) for p in placed]
    assert lab.count("SELECT count(*) FROM refservice_outbox WHERE published IS NULL") == 0
    assert relay.metrics()["outbox_backlog"] == 0
    assert relay.run_once() == 0
    fields = lab.master.client().xrange(outbox.ORDER_STREAM)[0][1]
    assert fields[b"order_id"] == str(placed[0].order_id).encode()
    assert fields[b"request_id"] == b"r0"


class CrashBeforeMark(OutboxRelay):
    """A relay that dies between publishing and marking (as a SIGKILL would)."""

    def _mark(self, work: psycopg.Connection[Any], done: list[tuple[int, str | None]]) -> None:
        raise KeyboardInterrupt("killed before marking")


def test_a_crash_between_publish_and_mark_publishes_nothing_twice(lab: Lab) -> None:
    placed = [lab.order(f"c{n}") for n in range(4)]
    with pytest.raises(KeyboardInterrupt):
        lab.relay(CrashBeforeMark).run_once()
    assert len(stream_event_ids(lab.master)) == 4
    assert lab.count("SELECT count(*) FROM refservice_outbox WHERE published IS NULL") == 4
    placed.append(lab.order("c4"))
    # A new process (a new publisher, same producer), or the relay on another host.
    assert lab.relay().run_once() == 5
    assert stream_event_ids(lab.master) == [outbox.event_id(SERVICE, p.order_id) for p in placed]
    assert lab.count("SELECT count(*) FROM refservice_outbox WHERE published IS NULL") == 0
    # The four re-sent rows were turned away by Redis: no stream id recorded for them.
    assert lab.count("SELECT count(*) FROM refservice_outbox WHERE stream_id IS NULL") == 4


def test_an_order_committed_late_is_still_published(lab: Lab) -> None:
    # Order ids are taken at insert, commits come in any order: a row that
    # commits after a later one was published must not be turned away.
    slow = lab.pg.connect()
    slow.execute("BEGIN")
    late = outbox.place_order(slow, SERVICE, "late", "{}")  # a savepoint in the open transaction
    early = lab.order("early")
    assert late.order_id < early.order_id
    relay = lab.relay()
    assert relay.run_once() == 1
    slow.commit()
    slow.close()
    assert relay.run_once() == 1
    assert sorted(stream_event_ids(lab.master)) == sorted(
        outbox.event_id(SERVICE, p.order_id) for p in (late, early)
    )


def test_one_relay_per_service_at_a_time(lab: Lab) -> None:
    lab.order("x")
    holder = lab.pg.connect()
    holder.execute(
        "SELECT service FROM refservice_outbox_relay WHERE service = %s FOR UPDATE", (SERVICE,)
    )
    relay = lab.relay()
    assert relay.run_once() == -1
    assert stream_event_ids(lab.master) == []
    holder.rollback()  # the holder's connection closes as its process dies: released
    holder.close()
    assert relay.run_once() == 1


def test_relays_on_two_hosts_publish_every_order_exactly_once(lab: Lab) -> None:
    relays = [lab.relay(poll_interval=0.05), lab.relay(poll_interval=0.05)]
    for relay in relays:
        relay.start()
    placed: list[outbox.PlacedOrder] = []

    def writer(prefix: str) -> None:
        with lab.pg.connect() as conn:
            for n in range(40):
                placed.append(outbox.place_order(conn, SERVICE, f"{prefix}{n}", "{}"))
                relays[n % 2].wake()

    writers = [threading.Thread(target=writer, args=(p,)) for p in ("a", "b")]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join(60)
    wanted = {outbox.event_id(SERVICE, p.order_id) for p in placed}
    assert len(wanted) == 80
    until(lambda: len(stream_event_ids(lab.master)) >= 80, 30, "80 events in the stream")
    time.sleep(0.3)  # anything published twice would show now
    ids = stream_event_ids(lab.master)
    assert len(ids) == 80 and set(ids) == wanted
    assert sum(r.published_total for r in relays) == 80


def test_relays_on_two_hosts_republish_what_a_lagging_promotion_lost(
    lab: Lab, servers: Servers
) -> None:
    new, new_replica = servers.pair()
    relays = [lab.relay(batch_size=2), lab.relay(batch_size=2)]
    placed = [lab.order(f"p{n}") for n in range(10)]
    assert [relays[0].run_once(), relays[1].run_once()] == [2, 2]
    # The replica that will be promoted stopped receiving here...
    copy_keys(lab.master, new, outbox.ORDER_STREAM, "seawall:producers")
    # ...while the two relays took turns with the next six.
    assert [relays[0].run_once(), relays[1].run_once(), relays[0].run_once()] == [2, 2, 2]
    assert lab.count("SELECT count(*) FROM refservice_outbox WHERE published IS NULL") == 0
    promote(lab.sentinel, new, lab.master)
    wanted = [outbox.event_id(SERVICE, p.order_id) for p in placed]
    # The relays look again each poll; their publishers' threads check the new master too.
    for _ in range(40):  # bounded: 40 polls of both relays
        with contextlib.suppress(Exception):
            relays[1].run_once()
            relays[0].run_once()
        if len(stream_event_ids(new)) >= len(wanted):
            break
        time.sleep(0.1)
    time.sleep(1.5)  # a publisher's idle check (1 s) would re-publish out of order now
    assert stream_event_ids(new) == wanted
    until(lambda: stream_event_ids(new_replica) == wanted, 5, "the new replica caught up")


def test_while_redis_is_away_rows_wait_in_the_outbox(lab: Lab) -> None:
    lab.order("w0")
    relay = lab.relay()
    lab.master.freeze()
    try:
        with pytest.raises(OutboxStalledError):
            relay.run_once()
        assert relay.metrics()["outbox_backlog"] == 1
    finally:
        lab.master.thaw()
    until(lambda: relay.run_once() == 1, 20, "the row published once Redis is back")
    assert len(stream_event_ids(lab.master)) == 1
    assert relay.metrics()["outbox_backlog"] == 0


def test_publisher_seq_turns_a_republish_away(lab: Lab, tmp_path: Any) -> None:
    first, second = lab.publisher(), lab.publisher()  # a process, then its successor
    stored = first.publish("seawall:test:seq", {"n": 1}, event_id="e1", seq=10)
    again = second.publish("seawall:test:seq", {"n": 1}, event_id="e1", seq=10)
    assert stored.status == again.status == "acked"
    # Stored once. (The first may report no stream id either: on a loaded machine a
    # slow WAIT makes it retry, and the retry is itself turned away.)
    assert again.stream_id is None
    assert lab.master.client().xlen("seawall:test:seq") == 1
    spool = DiskSpool(tmp_path / "spool")
    try:
        with pytest.raises(ValueError):
            EventPublisher(majority_client(lab.sentinel), spool).publish("s", {}, seq=1)
    finally:
        spool.close()

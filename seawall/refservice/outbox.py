"""Orders and their events in one Postgres transaction, published by a relay (an outbox).

- ``place_order`` inserts the order and its event's outbox row in one
  transaction. An order is unique per (service, request id): a client's retry
  after a lost acknowledgement gets the order already there and writes nothing.
- ``OutboxRelay`` (a thread in the service) publishes outbox rows through an
  ``EventPublisher`` and marks them published only once Redis acknowledged them.
  The outbox is the durable buffer while Redis is away, so no disk spool.

Exactly once, with a relay on every app host:

- One relay per service at a time: a batch runs while its relay holds the
  service's row of ``refservice_outbox_relay`` (``FOR UPDATE SKIP LOCKED`` on a
  connection of its own; the others skip and try later). A relay that dies
  loses the lock with its connection, and another takes over.
- Before a row is published it gets a number from a Postgres sequence,
  committed first. Every relay publishes as one producer per service
  (``outbox:<service>``) with that number (``publish(seq=)``), in number order,
  oldest unpublished row first. A row published but not marked (a crash
  between the two) goes out again with the same number, and Redis turns it away.
- Numbers are taken at publish time, not insert time: ids are taken at insert
  and committed out of order, so numbering by id could publish 7 before 6
  commits, and 6 would then be turned away as stored.
- A failover can promote a replica that lacks events a replica had confirmed
  (WAIT 1; docs/events.md). Each batch first asks the master for the
  producer's mark and marks every row numbered after it unpublished again,
  so they go out again, in number order, whichever relay published them and
  whether or not it still runs. The publisher keeps no window of its own
  (``window_events=0``): re-sending only one relay's events would move the
  mark past the other's, and Redis would then turn those away as stored.
"""

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg

from seawall.runtime.reconnect import EventPublisher, MajorityClient, PublishResult

log = logging.getLogger("refservice.outbox")

ORDER_STREAM = "quantum:stream:order_created"

# (object, statement creating it). A statement runs only when its object is
# missing: CREATE INDEX takes its table lock before it looks, so even IF NOT
# EXISTS would queue behind open order transactions and block new ones. Run
# under an advisory lock, because two hosts creating at once can collide.
SCHEMA_LOCK = 0x5EA3A110
SCHEMA = (
    (
        "refservice_orders",
        """
        CREATE TABLE refservice_orders (
            id bigserial PRIMARY KEY,
            service text NOT NULL,
            request_id text NOT NULL,
            body jsonb NOT NULL DEFAULT '{}',
            created timestamptz NOT NULL DEFAULT now()
        )
        """,
    ),
    # One order per request id: a retry finds the first. (A table from before
    # this index with duplicate request ids stops the migration, naming them.)
    (
        "refservice_orders_request",
        "CREATE UNIQUE INDEX refservice_orders_request ON refservice_orders (service, request_id)",
    ),
    (
        "refservice_outbox",
        """
        CREATE TABLE refservice_outbox (
            id bigserial PRIMARY KEY,
            service text NOT NULL,
            stream text NOT NULL,
            event_id text NOT NULL UNIQUE,
            fields jsonb NOT NULL,
            seq bigint UNIQUE,
            published timestamptz,
            stream_id text,
            created timestamptz NOT NULL DEFAULT now()
        )
        """,
    ),
    (
        "refservice_outbox_unpublished",
        "CREATE INDEX refservice_outbox_unpublished "
        "ON refservice_outbox (service, id) WHERE published IS NULL",
    ),
    ("refservice_outbox_seq", "CREATE SEQUENCE refservice_outbox_seq"),
    (
        "refservice_outbox_relay",
        "CREATE TABLE refservice_outbox_relay (service text PRIMARY KEY)",
    ),
)


def migrate(conn: psycopg.Connection[Any], service: str) -> None:
    """Create or upgrade the order and outbox tables, and the service's relay row."""
    with conn.transaction():
        missing = [
            statement
            for name, statement in SCHEMA
            if conn.execute("SELECT to_regclass(%s)", (name,)).fetchone() == (None,)
        ]
        if missing:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            for name, statement in SCHEMA:
                if conn.execute("SELECT to_regclass(%s)", (name,)).fetchone() == (None,):
                    conn.execute(statement)
        conn.execute(
            "INSERT INTO refservice_outbox_relay (service) VALUES (%s) ON CONFLICT DO NOTHING",
            (service,),
        )


class RequestConflictError(ValueError):
    """The request id is taken by an order with another body."""


@dataclass(frozen=True)
class PlacedOrder:
    order_id: int
    created: bool  # False: a retry, answered with the order already there
    outbox_id: int | None = None  # the event's row (new orders only)


def order_event(service: str, order_id: int, request_id: str) -> dict[str, Any]:
    """The fields of an order's event."""
    return {"service": service, "order_id": order_id, "request_id": request_id}


def event_id(service: str, order_id: int) -> str:
    return f"{service}:{order_id}"


def place_order(
    conn: psycopg.Connection[Any], service: str, request_id: str, body: str, event: bool = True
) -> PlacedOrder:
    """Store an order and its event in one transaction; a known request id stores nothing.

    Without ``event`` (a service with no Redis to publish to) only the order is stored.

    Raises:
        RequestConflictError: the request id names an order with another body.
    """
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO refservice_orders (service, request_id, body) "
            "VALUES (%s, %s, %s::jsonb) ON CONFLICT (service, request_id) DO NOTHING "
            "RETURNING id",
            (service, request_id, body),
        ).fetchone()
        if row is None:
            # The first one is committed (ON CONFLICT waited for it): this statement sees it.
            found = conn.execute(
                "SELECT id, body = %s::jsonb FROM refservice_orders "
                "WHERE service = %s AND request_id = %s",
                (body, service, request_id),
            ).fetchone()
            assert found is not None
            if not found[1]:
                raise RequestConflictError(
                    f"request id {request_id!r} is order {found[0]}, with another body"
                )
            return PlacedOrder(int(found[0]), created=False)
        order_id = int(row[0])
        if not event:
            return PlacedOrder(order_id, created=True)
        outbox = conn.execute(
            "INSERT INTO refservice_outbox (service, stream, event_id, fields) "
            "VALUES (%s, %s, %s, %s::jsonb) RETURNING id",
            (
                service,
                ORDER_STREAM,
                event_id(service, order_id),
                json.dumps(order_event(service, order_id, request_id)),
            ),
        ).fetchone()
        assert outbox is not None
    return PlacedOrder(order_id, created=True, outbox_id=int(outbox[0]))


class Publisher(Protocol):
    def publish(
        self,
        stream: str,
        fields: dict[str, Any],
        event_id: str | None = None,
        maxlen: int = 10000,
        seq: int | None = None,
    ) -> PublishResult: ...

    def master_mark(self) -> int: ...


@dataclass(frozen=True)
class OutboxRow:
    id: int
    seq: int
    stream: str
    event_id: str
    fields: dict[str, Any]


class OutboxRelay:
    """Publish a service's outbox rows, in order, exactly once (see the module docstring).

    + connect: opens a new Postgres connection (two are kept: the lock, the work)
    + publisher: an ``EventPublisher`` without a spool or window,
      ``producer_id=producer(service)``, ``window_events=0``
    + service: whose rows this relay publishes
    + batch_size: rows per batch (the lock is held for one batch)
    + poll_interval: how often an idle relay looks for rows other hosts wrote
    + retention_s: published rows are deleted after this long
    + housekeeping: called by the thread before each batch (its errors are logged)
    """

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        publisher: Publisher,
        service: str,
        *,
        maxlen: int = 10000,
        batch_size: int = 100,
        poll_interval: float = 1.0,
        retention_s: float = 3600.0,
        housekeeping: Callable[[], None] | None = None,
    ) -> None:
        self._housekeeping = housekeeping
        self._connect = connect
        self.publisher = publisher
        self.service = service
        self.maxlen = maxlen
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.retention_s = retention_s
        self._conns: dict[str, psycopg.Connection[Any] | None] = {"lock": None, "work": None}
        self._migrated = False
        self._pruned_at = 0.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._published: OrderedDict[int, str | None] = OrderedDict()  # outbox id -> stream id
        self._lock = threading.Lock()
        self.backlog = 0
        self.oldest_s = 0.0
        self.published_total = 0
        self.republished = 0  # rows published again after a master lost them
        self.errors = 0

    # -- one batch ---------------------------------------------------------------

    def _conn(self, purpose: str) -> psycopg.Connection[Any]:
        conn = self._conns[purpose]
        if conn is None or conn.closed:
            conn = self._connect()
            self._conns[purpose] = conn
        return conn

    def _drop(self) -> None:
        for purpose, conn in self._conns.items():
            self._conns[purpose] = None
            if conn is not None:
                conn.close()

    def run_once(self) -> int:
        """Publish one batch; return how many rows, or -1 if another relay holds the service.

        Raises:
            psycopg.Error: Postgres failed (the connections are dropped first).
        """
        try:
            work = self._conn("work")
            if not self._migrated:
                migrate(work, self.service)
                self._migrated = True
            lock = self._conn("lock")
            held = lock.execute(
                "SELECT service FROM refservice_outbox_relay WHERE service = %s "
                "FOR UPDATE SKIP LOCKED",
                (self.service,),
            ).fetchone()
            if held is None:
                lock.rollback()
                return -1
            try:
                return self._batch(work)
            finally:
                lock.rollback()  # releases the service for the other relays
        except psycopg.Error:
            self._drop()
            raise

    def _batch(self, work: psycopg.Connection[Any]) -> int:
        self._recover(work)
        self._number(work)
        rows = self._pending(work)
        done: list[tuple[int, str | None]] = []
        failure: Exception | None = None
        for row in rows:
            try:
                result = self.publisher.publish(
                    row.stream, row.fields, event_id=row.event_id, maxlen=self.maxlen, seq=row.seq
                )
            except Exception as error:  # Redis away or refusing: the row waits here
                failure = error
                break
            done.append((row.id, result.stream_id))
        if done:
            self._mark(work, done)
        self._measure(work)
        if failure is not None:
            log.warning(
                "outbox: %d of %d events published, the rest wait: %s: %s",
                len(done),
                len(rows),
                type(failure).__name__,
                failure,
            )
            if not done:
                raise OutboxStalledError(str(failure)) from failure
        return len(done)

    def _recover(self, work: psycopg.Connection[Any]) -> None:
        """Mark unpublished again every row numbered after the master's mark (a lost tail)."""
        try:
            mark = self.publisher.master_mark()
        except Exception as error:  # Redis away: the publish below says so
            log.info("outbox: the master's mark is unknown: %s", error)
            return
        with work.transaction():
            again = work.execute(
                "UPDATE refservice_outbox SET published = NULL, stream_id = NULL "
                "WHERE service = %s AND published IS NOT NULL AND seq > %s",
                (self.service, mark),
            ).rowcount
        if again:
            self.republished += again
            log.warning(
                "outbox: the Redis master lacks %d published events after seq %d "
                "(a failover to a replica behind): publishing them again",
                again,
                mark,
            )

    def _number(self, work: psycopg.Connection[Any]) -> None:
        """Give unnumbered rows, oldest first, their publishing numbers, and commit them."""
        with work.transaction():
            ids = [
                int(r[0])
                for r in work.execute(
                    "SELECT id FROM refservice_outbox WHERE service = %s AND seq IS NULL "
                    "ORDER BY id LIMIT %s",
                    (self.service, self.batch_size),
                )
            ]
            if not ids:
                return
            numbers = sorted(
                int(r[0])
                for r in work.execute(
                    "SELECT nextval('refservice_outbox_seq') FROM generate_series(1, %s)",
                    (len(ids),),
                )
            )
            work.execute(
                "UPDATE refservice_outbox o SET seq = u.seq "
                "FROM unnest(%s::bigint[], %s::bigint[]) AS u(id, seq) WHERE o.id = u.id",
                (ids, numbers),
            )

    def _pending(self, work: psycopg.Connection[Any]) -> list[OutboxRow]:
        with work.transaction():
            return [
                OutboxRow(int(r[0]), int(r[1]), str(r[2]), str(r[3]), dict(r[4]))
                for r in work.execute(
                    "SELECT id, seq, stream, event_id, fields FROM refservice_outbox "
                    "WHERE service = %s AND published IS NULL AND seq IS NOT NULL "
                    "ORDER BY seq LIMIT %s",
                    (self.service, self.batch_size),
                )
            ]

    def _mark(self, work: psycopg.Connection[Any], done: list[tuple[int, str | None]]) -> None:
        """Mark rows published: only after Redis acknowledged them."""
        with work.transaction():
            work.execute(
                "UPDATE refservice_outbox o SET published = now(), stream_id = u.stream_id "
                "FROM unnest(%s::bigint[], %s::text[]) AS u(id, stream_id) WHERE o.id = u.id",
                ([i for i, _ in done], [s for _, s in done]),
            )
        with self._lock:
            for outbox_id, stream_id in done:
                self._published[outbox_id] = stream_id
            while len(self._published) > 10_000:
                self._published.popitem(last=False)
            self.published_total += len(done)

    def _measure(self, work: psycopg.Connection[Any]) -> None:
        with work.transaction():
            row = work.execute(
                "SELECT count(*), coalesce(extract(epoch FROM now() - min(created)), 0) "
                "FROM refservice_outbox WHERE service = %s AND published IS NULL",
                (self.service,),
            ).fetchone()
            assert row is not None
            self.backlog, self.oldest_s = int(row[0]), round(float(row[1]), 3)
            if time.monotonic() - self._pruned_at > 60:
                work.execute(
                    "DELETE FROM refservice_outbox WHERE service = %s AND published IS NOT NULL "
                    "AND published < now() - make_interval(secs => %s)",
                    (self.service, self.retention_s),
                )
                self._pruned_at = time.monotonic()

    # -- the thread ----------------------------------------------------------------

    def wake(self) -> None:
        """Publish soon: a new row is committed."""
        self._wake.set()

    def published(self, outbox_id: int) -> tuple[bool, str | None]:
        """Whether this relay published row ``outbox_id`` (lately), and its stream id."""
        with self._lock:
            if outbox_id in self._published:
                return True, self._published[outbox_id]
        return False, None

    def metrics(self) -> dict[str, Any]:
        return {
            "outbox_backlog": self.backlog,
            "outbox_oldest_s": self.oldest_s,
            "outbox_published": self.published_total,
            "outbox_republished": self.republished,
            "outbox_errors": self.errors,
        }

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"outbox-{self.service}", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        pause = 0.05
        while not self._stop.is_set():
            self._wake.clear()
            try:
                if self._housekeeping is not None:
                    self._housekeeping()
                done = self.run_once()
            except Exception as error:  # the thread outlives any one failure
                self.errors += 1
                log.warning("outbox relay: %s: %s", type(error).__name__, error)
                pause = min(pause * 2, self.poll_interval)
                self._stop.wait(pause)
                continue
            pause = 0.05
            if done == self.batch_size:
                continue  # more may be waiting
            if done == -1 and self._wake.is_set():
                self._stop.wait(0.05)  # another relay is on it: look again shortly
                continue
            self._wake.wait(self.poll_interval)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._drop()


class OutboxStalledError(RuntimeError):
    """Not one row of the batch was published (Redis away): the relay backs off."""


def producer(service: str) -> str:
    """The one producer id every relay of ``service`` publishes under."""
    return f"outbox:{service}"


def publisher(client: MajorityClient, service: str, **options: Any) -> EventPublisher:
    """The relay's publisher: no spool (the outbox buffers) and no window (the outbox keeps)."""
    return EventPublisher(client, None, producer_id=producer(service), window_events=0, **options)

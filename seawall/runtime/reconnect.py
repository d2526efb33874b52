"""Sentinel-aware Redis access that follows the majority, with a disk buffer for events.

Services import this. It needs only redis-py (4.3, as in Debian 12, or newer).

- ``MajorityClient`` asks every Sentinel who the master is and follows what a
  majority says: a Sentinel stuck with an isolated old master keeps naming it
  long after the others elected a new one, and a client that trusts the first
  answer writes into a dead end. Connection loss, READONLY, NOREPLICAS and a
  WAIT that times out all lead to a fresh discovery, with exponential backoff,
  jitter and a cap.
- ``EventPublisher`` XADDs events (MAXLEN) exactly once. Each producer numbers
  its events; one Lua script stores an event and the producer's high-water
  mark together, and turns away any number already stored, so Redis keeps one
  hash field per producer, not one key per event. In safe mode a write counts
  only once a replica confirms it (WAIT). Anything else (Redis away, OOM,
  NOREPLICAS...) sends the event to a ``DiskSpool``; a background thread
  replays it in order, in pipelined batches, as soon as Redis is back, and new
  events queue behind it. A circuit breaker keeps ``publish()`` at disk speed
  while Redis is known to be away. After every master change the publisher
  re-publishes what the new master lacks from its recently acknowledged
  events, so a promoted replica that missed them does not lose them.
  The reasoning and its costs: ``docs/events.md``.
"""

import hashlib
import itertools
import json
import logging
import random
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis
from redis import exceptions as rex
from redis.backoff import NoBackoff
from redis.retry import Retry

from seawall.runtime import jsonlog
from seawall.runtime.spool import DiskSpool, SpooledEvent, encode_record

T = TypeVar("T")
log = logging.getLogger(__name__)

# Idempotent, ordered XADD of a batch. KEYS: the producers hash. ARGV: the
# producer, prev (its event before the batch, 0 if unknown), and the batch as
# JSON: [[seq, stream, maxlen, event id, [field, value, ...]], ...]. One call
# per batch: packing one command per event cost the client more than Redis
# spent storing them.
# - A number at or under the producer's mark is stored already: skipped.
# - An event whose predecessor is missing is refused (SEAWALLGAP): storing it
#   would raise the mark over the gap and turn the missing one away for good.
# - A refused XADD (OOM, READONLY, WRONGTYPE...) stops the batch there.
# The mark is written last, always, in the same atomic script as the entries:
# they replicate together, so on any master the mark matches the stream, and
# even an all-duplicate batch propagates a write that WAIT then waits for.
# Returns {events done, their stream ids ('' for a duplicate) joined by
# spaces, the error that stopped the batch or ''}.
_PUBLISH_LUA = """
local mark = redis.call('HGET', KEYS[1], ARGV[1])
local hwm = tonumber(mark or '0')
local prev = tonumber(ARGV[2])
local events = cjson.decode(ARGV[3])
local ids = {}
local failure = ''
for i, e in ipairs(events) do
  local seq = e[1]
  if seq > hwm then
    if prev > hwm then
      failure = 'SEAWALLGAP producer ' .. ARGV[1] .. ' is at ' .. string.format('%.0f', hwm)
      break
    end
    local args = {'XADD', e[2], 'MAXLEN', '~', e[3], '*', 'event_id', e[4]}
    for _, v in ipairs(e[5]) do args[#args + 1] = v end
    local id = redis.pcall(unpack(args))
    if type(id) == 'table' and id.err then
      failure = id.err
      break
    end
    hwm = seq
    ids[#ids + 1] = id
  else
    ids[#ids + 1] = ''
  end
  prev = seq
end
local written = redis.pcall('HSET', KEYS[1], ARGV[1], string.format('%.0f', hwm))
if type(written) == 'table' and written.err and #ids == 0 then
  failure = written.err
end
return {#ids, table.concat(ids, ' '), failure}
"""
# Sent by hash: the body is loaded once per connection, not sent with every event.
_PUBLISH_SHA = hashlib.sha1(_PUBLISH_LUA.encode()).hexdigest()


def connect(
    host: str,
    port: int,
    password: str | None,
    timeout: float,
    connect_timeout: float | None = None,
    **options: Any,
) -> redis.Redis:
    """Return a client that fails fast: this module does its own retrying.

    redis-py 6+ retries failed commands by itself with up to 10 s backoff by
    default; stacked under our own loop that turned a dead master into a
    minute-long stall. No retries here, and short socket timeouts.
    """
    return redis.Redis(
        host=host,
        port=port,
        password=password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout if connect_timeout is None else connect_timeout,
        retry=Retry(NoBackoff(), 0),
        **options,
    )


class RedisUnavailableError(ConnectionError):
    """No master could be found or reached within the time allowed."""


class RedisAuthError(PermissionError):
    """A password was refused: retrying cannot help."""


class WriteNotAcknowledgedError(RuntimeError):
    """The write reached the master but no replica confirmed it in time."""


@dataclass(frozen=True)
class RedisSettings:
    """Where the Sentinels are and how patient to be."""

    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    # Out of the repr: a logged or printed settings object shows no password.
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)
    # ACL users (Redis 7); None logs in as `default` with the password alone.
    username: str | None = None
    sentinel_username: str | None = None
    # Replies (WAIT included) may take this long; a silent host is given up on after it.
    socket_timeout: float = 0.5
    # A TCP connect on the private network takes well under a millisecond: a
    # host that does not answer within this is gone, and the next discovery starts.
    connect_timeout: float = 0.2
    # How long one operation may keep retrying before it gives up.
    operation_deadline: float = 10.0
    # Retry pauses: short and capped low, so a client is on the new master
    # within a fraction of a second of the Sentinels naming it.
    backoff_base: float = 0.02
    backoff_cap: float = 0.25


def backoff_delays(base: float, cap: float, rng: random.Random | None = None) -> Iterator[float]:
    """Yield sleep times: exponential, capped, with full jitter (no herd after an outage)."""
    rng = rng or random.Random()
    attempt = 0
    while True:
        yield rng.uniform(0, min(cap, base * 2**attempt))
        attempt += 1


def _is_auth_error(error: Exception) -> bool:
    if isinstance(error, rex.AuthenticationError):
        return True
    text = str(error)
    return any(
        word in text
        for word in ("WRONGPASS", "NOAUTH", "invalid password", "invalid username-password")
    )


def _needs_rediscovery(error: Exception) -> bool:
    if isinstance(
        error,
        # ReadOnlyError first: redis-py strips its READONLY code from the text,
        # so the text test below never sees it (a write to a demoted master).
        (
            rex.ConnectionError,
            rex.TimeoutError,
            OSError,
            WriteNotAcknowledgedError,
            rex.ReadOnlyError,
        ),
    ):
        return True
    if isinstance(error, rex.ResponseError):
        text = str(error)
        return any(
            word in text for word in ("READONLY", "NOREPLICAS", "LOADING", "MASTERDOWN", "NOSCRIPT")
        )
    return False


@dataclass
class MajorityClient:
    """A Redis master connection that follows the Sentinels' majority."""

    settings: RedisSettings
    on_switch: Callable[[tuple[str, int] | None, tuple[str, int]], None] | None = None
    _master: tuple[str, int] | None = field(default=None, init=False)
    _conn: redis.Redis | None = field(default=None, init=False, repr=False)
    _sentinels: list[redis.Redis] = field(default_factory=list, init=False, repr=False)
    # Bumped at every new master connection: a publisher checks the master it
    # lands on still holds what it acknowledged (see EventPublisher).
    connections: int = field(default=0, init=False)
    closed: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        timeout = self.settings.socket_timeout
        self._sentinels = [
            connect(
                host,
                port,
                self.settings.sentinel_password,
                timeout,
                self.settings.connect_timeout,
                decode_responses=True,
                username=self.settings.sentinel_username,
            )
            for host, port in self.settings.sentinels
        ]
        # Room for a slow Sentinel's unanswered questions to pile up a little
        # without delaying the questions to the live ones.
        self._pool = ThreadPoolExecutor(max_workers=4 * max(1, len(self._sentinels)))

    @property
    def master_address(self) -> tuple[str, int] | None:
        return self._master

    def _ask(self, sentinel: redis.Redis) -> tuple[str, int] | Exception:
        try:
            answer = sentinel.execute_command(
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.settings.master_name
            )
        except Exception as error:  # each Sentinel's failure is one vote lost, not fatal
            return error
        if not answer:
            return LookupError(f"does not know master {self.settings.master_name!r}")
        return (str(answer[0]), int(answer[1]))

    def sentinel_views(self) -> list[tuple[str, tuple[str, int] | Exception]]:
        """Ask every Sentinel at once; return (sentinel address, answer or error)."""
        answers = list(self._pool.map(self._ask, self._sentinels))
        return [(f"{h}:{p}", a) for (h, p), a in zip(self.settings.sentinels, answers, strict=True)]

    def discover(self) -> tuple[str, int]:
        """Return the master a majority of the Sentinels name, as soon as a majority agrees.

        A Sentinel on a dead host would make everyone wait for its timeout: the
        answers are counted as they arrive instead.

        Raises:
            RedisAuthError: the Sentinels refused the password.
            RedisUnavailableError: no address has a majority right now.
        """
        needed = len(self._sentinels) // 2 + 1
        asked = {
            self._pool.submit(self._ask, s): where
            for s, where in zip(self._sentinels, self.settings.sentinels, strict=True)
        }
        votes: Counter[tuple[str, int]] = Counter()
        views: list[tuple[str, tuple[str, int] | Exception]] = []
        for future in as_completed(asked):
            answer = future.result()
            host, port = asked[future]
            views.append((f"{host}:{port}", answer))
            if isinstance(answer, tuple):
                votes[answer] += 1
                if votes[answer] >= needed:
                    return answer
        errors = [answer for _, answer in views if isinstance(answer, Exception)]
        if errors and all(_is_auth_error(error) for error in errors) and not votes:
            raise RedisAuthError(f"Sentinels refused the password: {errors[0]}")
        detail = "; ".join(
            f"{where} -> {answer[0]}:{answer[1]}"
            if isinstance(answer, tuple)
            else f"{where} -> {type(answer).__name__}: {answer}"
            for where, answer in sorted(views, key=lambda view: view[0])
        )
        raise RedisUnavailableError(
            f"no majority ({needed} of {len(views)}) of Sentinels names a master "
            f"for {self.settings.master_name!r}: {detail}"
        )

    def _connect(self, address: tuple[str, int]) -> redis.Redis:
        settings = self.settings
        return connect(
            address[0],
            address[1],
            settings.password,
            settings.socket_timeout,
            settings.connect_timeout,
            username=settings.username,
        )

    def _reset(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            self._conn = None

    def master(self) -> redis.Redis:
        """Return a connection to the current master, discovering it if needed."""
        with self._lock:
            if self._conn is None:
                address = self.discover()
                if address != self._master and self.on_switch:
                    self.on_switch(self._master, address)
                self._master = address
                self._conn = self._connect(address)
                self.connections += 1
            return self._conn

    def call(self, operation: Callable[[redis.Redis], T], deadline: float | None = None) -> T:
        """Run ``operation`` on the master, rediscovering and retrying until ``deadline``.

        Raises:
            RedisAuthError: a password was refused (at once, no retry).
            RedisUnavailableError: it did not succeed within the deadline.
        """
        limit = self.settings.operation_deadline if deadline is None else deadline
        give_up = time.monotonic() + limit
        delays = backoff_delays(self.settings.backoff_base, self.settings.backoff_cap)
        last: Exception | None = None
        while True:
            try:
                return operation(self.master())
            except RedisAuthError:
                raise
            except Exception as error:
                if _is_auth_error(error):
                    raise RedisAuthError(f"Redis refused the password: {error}") from error
                if not _needs_rediscovery(error) and not isinstance(error, RedisUnavailableError):
                    raise
                last = error
                self._reset()
            pause = next(delays)
            if time.monotonic() + pause >= give_up:
                raise RedisUnavailableError(
                    f"no Redis master reachable within {limit:.1f} s: {last}"
                ) from last
            time.sleep(pause)

    def close(self) -> None:
        self.closed = True
        self._reset()
        for sentinel in self._sentinels:
            sentinel.close()
        self._pool.shutdown(wait=False)


class EventRejectedError(ValueError):
    """Redis refused this one event for good (e.g. WRONGTYPE): spooling cannot help."""


# Refusals that concern the event itself, not the server's state: anything
# else (OOM, MISCONF, NOREPLICAS, READONLY, an unknown error...) is spooled.
_POISON = ("WRONGTYPE",)
_GAP = "SEAWALLGAP"


@dataclass(frozen=True)
class PublishResult:
    event_id: str
    status: str  # "acked": stored on the master and a replica; "spooled": on local disk
    stream_id: str | None = None  # None when the event was stored before (a replay)


@dataclass(frozen=True)
class _Event:
    seq: int
    event_id: str
    stream: str
    fields: dict[str, Any]
    maxlen: int
    spooled: SpooledEvent | None = None


@dataclass
class _Acked:
    event: _Event
    stream_id: str | None
    at: float


@dataclass
class _Outcome:
    stored: int  # how many events, from the first, are stored (and confirmed, in safe mode)
    stream_ids: list[str | None]
    error: Exception | None = None  # why event ``stored`` was not


def _tail_record(event: _Event, stream_id: str | None) -> bytes:
    """``event`` as a line of the spool's ``AckedTail``."""
    record = {"id": event.event_id, "stream": event.stream, "fields": event.fields}
    return encode_record({**record, "maxlen": event.maxlen, "seq": event.seq, "sid": stream_id})


class MasterBehindError(RuntimeError):
    """The master lacks acknowledged events after ``mark``, and only the caller has them.

    Raised to a publisher with ``window_events=0`` (an outbox, which keeps what
    it published): it must publish everything after ``mark`` again, in order,
    before anything newer. Never retried inside: a retry would store the newer
    event, and the lost ones after it would then be turned away as stored.
    """

    def __init__(self, producer_id: str, mark: int, last: int) -> None:
        super().__init__(
            f"producer {producer_id}: the master is at seq {mark}, this process had "
            f"stored up to {last}: publish the events after {mark} again first"
        )
        self.mark = mark


class _Gap(WriteNotAcknowledgedError):
    """The master lacks an event this producer had stored: check it and re-publish."""


@dataclass
class PublisherStats:
    acked: int = 0
    spooled: int = 0
    replayed: int = 0
    republished: int = 0  # acknowledged events re-published to a master that lacked them
    rejected: int = 0  # poison events moved to quarantine during replay
    lost_beyond_window: int = 0  # seq numbers a new master lacks, older than the window
    master_checks: int = 0


class EventPublisher:
    """Publish stream events exactly once, spooling them to disk while Redis is away.

    + client: the ``MajorityClient`` to write through (used by this publisher only)
    + spool: the ``DiskSpool``; without one an event Redis does not take raises
    + safe: count an event only once ``wait_replicas`` replicas confirm it (WAIT)
    + wait_replicas: how many replicas WAIT asks for, or ``"all"`` connected ones
    + producer_id: defaults to the spool's (persistent) or a random one
    + producers_key: the hash holding each producer's high-water mark
    + window_seconds, window_events: how much recently acknowledged history is
      kept to re-publish after a master change; ``window_events=0`` for a caller
      that keeps it itself (an outbox): a master behind this process is then a
      ``MasterBehindError``, and ``master_mark()`` says where to start again
    + batch_size: events per pipelined round trip (one WAIT each) in replay
    + background: replay in a thread as soon as Redis is back; else only in ``drain()``
    + probe_interval: the longest pause between probes while Redis is away

    **Example**: ``EventPublisher(MajorityClient(settings), DiskSpool(path)).publish(
    "orders", {"id": 7}, event_id="svc:7")``
    """

    def __init__(
        self,
        client: MajorityClient,
        spool: DiskSpool | None = None,
        *,
        safe: bool = True,
        wait_timeout_ms: int = 500,
        dedup_ttl_seconds: int | None = None,  # unused: kept for callers of the first version
        publish_deadline: float = 1.0,
        wait_replicas: int | str = 1,
        producer_id: str | None = None,
        producers_key: str = "seawall:producers",
        window_seconds: float = 30.0,
        window_events: int = 100_000,
        batch_size: int = 500,
        # While Redis is away, the longest pause between probes (full jitter).
        # It is added to every failover's outage: at 1 s (on average 0.5 s) a
        # master cut from its peers took up to 5.1 s, over its 5 s limit.
        probe_interval: float = 0.25,
        check_interval: float = 1.0,
        catch_up_bytes: int = 64 * 1024,
        background: bool = True,
    ) -> None:
        if wait_replicas != "all" and not (isinstance(wait_replicas, int) and wait_replicas >= 0):
            raise ValueError(f"wait_replicas must be a count or 'all', not {wait_replicas!r}")
        if spool is not None and window_events == 0:
            raise ValueError("window_events=0 is for a caller that keeps its events, not a spool")
        self.client = client
        self.spool = spool
        self.safe = safe
        # WAIT must give up before the socket does: a socket timeout would
        # turn every slow WAIT into a reconnect and a resend.
        socket_ms = int(client.settings.socket_timeout * 1000)
        self.wait_timeout_ms = max(1, min(wait_timeout_ms, socket_ms * 4 // 5))
        self.publish_deadline = publish_deadline
        self.wait_replicas = wait_replicas
        self.producers_key = producers_key
        self.window_seconds = window_seconds
        self.window_events = window_events
        self.batch_size = batch_size
        self.probe_interval = probe_interval
        self.check_interval = check_interval
        self.catch_up_bytes = catch_up_bytes
        self.stats = PublisherStats()
        if spool is not None:
            self.producer_id = producer_id or spool.producer_id
            self._next_seq: Callable[[], int] = spool.next_seq
            # Shared by every publisher of this spool: one producer, one order.
            self._order: threading.Lock = spool.order_lock
            self._io: threading.Lock = spool.replay_lock
        else:
            self.producer_id = producer_id or uuid.uuid4().hex[:16]
            counter = itertools.count(1)
            self._next_seq = lambda: next(counter)
            self._order = threading.Lock()
            self._io = threading.Lock()
        self._last_seq = 0  # the producer's last event known stored, this session
        self._window: deque[_Acked] = deque()
        self._window_floor = 0  # the highest seq dropped from the window
        self._mark = 0  # the producer's mark on the master at the last check
        self._checked = -1  # the client's connection count at the last master check
        self._check_due = False
        self._checked_at = 0.0
        self._replicas: tuple[int, float, int] = (-1, 0.0, 1)  # connection, when, count
        self._open = False  # the circuit breaker: Redis known away, spool at once
        self._retry_at = 0.0
        self._delays = backoff_delays(0.05, probe_interval)
        self._cv = threading.Condition()
        self._confirmed = 0  # the highest spooled seq replayed, for publish() to wait on
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._background = background
        if spool is not None:
            self._recall(spool)
            if self._window or not spool.is_empty():
                self._start_thread()  # check the master and replay without waiting for a publish

    def _recall(self, spool: DiskSpool) -> None:
        """Take up the window of acknowledged events a previous process of ``spool`` kept."""
        floor, records = spool.acked.load()
        kept = records[-self.window_events :]
        floor = max([floor, *(r["seq"] for r in records[: len(records) - len(kept)])])
        now = time.monotonic()  # each gets a whole window in this process
        for r in kept:
            event = _Event(r["seq"], r["id"], r["stream"], r["fields"], r.get("maxlen") or 10000)
            self._window.append(_Acked(event, r.get("sid"), now))
        self._window_floor = floor
        self._last_seq = max((r["seq"] for r in kept), default=0)

    # -- publishing ------------------------------------------------------------

    def publish(
        self,
        stream: str,
        fields: dict[str, Any],
        event_id: str | None = None,
        maxlen: int = 10000,
        seq: int | None = None,
    ) -> PublishResult:
        """Publish one event; return whether it is acknowledged or safely spooled.

        Published while a request is served, the event carries its id
        (``request_id``, unless ``fields`` has one already): spooled, replayed
        and re-published copies alike, since it is part of the event.

        ``seq`` is the caller's own number for the event, for a caller that
        numbers its events durably (an outbox): re-published after a crash
        with the same number, the event is turned away as stored. Numbers must
        grow from call to call. Only without a spool, whose numbers it would
        collide with.

        Raises:
            ValueError: ``seq`` given to a publisher with a spool.
            RedisAuthError: the password is wrong (the event is not stored).
            RedisUnavailableError: Redis did not take it and there is no spool.
            EventRejectedError: Redis refused this event for good (WRONGTYPE).
            SpoolFullError: Redis did not take it and the spool or disk is full.
        """
        if seq is not None and self.spool is not None:
            raise ValueError("seq= is for a publisher without a spool")
        event_id = event_id or uuid.uuid4().hex
        fields = with_request_id(fields)
        self._start_thread()
        with self._order:
            number = self._next_seq() if seq is None else seq
            event = _Event(number, event_id, stream, fields, maxlen)
            if self.spool is not None and (self._open or not self.spool.is_empty()):
                # Order matters: new events wait behind the spooled ones.
                backlog = self.spool.pending_bytes()
                self._spool(event)
                if self._open or backlog > self.catch_up_bytes or not self._background:
                    return PublishResult(event_id, "spooled")
            else:
                result = self._publish_now(event)
                if result is not None:
                    return result
                return PublishResult(event_id, "spooled")
        # A short backlog with Redis up: the drainer is about to send it.
        return self._catch_up(event)

    def _publish_now(self, event: _Event) -> PublishResult | None:
        """Send ``event`` at once; spool it (returning None) if Redis does not take it."""
        failure: Exception
        if not self._io.acquire(timeout=self.publish_deadline):
            failure = RedisUnavailableError("replay or a master check holds the connection")
        else:
            try:
                outcome = self._send([event], self.publish_deadline)
                if outcome.stored:
                    self._acked([event], outcome.stream_ids)
                    return PublishResult(event.event_id, "acked", outcome.stream_ids[0])
                assert outcome.error is not None
                failure = outcome.error
                if _is_poison(failure):
                    raise EventRejectedError(
                        f"event {event.event_id}: Redis refused it: {failure}"
                    ) from failure
            except (RedisUnavailableError, WriteNotAcknowledgedError) as error:
                failure = error
            finally:
                self._io.release()
        if self.spool is None:
            raise RedisUnavailableError(
                f"event {event.event_id} not stored: {type(failure).__name__}: {failure}"
            ) from failure
        log.warning("event %s spooled: %s: %s", event.event_id, type(failure).__name__, failure)
        self._trip()
        self._spool(event)
        return None

    def _spool(self, event: _Event) -> None:
        assert self.spool is not None
        self.spool.append(event.event_id, event.stream, event.fields, event.maxlen, event.seq)
        self.stats.spooled += 1
        with self._cv:
            if not self._open:
                # Replay now. While Redis is away the drainer keeps its own
                # timer: waking it per event only costs a thread switch.
                self._cv.notify_all()

    def _catch_up(self, event: _Event) -> PublishResult:
        give_up = time.monotonic() + self.publish_deadline
        with self._cv:
            self._cv.notify_all()
            while self._confirmed < event.seq and not self._open:
                left = give_up - time.monotonic()
                if left <= 0:
                    return PublishResult(event.event_id, "spooled")
                self._cv.wait(left)
            if self._confirmed < event.seq:
                return PublishResult(event.event_id, "spooled")
            found = next((a for a in reversed(self._window) if a.event.seq == event.seq), None)
        return PublishResult(event.event_id, "acked", found.stream_id if found else None)

    def _trip(self) -> None:
        with self._cv:
            if not self._open:
                self._delays = backoff_delays(0.05, self.probe_interval)
            self._open = True
            self._retry_at = time.monotonic() + next(self._delays)
            self._cv.notify_all()

    # -- sending ---------------------------------------------------------------

    def _send(self, events: list[_Event], deadline: float) -> _Outcome:
        """Store ``events`` in order in one round trip, then WAIT; retry until ``deadline``.

        Raises:
            RedisAuthError: a password was refused.
            RedisUnavailableError: nothing was confirmed within the deadline.
        """
        return self.client.call(lambda conn: self._attempt(conn, events), deadline=deadline)

    def _attempt(self, conn: redis.Redis, events: list[_Event]) -> _Outcome:
        self._check_master(conn)
        outcome = self._pipeline(conn, events, self._last_seq)
        if outcome.stored == 0 and isinstance(outcome.error, rex.NoScriptError):
            conn.script_load(_PUBLISH_LUA)  # SCRIPT FLUSH, or a master that never had it
            outcome = self._pipeline(conn, events, self._last_seq)
        if outcome.stored == 0 and outcome.error is not None:
            text = str(outcome.error)
            if _GAP in text:
                self._check_due = True
                raise _Gap(text)
            if _needs_rediscovery(outcome.error):
                raise outcome.error  # a replica or a master without replicas: look again
        if outcome.stored:
            self._last_seq = events[outcome.stored - 1].seq
        return outcome

    def _pipeline(self, conn: redis.Redis, events: list[_Event], prev: int) -> _Outcome:
        batch = [
            [event.seq, event.stream, str(event.maxlen), event.event_id, _flatten(event.fields)]
            for event in events
        ]
        pipe = conn.pipeline(transaction=False)
        pipe.evalsha(
            _PUBLISH_SHA,
            1,
            self.producers_key,
            self.producer_id,
            prev,
            json.dumps(batch, separators=(",", ":")),
        )
        replicas = self._replicas_to_wait(conn) if self.safe else 0
        if replicas:
            pipe.execute_command("WAIT", replicas, self.wait_timeout_ms)
        results = pipe.execute(raise_on_error=False)
        if isinstance(results[0], Exception):
            return _Outcome(0, [], results[0])  # the script did not run (NOSCRIPT, BUSY...)
        done, joined, failure = int(results[0][0]), _text(results[0][1]), _text(results[0][2])
        stored: list[str | None] = [i or None for i in joined.split(" ")[:done]] if done else []
        error = rex.ResponseError(failure) if failure else None
        if stored and replicas and isinstance(results[-1], Exception):
            raise WriteNotAcknowledgedError(f"WAIT failed: {results[-1]}")
        if stored and replicas and int(results[-1]) < replicas:
            raise WriteNotAcknowledgedError(
                f"{len(stored)} events: {results[-1]} of {replicas} replicas confirmed "
                f"them within {self.wait_timeout_ms} ms"
            )
        return _Outcome(len(stored), stored, error)

    def _replicas_to_wait(self, conn: redis.Redis) -> int:
        if self.wait_replicas != "all":
            return int(self.wait_replicas)
        connection, when, count = self._replicas
        if connection != self.client.connections or time.monotonic() - when > 1.0:
            role = conn.execute_command("ROLE")
            count = max(1, len(role[2]) if _text(role[0]) == "master" else 1)
            self._replicas = (self.client.connections, time.monotonic(), count)
        return count

    def _acked(self, events: list[_Event], stream_ids: list[str | None]) -> None:
        # The caller holds ``_io``; ``_cv`` guards against ``_catch_up`` reading.
        now = time.monotonic()
        self.stats.acked += len(stream_ids)
        with self._cv:
            for event, stream_id in zip(events, stream_ids, strict=False):
                self._window.append(_Acked(event, stream_id, now))
            while self._window and (
                len(self._window) > self.window_events
                or now - self._window[0].at > self.window_seconds
            ):
                self._window_floor = self._window.popleft().event.seq
        if self.spool is not None and stream_ids:
            # Before the spool confirms a replayed batch: what leaves the
            # spool is in the tail, for a process that starts after this one dies.
            pairs = list(zip(events, stream_ids, strict=False))
            self.spool.acked.remember(
                [_tail_record(event, stream_id) for event, stream_id in pairs],
                pairs[-1][0].seq,
                self.window_seconds,
                self.window_events,
            )

    # -- after a master change ---------------------------------------------------

    def _check_master(self, conn: redis.Redis) -> None:
        """Re-publish what this master lacks of the acknowledged events, in order.

        Runs on every new connection (the master may have changed, or restarted
        short of its tail), after a SEAWALLGAP refusal, and now and then from
        the background thread.
        """
        if self._checked == self.client.connections and not self._check_due:
            return
        if self._checked != self.client.connections:
            conn.script_load(_PUBLISH_LUA)
        self.stats.master_checks += 1
        mark = int(_text(conn.hget(self.producers_key, self.producer_id)) or 0)
        self._mark = mark
        if mark < self._last_seq and not self.window_events:
            last, self._last_seq = self._last_seq, mark
            self._mark_checked()
            raise MasterBehindError(self.producer_id, mark, last)
        if mark < self._last_seq:
            if mark < self._window_floor:
                lost = self._window_floor - mark
                self.stats.lost_beyond_window += lost
                log.error(
                    "producer %s: the master lacks seq %d-%d, acknowledged more than "
                    "%.0f s ago (outside the re-publish window): up to %d events lost",
                    self.producer_id,
                    mark + 1,
                    self._window_floor,
                    self.window_seconds,
                    lost,
                )
            missing = [acked.event for acked in self._window if acked.event.seq > mark]
            log.warning(
                "producer %s: the master is at seq %d, %d acknowledged events after it: "
                "re-publishing them",
                self.producer_id,
                mark,
                len(missing),
            )
            prev = 0  # the first one's predecessor may be older than the window
            for start in range(0, len(missing), self.batch_size):
                batch = missing[start : start + self.batch_size]
                outcome = self._pipeline(conn, batch, prev)
                if outcome.stored < len(batch):
                    raise WriteNotAcknowledgedError(
                        f"re-publishing to the new master: {outcome.error}"
                    )
                self.stats.republished += sum(1 for i in outcome.stream_ids if i is not None)
                prev = batch[-1].seq
            # What the master now holds is the chain later events build on
            # (lower than before only if acknowledged events were lost).
            self._last_seq = missing[-1].seq if missing else mark
        self._mark_checked()

    def _mark_checked(self) -> None:
        self._checked = self.client.connections
        self._check_due = False
        self._checked_at = time.monotonic()

    def master_mark(self) -> int:
        """This producer's mark on the master now: the last number the master stored.

        For a caller that keeps what it published (``window_events=0``):
        everything it published after this number must go again, in order.

        Raises:
            RedisUnavailableError: no master answered within the publish deadline.
        """

        def read(conn: redis.Redis) -> int:
            self._check_due = True
            try:
                self._check_master(conn)
            except MasterBehindError as behind:
                return behind.mark
            return self._mark

        with self._io:
            return self.client.call(read, deadline=self.publish_deadline)

    # -- replay ----------------------------------------------------------------

    def drain(self, budget_seconds: float = 1.0, confirm_every: int = 64) -> int:
        """Replay spooled events in order until done, Redis fails, or the budget ends.

        Events go in pipelined batches of ``batch_size``, one WAIT each; the
        spool's position is made durable after each batch (``confirm_every``
        is kept for callers of the first version). An event replayed again
        after a crash is stored once all the same: Redis turns its number away.
        """
        del confirm_every
        if self.spool is None:
            return 0
        stop_at = time.monotonic() + budget_seconds
        if not self._io.acquire(timeout=budget_seconds):
            return 0
        try:
            replayed = 0
            while time.monotonic() < stop_at:
                done = self._replay_batch(max(0.05, stop_at - time.monotonic()))
                if done <= 0:
                    break
                replayed += done
            return replayed
        finally:
            self._io.release()

    def _replay_batch(self, deadline: float) -> int:
        """Send one batch from the spool (the caller holds ``_io``).

        Returns how many events it confirmed, 0 if the spool is empty, -1 if
        Redis did not take the first one.
        """
        assert self.spool is not None
        spooled = list(self.spool.pending(limit=self.batch_size))
        if not spooled:
            return 0
        events = [
            _Event(s.seq, s.event_id, s.stream, s.fields, s.maxlen or 10000, s) for s in spooled
        ]
        try:
            outcome = self._send(events, deadline)
        except (RedisUnavailableError, WriteNotAcknowledgedError) as error:
            log.info("replay paused: %s", error)
            self._trip()
            return -1
        done = outcome.stored
        if outcome.error is not None and done < len(events) and _is_poison(outcome.error):
            bad = events[done]
            assert bad.spooled is not None
            self.spool.quarantine_event(bad.spooled, str(outcome.error))
            self.stats.rejected += 1
            done += 1
        if done == 0:
            log.info("replay paused: %s", outcome.error)
            self._trip()
            return -1
        self._acked(events[: outcome.stored], outcome.stream_ids)
        self.spool.confirm(events[done - 1].spooled)  # type: ignore[arg-type]
        self.stats.replayed += outcome.stored
        with self._cv:
            self._confirmed = max(self._confirmed, events[done - 1].seq)
            self._open = False  # Redis takes events again: publish() may send directly
            self._cv.notify_all()
        return done

    # -- background thread -------------------------------------------------------

    def _start_thread(self) -> None:
        if self._thread is not None or not self._background:
            return
        with self._cv:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"seawall-drain-{self.producer_id}", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        # A publisher whose client was closed under it (a drill's end) stops too.
        while not self._stop.is_set() and not self.client.closed:
            try:
                self._tick()
            except Exception:  # the thread must outlive any one failure
                log.exception("event replay failed; retrying")
                self._trip()

    def _tick(self) -> None:
        with self._cv:
            now = time.monotonic()
            pending = self.spool is not None and not self.spool.is_empty()
            if pending and now >= self._retry_at:
                wait = 0.0
            elif pending:
                wait = self._retry_at - now
            else:
                wait = self.check_interval
            if wait > 0:
                self._cv.wait(min(wait, self.check_interval))
        if self._stop.is_set():
            return
        if self.spool is not None and not self.spool.is_empty():
            if time.monotonic() < self._retry_at:
                return
            if not self._io.acquire(timeout=0.1):
                return
            try:
                if self._open:
                    # A cheap probe first: no spool reading while Redis is away.
                    try:
                        self.client.call(lambda conn: conn.ping(), deadline=0.01)
                    except RedisUnavailableError:
                        self._trip()
                        return
                # One attempt per probe (the deadline is checked between
                # attempts): a probe must not hold the connection for long.
                self._replay_batch(0.01)
            finally:
                self._io.release()
        elif (
            self._window
            and time.monotonic() - self._checked_at >= self.check_interval
            and self._io.acquire(timeout=0.1)
        ):
            # Idle: make sure a master change has not dropped what was acknowledged.
            try:
                self._check_due = True
                self.client.call(self._check_master, deadline=self.publish_deadline)
            except (RedisUnavailableError, WriteNotAcknowledgedError) as error:
                log.info("master check failed: %s", error)
                self._checked_at = time.monotonic()
                self._trip()
            finally:
                self._io.release()

    def close(self) -> None:
        """Stop the background thread (spooled events stay on disk for the next start)."""
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)


def with_request_id(fields: dict[str, Any]) -> dict[str, Any]:
    """Return ``fields`` plus ``request_id`` of the request being served, if any and unset."""
    current = jsonlog.request_id()
    if not current or "request_id" in fields:
        return fields
    return {**fields, "request_id": current}


def _flatten(fields: dict[str, Any]) -> list[str]:
    """Field/value pairs as strings, the way redis-py would have sent them."""
    flat: list[str] = []
    for key, value in fields.items():
        for item in (key, value):
            if isinstance(item, bytes):
                item = item.decode()
            elif isinstance(item, float):
                item = repr(item)
            elif not isinstance(item, str | int):
                raise TypeError(f"field {key!r}: {type(item).__name__} is not str, int or float")
            flat.append(str(item))
    return flat


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def require_master(conn: redis.Redis) -> None:
    """Raise READONLY unless ``conn`` is on a master: a check to run through
    :meth:`MajorityClient.call`, which rediscovers on it (a connection made before a
    failover stays on the demoted master, where PING still answers)."""
    role = _text(conn.execute_command("ROLE")[0])
    if role != "master":
        raise rex.ReadOnlyError(f"this Redis is a {role} now")


def _is_poison(error: Exception) -> bool:
    return isinstance(error, rex.ResponseError) and any(w in str(error) for w in _POISON)

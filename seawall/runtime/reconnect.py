"""Sentinel-aware Redis access that follows the majority, with a disk buffer for events.

Services import this. It needs only redis-py (4.3, as in Debian 12, or newer).

- ``MajorityClient`` asks every Sentinel who the master is and follows what a
  majority says: a Sentinel stuck with an isolated old master keeps naming it
  long after the others elected a new one, and a client that trusts the first
  answer writes into a dead end. Connection loss, READONLY, NOREPLICAS and a
  WAIT that times out all lead to a fresh discovery, with exponential backoff,
  jitter and a cap.
- ``EventPublisher`` XADDs events (MAXLEN) exactly once, deduplicated by event
  id inside Redis. In safe mode each write must reach a replica (WAIT 1) or it
  is not acknowledged. Events that cannot be acknowledged go to a ``DiskSpool``
  and are replayed in order when Redis is back; new events queue behind them.
"""

import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis
from redis import exceptions as rex
from redis.backoff import NoBackoff
from redis.retry import Retry

from seawall.runtime.spool import DiskSpool

T = TypeVar("T")

# Idempotent XADD: the dedup key is set in the same atomic step as the entry,
# so a retried or replayed event is stored once, whichever copy arrives first.
_PUBLISH_LUA = """
local existing = redis.call('GET', KEYS[1])
if existing then return {0, existing} end
local args = {'XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'event_id', ARGV[3]}
for i = 4, #ARGV do args[#args + 1] = ARGV[i] end
local id = redis.call(unpack(args))
redis.call('SET', KEYS[1], id, 'EX', ARGV[1])
return {1, id}
"""


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
    password: str | None = None
    sentinel_password: str | None = None
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
        error, (rex.ConnectionError, rex.TimeoutError, OSError, WriteNotAcknowledgedError)
    ):
        return True
    if isinstance(error, rex.ResponseError):
        text = str(error)
        return any(
            word in text for word in ("READONLY", "NOREPLICAS", "LOADING", "MASTERDOWN", "NOSCRIPT")
        )
    return isinstance(error, rex.ReadOnlyError)


@dataclass
class MajorityClient:
    """A Redis master connection that follows the Sentinels' majority."""

    settings: RedisSettings
    on_switch: Callable[[tuple[str, int] | None, tuple[str, int]], None] | None = None
    _master: tuple[str, int] | None = field(default=None, init=False)
    _conn: redis.Redis | None = field(default=None, init=False, repr=False)
    _sentinels: list[redis.Redis] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        timeout = self.settings.socket_timeout
        self._sentinels = [
            connect(
                host,
                port,
                self.settings.sentinel_password,
                timeout,
                self.settings.connect_timeout,
                decode_responses=True,
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
        )

    def _reset(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def master(self) -> redis.Redis:
        """Return a connection to the current master, discovering it if needed."""
        if self._conn is None:
            address = self.discover()
            if address != self._master and self.on_switch:
                self.on_switch(self._master, address)
            self._master = address
            self._conn = self._connect(address)
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
        self._reset()
        for sentinel in self._sentinels:
            sentinel.close()
        self._pool.shutdown(wait=False)


@dataclass(frozen=True)
class PublishResult:
    event_id: str
    status: str  # "acked": stored on the master and a replica; "spooled": on local disk
    stream_id: str | None = None


class EventPublisher:
    """Publish stream events exactly once, spooling them to disk while Redis is away."""

    def __init__(
        self,
        client: MajorityClient,
        spool: DiskSpool | None = None,
        *,
        safe: bool = True,
        wait_timeout_ms: int = 500,
        dedup_ttl_seconds: int = 86400,
        publish_deadline: float = 1.0,
    ) -> None:
        self.client = client
        self.spool = spool
        self.safe = safe
        self.wait_timeout_ms = wait_timeout_ms
        self.dedup_ttl_seconds = dedup_ttl_seconds
        self.publish_deadline = publish_deadline

    def _send(self, event_id: str, stream: str, fields: dict[str, Any], maxlen: int) -> str:
        args: list[Any] = [self.dedup_ttl_seconds, maxlen, event_id]
        for key, value in fields.items():
            args += [key, value]
        dedup_key = f"{stream}:dedup:{event_id}"

        def write(conn: redis.Redis) -> str:
            _, stream_id = conn.eval(_PUBLISH_LUA, 2, dedup_key, stream, *args)
            if self.safe:
                replicas = conn.execute_command("WAIT", 1, self.wait_timeout_ms)
                if int(replicas) < 1:
                    raise WriteNotAcknowledgedError(
                        f"event {event_id}: no replica confirmed it within "
                        f"{self.wait_timeout_ms} ms"
                    )
            return stream_id.decode() if isinstance(stream_id, bytes) else str(stream_id)

        return self.client.call(write, deadline=self.publish_deadline)

    def publish(
        self,
        stream: str,
        fields: dict[str, Any],
        event_id: str | None = None,
        maxlen: int = 10000,
    ) -> PublishResult:
        """Publish one event; return whether it is acknowledged or safely spooled.

        Raises:
            RedisAuthError: the password is wrong (the event is not stored).
            RedisUnavailableError: Redis is away and there is no spool.
            SpoolFullError: Redis is away and the spool is full.
        """
        event_id = event_id or uuid.uuid4().hex
        if self.spool is not None and not self.spool.is_empty():
            self.drain()
            if not self.spool.is_empty():
                # Order matters: new events wait behind the spooled ones.
                self.spool.append(event_id, stream, fields, maxlen)
                return PublishResult(event_id, "spooled")
        try:
            return PublishResult(event_id, "acked", self._send(event_id, stream, fields, maxlen))
        except (RedisUnavailableError, WriteNotAcknowledgedError):
            if self.spool is None:
                raise
            self.spool.append(event_id, stream, fields, maxlen)
            return PublishResult(event_id, "spooled")

    def drain(self, budget_seconds: float = 1.0, confirm_every: int = 64) -> int:
        """Replay spooled events in order until done, Redis fails, or the budget ends.

        Progress is made durable every ``confirm_every`` events and at the end:
        an event replayed again after a crash is stored once all the same,
        because Redis deduplicates it by event id.
        """
        if self.spool is None:
            return 0
        replayed = 0
        last = None
        stop_at = time.monotonic() + budget_seconds
        for event in self.spool.pending():
            if time.monotonic() > stop_at:
                break
            try:
                self._send(event.event_id, event.stream, event.fields, event.maxlen or 10000)
            except (RedisUnavailableError, WriteNotAcknowledgedError):
                break
            last = event
            replayed += 1
            if replayed % confirm_every == 0:
                self.spool.confirm(event)
        if last is not None:
            self.spool.confirm(last)
        return replayed

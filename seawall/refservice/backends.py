"""Redis (through the Sentinel-following reconnect helper) and Postgres (through the local pooler).

Neither is needed to start: each connects lazily, and a failure is reported to
the caller (and so to /health) instead of stopping the service.
"""

import logging
import threading
from typing import Any

import psycopg

from seawall.refservice import outbox
from seawall.refservice.config import ServiceConfig
from seawall.runtime.reconnect import (
    EventPublisher,
    MajorityClient,
    RedisSettings,
    require_master,
)
from seawall.runtime.spool import DiskSpool

log = logging.getLogger("refservice")

# A health probe must answer well within the health checker's timeout.
PROBE_DEADLINE_S = 1.0
CONNECT_TIMEOUT_S = 2


class Redis:
    """A Redis master found through the Sentinels' majority, and the outbox's publisher."""

    def __init__(self, config: ServiceConfig) -> None:
        settings = RedisSettings(
            sentinels=config.sentinels,
            master_name=config.redis_master,
            password=config.redis_password,
            sentinel_password=config.sentinel_password,
            username=config.redis_username,
            sentinel_username=config.sentinel_username,
        )
        # One client for probes, one for events: a slow publish never delays /health.
        self._probe = MajorityClient(settings)
        self._probe_lock = threading.Lock()
        # Orders' events come from the outbox, which is their durable buffer
        # and keeps what was published: no spool, no window, and one producer
        # per service whichever host relays them.
        self.outbox_publisher = outbox.publisher(MajorityClient(settings), config.service)
        # Events spooled by an earlier version are still replayed (then the spool is idle).
        self._legacy: EventPublisher | None = None
        if config.spool_dir:
            try:
                spool = DiskSpool(config.spool_dir)
            except Exception as error:  # a broken old spool must not stop the service
                log.error("the earlier spool cannot be opened: %s", error)
            else:
                if spool.is_empty():
                    spool.close()
                else:
                    self._legacy = EventPublisher(MajorityClient(settings), spool)
        self.maxlen = config.stream_maxlen

    def ping(self) -> None:
        """Answer only if the master itself answers.

        A PING would pass on a demoted master: the probe's connection outlives a
        failover (nothing fails on it), and /health would report a Redis this
        service no longer writes to.
        """
        with self._probe_lock:
            self._probe.call(require_master, deadline=PROBE_DEADLINE_S)

    def drain_legacy_spool(self) -> None:
        """Replay what an earlier version left in the spool, if anything."""
        if self._legacy is not None and self._legacy.spool is not None:
            if self._legacy.spool.is_empty():
                return
            replayed = self._legacy.drain(budget_seconds=1.0)
            if replayed:
                log.info("replayed %d events an earlier version spooled", replayed)


class Postgres:
    """One connection per purpose, re-opened after any failure."""

    def __init__(self, config: ServiceConfig) -> None:
        self._params = {
            **config.postgres,
            "password": config.postgres_password,
            "connect_timeout": CONNECT_TIMEOUT_S,
            "application_name": config.service,
        }
        self._conns: dict[str, psycopg.Connection[Any] | None] = {"probe": None, "write": None}
        self._locks = {name: threading.Lock() for name in self._conns}
        self._table_ready = False

    def _conn(self, purpose: str) -> psycopg.Connection[Any]:
        conn = self._conns[purpose]
        if conn is None or conn.closed:
            conn = psycopg.connect(**self._params, prepare_threshold=None)
            self._conns[purpose] = conn
        return conn

    def _drop(self, purpose: str) -> None:
        conn = self._conns[purpose]
        self._conns[purpose] = None
        if conn is not None:
            conn.close()

    def ping(self) -> None:
        with self._locks["probe"]:
            try:
                conn = self._conn("probe")
                conn.execute("SELECT 1")
                conn.rollback()
            except Exception:
                self._drop("probe")
                raise

    def connect(self) -> psycopg.Connection[Any]:
        """A new connection (the outbox relay keeps its own)."""
        return psycopg.connect(**self._params, prepare_threshold=None)

    def place_order(
        self, service: str, request_id: str, body: str, event: bool = True
    ) -> outbox.PlacedOrder:
        """Store an order and its event in one transaction (see ``outbox.place_order``).

        Raises:
            outbox.RequestConflictError: the request id is taken by another body.
        """
        with self._locks["write"]:
            try:
                conn = self._conn("write")
                if not self._table_ready:
                    outbox.migrate(conn, service)
                    self._table_ready = True
                return outbox.place_order(conn, service, request_id, body, event)
            except outbox.RequestConflictError:
                raise
            except Exception:
                self._drop("write")
                raise

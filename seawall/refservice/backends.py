"""Redis (through the Sentinel-following reconnect helper) and Postgres (through the local pooler).

Neither is needed to start: each connects lazily, and a failure is reported to
the caller (and so to /health) instead of stopping the service.
"""

import threading
from typing import Any

import psycopg

from seawall.refservice.config import ServiceConfig
from seawall.runtime.reconnect import EventPublisher, MajorityClient, PublishResult, RedisSettings
from seawall.runtime.spool import DiskSpool

# A health probe must answer well within the health checker's timeout.
PROBE_DEADLINE_S = 1.0
CONNECT_TIMEOUT_S = 2

_ORDERS_TABLE = """
CREATE TABLE IF NOT EXISTS refservice_orders (
    id bigserial PRIMARY KEY,
    service text NOT NULL,
    request_id text NOT NULL,
    body jsonb NOT NULL DEFAULT '{}',
    created timestamptz NOT NULL DEFAULT now()
)
"""


class Redis:
    """A Redis master found through the Sentinels' majority; events go through a disk spool."""

    def __init__(self, config: ServiceConfig) -> None:
        settings = RedisSettings(
            sentinels=config.sentinels,
            master_name=config.redis_master,
            password=config.redis_password,
            sentinel_password=config.sentinel_password,
        )
        # One client for probes, one for writes: a slow publish never delays /health.
        self._probe = MajorityClient(settings)
        self._probe_lock = threading.Lock()
        self._writer = MajorityClient(settings)
        self._write_lock = threading.Lock()
        spool = DiskSpool(config.spool_dir) if config.spool_dir else None
        self._publisher = EventPublisher(self._writer, spool)
        self.maxlen = config.stream_maxlen

    def ping(self) -> None:
        with self._probe_lock:
            self._probe.call(lambda conn: conn.ping(), deadline=PROBE_DEADLINE_S)

    def publish(self, stream: str, fields: dict[str, Any], event_id: str) -> PublishResult:
        with self._write_lock:
            return self._publisher.publish(stream, fields, event_id=event_id, maxlen=self.maxlen)


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

    def insert_order(self, service: str, request_id: str, body: str) -> int:
        """Commit one row; return its id."""
        with self._locks["write"]:
            try:
                conn = self._conn("write")
                if not self._table_ready:
                    conn.execute(_ORDERS_TABLE)
                    conn.commit()
                    self._table_ready = True
                row = conn.execute(
                    "INSERT INTO refservice_orders (service, request_id, body) "
                    "VALUES (%s, %s, %s::jsonb) RETURNING id",
                    (service, request_id, body),
                ).fetchone()
                conn.commit()
            except Exception:
                self._drop("write")
                raise
        assert row is not None
        return int(row[0])

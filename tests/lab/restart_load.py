"""Bounded client load on the lab during a rolling restart, and what failed or was lost.

Shared by tests/lab/test_restart.py and bench/restart.py. Four clients, each
bounded in rate, count and time, all to lab addresses only:

- GETs through the gateway (HTTPS, trusting exactly gw's certificate): every
  answer that is not 2xx, and every connection error, is a failed GET;
- POST /api/execution/orders through the gateway, each with its own request id,
  retried by the client with the same id on an error or a 5xx (never more than
  ``POST_TRIES`` times): afterwards each id must be stored exactly once;
- a Redis event writer (the runtime's EventPublisher with a disk spool, as a
  service publishes): afterwards every event acknowledged or spooled must be in
  the stream exactly once;
- the Postgres drill writer on an app host (PgBouncer -> HAProxy -> leader):
  afterwards every acknowledged commit must be in the table.
"""

import http.client
import json
import ssl
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seawall.inventory import Topology
from seawall.postgres.remote_writer import Writer, role_password, writer_settings
from seawall.postgres.tunnel import tunnel
from seawall.redis.client import redis_settings
from seawall.runtime.reconnect import EventPublisher, MajorityClient
from seawall.runtime.spool import DiskSpool
from seawall.settings import setting
from seawall.ssh import run as ssh

# Well under the gateway's per-client limits (general 100 r/s, trading 10 r/s):
# the load must never be refused for its own rate.
GET_RATE = 20.0
POST_RATE = 2.0
EVENT_RATE = 20.0
GET_PATHS = ("/api/risk/items/1", "/api/portfolio/items/2", "/api/health")
ORDER_PATH = "/api/execution/orders"
ORDER_SERVICE = "execution"
POST_TRIES = 10
# Bounds of the whole load, whatever the restart does.
MAX_SECONDS = 1800.0
MAX_EVENTS = 40000


@dataclass
class LoadResult:
    """What the clients saw, and what was found stored afterwards."""

    gets: int = 0
    failed_gets: int = 0
    get_failures: list[str] = field(default_factory=list)
    posts: int = 0
    post_retries: int = 0
    posts_unacknowledged: int = 0
    orders_not_once: dict[str, int] = field(default_factory=dict)
    events: int = 0
    events_lost: int = 0
    events_duplicated: int = 0
    rows_committed: int = 0
    rows_lost: int = 0

    @property
    def clean(self) -> bool:
        return not (
            self.failed_gets
            or self.posts_unacknowledged
            or self.orders_not_once
            or self.events_lost
            or self.events_duplicated
            or self.rows_lost
        )

    def summary(self) -> dict[str, Any]:
        return {
            "gets": self.gets,
            "failed_gets": self.failed_gets,
            "get_failures": self.get_failures[:10],
            "posts": self.posts,
            "post_retries": self.post_retries,
            "posts_unacknowledged": self.posts_unacknowledged,
            "orders_not_stored_once": len(self.orders_not_once),
            "events": self.events,
            "events_lost": self.events_lost,
            "events_duplicated": self.events_duplicated,
            "rows_committed": self.rows_committed,
            "rows_lost": self.rows_lost,
        }


class GatewayClient:
    """One keep-alive HTTPS connection to a gateway host, reconnecting when it is closed."""

    def __init__(self, address: str, context: ssl.SSLContext, timeout: float = 30) -> None:
        self.address, self.context, self.timeout = address, context, timeout
        self.conn = self._connect()

    def _connect(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.address, context=self.context, timeout=self.timeout)

    def request(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> int:
        """Return the status; raise OSError/HTTPException when no answer came."""
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=body or None, headers=headers)
                response = self.conn.getresponse()
                response.read()
                return response.status
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # An idle keep-alive connection the gateway closed (a reload ends
                # old workers' idle connections): a real client reconnects, and
                # resends only what it may (a GET; a POST only with its request id).
                self.conn.close()
                self.conn = self._connect()
                if attempt == 2 or method != "GET":
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


def gateway_tls(topology: Topology) -> tuple[str, ssl.SSLContext]:
    """The first gateway host's address and a context trusting exactly its certificate."""
    gateway = topology.group("gateway")[0]
    cert = ssh(topology, gateway.name, "cat /etc/nginx/tls/gateway.crt", check=True).stdout
    return gateway.address, ssl.create_default_context(cadata=cert)


class RestartLoad:
    """Start the four clients; ``stop()`` ends them and checks what was stored."""

    def __init__(self, topology: Topology, tag: str = "restart") -> None:
        self.topology = topology
        self.run = f"{tag}-{uuid.uuid4().hex[:10]}"
        self.result = LoadResult()
        self._stop = threading.Event()
        self._deadline = time.monotonic() + MAX_SECONDS
        self._lock = threading.Lock()
        self._order_ids: list[str] = []
        self._events: dict[str, str] = {}  # event id -> acked/spooled
        self.address, self.context = gateway_tls(topology)
        self.stream = f"seawall:test:{self.run}"
        self._spool_dir = tempfile.TemporaryDirectory(prefix="seawall-restart-spool-")
        self._writer_host = topology.group("app")[0].name
        self._writer = Writer(
            topology, self._writer_host, writer_settings(topology, "write", self.run, MAX_SECONDS)
        )
        self._threads = [
            threading.Thread(target=self._gets, daemon=True),
            threading.Thread(target=self._posts, daemon=True),
            threading.Thread(target=self._publish, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _running(self) -> bool:
        return not self._stop.is_set() and time.monotonic() < self._deadline

    def _gets(self) -> None:
        client = GatewayClient(self.address, self.context)
        n = 0
        try:
            while self._running():
                path = GET_PATHS[n % len(GET_PATHS)]
                n += 1
                try:
                    status = client.request("GET", path, {"X-Request-ID": f"{self.run}-get-{n}"})
                    failure = None if 200 <= status < 300 else f"{path}: {status}"
                except (OSError, http.client.HTTPException) as error:
                    failure = f"{path}: {error!r}"
                    client.close()
                    client = GatewayClient(self.address, self.context)
                with self._lock:
                    self.result.gets += 1
                    if failure is not None:
                        self.result.failed_gets += 1
                        self.result.get_failures.append(failure)
                time.sleep(1 / GET_RATE)
        finally:
            client.close()

    def _post_once(self, client: GatewayClient, request_id: str) -> bool:
        """POST one order, retried with the same request id; True once acknowledged."""
        body = json.dumps({"qty": 1, "run": self.run}).encode()
        headers = {"X-Request-ID": request_id, "Content-Type": "application/json"}
        for attempt in range(POST_TRIES):
            if attempt:
                with self._lock:
                    self.result.post_retries += 1
                time.sleep(min(0.2 * 2**attempt, 5.0))
            try:
                status = client.request("POST", ORDER_PATH, headers, body)
            except (OSError, http.client.HTTPException):
                client.conn.close()
                client.conn = client._connect()
                continue
            if 200 <= status < 300:
                return True
        return False

    def _posts(self) -> None:
        client = GatewayClient(self.address, self.context)
        try:
            while self._running():
                request_id = f"{self.run}-order-{len(self._order_ids)}"
                self._order_ids.append(request_id)
                acknowledged = self._post_once(client, request_id)
                with self._lock:
                    self.result.posts += 1
                    if not acknowledged:
                        self.result.posts_unacknowledged += 1
                time.sleep(1 / POST_RATE)
        finally:
            client.close()

    def _publish(self) -> None:
        spool = DiskSpool(Path(self._spool_dir.name))
        self._publisher = EventPublisher(MajorityClient(redis_settings(self.topology)), spool)
        n = 0
        while self._running() and n < MAX_EVENTS:
            event_id = f"{self.run}:{n}"
            n += 1
            outcome = self._publisher.publish(
                self.stream, {"n": n}, event_id=event_id, maxlen=MAX_EVENTS * 2
            )
            self._events[event_id] = outcome.status
            time.sleep(1 / EVENT_RATE)

    def stop(self) -> LoadResult:
        """End the clients (bounded), replay the spool, and count what is stored."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)
        written = self._writer.stop()
        self._check_rows(written)
        self._check_events()
        self._check_orders()
        self._spool_dir.cleanup()
        return self.result

    def _check_rows(self, written: dict[str, Any]) -> None:
        acked = {n for n, _ in written["acks"]}
        reader = Writer(
            self.topology, self._writer_host, writer_settings(self.topology, "read", self.run, 60)
        )
        present = set(reader.stop()["present"])
        self.result.rows_committed = len(acked)
        self.result.rows_lost = len(acked - present)

    def _check_events(self) -> None:
        publisher = self._publisher
        deadline = time.monotonic() + 120
        while publisher.spool is not None and len(publisher.spool) and time.monotonic() < deadline:
            publisher.drain(budget_seconds=5)
        publisher.close()
        client = MajorityClient(redis_settings(self.topology))
        try:
            entries: Any = client.call(lambda conn: conn.xrange(self.stream))
            client.call(lambda conn: conn.delete(self.stream))
        finally:
            client.close()
        counts: dict[str, int] = {}
        for _, fields in entries:
            found = fields[b"event_id"].decode()
            counts[found] = counts.get(found, 0) + 1
        self.result.events = len(self._events)
        self.result.events_lost = sum(1 for event in self._events if counts.get(event, 0) == 0)
        self.result.events_duplicated = sum(1 for c in counts.values() if c > 1)

    def _check_orders(self) -> None:
        import psycopg

        app = self.topology.group("app")[0]
        role = next(
            s["postgres_role"] for s in setting(app.data, "services") if s["name"] == ORDER_SERVICE
        )
        with (
            tunnel(self.topology, app.name, setting(app.data, "pgbouncer_port")) as port,
            psycopg.connect(
                host="127.0.0.1",
                port=port,
                dbname="trading",
                user=role,
                password=role_password(self.topology, role),
                prepare_threshold=None,
                connect_timeout=10,
            ) as conn,
        ):
            rows = conn.execute(
                "SELECT request_id, count(*) FROM refservice_orders "
                "WHERE service = %s AND request_id = ANY(%s) GROUP BY request_id",
                (ORDER_SERVICE, self._order_ids),
            ).fetchall()
        stored = {str(request_id): int(count) for request_id, count in rows}
        self.result.orders_not_once = {
            request_id: stored.get(request_id, 0)
            for request_id in self._order_ids
            if stored.get(request_id, 0) != 1
        }

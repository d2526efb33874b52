"""The gateway on gw-1, asked over HTTPS from the controller: routes, ids, limits, failover.

The public listener (80/443) serves public paths only; drills that need a knob
(``?delay=``) or a service's own /health go through the internal listener
(plain HTTP on gw-1's private address, open to the controller as an admin).

Every load here is bounded in count and time and goes to lab addresses only.
"""

import http.client
import json
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from seawall import defaults
from seawall.inventory import Topology
from seawall.lab import faults
from seawall.lab.config import lab_config
from seawall.ssh import run as ssh
from tests.lab.test_services import (
    CATALOGUE,
    PREFIX,
    answers,
    app_faults,
    get_json,
    health_url,
    wait_until,
)

GATEWAY = "gw-1"
ZONES = defaults.GATEWAY["gateway_rate_zones"]


@pytest.fixture(scope="module")
def tls(deployed_lab: Topology) -> ssl.SSLContext:
    """Trust exactly gw-1's certificate (self-signed in the lab, for its address)."""
    cert = ssh(deployed_lab, GATEWAY, "cat /etc/nginx/tls/gateway.crt", check=True).stdout
    return ssl.create_default_context(cadata=cert)


class Client:
    """One keep-alive HTTPS connection to the gateway."""

    def __init__(self, topology: Topology, context: ssl.SSLContext, timeout: float = 25) -> None:
        self.address = topology.host(GATEWAY).address
        self.port = int(topology.host(GATEWAY).data["gateway_internal_http_port"])
        self.context, self.timeout = context, timeout
        self.conn = self._connect()

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPSConnection(self.address, context=self.context, timeout=self.timeout)

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> tuple[int, dict[str, str], Any]:
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=body or None, headers=headers or {})
                response = self.conn.getresponse()
                raw = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The gateway closed an idle keep-alive connection: a client
                # reconnects, but never sends anything but a GET twice.
                self.conn.close()
                self.conn = self._connect()
                if attempt == 2 or method != "GET":
                    raise
        try:
            payload: Any = json.loads(raw)
        except json.JSONDecodeError:
            payload = raw.decode(errors="replace")
        return response.status, {k.lower(): v for k, v in response.getheaders()}, payload

    def close(self) -> None:
        self.conn.close()


class InternalClient(Client):
    """One keep-alive plain-HTTP connection to the gateway's internal listener."""

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.address, self.port, timeout=self.timeout)


@pytest.fixture
def client(deployed_lab: Topology, tls: ssl.SSLContext) -> Iterator[Client]:
    made = Client(deployed_lab, tls)
    yield made
    made.close()


@pytest.fixture
def internal(deployed_lab: Topology, tls: ssl.SSLContext) -> Iterator[Client]:
    made = InternalClient(deployed_lab, tls)
    yield made
    made.close()


def item_path(service: dict[str, Any]) -> str:
    route = service["route"]
    return f"{route}items/7" if route.endswith("/") else route


def test_every_route_reaches_its_service_on_both_app_hosts(client: Client) -> None:
    for name, service in CATALOGUE.items():
        seen: set[str] = set()
        for _ in range(20):
            status, _, body = client.request("GET", item_path(service))
            if name == "monitoring-health":
                # /api/health is monitoring-health's status, and nothing else, here.
                assert set(body) == {"status"}, body
                seen.add("any")
                break
            assert status == 200, (name, body)
            assert body["service"] == name
            seen.add(body["host"])
            if seen == {"app-1", "app-2"}:
                break
        assert seen in ({"app-1", "app-2"}, {"any"}), (name, seen)


def test_request_id_is_kept_returned_and_logged_by_the_service(
    deployed_lab: Topology, client: Client
) -> None:
    request_id = f"lab-{uuid.uuid4().hex}"
    status, headers, body = client.request(
        "GET", "/api/risk/items/1", headers={"X-Request-ID": request_id}
    )
    assert status == 200
    assert headers["x-request-id"] == request_id and body["request_id"] == request_id
    line = ssh(
        deployed_lab,
        body["host"],
        f"journalctl -u {PREFIX}risk-safety --since -60s -o cat | grep -F {request_id}",
    ).stdout.splitlines()
    assert line, "the service did not log the request id"
    record = json.loads(line[0])
    assert record["request_id"] == request_id and record["service"] == "risk-safety"
    access = ssh(
        deployed_lab, GATEWAY, f"sleep 1.2; grep -F {request_id} /var/log/nginx/access-json.log"
    ).stdout.splitlines()
    assert access, "the gateway did not log the request id"
    logged = json.loads(access[-1])
    assert logged["upstream_response_time"] and logged["route"] == "risk-safety"


def test_a_request_id_is_generated_when_missing(client: Client) -> None:
    _, headers, body = client.request("GET", "/api/ai/items/1")
    assert len(headers["x-request-id"]) == 32 and body["request_id"] == headers["x-request-id"]


def test_rate_limit_answers_429_beyond_rate_and_burst_and_not_before(client: Client) -> None:
    trading = ZONES["trading"]
    allowed = trading["burst"] + 1
    # Let the zone refill completely (burst / rate seconds).
    time.sleep(trading["burst"] / trading["rate"] + 0.5)
    path = "/api/execution/orders/1"  # GET: no side effect; the route is in the trading zone
    first = [client.request("GET", path)[0] for _ in range(allowed)]
    assert 429 not in first, first
    after = [client.request("GET", path) for _ in range(10)]
    limited = [(h, b) for status, h, b in after if status == 429]
    assert limited, [status for status, _, _ in after]
    headers, body = limited[0]
    assert body["status"] == 429 and body["request_id"] == headers["x-request-id"]


def test_errors_nginx_answers_are_json(client: Client) -> None:
    status, headers, body = client.request("POST", "/api/ai/items", body=b"x" * 2_000_000)
    assert status == 413 and body["status"] == 413
    assert headers["content-type"].startswith("application/json")


def test_http_redirects_and_security_headers(
    deployed_lab: Topology, client: Client, tls: ssl.SSLContext
) -> None:
    plain = http.client.HTTPConnection(deployed_lab.host(GATEWAY).address, timeout=5)
    plain.request("GET", "/api/ai/items/1")
    response = plain.getresponse()
    assert response.status == 301
    assert response.getheader("Location", "").startswith("https://")
    plain.close()
    _, headers, _ = client.request("GET", "/api/ai/items/1")
    assert headers["strict-transport-security"].startswith("max-age=")
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert "server" not in headers or "/" not in headers["server"]


def test_stub_status_answers_on_localhost_only(deployed_lab: Topology) -> None:
    port = defaults.GATEWAY["gateway_status_port"]
    local = ssh(deployed_lab, GATEWAY, f"curl -s -m 3 http://127.0.0.1:{port}/stub_status")
    assert "Active connections" in local.stdout
    address = deployed_lab.host(GATEWAY).address
    outside = ssh(deployed_lab, "app-1", f"curl -s -m 3 http://{address}:{port}/ || echo refused")
    assert "refused" in outside.stdout


def test_a_post_is_not_retried_when_its_upstream_fails_mid_request(
    deployed_lab: Topology, internal: Client
) -> None:
    # ?delay= is a drill knob: the internal listener (same routes, same retry rules) passes it.
    request_id = f"post-{uuid.uuid4().hex}"
    outcome: dict[str, Any] = {}

    def post() -> None:
        outcome["result"] = internal.request(
            "POST", "/api/execution/orders?delay=4", {"X-Request-ID": request_id}, b'{"qty": 1}'
        )

    def received_on(host: str) -> bool:
        log = ssh(
            deployed_lab,
            host,
            f"journalctl -u {PREFIX}execution --since -60s -o cat | grep -F {request_id}",
        )
        return "order received" in log.stdout

    with app_faults():
        worker = threading.Thread(target=post)
        worker.start()
        first: str | None = None
        deadline = time.monotonic() + 3
        while first is None and time.monotonic() < deadline:
            first = next((h for h in ("app-1", "app-2") if received_on(h)), None)
        assert first is not None, "no app host received the POST"
        ssh(
            deployed_lab,
            first,
            f"systemctl kill --signal=SIGKILL {PREFIX}execution.service",
            check=True,
        )
        worker.join(30)
    status, _, body = outcome["result"]
    assert status == 502 and body["request_id"] == request_id
    other = "app-2" if first == "app-1" else "app-1"
    assert not received_on(other), "the POST was sent to a second app host"
    # The killed service heals by itself.
    url = health_url(deployed_lab, first, "execution")
    deadline = time.monotonic() + 15
    while not answers(url) and time.monotonic() < deadline:
        time.sleep(0.5)


def test_app_1_crashed_idempotent_gets_keep_succeeding(
    deployed_lab: Topology, tls: ssl.SSLContext
) -> None:
    config = lab_config(deployed_lab)
    duration, workers, pause = 30.0, 2, 0.1  # ~20 requests/s, under every rate limit
    paths = [item_path(CATALOGUE[n]) for n in ("ai-engine", "execution", "marketdata", "backend")]
    results: list[tuple[int | str, float]] = []

    def load(offset: int) -> None:
        session = Client(deployed_lab, tls, timeout=25)
        stop_at = time.monotonic() + duration
        count = offset
        while time.monotonic() < stop_at:
            started = time.monotonic()
            try:
                status: int | str = session.request("GET", paths[count % len(paths)])[0]
            except OSError as error:
                status = repr(error)
            results.append((status, time.monotonic() - started))
            count += 1
            time.sleep(pause)
        session.close()

    with app_faults():
        try:
            faults.crash(config, "app-1")
            threads = [threading.Thread(target=load, args=(i,)) for i in range(workers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(duration + 60)
        finally:
            faults.restore(config)
    failed = [status for status, _ in results if status != 200]
    slowest = max(seconds for _, seconds in results)
    print(
        f"app-1 crashed: {len(results)} GETs, {len(failed)} failed, slowest {slowest:.1f} s",
        file=sys.stderr,
    )
    # Enough requests to span the whole window (the shared 2-core machine can be slow).
    assert len(results) >= duration
    assert failed == []
    # app-1 is back: wait (bounded) for its services before the next test.
    url = health_url(deployed_lab, "app-1", "backend")
    deadline = time.monotonic() + 60
    while not answers(url) and time.monotonic() < deadline:
        time.sleep(1)


def test_a_post_commits_a_row_and_publishes_its_event(
    deployed_lab: Topology, client: Client
) -> None:
    # Postgres (Patroni, PgBouncer) comes from its own deploy: give it a bounded while.
    def postgres_ok() -> bool:
        try:
            body = get_json(health_url(deployed_lab, "app-1", "execution"))[1]
        except (OSError, ValueError):
            return False
        return body["dependencies"].get("postgres", {}).get("status") == "OK"

    wait_until(postgres_ok, within=60, step=1, what="execution's Postgres is OK")
    # The order path is in the trading zone: let an earlier test's burst refill.
    time.sleep(ZONES["trading"]["burst"] / ZONES["trading"]["rate"] + 0.5)
    request_id = f"order-{uuid.uuid4().hex}"
    status, headers, body = client.request(
        "POST", "/api/execution/orders", {"X-Request-ID": request_id}, b'{"symbol": "BTC"}'
    )
    assert status == 201, body
    assert body["order_id"] > 0 and body["request_id"] == request_id
    # Acknowledged by the Redis master and a replica (WAIT 1), or spooled on disk.
    assert body["event"]["status"] in ("acked", "spooled")


def test_the_redirect_goes_to_the_configured_name_even_with_a_forged_host(
    deployed_lab: Topology,
) -> None:
    data = deployed_lab.host(GATEWAY).data
    name = data.get("gateway_server_name") or GATEWAY
    plain = http.client.HTTPConnection(deployed_lab.host(GATEWAY).address, timeout=5)
    plain.request("GET", "/api/ai/items/1?x=1", headers={"Host": "evil.example"})
    response = plain.getresponse()
    plain.close()
    assert response.status == 301
    assert response.getheader("Location") == f"https://{name}/api/ai/items/1?x=1"


def test_internal_paths_are_404_publicly_and_answer_on_the_app_hosts(
    deployed_lab: Topology, client: Client, internal: Client
) -> None:
    prefixes = [s for s in CATALOGUE.values() if s["route"].endswith("/")]
    for service in prefixes:
        route = service["route"]
        for path in ("health", "health/", "openapi.json", "slow?seconds=0", "docs"):
            status, _, body = client.request("GET", route + path)
            assert status == 404 and body["status"] == 404, (route + path, body)
        # The private listener keeps the service's own /health.
        status, _, body = internal.request("GET", route + "health")
        assert body["service"] == service["name"], (route, status, body)
    # The knob on an order path: 404 from the internet (checked by the service
    # itself, since no nginx rule can see every spelling of a query string).
    status, _, body = client.request("POST", "/api/ai/orders?%64elay=1", body=b"{}")
    assert status == 404, body
    # The same paths straight on an app host, from an app host.
    app = deployed_lab.host("app-1").address
    for service in prefixes:
        for path in ("/health", "/openapi.json"):
            code = ssh(
                deployed_lab,
                "app-1",
                f"curl -s -o /dev/null -w '%{{http_code}}' -m 5 http://{app}:{service['port']}{path}",
            ).stdout.strip()
            assert code == "200", (service["name"], path, code)


def test_the_public_health_is_the_status_only(client: Client, internal: Client) -> None:
    status, _, body = client.request("GET", "/api/health")
    assert status in (200, 503) and set(body) == {"status"}, body
    assert body["status"] in ("OK", "DEGRADED", "DOWN")
    # The internal listener (ops' blackbox exporter, seawall verify) keeps the full report.
    _, _, full = internal.request("GET", "/api/health")
    assert full["service"] == "monitoring-health" and "dependencies" in full


def test_every_services_order_path_gets_429_past_the_trading_burst(client: Client) -> None:
    trading = ZONES["trading"]
    # GETs: no side effect (the services answer 404/405), but the limit comes first.
    for path in ("/orders/1", "/api/ai/orders/1", "/api/marketdata/orders/1"):
        time.sleep(trading["burst"] / trading["rate"] + 0.5)
        first = [client.request("GET", path)[0] for _ in range(trading["burst"] + 1)]
        assert 429 not in first, (path, first)
        after = [client.request("GET", path)[0] for _ in range(10)]
        assert 429 in after, (path, after)


def test_slow_with_nan_is_refused_and_the_service_keeps_answering(
    deployed_lab: Topology, client: Client, internal: Client
) -> None:
    assert client.request("GET", "/api/ai/slow?seconds=nan")[0] == 404
    for value in ("nan", "inf", "-1", "1e9", "x"):
        status, _, body = internal.request("GET", f"/api/ai/slow?seconds={value}")
        assert status == 400 and "seconds" in body["error"], (value, body)
    port = CATALOGUE["ai-engine"]["port"]
    url = f"http://{deployed_lab.host('app-1').address}:{port}/slow?seconds=nan"
    code, body = get_json(url)
    assert code == 400, body
    assert get_json(health_url(deployed_lab, "app-1", "ai-engine"), timeout=3)[0] == 200

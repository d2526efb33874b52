"""The reference service's HTTP API.

- ``GET /health``: the contract of ``seawall.runtime.health`` (200 OK/DEGRADED, 503 DOWN);
- ``GET /health/public``: the same check, its status only (what the internet sees);
- ``GET /items/{item_id}``: idempotent, touches nothing, names the host that answered;
- ``POST /orders``: commits the order and its event in one transaction (``outbox``):
  201 with the order id; the same ``X-Request-ID`` again answers 200 with the same
  order and stores nothing (409 if the body differs). The outbox relay publishes
  the event to ``quantum:stream:order_created`` exactly once; ``event.status`` is
  ``acked`` if it was out within ``EVENT_WAIT_S``, else ``spooled`` (committed, on its
  way). ``?delay=`` holds the request first, for drills that fail an upstream mid-request;
- ``GET /slow?seconds=``: answers after a delay, for drain and timeout tests.

Every query parameter is validated (``seconds`` and ``delay`` finite, 0 to
``MAX_DELAY_S``): anything else is a 400 JSON error, before any handler runs.
A request the gateway marks as from the internet (``X-Seawall-Edge: public``)
gets 404 for the internal paths (per-service health, the API schema) and the
drill knobs (``/slow``, ``?delay=``), whatever the gateway itself filters.

Every response carries ``X-Request-ID`` (the caller's, or a new one) and every
request is logged once, as JSON, with that id.
"""

import asyncio
import json
import logging
import math
import socket
import time
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from seawall.refservice.backends import Postgres, Redis
from seawall.refservice.config import ServiceConfig
from seawall.refservice.outbox import OutboxRelay, RequestConflictError
from seawall.runtime import jsonlog
from seawall.runtime.health import Dependency, HealthChecker, Probe, http_probe

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Drill and test knobs are bounded, so no request can hold a worker for long.
MAX_DELAY_S = 30.0
# The gateway's public listener sets this header to "public" (a client's own is dropped).
EDGE_HEADER = b"x-seawall-edge"
# Paths and query parameters an internet client never reaches (see the module docstring).
INTERNAL_PATHS = frozenset({"/health", "/openapi.json", "/docs", "/redoc", "/slow"})
DRILL_PARAMETERS = frozenset({"delay"})
# How long POST /orders waits to tell the caller its event is out (it is committed either way).
EVENT_WAIT_S = 0.5

access_log = logging.getLogger("access")
log = logging.getLogger("refservice")


class RequestContext:
    """ASGI middleware: correlation id in and out, one JSON access record per request."""

    def __init__(self, app: ASGIApp, counters: dict[str, int] | None = None) -> None:
        self.app = app
        self.counters = counters if counters is not None else {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = jsonlog.REQUEST_ID_HEADER.lower().encode()
        given = next((v.decode("latin-1") for k, v in scope["headers"] if k == header), None)
        request_id = jsonlog.accept_request_id(given)
        token = jsonlog.bind_request_id(request_id)
        self.counters["requests"] = self.counters.get("requests", 0) + 1
        app = self.app
        if _from_internet(scope) and _internal_only(scope):
            app = _not_found
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((header, request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        finally:
            # Health checks come every few seconds: logged only when they fail.
            quiet = scope["path"] in ("/health", "/health/public") and status == 200
            access_log.log(
                logging.DEBUG if quiet else logging.INFO,
                "%s %s %s",
                scope["method"],
                scope["path"],
                status,
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "client": (scope.get("client") or ("", 0))[0],
                },
            )
            jsonlog.reset_request_id(token)


def _from_internet(scope: Scope) -> bool:
    return any(k == EDGE_HEADER and v == b"public" for k, v in scope["headers"])


def _internal_only(scope: Scope) -> bool:
    """Whether the request asks for an internal path or a drill knob (module docstring)."""
    if (scope["path"].rstrip("/") or "/") in INTERNAL_PATHS:
        return True
    # Parsed as Starlette parses it, so no encoding slips a knob past this check.
    query = scope.get("query_string", b"").decode("latin-1")
    names = {name for name, _ in urllib.parse.parse_qsl(query, keep_blank_values=True)}
    return bool(names & DRILL_PARAMETERS)


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    await _error(404, "not found")(scope, receive, send)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": message, "status": status, "request_id": jsonlog.request_id()}, status
    )


def create_app(config: ServiceConfig) -> ASGIApp:
    """Build the service: FastAPI app wrapped in the request-id middleware."""
    redis = Redis(config) if config.needs("redis") else None
    postgres = Postgres(config) if config.needs("postgres") else None
    hostname = socket.gethostname()
    counters = {"requests": 0, "orders": 0, "order_retries": 0, "events_spooled": 0}
    relay: OutboxRelay | None = None
    if postgres is not None and redis is not None:
        relay = OutboxRelay(
            postgres.connect,
            redis.outbox_publisher,
            config.service,
            maxlen=config.stream_maxlen,
            housekeeping=redis.drain_legacy_spool,
        )
        relay.start()

    def metrics() -> dict[str, Any]:
        return {**counters, **(relay.metrics() if relay is not None else {})}

    dependencies = []
    for spec in config.dependencies:
        probe: Probe
        if spec.kind == "redis" and redis is not None:
            probe = _threaded(redis.ping)
        elif spec.kind == "postgres" and postgres is not None:
            probe = _threaded(postgres.ping)
        elif spec.kind == "http" and spec.url:
            probe = http_probe(spec.url)
        else:
            continue
        dependencies.append(Dependency(spec.name, spec.kind, probe, spec.critical))
    checker = HealthChecker(config.service, config.version, dependencies, metrics)

    api = FastAPI(title=config.service, version=config.version, docs_url=None, redoc_url=None)

    @api.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "internal error")

    @api.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        # Names the parameter and the rule, never echoes the value sent.
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        return _error(400, f"invalid request: {problems}")

    @api.get("/health")
    async def health() -> JSONResponse:
        report = await checker.report()
        return JSONResponse(report.to_dict(), report.http_status)

    @api.get("/health/public")
    async def public_health() -> JSONResponse:
        # No versions, dependency names, addresses or errors: the status only.
        report = await checker.report()
        return JSONResponse({"status": report.status.value}, report.http_status)

    @api.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, Any]:
        return {
            "service": config.service,
            "host": hostname,
            "item_id": item_id,
            "request_id": jsonlog.request_id(),
        }

    @api.get("/slow")
    async def slow(seconds: float = Query(1.0, ge=0.0, le=MAX_DELAY_S)) -> Any:
        # ge/le already refuse nan and inf (every comparison with nan is false);
        # checked again here, as asyncio.sleep(nan) stalls the event loop for good.
        if not math.isfinite(seconds):
            return _error(400, "invalid request: seconds must be finite")
        await asyncio.sleep(seconds)
        return {"service": config.service, "host": hostname, "slept": seconds}

    @api.post("/orders", status_code=201, response_model=None)
    async def orders(request: Request, delay: float = Query(0.0, ge=0.0, le=MAX_DELAY_S)) -> Any:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            return _error(400, "body is not JSON")
        request_id = jsonlog.request_id() or ""
        log.info("order received", extra={"delay": delay})
        if not math.isfinite(delay):
            return _error(400, "invalid request: delay must be finite")
        if delay > 0:
            await asyncio.sleep(delay)
        if postgres is None:
            return _error(503, "this service has no Postgres dependency")
        try:
            placed = await asyncio.to_thread(
                postgres.place_order,
                config.service,
                request_id,
                json.dumps(body),
                relay is not None,
            )
        except RequestConflictError as error:
            return _error(409, str(error))
        except Exception as error:
            log.warning("order not stored: %s", error)
            return _error(503, "postgres unavailable")
        event: dict[str, Any] = {"status": "not published"}
        if not placed.created:
            counters["order_retries"] += 1
            log.info("order retried", extra={"order_id": placed.order_id})
            if relay is not None:
                event = {"status": "spooled"}  # committed with the order, the first time
        elif relay is not None and placed.outbox_id is not None:
            counters["orders"] += 1
            relay.wake()
            out, stream_id = await _wait_published(relay, placed.outbox_id)
            if out:
                event = {"status": "acked", "stream_id": stream_id}
            else:
                event = {"status": "spooled"}
                counters["events_spooled"] += 1
        else:
            counters["orders"] += 1
        log.info(
            "order stored" if placed.created else "order found",
            extra={"order_id": placed.order_id, "event": event["status"]},
        )
        return JSONResponse(
            {
                "service": config.service,
                "host": hostname,
                "order_id": placed.order_id,
                "created": placed.created,
                "event": event,
                "request_id": request_id,
            },
            201 if placed.created else 200,
        )

    return RequestContext(api, counters)


async def _wait_published(relay: OutboxRelay, outbox_id: int) -> tuple[bool, str | None]:
    give_up = time.monotonic() + EVENT_WAIT_S
    while True:
        out, stream_id = relay.published(outbox_id)
        if out or time.monotonic() >= give_up:
            return out, stream_id
        await asyncio.sleep(0.01)


def _threaded(call: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        await asyncio.to_thread(call)

    return run

"""The /health contract every platform service answers (docs/design.md).

A service lists its dependencies, each with a probe; ``HealthChecker.report()``
times every probe concurrently and returns a ``HealthReport``:

- a dependency is DOWN when its probe fails or does not answer within its timeout,
  DEGRADED when it answers slower than its kind's threshold (Redis 100 ms,
  Postgres 200 ms, HTTP 500 ms), OK otherwise;
- the service is DOWN when a critical dependency is DOWN, DEGRADED when any
  dependency is DEGRADED or a non-critical one is DOWN, OK otherwise.

HTTP status: 200 for OK and DEGRADED (the service still serves), 503 for DOWN, so
a load balancer takes a DOWN instance out and keeps a slow one.

Only the standard library (and jsonlog, for the request id): services import this
whatever framework they use.
"""

import asyncio
import json
import time
import urllib.request
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from seawall.runtime import jsonlog


class Status(StrEnum):
    OK = "OK"
    DEGRADED = "DEGRADED"
    DOWN = "DOWN"


# Latency above which a dependency that answers is DEGRADED, by kind, in ms.
THRESHOLDS_MS: dict[str, float] = {"redis": 100.0, "postgres": 200.0, "http": 500.0}

# A probe gets this long before its dependency counts as DOWN: a few times the
# DEGRADED threshold, and well under a health checker's own timeout.
DEFAULT_TIMEOUT_S = 1.5

HTTP_STATUS = {Status.OK: 200, Status.DEGRADED: 200, Status.DOWN: 503}


def classify(kind: str, latency_ms: float | None) -> Status:
    """Return a dependency's status from its probe latency (``None``: the probe failed)."""
    if latency_ms is None:
        return Status.DOWN
    if latency_ms > THRESHOLDS_MS.get(kind, THRESHOLDS_MS["http"]):
        return Status.DEGRADED
    return Status.OK


@dataclass(frozen=True)
class DependencyHealth:
    """One dependency's state as the last probe saw it."""

    name: str
    kind: str
    critical: bool
    status: Status
    latency_ms: float | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status.value, "latency_ms": self.latency_ms}
        out["kind"], out["critical"] = self.kind, self.critical
        if self.error:
            out["error"] = self.error
        return out


def overall(dependencies: Sequence[DependencyHealth]) -> Status:
    """Return the service's status from its dependencies' (rules in the module docstring)."""
    if any(d.critical and d.status is Status.DOWN for d in dependencies):
        return Status.DOWN
    if any(d.status is not Status.OK for d in dependencies):
        return Status.DEGRADED
    return Status.OK


@dataclass(frozen=True)
class HealthReport:
    """The body of ``GET /health``."""

    service: str
    status: Status
    version: str
    timestamp: str
    uptime_seconds: float
    dependencies: tuple[DependencyHealth, ...] = ()
    metrics: Mapping[str, Any] = field(default_factory=dict)

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.status]

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "status": self.status.value,
            "version": self.version,
            "timestamp": self.timestamp,
            "uptime_seconds": self.uptime_seconds,
            "dependencies": {d.name: d.to_dict() for d in self.dependencies},
            "metrics": dict(self.metrics),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> "HealthReport":
        """Parse a /health body (from any service, ours or not).

        Raises:
            ValueError: the body does not follow the contract.
        """
        try:
            deps = tuple(
                DependencyHealth(
                    name=str(name),
                    kind=str(dep.get("kind", "")),
                    critical=bool(dep.get("critical", False)),
                    status=Status(dep["status"]),
                    latency_ms=dep.get("latency_ms"),
                    error=dep.get("error"),
                )
                for name, dep in dict(body.get("dependencies") or {}).items()
            )
            return cls(
                service=str(body["service"]),
                status=Status(body["status"]),
                version=str(body.get("version", "")),
                timestamp=str(body.get("timestamp", "")),
                uptime_seconds=float(body.get("uptime_seconds", 0.0)),
                dependencies=deps,
                metrics=dict(body.get("metrics") or {}),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ValueError(f"not a /health body: {error!r}") from None


Probe = Callable[[], Awaitable[object]]


@dataclass(frozen=True)
class Dependency:
    """A dependency to probe: a coroutine function that raises when it is unhealthy."""

    name: str
    kind: str
    probe: Probe
    critical: bool = True
    timeout_s: float = DEFAULT_TIMEOUT_S


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def probe(dependency: Dependency) -> DependencyHealth:
    """Run one probe under its timeout and classify the result."""
    started = time.perf_counter()
    try:
        await asyncio.wait_for(dependency.probe(), dependency.timeout_s)
    except Exception as error:  # any failure of a probe means the dependency is DOWN
        text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        return DependencyHealth(
            dependency.name, dependency.kind, dependency.critical, Status.DOWN, error=text[:200]
        )
    latency = round((time.perf_counter() - started) * 1000, 2)
    return DependencyHealth(
        dependency.name,
        dependency.kind,
        dependency.critical,
        classify(dependency.kind, latency),
        latency,
    )


@dataclass
class HealthChecker:
    """Builds a service's /health report from its dependencies."""

    service: str
    version: str
    dependencies: list[Dependency] = field(default_factory=list)
    metrics: Callable[[], Mapping[str, Any]] = dict
    started: float = field(default_factory=time.monotonic)

    async def report(self) -> HealthReport:
        results = await asyncio.gather(*(probe(d) for d in self.dependencies))
        return HealthReport(
            service=self.service,
            status=overall(results),
            version=self.version,
            timestamp=utc_now(),
            uptime_seconds=round(time.monotonic() - self.started, 1),
            dependencies=tuple(results),
            metrics=self.metrics(),
        )


def http_probe(url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Probe:
    """Return a probe that GETs ``url``; any answer but 2xx or a timeout is a failure.

    The request id being served, if any, goes along as ``X-Request-ID``.
    """

    def fetch() -> None:
        # Run in the caller's context (to_thread copies it): a probe made while
        # serving a request carries its id to the next service.
        request = urllib.request.Request(url, headers=jsonlog.outgoing_headers())
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            response.read()

    async def run() -> None:
        await asyncio.to_thread(fetch)

    return run


def fetch_health(url: str, timeout_s: float = 3.0) -> tuple[int, HealthReport]:
    """GET a /health URL; return the HTTP status and the parsed report.

    A 503 with a contract body is a valid answer (the service says DOWN).

    Raises:
        OSError: no answer (refused, timed out, reset).
        ValueError: an answer that does not follow the contract.
    """
    import urllib.error

    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310
            code, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        code, raw = error.code, error.read()
    try:
        body = json.loads(raw)
    except json.JSONDecodeError:
        raise ValueError(f"{url}: HTTP {code}, body is not JSON") from None
    if not isinstance(body, dict):
        raise ValueError(f"{url}: HTTP {code}, body is not a JSON object")
    return code, HealthReport.from_dict(body)

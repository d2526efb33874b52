"""The /health contract: status rules, thresholds, the report's shape, real probes."""

import asyncio
import http.server
import json
import threading

import pytest

from seawall.runtime import health, jsonlog
from seawall.runtime.health import Dependency, DependencyHealth, HealthChecker, Status


@pytest.mark.parametrize(
    ("kind", "latency", "expected"),
    [
        ("redis", 0.8, Status.OK),
        ("redis", 100.0, Status.OK),
        ("redis", 100.1, Status.DEGRADED),
        ("postgres", 199.0, Status.OK),
        ("postgres", 250.0, Status.DEGRADED),
        ("http", 499.0, Status.OK),
        ("http", 501.0, Status.DEGRADED),
        ("redis", None, Status.DOWN),
    ],
)
def test_thresholds(kind: str, latency: float | None, expected: Status) -> None:
    assert health.classify(kind, latency) is expected


def dep(status: Status, critical: bool = True) -> DependencyHealth:
    return DependencyHealth("d", "redis", critical, status, 1.0)


def test_critical_dependency_down_makes_the_service_down() -> None:
    assert health.overall([dep(Status.OK), dep(Status.DOWN)]) is Status.DOWN


def test_optional_dependency_down_only_degrades() -> None:
    assert health.overall([dep(Status.OK), dep(Status.DOWN, critical=False)]) is Status.DEGRADED


def test_slow_dependency_degrades_and_no_dependency_is_ok() -> None:
    assert health.overall([dep(Status.DEGRADED)]) is Status.DEGRADED
    assert health.overall([]) is Status.OK


def test_down_answers_503_and_degraded_200() -> None:
    assert health.HTTP_STATUS == {Status.OK: 200, Status.DEGRADED: 200, Status.DOWN: 503}


def checker(*dependencies: Dependency) -> HealthChecker:
    return HealthChecker("execution", "1.4.2", list(dependencies))


def probe_sleeping(seconds: float, fail: bool = False) -> health.Probe:
    async def probe() -> None:
        await asyncio.sleep(seconds)
        if fail:
            raise ConnectionError("refused")

    return probe


def test_report_has_the_contract_shape() -> None:
    report = asyncio.run(checker(Dependency("redis", "redis", probe_sleeping(0))).report())
    body = json.loads(report.to_json())
    assert set(body) == {
        "service",
        "status",
        "version",
        "timestamp",
        "uptime_seconds",
        "dependencies",
        "metrics",
    }
    assert body["service"] == "execution" and body["status"] == "OK"
    assert body["timestamp"].endswith("Z")
    assert body["dependencies"]["redis"]["status"] == "OK"
    assert body["dependencies"]["redis"]["latency_ms"] < 100


def test_real_probes_slow_failing_and_hanging() -> None:
    report = asyncio.run(
        checker(
            Dependency("postgres", "postgres", probe_sleeping(0.25)),
            Dependency("risk-safety", "http", probe_sleeping(0, fail=True), critical=False),
            Dependency("exchange", "http", probe_sleeping(5), critical=False, timeout_s=0.2),
        ).report()
    )
    deps = {d.name: d for d in report.dependencies}
    assert deps["postgres"].status is Status.DEGRADED
    assert deps["risk-safety"].status is Status.DOWN
    assert "refused" in (deps["risk-safety"].error or "")
    assert deps["exchange"].status is Status.DOWN
    assert report.status is Status.DEGRADED


def test_report_round_trips_through_json() -> None:
    report = asyncio.run(checker(Dependency("redis", "redis", probe_sleeping(0))).report())
    again = health.HealthReport.from_dict(json.loads(report.to_json()))
    assert again.to_dict() == report.to_dict()


@pytest.mark.parametrize("body", [{}, {"service": "x", "status": "MAYBE"}, {"status": "OK"}])
def test_a_body_outside_the_contract_is_refused(body: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        health.HealthReport.from_dict(body)


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        self.seen.append(self.headers.get("X-Request-ID"))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def test_an_http_probe_passes_the_request_id_on() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Recorder.seen = []
    url = f"http://127.0.0.1:{server.server_address[1]}/health"
    probe = checker(Dependency("risk-safety", "http", health.http_probe(url)))

    async def serve_request(request_id: str | None) -> Status:
        # As the service does: the id is bound for the request, then the checker runs.
        token = jsonlog.bind_request_id(request_id)
        try:
            return (await probe.report()).status
        finally:
            jsonlog.reset_request_id(token)

    try:
        assert asyncio.run(serve_request("req-health-1")) is Status.OK
        assert asyncio.run(serve_request(None)) is Status.OK
    finally:
        server.shutdown()
        server.server_close()
    assert _Recorder.seen == ["req-health-1", None]

"""The reference service's HTTP API, started for real on loopback as the hosts run it.

Debian's python3 with python3-fastapi 0.92, pydantic 1.10 and uvicorn 0.17 (the
packages the services deploy installs; controller-packages.txt installs them
here): the query validation under test is pydantic's, and it differs between
its major versions, so the venv's pydantic would prove nothing.
"""

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from seawall.lab.controller import HOST_PYTHON

ROOT = Path(__file__).resolve().parents[2]
EDGE = {"X-Seawall-Edge": "public"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def request(
        self, path: str, method: str = "GET", headers: dict[str, str] | None = None
    ) -> tuple[int, Any, float]:
        request = urllib.request.Request(
            self.base + path,
            method=method,
            headers=headers or {},
            data=b"{}" if method == "POST" else None,
        )
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                code, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            code, raw = error.code, error.read()
        return code, json.loads(raw), time.monotonic() - started


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    # No dependencies: nothing but the HTTP layer under test.
    port = free_port()
    config = tmp_path_factory.mktemp("refservice") / "svc.json"
    config.write_text(json.dumps({"service": "execution", "port": port, "bind": "127.0.0.1"}))
    process = subprocess.Popen(
        [HOST_PYTHON, "-m", "seawall.refservice", "--config", str(config)],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    made = Service(port)
    deadline = time.monotonic() + 20
    while True:
        try:
            made.request("/health")
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                _, err = process.communicate()
                pytest.fail(f"the reference service did not start: {err.decode()[-2000:]}")
            time.sleep(0.1)
    yield made
    process.terminate()
    process.wait(10)


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "1e999", "-1", "31", "abc", ""])
def test_slow_refuses_every_value_but_a_finite_bounded_number(service: Service, value: str) -> None:
    code, body, took = service.request(f"/slow?seconds={value}")
    assert code == 400, body
    assert body["status"] == 400 and "seconds" in body["error"] and body["request_id"]
    assert took < 2, "the handler slept before refusing"


def test_the_event_loop_still_answers_after_nan(service: Service) -> None:
    service.request("/slow?seconds=nan")
    code, body, took = service.request("/slow?seconds=0")
    assert (code, body["slept"]) == (200, 0.0) and took < 2


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "1e999", "x"])
def test_orders_refuses_a_bad_delay_before_anything_else(service: Service, value: str) -> None:
    code, body, took = service.request(f"/orders?delay={value}", method="POST")
    assert code == 400 and "delay" in body["error"], body
    assert took < 2


def test_a_bad_path_parameter_is_a_400_json_error(service: Service) -> None:
    code, body, _ = service.request("/items/abc")
    assert code == 400 and "item_id" in body["error"], body


@pytest.mark.parametrize(
    "path",
    [
        "/health",
        "/health/",
        "/openapi.json",
        "/slow?seconds=0",
        "/orders?delay=0",
        "/orders?%64elay=1",
        "/orders?x=1&delay=",
    ],
)
def test_internet_requests_never_reach_internal_paths_or_knobs(service: Service, path: str) -> None:
    method = "POST" if path.startswith("/orders") else "GET"
    code, body, _ = service.request(path, method=method, headers=EDGE)
    assert (code, body["error"]) == (404, "not found"), body


def test_internal_callers_keep_health_schema_and_knobs(service: Service) -> None:
    code, body, _ = service.request("/health")
    assert code == 200 and body["service"] == "execution" and "version" in body
    assert service.request("/openapi.json")[0] == 200
    assert service.request("/slow?seconds=0.01")[0] == 200


def test_public_health_is_the_status_only(service: Service) -> None:
    for headers in (EDGE, {}):
        code, body, _ = service.request("/health/public", headers=headers)
        assert code == 200 and body == {"status": "OK"}
    # An ordinary route is untouched by the edge marker.
    code, body, _ = service.request("/items/7", headers=EDGE)
    assert code == 200 and body["item_id"] == 7

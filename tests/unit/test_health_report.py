"""`seawall health`: real /health answers from local HTTP servers, report and exit codes."""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# pyinfra's CLI package monkey-patches threads (gevent) on import: do it before any
# test server thread exists, as the real `seawall health` does.
import pyinfra_cli.inventory  # noqa: F401
import pytest
from typer.testing import CliRunner

from seawall.cli import app
from seawall.health_report import UNREACHABLE, collect
from seawall.inventory import load


def serve(status: str) -> ThreadingHTTPServer:
    body = json.dumps(
        {
            "service": "x",
            "status": status,
            "version": "1",
            "timestamp": "2026-11-27T04:00:00Z",
            "uptime_seconds": 1.0,
            "dependencies": {"redis": {"status": "OK", "latency_ms": 0.5}},
            "metrics": {},
        }
    ).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self.send_response(503 if status == "DOWN" else 200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def servers() -> Iterator[dict[str, int]]:
    running = {status: serve(status) for status in ("OK", "DEGRADED", "DOWN")}
    yield {status: server.server_address[1] for status, server in running.items()}
    for server in running.values():
        server.shutdown()


def write_inventory(tmp_path: Path, ports: dict[str, int]) -> Path:
    services = [{"name": name.lower(), "port": port} for name, port in ports.items()]
    # One file per inventory: pyinfra caches an inventory file it has read.
    path = tmp_path / f"inventory_{'_'.join(ports).lower()}.py"
    path.write_text(
        f"app = [('app-x', {{'private_address': '127.0.0.1', 'services': {services!r}}})]\n"
    )
    return path


def test_report_reads_every_service(tmp_path: Path, servers: dict[str, int]) -> None:
    ports = {"OK": servers["OK"], "DEGRADED": servers["DEGRADED"]}
    summary = collect(load(write_inventory(tmp_path, ports)))
    assert summary.ok
    assert [(s.service, s.status, s.http_status) for s in summary.services] == [
        ("ok", "OK", 200),
        ("degraded", "DEGRADED", 200),
    ]
    assert summary.services[0].dependencies == {"redis": "OK"}


def test_exit_codes(tmp_path: Path, servers: dict[str, int]) -> None:
    runner = CliRunner()
    healthy = write_inventory(tmp_path, {"OK": servers["OK"]})
    assert runner.invoke(app, ["health", "-i", str(healthy)]).exit_code == 0
    down = write_inventory(tmp_path, {"OK": servers["OK"], "DOWN": servers["DOWN"]})
    result = runner.invoke(app, ["health", "-i", str(down), "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["ok"] is False
    assert runner.invoke(app, ["health", "-i", str(tmp_path / "missing.py")]).exit_code == 2


def test_a_silent_service_counts_as_down(tmp_path: Path) -> None:
    # Port 9 (discard) on loopback: nothing listens, the connection is refused.
    summary = collect(load(write_inventory(tmp_path, {"GONE": 9})), timeout=1)
    assert not summary.ok and summary.services[0].status == UNREACHABLE

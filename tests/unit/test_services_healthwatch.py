"""The hang checker against real local HTTP servers: silent means hung, any answer means alive."""

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from seawall.runtime.healthwatch import Settings, Watched, Watcher


def answering(code: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self.send_response(code)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def urls() -> Iterator[dict[str, str]]:
    ok, down = answering(200), answering(503)
    # A hung service: the kernel accepts the connection, nothing ever answers.
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)
    yield {
        "ok": f"http://127.0.0.1:{ok.server_address[1]}/health",
        "down": f"http://127.0.0.1:{down.server_address[1]}/health",
        "hung": f"http://127.0.0.1:{hung.getsockname()[1]}/health",
    }
    ok.shutdown()
    down.shutdown()
    hung.close()


def watcher(urls: dict[str, str], killed: list[str], running: bool = True) -> Watcher:
    settings = Settings(
        [Watched(name, url) for name, url in urls.items()], interval=0, timeout=0.3, failures=3
    )
    return Watcher(settings, running=lambda unit: running, restart=killed.append)


def test_only_the_silent_service_is_killed_after_n_misses(urls: dict[str, str]) -> None:
    killed: list[str] = []
    checker = watcher(urls, killed)
    for _ in range(2):
        for service in checker.settings.services:
            checker.check(service)
    assert killed == []
    for service in checker.settings.services:
        checker.check(service)
    # A 503 (DOWN because a dependency is away) is an answer: never a restart.
    assert killed == ["hung"]
    assert checker.misses["hung"] == 0


def test_a_unit_that_is_not_running_is_left_to_systemd(urls: dict[str, str]) -> None:
    killed: list[str] = []
    checker = watcher(urls, killed, running=False)
    for _ in range(5):
        for service in checker.settings.services:
            checker.check(service)
    assert killed == []

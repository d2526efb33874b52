"""The gateway's journal copier (files/gateway/seawall-gateway-journal): lines in batches,
bounded in lines, bytes and time, none lost or cut; fed by a real ``tail`` here."""

import importlib.machinery
import importlib.util
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from seawall import logs
from seawall.components import gateway
from tests.unit.test_logging_upload import append


@pytest.fixture(scope="module")
def copier() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("gateway_copier", str(gateway.COPIER_SOURCE))
    spec = importlib.util.spec_from_loader("gateway_copier", loader)
    assert spec
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def chunks(*parts: bytes | None) -> "Iterator[bytes | None]":
    yield from parts
    yield b""


def read_from(
    parts: "Iterator[bytes | None]", timeouts: list[float | None]
) -> Callable[[float | None], bytes | None]:
    def read(timeout: float | None) -> bytes | None:
        timeouts.append(timeout)
        return next(parts)

    return read


def test_full_batches_go_at_max_lines_and_the_rest_at_the_end(copier: ModuleType) -> None:
    lines = [f'{{"n":{n}}}'.encode() for n in range(450)]
    data = b"\n".join(lines) + b"\n"
    # In uneven chunks: a line cut between two reads is joined again.
    parts = chunks(*(data[i : i + 1000] for i in range(0, len(data), 1000)))
    got = list(copier.batches(read_from(parts, []), 200, 10**6, 60.0))
    assert [len(batch) for batch in got] == [200, 200, 50]
    assert [line for batch in got for line in batch] == lines


def test_a_batch_goes_at_max_bytes(copier: ModuleType) -> None:
    line = b"x" * 99  # 100 bytes with its newline
    parts = chunks((line + b"\n") * 25)
    got = list(copier.batches(read_from(parts, []), 1000, 1000, 60.0))
    assert [len(batch) for batch in got] == [10, 10, 5]


def test_a_lone_line_waits_at_most_max_wait(copier: ModuleType) -> None:
    timeouts: list[float | None] = []
    # One line, then nothing more within the wait (None: the read timed out).
    parts = chunks(b"first\n", None, b"second\n")
    got = list(copier.batches(read_from(parts, timeouts), 200, 10**6, 0.5))
    assert got == [[b"first"], [b"second"]]
    # Nothing pending: wait for input without bound; one line pending: at most 0.5 s.
    assert timeouts[0] is None
    assert timeouts[1] is not None and 0 < timeouts[1] <= 0.5


def test_an_unfinished_last_line_is_kept(copier: ModuleType) -> None:
    got = list(copier.batches(read_from(chunks(b"a\nb\n\npartial"), []), 200, 10**6, 1.0))
    assert got == [[b"a", b"b"], [b"partial"]]


def test_lines_appended_to_the_file_reach_the_sender_within_the_wait(
    copier: ModuleType, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    log.write_text('{"old":1}\n')
    tail = subprocess.Popen(
        ["tail", "--lines=0", "--follow=name", "--retry", str(log)], stdout=subprocess.PIPE
    )
    assert tail.stdout is not None
    got: list[tuple[float, list[bytes]]] = []

    def copy() -> None:
        assert tail.stdout is not None
        for batch in copier.batches(copier.reader(tail.stdout.fileno()), 3, 10**6, 0.3):
            got.append((time.monotonic(), batch))

    thread = threading.Thread(target=copy, daemon=True)
    thread.start()
    try:
        time.sleep(0.5)  # tail has read the file's end
        written = time.monotonic()
        with log.open("a") as file:
            file.write('{"n":1}\n{"n":2}\n{"n":3}\n{"n":4}\n')
        deadline = time.monotonic() + 10
        while sum(len(batch) for _, batch in got) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        tail.kill()
        tail.wait(timeout=10)
        thread.join(timeout=10)
    assert [line for _, batch in got for line in batch] == [
        b'{"n":1}',
        b'{"n":2}',
        b'{"n":3}',
        b'{"n":4}',
    ]
    # Three at once (max lines), the fourth alone once its wait ran out.
    assert [len(batch) for _, batch in got] == [3, 1]
    assert got[-1][0] - written < 0.3 + 2.0


def _access_line(request_id: str, uri: str) -> bytes:
    # The gateway's log format's first fields, with a quote escaped as escape=json does.
    return (
        f'{{"ts":"2026-12-01T03:00:00+00:00","request_id":"{request_id}",'
        f'"uri":"{uri}","http_user_agent":"x\\"request_id\\":\\"forged\\""}}'
    ).encode()


def test_a_batch_names_each_request_id_once_as_a_field(copier: ModuleType) -> None:
    lines = [_access_line("a.1", "/x"), _access_line("b-2", "/y"), _access_line("a.1", "/z")]
    fields = copier.entry_fields(lines, "nginx_access")
    assert fields[:3] == [
        "MESSAGE=" + b"\n".join(lines).decode(),
        "SYSLOG_IDENTIFIER=nginx_access",
        "SEAWALL_LINES=3",
    ]
    # Distinct ids in order; an escaped quote in a value (the user agent) names none.
    assert fields[3:] == ["REQUEST_ID=a.1", "REQUEST_ID=b-2"]


def test_seawall_logs_finds_a_request_of_a_batch_by_its_field(
    copier: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real journal (Debian's systemd-journal-remote writes it, as on the ops host)
    # holding one batch of three requests, queried with seawall logs' own command.
    lines = [_access_line("a.1", "/x"), _access_line("b-2", "/y"), _access_line("a.1", "/z")]
    fields = [
        ("__REALTIME_TIMESTAMP", str(int(time.time() * 1e6))),
        ("_HOSTNAME", "gw-1"),
        *(field.split("=", 1) for field in copier.entry_fields(lines, "nginx_access")),
    ]
    central = tmp_path / "remote"
    central.mkdir()
    append(central / "remote.journal", [[(name, value) for name, value in fields]])
    monkeypatch.setattr(logs, "CENTRAL_JOURNAL", str(central))

    def found(request_id: str) -> list[str]:
        command = logs.query_command(request_id, "1h")
        result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        return [line.message for line in logs.parse_entries(result.stdout.splitlines(), request_id)]

    assert found("a.1") == sorted([lines[0].decode(), lines[2].decode()])
    assert found("b-2") == [lines[1].decode()]
    assert found("forged") == []

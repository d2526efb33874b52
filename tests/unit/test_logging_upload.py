"""Debian 12's journal-remote and journal-upload, for real on loopback, with the journal CA.

The certificates come from the CA's own operations (tests/unit/test_logging_tls.py
runs them), made for 127.0.0.1. The test starts journal-remote itself on a
free loopback port (HTTPS, the ops host's certificate) and uploads a journal
made of the platform's kind of lines with journal-upload (the app host's key
and certificate, the CA to check the server), then searches the received
journal with `seawall logs`'s own query. It shows:

- the upload reaches the sink over HTTPS, and refuses a sink whose certificate
  another CA signed;
- with --save-state, an upload that failed while the sink was down sends every
  entry once the sink is back; a resumed upload sends only its last entry again;
- the request's lines are found by id, gateway line included, in time order.
"""

import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from seawall import logs
from tests.unit.test_logging_tls import deploy, make_lab, tls_dir

# Off PATH, as Debian ships them (seawall/lab/controller.py FILES names their package).
LIBEXEC = Path("/lib/systemd")
REMOTE = str(LIBEXEC / "systemd-journal-remote")
UPLOAD = str(LIBEXEC / "systemd-journal-upload")
RID = "lab-3c1d5e"
LOOPBACK = {"ops-1": "127.0.0.1", "app-1": "127.0.0.1"}


Entry = dict[str, str] | list[tuple[str, str]]


def _field(name: str, value: str) -> bytes:
    """One field in the export format: NAME=value, or its binary form for a value with
    a newline (name, 64-bit little-endian length, the bytes)."""
    data = value.encode()
    if b"\n" in data:
        return name.encode() + b"\n" + len(data).to_bytes(8, "little") + data + b"\n"
    return name.encode() + b"=" + data + b"\n"


def _export(entries: Sequence[Entry]) -> bytes:
    """The journal export format: each entry's fields (a list repeats a field), a blank
    line after each entry."""
    return b"".join(
        b"".join(_field(*pair) for pair in (e.items() if isinstance(e, dict) else e)) + b"\n"
        for e in entries
    )


def _entries(first: int, count: int) -> list[dict[str, str]]:
    now = int(time.time() * 1_000_000)
    made = []
    for number in range(first, first + count):
        made.append(
            {
                "__REALTIME_TIMESTAMP": str(now + number),
                "__MONOTONIC_TIMESTAMP": str(1000 + number),
                "_BOOT_ID": "0123456789abcdef0123456789abcdef",
                "_HOSTNAME": "app-1",
                "SYSLOG_IDENTIFIER": "seawall-test",
                "MESSAGE": f"entry {number}",
            }
        )
    return made


def _request_lines() -> list[dict[str, str]]:
    now = int(time.time() * 1_000_000)
    return [
        {
            "__REALTIME_TIMESTAMP": str(now + 900),
            "__MONOTONIC_TIMESTAMP": "5000",
            "_BOOT_ID": "0123456789abcdef0123456789abcde1",
            "_HOSTNAME": "gw-1",
            "SYSLOG_IDENTIFIER": "nginx_access",
            # A batch of the gateway's copier, of one line.
            "SEAWALL_LINES": "1",
            "REQUEST_ID": RID,
            "MESSAGE": f'{{"request_id":"{RID}","uri":"/api/risk/items/1","status":200}}',
        },
        {
            "__REALTIME_TIMESTAMP": str(now + 500),
            "__MONOTONIC_TIMESTAMP": "6000",
            "_BOOT_ID": "0123456789abcdef0123456789abcdef",
            "_HOSTNAME": "app-1",
            "SYSLOG_IDENTIFIER": "risk-safety",
            "SERVICE": "risk-safety",
            "REQUEST_ID": RID,
            "MESSAGE": f'{{"request_id":"{RID}","message":"GET /items/1 200"}}',
        },
    ]


def append(journal: Path, entries: Sequence[Entry]) -> None:
    """Write entries into a journal file (journal-remote reads export format on stdin)."""
    result = subprocess.run(
        [REMOTE, f"--output={journal}", "-"],
        input=_export(entries),
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as server:
        return int(server.getsockname()[1])


class Sink:
    """journal-remote on a loopback port, HTTPS with the ops host's certificate."""

    def __init__(self, tls: str, output: Path) -> None:
        self.tls, self.output = tls, output
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                REMOTE,
                f"--listen-https=127.0.0.1:{self.port}",
                f"--key={self.tls}/host.key",
                f"--cert={self.tls}/host.pem",
                f"--output={self.output}/",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        pytest.fail("journal-remote did not listen within 10 s")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[dict[str, Any]]:
    assert Path(REMOTE).exists(), "systemd-journal-remote is not installed: run ./bootstrap.sh"
    lab = make_lab(tmp_path)
    deploy(lab, LOOPBACK)
    output = tmp_path / "central"
    output.mkdir()
    sink = Sink(tls_dir(lab["hosts"]["ops-1"]), output)
    try:
        yield {"lab": lab, "sink": sink, "root": tmp_path}
    finally:
        sink.stop()


def _upload(setup: dict[str, Any], source: Path, trust: str | None = None) -> int:
    app = tls_dir(setup["lab"]["hosts"]["app-1"])
    result = subprocess.run(
        [
            UPLOAD,
            "--follow=no",
            f"--save-state={setup['root']}/upload.state",
            f"--url=https://127.0.0.1:{setup['sink'].port}",
            f"--key={app}/host.key",
            f"--cert={app}/host.pem",
            f"--trust={trust or app + '/ca.pem'}",
            f"--file={source}",
        ],
        capture_output=True,
        timeout=60,
    )
    return result.returncode


def _central(setup: dict[str, Any]) -> list[str]:
    result = subprocess.run(
        [
            "journalctl",
            "-D",
            str(setup["sink"].output),
            "-o",
            "cat",
            "SYSLOG_IDENTIFIER=seawall-test",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result.stdout.splitlines()


def test_an_upload_reaches_the_sink_and_the_request_is_found(setup: dict[str, Any]) -> None:
    source = setup["root"] / "app-1.journal"
    append(source, [*_entries(1, 3), *_request_lines()])
    setup["sink"].start()
    assert _upload(setup, source) == 0
    assert _central(setup) == ["entry 1", "entry 2", "entry 3"]
    # `seawall logs`'s own query, on the received journal.
    command = logs.query_command(RID, "1h").replace(logs.CENTRAL_JOURNAL, str(setup["sink"].output))
    found = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30)
    assert found.returncode == 0, found.stderr
    lines = logs.parse_entries(found.stdout.splitlines(), RID)
    assert [(line.host, line.unit) for line in lines] == [
        ("app-1", "risk-safety"),
        ("gw-1", "nginx_access"),
    ]


def test_a_sink_signed_by_another_ca_is_refused(setup: dict[str, Any]) -> None:
    source = setup["root"] / "app-1.journal"
    append(source, _entries(1, 2))
    other = setup["root"] / "other"
    other.mkdir()
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            f"{other}/ca.key",
            "-subj",
            "/CN=another CA",
            "-days",
            "2",
            "-out",
            f"{other}/ca.pem",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    setup["sink"].start()
    assert _upload(setup, source, trust=f"{other}/ca.pem") != 0
    assert _central(setup) == []


def test_an_outage_of_the_sink_loses_no_entry(setup: dict[str, Any]) -> None:
    source = setup["root"] / "app-1.journal"
    append(source, _entries(1, 50))
    setup["sink"].start()
    assert _upload(setup, source) == 0
    setup["sink"].stop()
    # Entries logged while the sink is down; the upload fails (systemd restarts it).
    append(source, _entries(51, 50))
    assert _upload(setup, source) != 0
    setup["sink"].start()
    assert _upload(setup, source) == 0
    # And again: the saved cursor says everything was sent.
    assert _upload(setup, source) == 0
    central = _central(setup)
    assert set(central) == {f"entry {number}" for number in range(1, 101)}
    # journal-upload 252 resumes *at* its saved cursor: each later run sends
    # that last entry again (seen here: entries 50 and 100), never more.
    # `seawall logs` shows such a twin once (tests/unit/test_logs.py).
    twice = sorted({line for line in central if central.count(line) > 1})
    assert len(central) - 100 == len(twice) <= 2, twice
    assert set(twice) <= {"entry 50", "entry 100"}

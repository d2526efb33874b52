"""`seawall logs`: id and span checks, the query it sends, parsing and merging, exit codes.

No lab: journalctl's JSON lines come from a fixture (tests/unit/logs_journal.jsonl:
two app hosts, the gateway, a duplicate upload, a prefix-sharing id, a bytes
MESSAGE), the query runs on this machine's own journalctl (systemd 252, as on
the hosts) against an empty directory, and the "unreachable" ops host is a
loopback port nobody listens on.
"""

import json
import re
import shlex
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from seawall import inventory, logs, ssh
from seawall.cli import app
from seawall.errors import SeawallError
from tests.unit.test_inventory_rules import Listener, write_site

REPO = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).with_name("logs_journal.jsonl")
RID = "9f1c2e7ab44d4b0c8e1a5f3d2c6b7a90"
runner = CliRunner()


@pytest.fixture
def listener() -> Iterator[Listener]:
    """A loopback port counting the connections made to it."""
    served = Listener()
    yield served
    served.close()


def _words(command: str) -> list[str]:
    """The shell words of ``command``, with ``;``, ``||``, braces apart."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


VALID_IDS = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-",
    min_size=1,
    max_size=128,
)


# --- the id and the span -------------------------------------------------------------


def test_the_id_shape_is_the_gateways() -> None:
    # The gateway passes a client's id through only if it matches this map
    # pattern (else it makes its own, 32 hex digits): seawall logs takes the same.
    template = (REPO / "seawall/templates/gateway/etc/nginx/nginx.conf.j2").read_text()
    found = re.search(
        r'map \$http_x_request_id \$req_id \{\s*"~\^(.+?)\$" \$http_x_request_id;', template
    )
    assert found, "the gateway's request id map moved"
    assert found.group(1) == logs.REQUEST_ID.pattern


@pytest.mark.parametrize(
    "value",
    [RID, "a", "client.chosen:id-1_2", "x" * 128],
)
def test_well_formed_ids_are_accepted(value: str) -> None:
    assert logs.check_request_id(value) == value


@pytest.mark.parametrize(
    "value",
    ["", "x" * 129, "a b", "a;b", "$(id)", "`id`", "a'b", 'a"b', "a\n", "a\nb", "é", "a/b"],
)
def test_malformed_ids_are_refused(value: str) -> None:
    with pytest.raises(SeawallError, match="malformed"):
        logs.check_request_id(value)


@pytest.mark.parametrize("value", ["30m", "1h", "2d", "90s", "1w", "15min"])
def test_spans_are_accepted(value: str) -> None:
    assert logs.check_since(value) == value


@pytest.mark.parametrize("value", ["", "0h", "1", "h", "1 h", "-1h", "1h;id", "yesterday"])
def test_other_spans_are_refused(value: str) -> None:
    with pytest.raises(SeawallError, match="--since"):
        logs.check_since(value)


# --- the query ----------------------------------------------------------------------


def test_the_query_reads_the_central_journal_by_its_indexed_field_only() -> None:
    command = logs.query_command("abc.1", "1h")
    assert command.startswith("test -d /var/log/journal/remote || exit 3; ")
    words = _words(command)
    assert "REQUEST_ID=abc.1" in words
    assert "--since=-1h" in words
    assert words.count("-D") == 1 and words.count("/var/log/journal/remote") == 2
    # The gateway's batches carry the field too: no message is read by --grep.
    assert not [word for word in words if word.startswith("--grep")]


@given(VALID_IDS)
def test_an_id_reaches_journalctl_as_one_word_verbatim(request_id: str) -> None:
    assert f"REQUEST_ID={request_id}" in _words(logs.query_command(request_id, "1h"))


def test_malformed_values_never_reach_a_command() -> None:
    with pytest.raises(SeawallError):
        logs.query_command("x; rm -rf /", "1h")
    with pytest.raises(SeawallError):
        logs.query_command(RID, "1h; id")


def _run_locally(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30)


def test_systemd_252_takes_the_query(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The controller's journalctl is Debian 12's, as on the ops host: every flag
    # is accepted, and an empty journal gives no line and exit 0.
    assert shutil.which("journalctl"), "journalctl (systemd) is in controller-packages.txt"
    monkeypatch.setattr(logs, "CENTRAL_JOURNAL", str(tmp_path))
    result = _run_locally(logs.query_command("abc.1", "1h"))
    assert (result.returncode, result.stdout) == (0, ""), result.stderr


def test_no_central_journal_exits_3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(logs, "CENTRAL_JOURNAL", str(tmp_path / "absent"))
    assert _run_locally(logs.query_command(RID, "1h")).returncode == 3


# --- parsing and merging ------------------------------------------------------------


def _fixture_lines() -> list[str]:
    return FIXTURE.read_text().splitlines()


def test_lines_are_merged_in_time_order_once_each() -> None:
    found = logs.parse_entries(_fixture_lines(), RID)
    assert [(line.host, line.unit) for line in found] == [
        ("app-1", "execution"),
        ("app-1", "execution"),
        ("app-2", "risk-safety"),
        ("gw-1", "nginx_access"),
    ]
    times = [line.realtime_us for line in found]
    assert times == sorted(times)
    # The duplicate upload of app-1's first line is shown once.
    assert sum('"POST /orders 201"' in line.message for line in found) == 1


def test_a_gateway_line_counts_only_for_its_exact_id() -> None:
    # The other request's id starts with ours: a batch is read line by line, and only
    # a line whose JSON request_id is exactly the id counts.
    found = logs.parse_entries(_fixture_lines(), RID)
    gateway = [line for line in found if line.host == "gw-1"]
    assert len(gateway) == 1
    assert json.loads(gateway[0].message)["request_id"] == RID
    other = logs.parse_entries(_fixture_lines(), RID + "x")
    assert [line.host for line in other] == ["gw-1"]
    assert json.loads(other[0].message)["uri"] == "/api/health"


def test_a_bytes_message_is_decoded() -> None:
    found = logs.parse_entries(_fixture_lines(), RID)
    assert "order \ufffd rejected" in [line.message for line in found]


def test_an_unknown_id_finds_nothing() -> None:
    assert logs.parse_entries(_fixture_lines(), "no-such-request") == []


def test_times_are_utc_with_microseconds() -> None:
    first = logs.parse_entries(_fixture_lines(), RID)[0]
    assert first.time == "2025-11-30T04:00:00.002000Z"


def _report() -> logs.LogsReport:
    return logs.LogsReport(RID, "ops-1", "1h", tuple(logs.parse_entries(_fixture_lines(), RID)))


def test_the_report_renders_time_host_unit_message() -> None:
    text = _report().to_text()
    header, first = text.splitlines()[:2]
    assert header.split() == ["TIME", "HOST", "UNIT", "MESSAGE"]
    assert first.split()[:3] == ["2025-11-30T04:00:00.002000Z", "app-1", "execution"]
    assert text.endswith(
        f"request {RID}: 4 line(s) on app-1, app-2, gw-1 (central journal on ops-1)"
    )


def test_the_json_report_lists_hosts_and_lines() -> None:
    data = _report().to_json()
    assert data["hosts"] == ["app-1", "app-2", "gw-1"]
    assert [line["host"] for line in data["lines"]] == ["app-1", "app-1", "app-2", "gw-1"]
    assert set(data["lines"][0]) == {"time", "realtime_us", "host", "unit", "message"}
    assert not logs.LogsReport(RID, "ops-1", "1h", ()).ok


# --- the command and its exit codes -------------------------------------------------


def _site(tmp_path: Path, port: int) -> Path:
    return write_site(tmp_path, ssh_port=port)


def test_ssh_reaches_the_inventory_port(tmp_path: Path) -> None:
    topology = inventory.load(_site(tmp_path, 2222))
    args = ssh.ssh_args(topology, "ops-1")
    assert args[args.index("-p") + 1] == "2222"
    assert args[-1] == "127.0.0.1"


def test_a_malformed_id_exits_2_before_any_connection(tmp_path: Path, listener: Listener) -> None:
    path = _site(tmp_path, listener.port)
    result = runner.invoke(app, ["logs", "--request-id", "a;b", "-i", str(path)])
    assert result.exit_code == 2, result.output
    assert "malformed" in result.output
    assert listener.accepted == 0


def test_a_malformed_span_exits_2_before_any_connection(tmp_path: Path, listener: Listener) -> None:
    path = _site(tmp_path, listener.port)
    result = runner.invoke(app, ["logs", "--request-id", RID, "--since", "1h;id", "-i", str(path)])
    assert result.exit_code == 2, result.output
    assert listener.accepted == 0


def _closed_port() -> int:
    # A port just released: nobody listens on it.
    with socket.create_server(("127.0.0.1", 0)) as server:
        return int(server.getsockname()[1])


def test_an_unreachable_ops_host_exits_2_naming_it(tmp_path: Path) -> None:
    path = _site(tmp_path, _closed_port())
    result = runner.invoke(app, ["logs", "--request-id", RID, "-i", str(path)])
    assert result.exit_code == 2, result.output
    assert "ops-1" in result.output and "unreachable" in result.output


class _LocalOps:
    """Runs the ops host's query on this machine instead of over SSH (no lab)."""

    def __init__(self, stdout: str | None = None) -> None:
        self.stdout = stdout
        self.commands: list[str] = []

    def __call__(self, topology: Any, host_name: str, command: str, **_: Any) -> Any:
        self.commands.append(command)
        if self.stdout is not None:
            return subprocess.CompletedProcess([], 0, self.stdout, "")
        return _run_locally(command)


def test_nothing_found_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listener: Listener
) -> None:
    # The real query on this machine's journalctl, over an empty central journal.
    monkeypatch.setattr(logs, "CENTRAL_JOURNAL", str(tmp_path))
    local = _LocalOps()
    monkeypatch.setattr(logs.ssh, "run", local)
    path = _site(tmp_path, listener.port)
    result = runner.invoke(app, ["logs", "--request-id", RID, "-i", str(path)])
    assert result.exit_code == 1, result.output
    assert f"request {RID}: nothing in the central journal on ops-1" in result.output
    assert len(local.commands) == 1


def test_found_lines_exit_0_as_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listener: Listener
) -> None:
    monkeypatch.setattr(logs.ssh, "run", _LocalOps(FIXTURE.read_text()))
    path = _site(tmp_path, listener.port)
    result = runner.invoke(app, ["logs", "--request-id", RID, "--json", "-i", str(path)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ok"] is True and data["hosts"] == ["app-1", "app-2", "gw-1"]


def test_a_missing_central_journal_exits_2_naming_the_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listener: Listener
) -> None:
    monkeypatch.setattr(logs, "CENTRAL_JOURNAL", str(tmp_path / "absent"))
    monkeypatch.setattr(logs.ssh, "run", _LocalOps())
    path = _site(tmp_path, listener.port)
    result = runner.invoke(app, ["logs", "--request-id", RID, "-i", str(path)])
    assert result.exit_code == 2, result.output
    assert "ops-1: no central journal at" in result.output


def test_a_batch_entry_of_the_gateway_gives_each_line_of_the_id() -> None:
    # The copier sends many access lines per entry: only this request's are kept,
    # each as a line of its own, at the entry's time.
    mine = json.dumps({"request_id": RID, "uri": "/api/execution/orders", "status": 201})
    again = json.dumps({"request_id": RID, "uri": "/api/execution/orders", "status": 409})
    other = json.dumps({"request_id": RID + "x", "uri": "/api/health", "status": 200})
    entry = {
        "MESSAGE": "\n".join([other, mine, "not json", again]),
        "SYSLOG_IDENTIFIER": "nginx_access",
        "SEAWALL_LINES": "4",
        "REQUEST_ID": [RID + "x", RID],
        "_SYSTEMD_UNIT": "seawall-gateway-journal.service",
        "_HOSTNAME": "gw-1",
        "_BOOT_ID": "b",
        "__MONOTONIC_TIMESTAMP": "7",
        "__REALTIME_TIMESTAMP": "1764475200500000",
    }
    # Uploaded twice: its lines count once.
    found = logs.parse_entries([json.dumps(entry), json.dumps(entry)], RID)
    assert [line.message for line in found] == sorted([mine, again])
    assert {(line.host, line.unit, line.realtime_us) for line in found} == {
        ("gw-1", "nginx_access", 1764475200500000)
    }
    assert [line.message for line in logs.parse_entries([json.dumps(entry)], RID + "x")] == [other]

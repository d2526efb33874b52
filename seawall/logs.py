"""One request's path through the platform, from the central journal: ``find_request``.

The ops host's central journal (``seawall.names.CENTRAL_JOURNAL``, filled by
``components/logging.py``) holds every host's journal. A request's entries are
those with the id as a ``REQUEST_ID`` field, a field journald indexes: the
services log it as one, and the gateway's copier gives each batch of access
lines one ``REQUEST_ID`` per request in it. Of a batch, only the lines whose
JSON ``request_id`` is exactly the id are kept. One SSH command runs the query
on the ops host; the lines are merged in time order, duplicates (an entry
uploaded twice) once. Nothing reads every message (``--grep`` took 1.8 s over
an hour of a busy gateway's lines).
"""

import json
import re
import shlex
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from seawall import ssh
from seawall.errors import SeawallError
from seawall.inventory import Topology
from seawall.names import CENTRAL_JOURNAL
from seawall.output import table

# The ids the gateway accepts from a client, else makes up (nginx's $request_id,
# 32 hex digits): its `map $http_x_request_id $req_id` pattern.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# --since: a span back from now, in systemd's units (journalctl --since=-1h).
SINCE = re.compile(r"[1-9][0-9]{0,5}(s|min|m|h|d|w)")
# Remote exit codes the query script uses for its own failures (ssh's is 255).
_NO_JOURNAL, _JOURNALCTL_FAILED = 3, 4
SSH_TIMEOUT_S = 60.0


def check_request_id(value: str) -> str:
    """Return ``value`` if the gateway would accept it as a request id.

    Raises:
        SeawallError: it is not 1-128 of letters, digits, ``.``, ``_``, ``:``, ``-``.
    """
    if not REQUEST_ID.fullmatch(value):
        raise SeawallError(
            f"request id {value!r} is malformed: the gateway's ids are 1-128 letters, "
            "digits, '.', '_', ':' or '-'"
        )
    return value


def check_since(value: str) -> str:
    """Return ``value`` if it is a span like ``30m``, ``1h`` or ``2d``.

    Raises:
        SeawallError: it is not.
    """
    if not SINCE.fullmatch(value):
        raise SeawallError(f"--since {value!r}: give a span back from now, like 30m, 1h or 2d")
    return value


def query_command(request_id: str, since: str) -> str:
    """Return the shell command that prints the request's entries as JSON lines, on the ops host.

    Exit 3: no central journal there; exit 4: journalctl failed. Every value is
    checked and quoted: nothing from the arguments reaches the shell unquoted.
    """
    check_request_id(request_id)
    check_since(since)
    journalctl = (
        f"journalctl -D {shlex.quote(CENTRAL_JOURNAL)} -o json --all --no-pager "
        f"--since={shlex.quote('-' + since)} {shlex.quote('REQUEST_ID=' + request_id)}"
    )
    return (
        f"test -d {shlex.quote(CENTRAL_JOURNAL)} || exit {_NO_JOURNAL}; "
        f"{journalctl} || exit {_JOURNALCTL_FAILED}"
    )


@dataclass(frozen=True)
class LogLine:
    """One journal entry of the request."""

    # Microseconds since the epoch (the entry's __REALTIME_TIMESTAMP).
    realtime_us: int
    host: str
    # The service (its SERVICE field), else the systemd unit, else the syslog tag.
    unit: str
    message: str

    @property
    def time(self) -> str:
        moment = datetime.fromtimestamp(self.realtime_us / 1_000_000, tz=UTC)
        return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")

    def to_json(self) -> dict[str, Any]:
        return {"time": self.time, **asdict(self)}


def _field(entry: dict[str, Any], name: str) -> str | None:
    """A journal field as text: journalctl gives bytes as a list of ints, repeats as a list."""
    value = entry.get(name)
    if isinstance(value, list) and value and not all(isinstance(v, int) for v in value):
        value = value[0]
    if isinstance(value, list):
        return bytes(v & 0xFF for v in value).decode("utf-8", "replace")
    return None if value is None else str(value)


def _gateway_line_matches(message: str, request_id: str) -> bool:
    try:
        line = json.loads(message)
    except ValueError:
        return False
    return isinstance(line, dict) and line.get("request_id") == request_id


def _request_messages(entry: dict[str, Any], request_id: str) -> list[str]:
    """A service's entry of the id: its message; a gateway batch (``SEAWALL_LINES``,
    many requests' lines): its lines of the id."""
    message = _field(entry, "MESSAGE") or ""
    if _field(entry, "SEAWALL_LINES") is not None:
        return [line for line in message.split("\n") if _gateway_line_matches(line, request_id)]
    return [message] if _field(entry, "REQUEST_ID") == request_id else []


def parse_entries(lines: Iterable[str], request_id: str) -> list[LogLine]:
    """Return the request's entries among journalctl's JSON lines, in time order, once each.

    An entry counts if its ``REQUEST_ID`` field is the id; of the gateway's
    batches (up to ``gateway_journal_batch_lines`` access lines each, one JSON
    object per line), each line whose ``request_id`` is the id, at the batch's
    time. A line seen twice (same host, boot, timestamps and message) counts once.
    """
    seen: set[tuple[Any, ...]] = set()
    found = []
    for raw in lines:
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        messages = _request_messages(entry, request_id)
        realtime = _field(entry, "__REALTIME_TIMESTAMP")
        if not messages or realtime is None or not realtime.isdigit():
            continue
        host = _field(entry, "_HOSTNAME") or "?"
        place = (host, _field(entry, "_BOOT_ID"), _field(entry, "__MONOTONIC_TIMESTAMP"), realtime)
        # A gateway batch is named by its tag, not by the copier's unit.
        unit = (
            _field(entry, "SERVICE")
            or (_field(entry, "SEAWALL_LINES") and _field(entry, "SYSLOG_IDENTIFIER"))
            or _field(entry, "_SYSTEMD_UNIT")
            or _field(entry, "SYSLOG_IDENTIFIER")
            or "?"
        )
        for message in messages:
            key = (*place, message)
            if key in seen:
                continue
            seen.add(key)
            found.append(LogLine(int(realtime), host, unit, message))
    return sorted(found, key=lambda line: (line.realtime_us, line.host, line.unit, line.message))


@dataclass(frozen=True)
class LogsReport:
    """The request's lines in the central journal on ``source``."""

    request_id: str
    source: str
    since: str
    lines: tuple[LogLine, ...]

    @property
    def ok(self) -> bool:
        return bool(self.lines)

    @property
    def hosts(self) -> list[str]:
        return sorted({line.host for line in self.lines})

    def to_json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "source": self.source,
            "since": self.since,
            "hosts": self.hosts,
            "lines": [line.to_json() for line in self.lines],
        }

    def to_text(self) -> str:
        if not self.lines:
            return (
                f"request {self.request_id}: nothing in the central journal on "
                f"{self.source} in the last {self.since}"
            )
        rows = [(line.time, line.host, line.unit, line.message) for line in self.lines]
        return (
            table(["time", "host", "unit", "message"], rows)
            + f"\n\nrequest {self.request_id}: {len(self.lines)} line(s) on "
            + f"{', '.join(self.hosts)} (central journal on {self.source})"
        )


def find_request(topology: Topology, request_id: str, since: str = "1h") -> LogsReport:
    """Return every line of request ``request_id`` in the central journal, in time order.

    Raises:
        SeawallError: the id or ``since`` is malformed (before any connection),
            the inventory has no ops host, or the ops host is unreachable or
            has no central journal (naming it).
    """
    check_request_id(request_id)
    check_since(since)
    sinks = topology.group("ops")
    if not sinks:
        raise SeawallError(f"{topology.path}: group ops is empty: no central journal to search")
    sink = sinks[0]
    command = query_command(request_id, since)
    result = ssh.run(topology, sink.name, command, timeout=SSH_TIMEOUT_S)
    if result.returncode == _NO_JOURNAL:
        raise SeawallError(
            f"{sink.name}: no central journal at {CENTRAL_JOURNAL}: deploy deploys/logging.py"
        )
    if result.returncode == 255:
        raise SeawallError(
            f"{sink.name} ({sink.address}): unreachable over SSH: {result.stderr.strip()}"
        )
    if result.returncode != 0:
        raise SeawallError(
            f"{sink.name}: journalctl failed ({result.returncode}): {result.stderr.strip()}"
        )
    entries = parse_entries(result.stdout.splitlines(), request_id)
    return LogsReport(request_id, sink.name, since, tuple(entries))

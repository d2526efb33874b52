"""One JSON log shape for every service, with the request's correlation id, secrets masked.

Each record is one JSON line::

    {"ts": "2026-11-27T04:00:00.123456Z", "level": "INFO", "service": "execution",
     "host": "app-1", "logger": "access", "message": "POST /orders 201",
     "request_id": "9f1c...", "method": "POST", "path": "/orders", "status": 201,
     "duration_ms": 3.2}

Where it goes: under systemd (stdout or stderr is the journal: ``JOURNAL_STREAM``
names that file's device and inode) the line is sent with the native journal
protocol, as MESSAGE, beside fields a journal query can match on without
parsing JSON: ``SERVICE``, ``REQUEST_ID`` (when there is one), ``PRIORITY`` from
the level, ``LOGGER``. Anywhere else, or without python3-systemd, the line goes to
stdout.

The correlation id comes from the ``X-Request-ID`` header the gateway sets (or the
client sent); ``bind_request_id`` puts it in a context variable, so every record
logged while serving that request carries it, across ``await`` and threads run
through ``asyncio.to_thread``. ``outgoing_headers`` passes it on to the next
service called.

Masking: values of fields whose name looks secret (password, token, secret,
authorization, api key, cookie) become ``"***"``, and so do credentials inside
messages (``password=...``, ``Bearer ...``, ``scheme://user:pass@``). The journal
fields are taken from the masked record, never from the raw one.
"""

import contextlib
import json
import logging
import os
import re
import socket
import sys
import uuid
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any

MASK = "***"
REQUEST_ID_HEADER = "X-Request-ID"

_request_id: ContextVar[str | None] = ContextVar("seawall_request_id", default=None)

_SECRET_KEY = re.compile(r"pass(word|wd)?|secret|token|authorization|api[-_]?key|cookie", re.I)
_SECRET_TEXT = (
    # key=value and key: value pairs (password=..., "token": "...")
    (
        re.compile(
            r"(?P<k>(pass(word|wd)?|secret|token|api[-_]?key)[\"']?\s*[=:]\s*[\"']?)"
            r"(?P<v>[^\s\"',;&]+)",
            re.I,
        ),
        r"\g<k>" + MASK,
    ),
    (re.compile(r"(?P<k>Bearer\s+)[A-Za-z0-9._~+/=-]+", re.I), r"\g<k>" + MASK),
    # credentials in URLs: redis://:pw@host, postgresql://user:pw@host
    (re.compile(r"(?P<k>[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+(?=@)", re.I), r"\g<k>" + MASK),
)
# A client-supplied id is logged and echoed: keep it short and printable.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

# LogRecord attributes that are not extra fields (uvicorn's color_message is its
# message again, with terminal escapes).
_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}


def mask_text(text: str) -> str:
    """Return ``text`` with credentials replaced by ``***``."""
    for pattern, replacement in _SECRET_TEXT:
        text = pattern.sub(replacement, text)
    return text


def mask_value(key: str, value: Any) -> Any:
    """Return ``value`` masked if ``key`` names a secret, recursing into dicts and lists."""
    if _SECRET_KEY.search(key) and value not in (None, ""):
        return MASK
    if isinstance(value, dict):
        return {k: mask_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value(key, v) for v in value]
    if isinstance(value, str):
        return mask_text(value)
    return value


def request_id() -> str | None:
    """Return the correlation id of the request being served, if any."""
    return _request_id.get()


def accept_request_id(value: str | None) -> str:
    """Return the client's id if it is well-formed, else a new one."""
    if value and _VALID_REQUEST_ID.match(value):
        return value
    return uuid.uuid4().hex


def bind_request_id(value: str | None) -> Token[str | None]:
    """Make ``value`` the correlation id of everything logged in this context."""
    return _request_id.set(value)


def reset_request_id(token: Token[str | None]) -> None:
    _request_id.reset(token)


def outgoing_headers(headers: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return ``headers`` plus ``X-Request-ID`` of the request being served, if any.

    For a call to another service: its log lines then carry the same id.
    """
    out = dict(headers or {})
    current = _request_id.get()
    if current:
        out[REQUEST_ID_HEADER] = current
    return out


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line in the shared shape."""

    def __init__(self, service: str, host: str | None = None) -> None:
        super().__init__()
        self.service = service
        self.host = host or socket.gethostname()

    def entry(self, record: logging.LogRecord) -> dict[str, Any]:
        """Return the record's fields in the shared shape, masked."""
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname,
            "service": self.service,
            "host": self.host,
            "logger": record.name,
            "message": mask_text(record.getMessage()),
            "request_id": mask_value(
                "request_id", getattr(record, "request_id", None) or _request_id.get()
            ),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and key not in out:
                out[key] = mask_value(key, value)
        if record.exc_info:
            out["exception"] = mask_text(self.formatException(record.exc_info))
        return out

    def format(self, record: logging.LogRecord) -> str:
        return line(self.entry(record))


def line(entry: Mapping[str, Any]) -> str:
    """Return ``entry`` as one compact JSON line."""
    return json.dumps(entry, default=str, separators=(",", ":"))


def priority(levelno: int) -> int:
    """Map a logging level to a syslog priority (as python3-systemd's JournalHandler does)."""
    for limit, value in (
        (logging.DEBUG, 7),  # debug
        (logging.INFO, 6),  # info
        (logging.WARNING, 4),  # warning
        (logging.ERROR, 3),  # err
        (logging.CRITICAL, 2),  # crit
    ):
        if levelno <= limit:
            return value
    return 1  # alert


def journal_fields(entry: Mapping[str, Any], levelno: int) -> dict[str, str]:
    """Return the journal fields sent beside MESSAGE, from a masked ``entry``.

    Only these: python3-systemd's own JournalHandler would also send every record
    attribute and the raw format arguments (CODE_ARGS), past the masking.
    """
    fields = {
        "PRIORITY": str(priority(levelno)),
        "SERVICE": str(entry["service"]),
        # The unit's name is the default identifier of stdout lines; keep one name per service.
        "SYSLOG_IDENTIFIER": str(entry["service"]),
        "LOGGER": str(entry["logger"]),
    }
    if entry.get("request_id"):
        fields["REQUEST_ID"] = str(entry["request_id"])
    return fields


Sender = Callable[..., Any]


class JournalFieldsHandler(logging.Handler):
    """Sends each record to the journal: MESSAGE is the JSON line, plus ``journal_fields``.

    + formatter: the ``JsonFormatter`` making the line
    + send: ``systemd.journal.send`` (a stand-in in tests)
    """

    def __init__(self, formatter: JsonFormatter, send: Sender) -> None:
        super().__init__()
        self.json = formatter
        self.send = send

    def emit(self, record: logging.LogRecord) -> None:
        text = None
        try:
            entry = self.json.entry(record)
            text = line(entry)
            self.send(
                text,
                # Given, so send() does not walk the stack to find them (it would name emit).
                CODE_FILE=record.pathname,
                CODE_LINE=record.lineno,
                CODE_FUNC=record.funcName,
                **journal_fields(entry, record.levelno),
            )
        except Exception as error:
            # Not handleError(): it prints the raw message and arguments, unmasked.
            note = {"jsonlog": f"journal send failed: {type(error).__name__}"}
            with contextlib.suppress(Exception):
                sys.stderr.write((text or line(note)) + "\n")


def journal_stream(fd: int, environ: Mapping[str, str]) -> bool:
    """Whether ``fd`` is the journal stream systemd connected (``JOURNAL_STREAM=dev:inode``)."""
    device, _, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        found = os.fstat(fd)
    except (OSError, ValueError):
        return False
    return (found.st_dev, found.st_ino) == (int(device), int(inode))


def under_journal(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process's stdout or stderr is the journal (it runs as a systemd unit)."""
    env = os.environ if environ is None else environ
    for stream in (sys.stdout, sys.stderr):
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):
            continue  # replaced by an object without a descriptor (a test's capture)
        if journal_stream(fd, env):
            return True
    return False


def journal_sender() -> Sender | None:
    """Return ``systemd.journal.send``, or None where python3-systemd is not installed."""
    try:
        from systemd import journal
    except ImportError:
        return None
    send: Sender = journal.send
    return send


def make_handler(
    service: str,
    stream: Any = None,
    environ: Mapping[str, str] | None = None,
    sender: Callable[[], Sender | None] = journal_sender,
) -> logging.Handler:
    """Return the journal handler under systemd, else a stdout (or ``stream``) handler.

    An explicit ``stream`` always wins: the caller asked for it.
    """
    formatter = JsonFormatter(service)
    if stream is None and under_journal(environ):
        send = sender()
        if send is not None:
            return JournalFieldsHandler(formatter, send)
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(formatter)
    return handler


def configure(
    service: str,
    level: int = logging.INFO,
    stream: Any = None,
    environ: Mapping[str, str] | None = None,
) -> logging.Handler:
    """Send every log record, uvicorn's included, in the JSON shape to the journal or stdout.

    Returns the handler, whose type says where the lines go.
    """
    handler = make_handler(service, stream, environ)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # Our own access log carries the request id and timings; uvicorn's would duplicate it.
    logging.getLogger("uvicorn.access").disabled = True
    return handler

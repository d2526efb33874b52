"""One JSON log shape for every service, with the request's correlation id, secrets masked.

Each record is one line on stdout (journald stores it as the message)::

    {"ts": "2026-11-27T04:00:00.123456Z", "level": "INFO", "service": "execution",
     "logger": "access", "message": "POST /orders 201", "request_id": "9f1c...",
     "method": "POST", "path": "/orders", "status": 201, "duration_ms": 3.2}

The correlation id comes from the ``X-Request-ID`` header the gateway sets (or the
client sent); ``bind_request_id`` puts it in a context variable, so every record
logged while serving that request carries it, across ``await`` and threads run
through ``asyncio.to_thread``.

Masking: values of fields whose name looks secret (password, token, secret,
authorization, api key, cookie) become ``"***"``, and so do credentials inside
messages (``password=...``, ``Bearer ...``, ``scheme://user:pass@``).
"""

import json
import logging
import re
import sys
import uuid
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


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line in the shared shape."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": mask_text(record.getMessage()),
            "request_id": getattr(record, "request_id", None) or _request_id.get(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and key not in out:
                out[key] = mask_value(key, value)
        if record.exc_info:
            out["exception"] = mask_text(self.formatException(record.exc_info))
        return json.dumps(out, default=str, separators=(",", ":"))


def configure(service: str, level: int = logging.INFO, stream: Any = None) -> None:
    """Send every log record, uvicorn's included, to ``stream`` in the JSON shape."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # Our own access log carries the request id and timings; uvicorn's would duplicate it.
    logging.getLogger("uvicorn.access").disabled = True

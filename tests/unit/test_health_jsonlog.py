"""The shared JSON log shape: correlation id, masking of secrets."""

import contextlib
import io
import json
import logging
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from seawall.runtime import jsonlog


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    out = io.StringIO()
    jsonlog.configure("execution", stream=out)
    yield out
    root.handlers[:], level = saved
    root.setLevel(level)


def records(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_every_record_is_one_json_line_with_the_request_id(stream: io.StringIO) -> None:
    token = jsonlog.bind_request_id("req-42")
    try:
        logging.getLogger("access").info("GET /items/1 200", extra={"status": 200})
    finally:
        jsonlog.reset_request_id(token)
    logging.getLogger("access").info("outside a request")
    first, second = records(stream)
    assert first["request_id"] == "req-42" and first["service"] == "execution"
    assert first["status"] == 200 and first["level"] == "INFO"
    assert second["request_id"] is None


def test_secrets_are_masked_in_messages_and_fields(stream: io.StringIO) -> None:
    logging.getLogger("x").warning(
        "connect redis://:hunter2@10.0.0.1:6379 password=s3cret Bearer abc.def",
        extra={"redis_password": "hunter2", "headers": {"Authorization": "Basic xyz"}},
    )
    line = stream.getvalue()
    for secret in ("hunter2", "s3cret", "abc.def", "Basic xyz"):
        assert secret not in line
    record = records(stream)[0]
    assert record["redis_password"] == jsonlog.MASK


@pytest.mark.parametrize(
    ("given", "kept"),
    [("abc-123", True), ("a" * 129, False), ("bad id\n", False), (None, False), ("", False)],
)
def test_only_well_formed_client_ids_are_kept(given: str | None, kept: bool) -> None:
    value = jsonlog.accept_request_id(given)
    assert (value == given) is kept
    assert value


def test_every_record_names_the_host(stream: io.StringIO) -> None:
    logging.getLogger("x").info("hello")
    assert records(stream)[0]["host"] == socket.gethostname()


# -- the journal -----------------------------------------------------------------


class FakeJournal:
    """Stands in for systemd.journal.send: keeps what it was given."""

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[dict[str, object]] = []
        self.fail = fail

    def __call__(self, message: str, **fields: object) -> None:
        if self.fail:
            raise OSError("journal socket gone")
        self.sent.append({"MESSAGE": message, **fields})


@pytest.fixture
def journal() -> Iterator[FakeJournal]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    fake = FakeJournal()
    root.handlers[:] = [jsonlog.JournalFieldsHandler(jsonlog.JsonFormatter("execution"), fake)]
    root.setLevel(logging.DEBUG)
    yield fake
    root.handlers[:], level = saved
    root.setLevel(level)


def test_journal_message_is_the_json_line_with_native_fields(journal: FakeJournal) -> None:
    token = jsonlog.bind_request_id("req-7")
    try:
        logging.getLogger("access").warning("GET /items/1 200", extra={"status": 200})
    finally:
        jsonlog.reset_request_id(token)
    logging.getLogger("refservice").debug("no request")
    first, second = journal.sent
    line = json.loads(str(first["MESSAGE"]))
    assert line["request_id"] == "req-7" and line["status"] == 200
    assert line["host"] == socket.gethostname() and line["level"] == "WARNING"
    assert first["REQUEST_ID"] == "req-7" and first["SERVICE"] == "execution"
    assert first["PRIORITY"] == "4" and first["LOGGER"] == "access"
    assert first["SYSLOG_IDENTIFIER"] == "execution"
    assert first["CODE_FUNC"] == "test_journal_message_is_the_json_line_with_native_fields"
    assert "REQUEST_ID" not in second and second["PRIORITY"] == "7"


def test_journal_fields_carry_nothing_unmasked(journal: FakeJournal) -> None:
    token = jsonlog.bind_request_id("req-8")
    try:
        logging.getLogger("x").error(
            "connect %s failed: %s",
            "redis://:hunter2@10.0.0.1:6379",
            "password=s3cret",
            extra={"api_key": "k3y", "body": {"token": "t0k"}, "note": "Bearer abc.def"},
        )
    finally:
        jsonlog.reset_request_id(token)
    (sent,) = journal.sent
    for secret in ("hunter2", "s3cret", "k3y", "t0k", "abc.def"):
        assert all(secret not in str(value) for value in sent.values()), secret
    # Only the fields we choose: never the record's attributes or its raw arguments.
    assert set(sent) == {
        "MESSAGE",
        "PRIORITY",
        "SERVICE",
        "SYSLOG_IDENTIFIER",
        "LOGGER",
        "REQUEST_ID",
        "CODE_FILE",
        "CODE_LINE",
        "CODE_FUNC",
    }


def test_journal_fields_come_from_the_masked_entry() -> None:
    entry = {"service": "execution", "logger": "x", "request_id": None}
    assert jsonlog.journal_fields(entry, logging.INFO) == {
        "PRIORITY": "6",
        "SERVICE": "execution",
        "SYSLOG_IDENTIFIER": "execution",
        "LOGGER": "x",
    }
    assert jsonlog.journal_fields({**entry, "request_id": "r1"}, logging.INFO)["REQUEST_ID"] == "r1"


@pytest.mark.parametrize(
    ("level", "expected"),
    [(5, 7), (logging.DEBUG, 7), (logging.INFO, 6), (25, 4), (logging.WARNING, 4)]
    + [(logging.ERROR, 3), (logging.CRITICAL, 2), (60, 1)],
)
def test_levels_map_to_syslog_priorities(level: int, expected: int) -> None:
    assert jsonlog.priority(level) == expected


def test_a_failed_journal_send_writes_the_masked_line_to_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logger = logging.getLogger("jsonlog-failing")
    logger.propagate = False
    logger.handlers[:] = [
        jsonlog.JournalFieldsHandler(jsonlog.JsonFormatter("execution"), FakeJournal(fail=True))
    ]
    try:
        logger.warning("retrying with password=%s", "hunter2")
    finally:
        logger.handlers[:] = []
        logger.propagate = True
    err = capsys.readouterr().err
    assert "hunter2" not in err
    assert json.loads(err)["message"] == "retrying with password=***"


def _stat_env(path: Path) -> dict[str, str]:
    found = os.stat(path)
    return {"JOURNAL_STREAM": f"{found.st_dev}:{found.st_ino}"}


def test_the_journal_stream_is_recognised_by_device_and_inode(tmp_path: Path) -> None:
    mine, other = tmp_path / "stream", tmp_path / "other"
    mine.touch()
    other.touch()
    with mine.open("w") as file:
        assert jsonlog.journal_stream(file.fileno(), _stat_env(mine))
        assert not jsonlog.journal_stream(file.fileno(), _stat_env(other))
        for value in ("", "12", "a:b", ":"):
            assert not jsonlog.journal_stream(file.fileno(), {"JOURNAL_STREAM": value})
        assert not jsonlog.journal_stream(file.fileno(), {})


@contextlib.contextmanager
def stdout_to(path: Path) -> Iterator[None]:
    """sys.stdout is a real file, as under systemd (a socket there).

    Set in the test itself: pytest's capture resets sys.stdout after fixtures run.
    """
    with path.open("w") as file, pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdout", file)
        yield


@pytest.fixture
def stdout_file(tmp_path: Path) -> Path:
    return tmp_path / "stdout"


def test_under_systemd_the_journal_handler_is_chosen(stdout_file: Path) -> None:
    fake = FakeJournal()
    with stdout_to(stdout_file):
        handler = jsonlog.make_handler(
            "execution", environ=_stat_env(stdout_file), sender=lambda: fake
        )
    assert isinstance(handler, jsonlog.JournalFieldsHandler) and handler.send is fake


def test_elsewhere_or_without_python3_systemd_lines_go_to_stdout(
    stdout_file: Path, tmp_path: Path
) -> None:
    fake = FakeJournal()
    other = tmp_path / "other"
    other.touch()
    out = io.StringIO()
    with stdout_to(stdout_file):
        for environ, sender in (
            ({}, lambda: fake),  # not under systemd
            (_stat_env(other), lambda: fake),  # the journal is someone else's stream
            (_stat_env(stdout_file), lambda: None),  # python3-systemd missing
        ):
            handler = jsonlog.make_handler("execution", environ=environ, sender=sender)
            assert isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout
        # An explicit stream always wins.
        handler = jsonlog.make_handler(
            "execution", stream=out, environ=_stat_env(stdout_file), sender=lambda: fake
        )
    assert isinstance(handler, logging.StreamHandler) and handler.stream is out
    assert fake.sent == []


def test_without_python3_systemd_there_is_no_sender(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "systemd", None)  # import systemd raises ImportError
    assert jsonlog.journal_sender() is None


def test_configure_uses_the_chosen_handler(stdout_file: Path) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        with stdout_to(stdout_file):
            handler = jsonlog.configure("execution", environ={})
            assert isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout
            assert root.handlers == [handler]
            logging.getLogger("x").info("to stdout")
            handler.flush()
        assert json.loads(stdout_file.read_text())["message"] == "to stdout"
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


# -- outgoing calls ----------------------------------------------------------------


def test_outgoing_calls_carry_the_request_id() -> None:
    assert jsonlog.outgoing_headers({"Accept": "application/json"}) == {
        "Accept": "application/json"
    }
    token = jsonlog.bind_request_id("req-9")
    try:
        given = {"Accept": "application/json"}
        assert jsonlog.outgoing_headers(given) == {
            "Accept": "application/json",
            "X-Request-ID": "req-9",
        }
        assert given == {"Accept": "application/json"}  # the caller's dict is left alone
        assert jsonlog.outgoing_headers() == {"X-Request-ID": "req-9"}
    finally:
        jsonlog.reset_request_id(token)

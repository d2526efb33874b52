"""The shared JSON log shape: correlation id, masking of secrets."""

import io
import json
import logging
from collections.abc import Iterator

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

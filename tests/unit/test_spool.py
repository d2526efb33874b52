"""The disk spool: durable, ordered, bounded, and safe across crashes."""

import itertools
import random
from pathlib import Path

import pytest

from seawall.runtime.reconnect import backoff_delays
from seawall.runtime.spool import DiskSpool, SpoolFullError


def fill(spool: DiskSpool, count: int) -> None:
    for number in range(count):
        spool.append(f"e{number}", "quantum:stream:test", {"n": str(number)}, 10000)


def test_events_come_back_in_order(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    fill(spool, 5)
    assert [event.event_id for event in spool.pending()] == [f"e{n}" for n in range(5)]
    assert len(spool) == 5


def test_confirmed_events_are_not_replayed_after_a_restart(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    fill(spool, 5)
    events = list(spool.pending())
    spool.confirm(events[1])
    # A new process (after a crash) sees only what was not confirmed.
    again = DiskSpool(tmp_path)
    assert [event.event_id for event in again.pending()] == ["e2", "e3", "e4"]


def test_fully_replayed_spool_compacts(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    fill(spool, 3)
    for event in list(spool.pending()):
        spool.confirm(event)
    assert spool.is_empty()
    assert (tmp_path / "events.jsonl").stat().st_size == 0
    fill(spool, 1)
    assert [event.event_id for event in spool.pending()] == ["e0"]


def test_crash_between_compaction_steps_loses_no_new_event(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    fill(spool, 3)
    # Data truncated but the old offset left behind, as a crash mid-compaction would.
    (tmp_path / "events.jsonl").write_bytes(b"")
    (tmp_path / "replayed.offset").write_text("999")
    again = DiskSpool(tmp_path)
    fill(again, 2)
    assert [event.event_id for event in again.pending()] == ["e0", "e1"]


def test_torn_last_line_is_dropped(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    fill(spool, 2)
    with open(tmp_path / "events.jsonl", "ab") as handle:
        handle.write(b'{"id": "half')
    again = DiskSpool(tmp_path)
    assert [event.event_id for event in again.pending()] == ["e0", "e1"]


def test_full_spool_refuses_with_a_clear_error(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, max_bytes=300)
    with pytest.raises(SpoolFullError, match="is full"):
        fill(spool, 100)
    stored = len(spool)
    assert 0 < stored < 100
    assert spool.pending_bytes() <= 300


def test_spool_files_are_private(tmp_path: Path) -> None:
    DiskSpool(tmp_path / "spool")
    assert (tmp_path / "spool").stat().st_mode & 0o077 == 0
    assert (tmp_path / "spool" / "events.jsonl").stat().st_mode & 0o077 == 0


def test_backoff_is_capped_exponential_with_jitter() -> None:
    delays = list(itertools.islice(backoff_delays(0.05, 1.0, random.Random(7)), 12))
    assert all(0 <= delay <= 1.0 for delay in delays)
    assert all(delay <= 0.05 * 2**n for n, delay in enumerate(delays))
    assert len(set(delays)) == len(delays)

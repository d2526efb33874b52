"""The disk spool: durable, ordered, bounded, one owner, and safe across crashes and full disks."""

import itertools
import json
import os
import random
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from seawall.runtime import spool as spool_module
from seawall.runtime.reconnect import backoff_delays
from seawall.runtime.spool import (
    DiskSpool,
    SpooledEvent,
    SpoolFullError,
    SpoolLockedError,
    decode_record,
)

ROOT = Path(__file__).resolve().parents[2]


def fill(spool: DiskSpool, count: int, start: int = 0) -> None:
    for number in range(start, start + count):
        spool.append(f"e{number}", "quantum:stream:test", {"n": str(number)}, 10000)


def ids(spool: DiskSpool) -> list[str]:
    return [event.event_id for event in spool.pending()]


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def reopen(spool: DiskSpool) -> DiskSpool:
    """What a new process sees after this one stopped (or crashed: nothing is flushed at close)."""
    spool.close()
    return DiskSpool(spool.directory)


def test_events_come_back_in_order(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    fill(spool, 5)
    assert ids(spool) == [f"e{n}" for n in range(5)]
    assert len(spool) == 5
    assert [event.seq for event in spool.pending()] == sorted({e.seq for e in spool.pending()})


def test_confirmed_events_are_not_replayed_after_a_restart(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    fill(spool, 5)
    events = list(spool.pending())
    spool.confirm(events[1])
    assert ids(reopen(spool)) == ["e2", "e3", "e4"]


def test_a_drained_spool_starts_a_new_generation(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    fill(spool, 3)
    before = segments(tmp_path)
    for event in list(spool.pending()):
        spool.confirm(event)
    assert spool.is_empty()
    after = segments(tmp_path)
    # The old segment is gone, not truncated: its offsets die with it.
    assert before[0] not in after and len(after) == 1
    assert after[0].stat().st_size == 0
    assert spool_module._Slots(tmp_path / "replayed").value == (int(after[0].stem), 0)
    fill(spool, 1, start=3)
    assert ids(reopen(spool)) == ["e3"]


def test_a_stale_offset_never_applies_to_new_data(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    fill(spool, 3)
    for event in list(spool.pending()):
        spool.confirm(event)
    fill(spool, 2, start=3)
    spool.close()
    # A power loss that brings back the previous position (the old generation,
    # at its old end) without the unlink of its segment.
    old_generation = int(segments(tmp_path)[0].stem) - 1
    slots = spool_module._Slots(tmp_path / "replayed")
    slots.write(old_generation, 999)
    slots.close()
    assert ids(DiskSpool(tmp_path)) == ["e3", "e4"]


def test_a_crash_mid_compaction_loses_and_repeats_nothing(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    fill(spool, 3)
    events = list(spool.pending())
    spool.confirm(events[-1])
    fill(spool, 2, start=3)
    spool.close()
    # The crash came after the new position was written and before the old
    # segment was unlinked: a fully replayed segment is left behind.
    generation = int(segments(tmp_path)[0].stem)
    leftover = tmp_path / f"{generation - 1:016d}.seg"
    leftover.write_bytes(
        b"".join(
            spool_module.encode_record(
                {"id": f"old{n}", "stream": "s", "fields": {}, "maxlen": 1, "seq": n}
            )
            for n in range(3)
        )
    )
    again = DiskSpool(tmp_path)
    assert ids(again) == ["e3", "e4"]
    assert not leftover.exists()


def test_torn_last_record_is_dropped(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    fill(spool, 2)
    spool.close()
    with open(segments(tmp_path)[-1], "ab") as handle:
        handle.write(b'0badc0de {"id": "half')
    again = DiskSpool(tmp_path)
    assert ids(again) == ["e0", "e1"]
    fill(again, 1, start=2)
    assert ids(reopen(again)) == ["e0", "e1", "e2"]


def corrupt_record(path: Path, index: int) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    lines[index] = lines[index].replace(b'"n":"', b'"n":"X')  # checksum no longer matches
    path.write_bytes(b"".join(lines))


def test_a_corrupt_record_is_quarantined_and_blocks_nothing(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    fill(spool, 4)
    spool.close()
    corrupt_record(segments(tmp_path)[-1], 1)
    again = DiskSpool(tmp_path)
    assert ids(again) == ["e0", "e2", "e3"]
    assert again.quarantined == 1
    assert b'"n":"X1"' in (tmp_path / "quarantine").read_bytes()
    assert ids(again) == ["e0", "e2", "e3"]  # quarantined once, not at every read
    assert again.quarantined == 1
    for event in list(again.pending()):
        again.confirm(event)
    assert again.is_empty()


def test_a_corrupt_last_record_does_not_keep_the_spool_busy(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    fill(spool, 2)
    spool.close()
    corrupt_record(segments(tmp_path)[-1], 1)
    again = DiskSpool(tmp_path)
    first = next(again.pending())
    again.confirm(first)
    assert not again.is_empty()
    assert list(again.pending()) == []  # the read steps past the bad record
    assert again.is_empty()


def test_full_spool_refuses_with_a_clear_error(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, max_bytes=400)
    with pytest.raises(SpoolFullError, match="is full"):
        fill(spool, 100)
    stored = len(spool)
    assert 0 < stored < 100
    assert spool.pending_bytes() <= 400
    assert ids(reopen(spool)) == [f"e{n}" for n in range(stored)]


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: the disk really fills up (ENOSPC from the kernel)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    # The suite runs as root (the lab needs it): no mount is a failure, not a skip.
    assert os.geteuid() == 0, "mounting a tmpfs needs root"
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_refuses_cleanly_and_the_spool_goes_on(tiny_disk: Path) -> None:
    spool = DiskSpool(tiny_disk / "spool", max_bytes=10 * 1024 * 1024)
    stored = 0
    with pytest.raises(SpoolFullError, match="disk is full"):
        for number in range(10_000):  # bounded: 64 KiB holds far fewer
            spool.append(f"e{number}", "s", {"pad": "x" * 150}, 100)
            stored += 1
    segment = segments(tiny_disk / "spool")[-1]
    # Nothing half-written: every byte on disk is a whole, valid record.
    lines = segment.read_bytes().splitlines(keepends=True)
    assert len(lines) == stored
    assert all(decode_record(line) is not None for line in lines)
    # Replay frees the space, and the same spool takes events again.
    for event in list(spool.pending()):
        spool.confirm(event)
    spool.append("after", "s", {"pad": "y"}, 100)
    assert ids(reopen(spool)) == ["after"]


def test_a_second_process_fails_fast_naming_the_holder(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    code = f"""
        from seawall.runtime.spool import DiskSpool, SpoolLockedError
        try:
            DiskSpool({str(tmp_path)!r})
        except SpoolLockedError as error:
            print(error)
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert f"in use by process {os.getpid()}" in done.stdout
    with pytest.raises(SpoolLockedError):
        DiskSpool(tmp_path)  # a second object in the same process is refused too
    spool.close()
    DiskSpool(tmp_path).close()


def test_a_process_killed_mid_append_leaves_every_acknowledged_event(tmp_path: Path) -> None:
    code = f"""
        import sys
        from seawall.runtime.spool import DiskSpool
        spool = DiskSpool({str(tmp_path)!r}, segment_bytes=4096)
        for n in range(100_000):
            spool.append(f"e{{n}}", "s", {{"n": n}}, 100)
            print(n, flush=True)
    """
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    acknowledged = -1
    for line in child.stdout:
        acknowledged = int(line)
        if acknowledged >= 300:  # several segments written
            break
    child.kill()
    child.wait(timeout=10)
    spool = DiskSpool(tmp_path)
    found = ids(spool)
    assert found[: acknowledged + 1] == [f"e{n}" for n in range(acknowledged + 1)]
    assert found == [f"e{n}" for n in range(len(found))]
    assert len(segments(tmp_path)) > 1


def test_sequence_numbers_only_grow_across_restarts(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    producer = spool.producer_id
    first = [spool.next_seq() for _ in range(3)]
    again = reopen(spool)
    assert again.producer_id == producer
    assert again.next_seq() > max(first)
    assert first == sorted(set(first))


@pytest.mark.parametrize("segment_bytes", [4 * 1024 * 1024, 2048])
def test_concurrent_appends_share_fsyncs_and_keep_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, segment_bytes: int
) -> None:
    # With small segments, appends waiting on a sync also cross roll-overs.
    spool = DiskSpool(tmp_path, segment_bytes=segment_bytes)
    real = os.fdatasync
    syncs = itertools.count()

    def slow_fdatasync(fd: int) -> None:
        next(syncs)
        threading.Event().wait(0.003)  # a disk, not a RAM-backed tmp directory
        real(fd)

    monkeypatch.setattr(spool_module.os, "fdatasync", slow_fdatasync)

    def writer(name: str) -> None:
        for number in range(25):
            spool.append(f"{name}-{number}", "s", {}, 100)

    threads = [threading.Thread(target=writer, args=(f"t{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive(), "an append never returned"
    events: list[SpooledEvent] = list(spool.pending())
    assert len(events) == 200
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    for name in (f"t{n}" for n in range(8)):
        mine = [e.event_id for e in events if e.event_id.startswith(name + "-")]
        assert mine == [f"{name}-{n}" for n in range(25)]
    if segment_bytes == 2048:
        assert len(segments(tmp_path)) > 3
    else:
        assert next(syncs) < 200 // 2  # most appends rode on another's sync


def test_an_old_format_spool_is_carried_over(tmp_path: Path) -> None:
    lines = [
        json.dumps({"id": f"old{n}", "stream": "s", "fields": {"n": n}, "maxlen": 10})
        for n in range(3)
    ]
    data = "\n".join(lines) + "\n"
    (tmp_path / "events.jsonl").write_text(data)
    (tmp_path / "replayed.offset").write_text(str(len(lines[0]) + 1))
    spool = DiskSpool(tmp_path)
    assert ids(spool) == ["old1", "old2"]
    assert not (tmp_path / "events.jsonl").exists()


def test_spool_files_are_private(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path / "spool")
    fill(spool, 1)
    assert (tmp_path / "spool").stat().st_mode & 0o077 == 0
    for path in (tmp_path / "spool").iterdir():
        assert path.stat().st_mode & 0o077 == 0, path


def test_backoff_is_capped_exponential_with_jitter() -> None:
    delays = list(itertools.islice(backoff_delays(0.05, 1.0, random.Random(7)), 12))
    assert all(0 <= delay <= 1.0 for delay in delays)
    assert all(delay <= 0.05 * 2**n for n, delay in enumerate(delays))
    assert len(set(delays)) == len(delays)


class Clock:
    """Wall time for the acked tail, moved by the test."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def time(self) -> float:
        return self.now


def tail_lines(*seqs: int) -> list[bytes]:
    return [
        spool_module.encode_record(
            {"id": f"e{n}", "stream": "s", "fields": {"n": n}, "maxlen": 100, "seq": n}
        )
        for n in seqs
    ]


def remember(spool: DiskSpool, *seqs: int, seconds: float = 30, events: int = 1000) -> None:
    spool.acked.remember(tail_lines(*seqs), seqs[-1], seconds, events)


def recalled(spool: DiskSpool) -> tuple[int, list[int]]:
    floor, records = spool.acked.load()
    return floor, [record["seq"] for record in records]


def test_acknowledged_events_stay_on_disk_a_whole_window_then_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr(spool_module, "time", clock)
    spool = DiskSpool(tmp_path)
    assert recalled(spool) == (0, [])
    remember(spool, 1, 2, 3)
    clock.now += 29
    remember(spool, 4)
    # A new process (the old one killed: nothing was closed) finds all four.
    spool.close()
    spool = DiskSpool(tmp_path)
    assert recalled(spool) == (0, [1, 2, 3, 4])
    clock.now += 2  # the file is 31 s old: it is kept one more window, as acked.old
    remember(spool, 5)
    assert recalled(spool) == (0, [1, 2, 3, 4, 5])
    clock.now += 31  # 1-4 are 33 s old or more: dropped; 4 is the floor
    remember(spool, 6)
    assert recalled(spool) == (4, [5, 6])
    # By count too: a file holding the window's count of events is retired.
    remember(spool, 7, 8, events=3)
    remember(spool, 9, events=3)
    assert recalled(spool) == (5, [6, 7, 8, 9])


def test_a_torn_record_in_the_acked_tail_is_skipped_and_not_extended(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    spool.acked.load()
    remember(spool, 1, 2)
    spool.close()
    with open(tmp_path / "acked", "ab") as handle:
        handle.write(tail_lines(3)[0][:20])  # a crash mid-write
    spool = DiskSpool(tmp_path)
    assert recalled(spool) == (0, [1, 2])
    remember(spool, 4)
    spool.close()
    assert recalled(DiskSpool(tmp_path)) == (0, [1, 2, 4])


def test_a_full_disk_costs_the_acked_tail_not_the_spool(
    tiny_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = DiskSpool(tiny_disk / "spool")
    spool.acked.load()
    number = 0
    while not caplog.records and number < 10_000:  # bounded: 64 KiB holds far fewer
        number += 1
        spool.acked.remember(
            [
                spool_module.encode_record(
                    {"id": "x", "stream": "s", "fields": {"p": "x" * 200}, "seq": number}
                )
            ],
            number,
            3600,
            100_000,
        )
    assert "cannot keep acknowledged events" in caplog.text
    floor, records = spool.acked.load()
    # Whole records only, and every one written before the disk filled.
    assert [r["seq"] for r in records] == list(range(1, number))
    # A spooled event comes first: the tail makes room for it.
    spool.append("spooled", "s", {"p": "x" * 200}, 100)
    assert ids(spool) == ["spooled"]
    assert spool.acked.load() == (number - 1, [])
    assert "dropped the acknowledged events" in caplog.text

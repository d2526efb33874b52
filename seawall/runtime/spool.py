"""A durable, ordered, bounded disk spool for events that could not reach Redis.

The directory (0700; every file 0600) holds:

- ``lock``: held with ``flock`` by the one process that owns the spool, and
  naming its pid, so a second process fails at once instead of corrupting it.
- ``producer``: this spool's producer id, written once. With the sequence
  numbers it makes every event's identity in Redis (see ``docs/events.md``).
- ``sequence``: the next sequence number not yet leased. Numbers are leased in
  blocks, so one fsync covers a million events and a restart never reuses one.
- ``<generation>.seg``: segments, appended in order. A record is one line,
  ``<crc32 hex> <json>``: a record that fails its checksum or does not decode
  is moved aside to ``quarantine`` and never blocks the ones after it.
- ``acked`` and ``acked.old``: the events acknowledged lately, for the next
  process of this spool to re-publish after a failover (``AckedTail``).
- ``replayed``: ``<generation> <offset>``, how far replay is confirmed. It
  names its segment, so an offset can never apply to data it was not written
  for: a drained spool starts a new generation instead of truncating the old.
  This file and ``sequence`` are rewritten in place, in two alternating
  checksummed slots: recording progress needs no free block, so replay can
  free a full disk, and a torn write leaves the previous value.

An append is durable before it returns: concurrent appends share one
``fdatasync`` (group commit). An append that fails leaves the segment as it
was, and a full disk or spool is a ``SpoolFullError``, never a silent loss.
The directory is fsynced after every create, rename and unlink.
"""

import errno
import fcntl
import json
import logging
import os
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Sequence numbers leased per fsync of the ``sequence`` file. Lua keeps
# numbers exact to 2**53, which allows 9e9 restarts at this size.
SEQUENCE_BLOCK = 1_000_000
_SUFFIX = ".seg"
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class SpoolError(Exception):
    """The spool cannot do what was asked; the message says why."""


class SpoolFullError(SpoolError):
    """The spool reached its size cap, or the disk is full: the event was NOT stored."""


class SpoolLockedError(SpoolError):
    """Another process holds the spool."""


@dataclass(frozen=True)
class SpooledEvent:
    event_id: str
    stream: str
    fields: dict[str, Any]
    maxlen: int | None
    end_offset: int  # byte offset just past this event's record, in its segment
    seq: int = 0  # this producer's sequence number for the event
    generation: int = 0  # the segment the record is in


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Slots:
    """Two numbers kept durably in a file that never changes size once made.

    Writes alternate between two checksummed 64-byte slots, in place: no new
    block is needed, so this works on a full disk (replay must be able to
    record progress to free space), and a torn write spoils only one slot,
    leaving the previous value in the other.
    """

    SIZE = 64

    def __init__(self, path: Path) -> None:
        self.path = path
        created = not path.exists()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if created or os.fstat(self._fd).st_size < 2 * self.SIZE:
            os.pwrite(self._fd, b"\0" * 2 * self.SIZE, 0)
            os.fsync(self._fd)
            _fsync_dir(path.parent)
        self._count, self.value = self._read()

    def _read(self) -> tuple[int, tuple[int, int] | None]:
        best: tuple[int, tuple[int, int] | None] = (0, None)
        for slot in range(2):
            raw = os.pread(self._fd, self.SIZE, slot * self.SIZE).rstrip(b"\0")
            body, _, crc = raw.rpartition(b" ")
            try:
                if int(crc, 16) != zlib.crc32(body):
                    continue
                count, first, second = (int(part) for part in body.split())
            except ValueError:
                continue
            if count > best[0]:
                best = (count, (first, second))
        return best

    def write(self, first: int, second: int) -> None:
        self._count += 1
        body = b"%d %d %d" % (self._count, first, second)
        record = b"%s %08x" % (body, zlib.crc32(body))
        os.pwrite(self._fd, record.ljust(self.SIZE, b"\0"), (self._count % 2) * self.SIZE)
        os.fdatasync(self._fd)
        self.value = (first, second)

    def close(self) -> None:
        os.close(self._fd)


def _create_durably(path: Path, text: str) -> None:
    """Write a new file whole or not at all: temp file, fsync, rename, fsync of the directory."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def encode_record(record: dict[str, Any]) -> bytes:
    """One spool line: checksum, space, compact JSON, newline."""
    body = json.dumps(record, separators=(",", ":"), sort_keys=True).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def decode_record(line: bytes) -> dict[str, Any] | None:
    """The record in ``line``, or None if it is torn, corrupt or not a record."""
    if not line.endswith(b"\n"):
        return None
    crc, _, body = line[:-1].partition(b" ")
    try:
        if len(crc) != 8 or int(crc, 16) != zlib.crc32(body):
            return None
        record = json.loads(body)
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("fields"), dict):
        return None
    if not all(isinstance(record.get(key), str) for key in ("id", "stream")):
        return None
    if not isinstance(record.get("seq"), int):
        return None
    return record


class AckedTail:
    """The events this producer had acknowledged lately, kept on disk for the next process.

    A replica that confirmed an event (WAIT) can still lose it: Sentinel may
    promote another replica that lagged (docs/events.md, issue 15). The
    publisher re-sends what a new master lacks from its recently acknowledged
    events. Kept only in memory, that window died with the process: a writer
    killed as a cut healed, before a late failover, lost 2,499 events it had
    replayed. Here it outlives the process.

    Two files: records go to ``acked`` (a header line, ``# <floor> <created>``,
    then one ``encode_record`` line per event); once it is older than the
    window's seconds or holds its count of events, it becomes ``acked.old`` and
    the previous ``acked.old`` is dropped. So every event stays at least one
    window, and the files hold at most two. ``floor`` is the highest number
    dropped, for the publisher to tell a loss older than the window.

    Written without fsync, one ``write`` per batch: a killed process's writes
    are in the page cache and stay; a host that crashes loses its unsynced
    tail, and its services with it. A failed write (a full disk) is logged,
    never raised: the events are in Redis already.
    """

    def __init__(self, directory: Path) -> None:
        self.current = directory / "acked"
        self.old = directory / "acked.old"
        self._lock = threading.Lock()
        self._fd = -1
        self._failing = False
        self.floor = 0
        self._old_last = 0  # the highest number in acked.old
        self._last = 0  # the highest number in acked
        self._count = 0  # records in acked
        self._created = time.time()

    def _read(self, path: Path) -> tuple[int, float | None, list[dict[str, Any]], bytes]:
        """The header's floor and time, the records (torn ones skipped), the raw bytes."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return 0, None, [], b""
        header, _, body = data.partition(b"\n")
        try:
            floor_text, created_text = header.removeprefix(b"# ").split()
            floor, created = int(floor_text), float(created_text)
        except ValueError:
            return 0, None, [], data  # no header: a file cut short at its creation
        records = [r for r in map(decode_record, body.splitlines(keepends=True)) if r is not None]
        return floor, created, records, data

    def load(self) -> tuple[int, list[dict[str, Any]]]:
        """The floor, and every record kept, oldest first; opens ``acked`` for appending."""
        with self._lock:
            old_floor, _, old, _ = self._read(self.old)
            floor, created, records, data = self._read(self.current)
            self.floor = max(floor, old_floor)
            self._old_last = max((r["seq"] for r in old), default=0)
            if self._fd < 0:
                if created is None:
                    self._start(self.floor, time.time())
                else:
                    self._fd = os.open(self.current, os.O_WRONLY | os.O_APPEND, 0o600)
                    if not data.endswith(b"\n"):
                        # Half a line from a crash mid-write: the next record would extend it.
                        os.ftruncate(self._fd, data.rfind(b"\n") + 1)
                    self._created, self._count = created, len(records)
                    self._last = max((r["seq"] for r in records), default=self.floor)
            return self.floor, old + records

    def _start(self, floor: int, now: float) -> None:
        """A new ``acked`` with its header (the caller holds ``_lock``)."""
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = os.open(self.current, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        os.write(self._fd, b"# %d %.3f\n" % (floor, now))
        self.floor, self._created, self._count, self._last = floor, now, 0, floor

    def remember(self, records: list[bytes], last_seq: int, seconds: float, events: int) -> None:
        """Append ``records`` (``encode_record`` lines, the last numbered ``last_seq``).

        ``seconds`` and ``events`` are the publisher's window: ``acked`` is
        retired once it is older or holds as many, and the file before it dropped.
        """
        with self._lock:
            if self._fd < 0:
                return  # closed, or never loaded
            try:
                now = time.time()
                if self._count and (now - self._created > seconds or self._count >= events):
                    dropped = self._old_last
                    os.replace(self.current, self.old)
                    self._old_last = self._last
                    self._start(max(self.floor, dropped), now)
                size = os.fstat(self._fd).st_size
                data = b"".join(records)
                try:
                    written = os.write(self._fd, data)
                except OSError:
                    os.ftruncate(self._fd, size)  # never half a record
                    raise
                if written != len(data):
                    os.ftruncate(self._fd, size)
                    raise OSError(errno.ENOSPC, f"wrote {written} of {len(data)} bytes")
                self._count += len(records)
                self._last = max(self._last, last_seq)
                if self._failing:
                    log.warning("%s: writing acknowledged events again", self.current)
                self._failing = False
            except OSError as error:
                if not self._failing:
                    log.error(
                        "%s: cannot keep acknowledged events for the next process (%s): "
                        "a failover after this process ends may lose them",
                        self.current,
                        error,
                    )
                self._failing = True

    def give_way(self) -> bool:
        """Drop every kept event, to free the disk for the spool; False if none was kept."""
        with self._lock:
            if self._fd < 0 or (self._count == 0 and not self.old.exists()):
                return False
            try:
                self.old.unlink(missing_ok=True)
                self._old_last = 0
                self._start(max(self.floor, self._last), time.time())
            except OSError as error:
                log.error("%s: cannot free the acked tail: %s", self.current, error)
                return False
            log.error(
                "%s: the disk is full: dropped the acknowledged events kept for the next "
                "process (up to seq %d) to spool new ones",
                self.current,
                self.floor,
            )
            return True

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


class DiskSpool:
    """Events in arrival order, durable before ``append`` returns, owned by one process.

    Raises:
        SpoolLockedError: another process holds the directory.
    """

    def __init__(
        self,
        directory: str | Path,
        max_bytes: int = 64 * 1024 * 1024,
        segment_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.quarantined = 0
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        _fsync_dir(self.directory.parent)
        self._lock_fd = self._take_lock()
        self._cv = threading.Condition()
        # Held by whoever replays, so two publishers sharing this object never
        # send the same records at once.
        self.replay_lock = threading.Lock()
        # Held while an event gets its number and its place (sent or spooled),
        # so numbers reach Redis in order whichever publisher holds the spool.
        self.order_lock = threading.Lock()
        self.producer_id = self._producer_id()
        self.acked = AckedTail(self.directory)
        self._sequence = _Slots(self.directory / "sequence")
        self._next_seq = self._sequence.value[0] if self._sequence.value else 1
        self._leased = self._next_seq
        self._lease()
        self._replayed = _Slots(self.directory / "replayed")
        self._sizes: dict[int, int] = {}
        self._position = (0, 0)  # (generation, offset) confirmed as replayed
        self._fd = -1
        self._active = 0
        self._size = 0  # bytes written to the active segment
        self._durable = 0  # bytes of it known to be on disk
        # The same two, counted over all segments and never reset: what group
        # commit waits on, so a roll-over cannot strand a waiter.
        self._written_total = 0
        self._synced_total = 0
        self._syncing = False
        self._epoch = 0  # bumped whenever unsynced bytes are cut off after an error
        self._skip: set[tuple[int, int]] = set()  # quarantined (generation, offset)
        self._open_segments()
        self._migrate_legacy()

    # -- ownership ---------------------------------------------------------

    def _take_lock(self) -> int:
        path = self.directory / "lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise SpoolLockedError(
                f"disk spool {self.directory} is in use by process {holder}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def close(self) -> None:
        """Release the directory to another process (pending events stay on disk)."""
        with self._cv:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            if self._lock_fd >= 0:
                self.acked.close()
                self._sequence.close()
                self._replayed.close()
                os.close(self._lock_fd)  # closing the descriptor drops the flock
                self._lock_fd = -1

    def __enter__(self) -> "DiskSpool":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- identity ------------------------------------------------------------

    def _producer_id(self) -> str:
        path = self.directory / "producer"
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            text = ""
        if not text:
            text = uuid.uuid4().hex[:16]
            _create_durably(path, text + "\n")
        return text

    @staticmethod
    def _read_int(path: Path, default: int) -> int:
        try:
            return int(path.read_text().split()[0])
        except (FileNotFoundError, IndexError):
            return default
        except ValueError as error:
            raise SpoolError(f"{path} is corrupt ({error}): remove it only if empty") from None

    def _lease(self) -> None:
        self._leased = self._next_seq + SEQUENCE_BLOCK
        self._sequence.write(self._leased, 0)

    def next_seq(self) -> int:
        """Return a sequence number never returned before for this spool, even across restarts."""
        with self._cv:
            if self._next_seq >= self._leased:
                self._lease()
            seq = self._next_seq
            self._next_seq += 1
            return seq

    # -- segments ------------------------------------------------------------

    def _segment(self, generation: int) -> Path:
        return self.directory / f"{generation:016d}{_SUFFIX}"

    def _open_segments(self) -> None:
        generations = sorted(
            int(p.name[: -len(_SUFFIX)])
            for p in self.directory.glob(f"*{_SUFFIX}")
            if p.name[: -len(_SUFFIX)].isdigit()
        )
        position = self._replayed.value or (generations[0] if generations else 0, 0)
        # Segments before the confirmed one were fully replayed: a crash
        # between writing the position and unlinking them left them behind.
        for generation in [g for g in generations if g < position[0]]:
            self._segment(generation).unlink()
            generations.remove(generation)
        if not generations:
            # Nothing on disk: a new generation, so no old offset can apply to it.
            position = (position[0] + 1 if position[1] else position[0], 0)
        elif generations[0] != position[0]:
            # The confirmed segment is gone (removed by hand): start at the next one.
            position = (generations[0], 0)
        self._position = position
        self._active = generations[-1] if generations else position[0]
        for generation in generations:
            self._sizes[generation] = self._segment(generation).stat().st_size
        self._fd = os.open(self._segment(self._active), os.O_RDWR | os.O_CREAT, 0o600)
        self._sizes.setdefault(self._active, 0)
        _fsync_dir(self.directory)
        self._drop_torn_tail()
        os.fsync(self._fd)  # what a crashed process left in the page cache is now on disk
        self._size = self._durable = self._sizes[self._active]

    def _drop_torn_tail(self) -> None:
        # A crash mid-append can leave a partial record: it was never
        # acknowledged as spooled, so dropping it breaks no promise.
        size = self._sizes[self._active]
        if size == 0 or os.pread(self._fd, 1, size - 1) == b"\n":
            return
        data = os.pread(self._fd, size, 0)
        keep = data.rfind(b"\n") + 1
        os.ftruncate(self._fd, keep)
        self._sizes[self._active] = keep
        log.warning("spool %s: dropped %d bytes of a torn record", self.directory, size - keep)

    def _start_segment(self, generation: int) -> None:
        """Make ``generation`` the active segment (the caller holds ``_cv``)."""
        fd = os.open(self._segment(generation), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        _fsync_dir(self.directory)
        os.close(self._fd)
        self._fd = fd
        self._active = generation
        self._sizes[generation] = self._size = self._durable = 0

    def _migrate_legacy(self) -> None:
        # Spools written by the first version: one events.jsonl and a byte offset.
        legacy = self.directory / "events.jsonl"
        if not legacy.exists():
            return
        offset = self._read_int(self.directory / "replayed.offset", 0)
        moved = 0
        with open(legacy, "rb") as handle:
            handle.seek(offset)
            for raw in handle:
                try:
                    record = json.loads(raw)
                    self.append(record["id"], record["stream"], record["fields"], record["maxlen"])
                    moved += 1
                except (ValueError, KeyError, TypeError):
                    self._quarantine(raw)
        # A crash before these unlinks replays the legacy events twice: never loses them.
        legacy.unlink()
        (self.directory / "replayed.offset").unlink(missing_ok=True)
        _fsync_dir(self.directory)
        log.warning("spool %s: moved %d events from the old format", self.directory, moved)

    # -- appending -----------------------------------------------------------

    def append(
        self,
        event_id: str,
        stream: str,
        fields: dict[str, Any],
        maxlen: int | None,
        seq: int | None = None,
    ) -> SpooledEvent:
        """Store one event durably, after all the others, and return it as stored.

        ``seq`` defaults to the next sequence number; a caller that passes one
        must pass increasing numbers from ``next_seq``.

        Raises:
            SpoolFullError: the cap or the disk is full; nothing was stored.
            OSError: another write error; nothing was stored.
        """
        with self._cv:
            if self._fd < 0:
                raise SpoolError(f"disk spool {self.directory} is closed")
            while self._size >= self.segment_bytes:
                self._roll_over()  # may wait: before the number, so numbers follow file order
            if seq is None:
                seq = self.next_seq()
            record = {"id": event_id, "stream": stream, "fields": fields, "maxlen": maxlen}
            line = encode_record({**record, "seq": seq})
            if self.pending_bytes() + len(line) > self.max_bytes:
                raise SpoolFullError(
                    f"disk spool {self.directory} is full ({self.max_bytes} bytes): "
                    f"event {event_id} was not stored"
                )
            start = self._size
            for attempt in (1, 2):
                try:
                    written = 0
                    while written < len(line):
                        written += os.pwrite(self._fd, line[written:], start + written)
                    break
                except OSError as error:
                    self._cut(start)
                    # A spooled event is a promise to the caller; the acked tail
                    # only a second line of defence: it gives way on a full disk.
                    if attempt == 1 and error.errno in _NO_SPACE and self.acked.give_way():
                        continue
                    raise self._failure(error, event_id) from error
            self._size = start + len(line)
            self._sizes[self._active] = self._size
            self._written_total += len(line)
            stored = SpooledEvent(event_id, stream, fields, maxlen, self._size, seq, self._active)
            self._wait_durable(self._written_total, self._epoch, event_id)
            return stored

    def _failure(self, error: OSError, event_id: str) -> Exception:
        if error.errno in _NO_SPACE:
            return SpoolFullError(
                f"disk spool {self.directory}: the disk is full ({error.strerror}): "
                f"event {event_id} was not stored"
            )
        return error

    def _cut(self, size: int) -> None:
        """Truncate the active segment back to ``size`` (the caller holds ``_cv``)."""
        try:
            os.ftruncate(self._fd, size)
        except OSError as error:  # the next start-up drops the tail as torn instead
            log.error("spool %s: cannot truncate after a failed write: %s", self.directory, error)
        self._written_total -= max(0, self._size - size)
        self._size = size
        self._sizes[self._active] = size

    def _wait_durable(self, end: int, epoch: int, event_id: str) -> None:
        # Group commit: one thread syncs for everyone who wrote before it
        # started; the others wait. Holds ``_cv`` on entry and exit.
        while self._synced_total < end:
            if self._epoch != epoch:
                raise OSError(errno.EIO, f"event {event_id}: a sync of the spool failed")
            if self._syncing:
                self._cv.wait()
                continue
            self._syncing = True
            # No roll-over while this runs: ``_roll_over`` waits for it.
            target, total, fd = self._size, self._written_total, self._fd
            self._cv.release()
            try:
                os.fdatasync(fd)
                error = None
            except OSError as caught:
                error = caught
            finally:
                self._cv.acquire()
                self._syncing = False
                self._cv.notify_all()
            if error is not None:
                # What the failed sync covered may never reach the disk: cut
                # it off and fail every append it held.
                self._cut(self._durable)
                self._epoch += 1
                raise self._failure(error, event_id) from error
            self._durable = max(self._durable, target)
            self._synced_total = max(self._synced_total, total)

    def _roll_over(self) -> None:
        # The active segment is big enough: later records go to a new one, so
        # a long outage's replayed segments can be deleted while it goes on.
        while self._syncing:
            self._cv.wait()
        if self._size < self.segment_bytes:
            return  # another append rolled it over while this one waited
        if self._durable < self._size:
            os.fdatasync(self._fd)
            self._durable = self._size
        self._synced_total = self._written_total
        self._start_segment(self._active + 1)

    # -- replaying -----------------------------------------------------------

    def replayed_offset(self) -> int:
        """The confirmed offset within the first pending segment."""
        return self._position[1]

    def pending_bytes(self) -> int:
        generation, offset = self._position
        return sum(size for g, size in self._sizes.items() if g >= generation) - offset

    def __len__(self) -> int:
        return sum(1 for _ in self.pending())

    def is_empty(self) -> bool:
        with self._cv:
            return self.pending_bytes() <= 0

    def pending(self, limit: int | None = None) -> Iterator[SpooledEvent]:
        """Yield up to ``limit`` durable events not yet confirmed as replayed, oldest first.

        A record that cannot be decoded is quarantined (moved aside, counted,
        logged) and skipped.
        """
        with self._cv:
            position = self._position
            generations = sorted(g for g in self._sizes if g >= position[0])
            ends = {g: self._durable if g == self._active else self._sizes[g] for g in generations}
        count = 0
        first = True
        for generation in generations:
            offset = position[1] if generation == position[0] else 0
            try:
                handle = open(self._segment(generation), "rb")  # noqa: SIM115 (closed below)
            except FileNotFoundError:
                continue  # confirmed and removed meanwhile
            with handle:
                handle.seek(offset)
                while offset < ends[generation]:
                    if limit is not None and count >= limit:
                        return
                    raw = handle.readline(ends[generation] - offset)
                    if not raw:
                        break
                    start, offset = offset, offset + len(raw)
                    record = decode_record(raw)
                    if record is None:
                        if (generation, start) not in self._skip:
                            self._skip.add((generation, start))
                            self._quarantine(raw)
                        if first:
                            # Nothing before it is pending: step past it now, or
                            # a bad last record would keep the spool non-empty.
                            self._advance((generation, offset))
                        continue
                    first = False
                    count += 1
                    yield SpooledEvent(
                        record["id"],
                        record["stream"],
                        record["fields"],
                        record.get("maxlen"),
                        offset,
                        record["seq"],
                        generation,
                    )

    def quarantine_event(self, event: SpooledEvent, reason: str) -> None:
        """Move aside an event Redis refuses for good (the caller then confirms past it)."""
        record = {"id": event.event_id, "stream": event.stream, "fields": event.fields}
        line = json.dumps({**record, "seq": event.seq, "refused": reason}).encode()
        self._quarantine(line + b"\n", what="an event Redis refuses")

    def _quarantine(self, raw: bytes, what: str = "a record that does not decode") -> None:
        self.quarantined += 1
        log.error("spool %s: %s (%d bytes) moved to quarantine", self.directory, what, len(raw))
        path = self.directory / "quarantine"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, raw if raw.endswith(b"\n") else raw + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as error:  # a full disk must not stop replay: the log has it
            log.error("spool %s: cannot write to quarantine (%s): %r", self.directory, error, raw)

    def confirm(self, event: SpooledEvent) -> None:
        """Record durably that ``event`` (and every one before it) reached Redis."""
        self._advance((event.generation, event.end_offset))

    def _advance(self, position: tuple[int, int]) -> None:
        with self._cv:
            if position <= self._position:
                return
            drained = position == (self._active, self._size) and self._durable == self._size
            if drained and self._size > 0 and not self._syncing:
                # All replayed: later records go to a new generation, and the
                # position names it, so this offset can never count new data.
                self._start_segment(self._active + 1)
                position = (self._active, 0)
            self._replayed.write(*position)
            self._position = position
            old = [g for g in self._sizes if g < position[0]]
            for generation in old:
                self._segment(generation).unlink(missing_ok=True)
                del self._sizes[generation]
            if old:
                _fsync_dir(self.directory)
            self._skip = {skip for skip in self._skip if skip[0] >= position[0]}

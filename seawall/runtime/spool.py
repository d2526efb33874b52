"""An append-only, fsynced disk spool for events that could not reach Redis.

Events are written as JSON lines; a separate, fsynced offset file records how
far replay has confirmed. A crash at any point loses nothing: events past the
offset are replayed again, and the publisher deduplicates them by event id.
"""

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class SpoolFullError(Exception):
    """The spool reached its size cap: the event was NOT stored."""


@dataclass(frozen=True)
class SpooledEvent:
    event_id: str
    stream: str
    fields: dict[str, str]
    maxlen: int | None
    end_offset: int  # byte offset just past this event's line


class DiskSpool:
    """Events in arrival order, durable before ``append`` returns."""

    def __init__(self, directory: str | Path, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.max_bytes = max_bytes
        self._data = self.directory / "events.jsonl"
        self._offset = self.directory / "replayed.offset"
        self._lock = threading.Lock()
        self._data.touch(mode=0o600, exist_ok=True)
        self._drop_torn_tail()
        if self.replayed_offset() > self._data.stat().st_size:
            # A crash between compaction's two steps: the data is gone, so is the offset.
            self._offset.unlink()

    def _drop_torn_tail(self) -> None:
        # A crash mid-append can leave half a line: it was never acknowledged
        # as spooled, so dropping it loses nothing that was promised.
        size = self._data.stat().st_size
        if size == 0:
            return
        with open(self._data, "rb+") as handle:
            handle.seek(max(0, size - 1))
            if handle.read(1) == b"\n":
                return
            handle.seek(0)
            keep = handle.read().rfind(b"\n") + 1
            handle.truncate(keep)
            os.fsync(handle.fileno())

    def replayed_offset(self) -> int:
        try:
            return int(self._offset.read_text().strip() or 0)
        except FileNotFoundError:
            return 0

    def pending_bytes(self) -> int:
        return self._data.stat().st_size - self.replayed_offset()

    def __len__(self) -> int:
        return sum(1 for _ in self.pending())

    def is_empty(self) -> bool:
        return self.pending_bytes() <= 0

    def append(
        self, event_id: str, stream: str, fields: dict[str, Any], maxlen: int | None
    ) -> None:
        """Store one event durably.

        Raises:
            SpoolFullError: storing it would pass ``max_bytes``.
        """
        record = {"id": event_id, "stream": stream, "fields": fields, "maxlen": maxlen}
        line = (json.dumps(record, separators=(",", ":"), sort_keys=True) + "\n").encode()
        with self._lock:
            if self.pending_bytes() + len(line) > self.max_bytes:
                raise SpoolFullError(
                    f"disk spool {self.directory} is full ({self.max_bytes} bytes): "
                    f"event {event_id} was not stored"
                )
            with open(self._data, "ab") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())

    def pending(self) -> Iterator[SpooledEvent]:
        """Yield the events not yet confirmed as replayed, oldest first."""
        offset = self.replayed_offset()
        with open(self._data, "rb") as handle:
            handle.seek(offset)
            for raw in handle:
                offset += len(raw)
                record = json.loads(raw)
                yield SpooledEvent(
                    record["id"], record["stream"], record["fields"], record["maxlen"], offset
                )

    def confirm(self, event: SpooledEvent) -> None:
        """Record that ``event`` (and all before it) reached Redis."""
        tmp = self._offset.with_suffix(".tmp")
        with open(tmp, "w") as handle:
            handle.write(str(event.end_offset))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self._offset)
        if event.end_offset >= self._data.stat().st_size:
            self._compact()

    def _compact(self) -> None:
        # Everything is replayed: start both files afresh. Truncate the data
        # before resetting the offset, so a crash in between replays nothing twice
        # (an offset past the end simply reads as "nothing pending").
        with self._lock:
            if self._data.stat().st_size > self.replayed_offset():
                return
            with open(self._data, "rb+") as handle:
                handle.truncate(0)
                os.fsync(handle.fileno())
            self._offset.unlink(missing_ok=True)

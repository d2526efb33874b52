"""One flock on the machine running seawall keeps the rolling restart and drift checks apart.

The rolling restart holds it exclusively for its whole run; a drift check
holds it shared, so two drift checks may overlap but neither overlaps a
restart (a dry run then would report the drained host as drift). The lock is
the kernel's: it goes with the process that held it, even one killed -9, and
``restart_lock_file`` sits on a tmpfs (/run/lock), so no reboot leaves it set.
"""

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from seawall.errors import SeawallError


class LockBusy(SeawallError):
    """Another seawall operation holds the lock (and did not let go in time)."""


@contextmanager
def held(
    path: str | Path,
    *,
    exclusive: bool,
    wait: float = 0.0,
    on_wait: Callable[[], None] | None = None,
    poll: float = 0.5,
) -> Iterator[None]:
    """Hold the operations lock at ``path`` for the ``with`` block.

    Raises:
        LockBusy: another process holds it in a conflicting mode for longer than ``wait`` s.
        SeawallError: the lock file cannot be opened.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as error:
        raise SeawallError(f"cannot open the operations lock {path}: {error.strerror}") from None
    try:
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockBusy(f"{path} is held by another seawall operation") from None
                if on_wait is not None and not told:
                    on_wait()
                    told = True
                time.sleep(poll)
        yield
    finally:
        # Closing the descriptor releases the lock.
        os.close(fd)

"""The lab's fault locks: one holder at a time, a bounded wait, shared with shell `flock`."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from seawall.errors import SeawallError
from seawall.lab import faults


def test_a_second_holder_is_refused_after_its_timeout(tmp_path: Path) -> None:
    lock = tmp_path / "faults.lock"
    with (
        faults.exclusive_lock(lock, timeout=5),
        pytest.raises(SeawallError, match=re.escape(f"{lock} still held after 0.2 s")),
        faults.exclusive_lock(lock, timeout=0.2, poll=0.05),
    ):
        pytest.fail("entered a lock that another holder has")
    with faults.exclusive_lock(lock, timeout=0):
        pass  # free again once the first holder let go


# Held by another process: in a test run pyinfra's CLI has gevent patch threads into
# greenlets, and a blocking flock in one of them would stall the whole process.
HOLD = """
import fcntl, sys, time
with open(sys.argv[1], "a") as handle:
    fcntl.flock(handle, fcntl.LOCK_EX)
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


@pytest.mark.parametrize("timeout", [5.0, None], ids=["bounded", "unbounded"])
def test_a_waiter_gets_the_lock_when_the_holder_lets_go(
    tmp_path: Path, timeout: float | None
) -> None:
    lock = tmp_path / "faults.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock), "0.3"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        waited: list[None] = []
        with faults.exclusive_lock(
            lock, timeout=timeout, on_wait=lambda: waited.append(None), poll=0.01
        ):
            assert waited == [None]
        assert holder.wait(5) == 0  # it held the lock to the end of its sleep
    finally:
        holder.kill()
        holder.wait()


def test_on_wait_is_not_called_for_a_free_lock(tmp_path: Path) -> None:
    calls: list[None] = []
    with faults.exclusive_lock(tmp_path / "faults.lock", on_wait=lambda: calls.append(None)):
        pass
    assert calls == []


def test_the_shell_flock_command_shares_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / "faults.lock"
    with faults.exclusive_lock(lock):
        assert subprocess.run(["flock", "-n", str(lock), "true"], check=False).returncode == 1
    assert subprocess.run(["flock", "-n", str(lock), "true"], check=False).returncode == 0


def test_the_app_fault_lock_is_the_app_fault_lock_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = tmp_path / "app-faults.lock"
    monkeypatch.setattr(faults, "APP_FAULT_LOCK", lock)
    with (
        faults.app_fault_lock(timeout=5),
        pytest.raises(SeawallError, match="still held"),
        faults.app_fault_lock(timeout=0.1),
    ):
        pytest.fail("entered a lock that another holder has")
    assert lock.exists()

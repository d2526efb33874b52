"""`lab.up` and `lab.remove` wait for the lab lock at most `lock_timeout` (bench/scale.py
bounds every wait); `remove` refuses a name the inventory does not hold before it touches
anything. Nothing here reaches LXC: the lock or the name check stops first."""

import re
from pathlib import Path

import pytest

from seawall import defaults
from seawall.errors import SeawallError
from seawall.inventory import Host, Topology
from seawall.lab import faults, lifecycle


def _topology(state_dir: Path) -> Topology:
    """A one-host lab inventory whose state directory (and so its lock) is ``state_dir``."""
    data = {
        **defaults.all_defaults(),
        "lab_bridge": "swtest0",
        "lab_bridge_address": "10.199.0.1",
        "lab_prefix_length": 24,
        "lab_apt_proxy_port": 3142,
        "lab_state_dir": str(state_dir),
        "private_address": "10.199.0.11",
    }
    host = Host(name="app-1", groups=("app", "lab"), data=data)
    return Topology(path=state_dir / "lab.py", hosts=(host,))


def test_up_gives_up_when_the_lab_lock_stays_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lifecycle, "_up", lambda *_: pytest.fail("went on without the lock"))
    with (
        faults.exclusive_lock(tmp_path / "lock", timeout=5),
        pytest.raises(SeawallError, match=re.escape(f"{tmp_path / 'lock'} still held after 0.2")),
    ):
        lifecycle.up(_topology(tmp_path), lock_timeout=0.2)


def test_up_holds_the_lab_lock_while_it_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    held: list[bool] = []

    def fake_up(*_: object) -> str:
        # Another holder is refused at once while `up` works.
        with pytest.raises(SeawallError), faults.exclusive_lock(tmp_path / "lock", timeout=0):
            pass
        held.append(True)
        return "report"

    monkeypatch.setattr(lifecycle, "_up", fake_up)
    assert lifecycle.up(_topology(tmp_path), lock_timeout=1) == "report"
    assert held == [True]


def test_remove_refuses_a_name_outside_the_inventory_before_anything(tmp_path: Path) -> None:
    # The lock is held: an unknown name is reported at once, not after waiting for it.
    with (
        faults.exclusive_lock(tmp_path / "lock", timeout=5),
        pytest.raises(SeawallError, match="no lab host named 'app-9'"),
    ):
        lifecycle.remove(_topology(tmp_path), ["app-1", "app-9"], lock_timeout=30)


def test_remove_gives_up_when_the_lab_lock_stays_held(tmp_path: Path) -> None:
    removed: list[str] = []
    with (
        faults.exclusive_lock(tmp_path / "lock", timeout=5),
        pytest.raises(SeawallError, match="still held after 0.2"),
    ):
        lifecycle.remove(_topology(tmp_path), ["app-1"], log=removed.append, lock_timeout=0.2)
    assert removed == []

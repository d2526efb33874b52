"""Fixtures shared by the unit tests."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from seawall import inventory

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lab() -> Iterator[inventory.Topology]:
    """The lab inventory, loaded as pyinfra loads it (group_data is relative to the cwd)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)
        yield inventory.load(REPO / "inventories" / "lab.py")

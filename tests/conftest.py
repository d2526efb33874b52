"""Shared test settings: every test runs from the repository root, as pyinfra would."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAB_INVENTORY = ROOT / "inventories" / "lab.py"


@pytest.fixture(autouse=True)
def _in_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    # pyinfra reads ./group_data relative to the working directory.
    monkeypatch.chdir(ROOT)


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # SEAWALL_TEST_TIMES=FILE: each phase's time as it ends, so a long lab run
    # that is cut short still says where its time went (--durations prints at the end).
    path = os.environ.get("SEAWALL_TEST_TIMES")
    if path and report.duration >= 1:
        with open(path, "a") as times:
            line = f"{report.duration:8.1f} {report.when:8} {report.outcome:7} {report.nodeid}"
            times.write(line + "\n")

"""Lab tests: one real lab per test run, brought up and deployed once, torn down last.

Every test here carries the `lab` marker. The session pays for `lab up` and the
first site deploy once; `test_lab_down_leaves_nothing` runs after all others.
"""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from seawall import inventory, lab
from seawall.inventory import Topology

ROOT = Path(__file__).resolve().parents[2]
LAB_INVENTORY = ROOT / "inventories" / "lab.py"
PYINFRA = str(Path(sys.executable).with_name("pyinfra"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    lab_dir = Path(__file__).parent
    for item in items:
        if lab_dir in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.lab)
    # Tests marked `late` (Vagrant, which rests the lab's hosts) run after the
    # others, and `teardown_last` (lab down) after everything.
    items.sort(
        key=lambda item: (
            item.get_closest_marker("teardown_last") is not None,
            item.get_closest_marker("late") is not None,
        )
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "teardown_last: runs after every other test")
    config.addinivalue_line("markers", "late: runs after the other lab tests, before lab down")


def run_site_deploy(
    *extra: str, timeout: float = 1200, cwd: Path = ROOT, pythonpath: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real site deploy against the lab, as an ops engineer would.

    ``cwd`` holds deploys/ and inventories/; ``pythonpath`` is where seawall is
    imported from (an installed wheel) instead of this repository.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [PYINFRA, "-y", *extra, "inventories/lab.py", "deploys/site.py"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def run_deploy(
    deploy_file: str | Path, *extra: str, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """Run one deploy file (``deploys/<concern>.py``) alone against the lab, with ``--json``."""
    return subprocess.run(
        [PYINFRA, "-y", "--json", *extra, "inventories/lab.py", str(deploy_file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def changed_operations(result: subprocess.CompletedProcess[str]) -> dict[str, list[str]]:
    """Return {operation: hosts it changed} from a `pyinfra --json` run that succeeded."""
    assert result.returncode == 0, result.stderr[-4000:]
    results: dict[str, Any] = json.loads(result.stdout)["results"]
    assert results["totals"]["error"] == 0
    return {op["name"]: op["success"] for op in results["operations"] if op["success"]}


@pytest.fixture(scope="session")
def lab_topology() -> Iterator[Topology]:
    """The lab inventory with the lab up (from whatever state it was in)."""
    if os.geteuid() != 0:
        pytest.fail("lab tests need root (LXC system containers)")
    os.chdir(ROOT)
    topology = inventory.load(LAB_INVENTORY)
    report = lab.up(topology, log=lambda line: print(line, file=sys.stderr))
    assert report.ok, report
    yield topology


@pytest.fixture(scope="session")
def first_deploy(lab_topology: Topology) -> subprocess.CompletedProcess[str]:
    """The result of the first full site deploy of this run."""
    result = run_site_deploy()
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


@pytest.fixture(scope="session")
def deployed_lab(
    lab_topology: Topology, first_deploy: subprocess.CompletedProcess[str]
) -> Topology:
    """The lab after one successful site deploy."""
    return lab_topology

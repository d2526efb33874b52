"""Lab tests: one real lab per test run, brought up and deployed once, torn down last.

Every test here carries the `lab` marker. The session pays for `lab up` and the
first site deploy once; `test_lab_down_leaves_nothing` runs after all others.
When a run holds unit and lab tests, the unit tests go first and the lab comes
up and takes its first deploy meanwhile, in two subprocesses of a background
thread (most of a deploy is waiting on the hosts): the first lab test waits for
them, and the session stops them if it ends first.
"""

import json
import os
import subprocess
import sys
import threading
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
    # Unit tests first (the lab comes up meanwhile), then the lab's; tests marked
    # `late` (Vagrant, which rests the lab's hosts) after those, and
    # `teardown_last` (lab down) after everything.
    items.sort(
        key=lambda item: (
            item.get_closest_marker("teardown_last") is not None,
            item.get_closest_marker("late") is not None,
            item.get_closest_marker("lab") is not None,
        )
    )


class _LabInBackground:
    """`seawall lab up`, then the first site deploy, in a thread; each a subprocess."""

    def __init__(self) -> None:
        self.results: list[subprocess.CompletedProcess[str]] = []
        self._process: subprocess.Popen[str] | None = None
        self._stopped = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="lab-up", daemon=True)
        self._thread.start()

    def _step(self, command: list[str], timeout: float) -> bool:
        with self._lock:
            if self._stopped:
                return False
            self._process = subprocess.Popen(
                command,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        try:
            out, err = self._process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            out, err = self._process.communicate()
        self.results.append(
            subprocess.CompletedProcess(command, self._process.returncode, out, err)
        )
        return self._process.returncode == 0

    def _run(self) -> None:
        seawall = str(Path(sys.executable).with_name("seawall"))
        if self._step([seawall, "lab", "up", "-i", str(LAB_INVENTORY)], timeout=1800):
            self._step([PYINFRA, "-y", "inventories/lab.py", "deploys/site.py"], timeout=1200)

    def wait(self) -> list[subprocess.CompletedProcess[str]]:
        self._thread.join(timeout=3000)
        assert not self._thread.is_alive(), "lab up and the first deploy took over 50 min"
        return self.results

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            if self._process is not None and self._process.poll() is None:
                self._process.terminate()
        self._thread.join(timeout=60)


_background: list[_LabInBackground] = []


def pytest_collection_finish(session: pytest.Session) -> None:
    lab_items = [item for item in session.items if item.get_closest_marker("lab")]
    others = len(session.items) - len(lab_items)
    if lab_items and others and os.geteuid() == 0 and not session.config.option.collectonly:
        _background.append(_LabInBackground())


def pytest_sessionfinish(session: pytest.Session) -> None:
    for background in _background:
        background.stop()


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
    for result in _background[0].wait() if _background else []:
        print(result.stderr[-4000:], file=sys.stderr)
    # Quick when the background brought it up; says what is wrong otherwise.
    report = lab.up(topology, log=lambda line: print(line, file=sys.stderr))
    assert report.ok, report
    yield topology


@pytest.fixture(scope="session")
def first_deploy(lab_topology: Topology) -> subprocess.CompletedProcess[str]:
    """The result of the first full site deploy of this run (the background's, if any)."""
    done = _background[0].wait()[1:] if _background else []
    result = done[0] if done else run_site_deploy()
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


@pytest.fixture(scope="session")
def deployed_lab(
    lab_topology: Topology, first_deploy: subprocess.CompletedProcess[str]
) -> Topology:
    """The lab after one successful site deploy."""
    return lab_topology

"""Lab tests: one real lab per test run, brought up and deployed once, torn down last.

Every test here carries the `lab` marker. The session pays for `lab up` and the
first site deploy once; `test_lab_down_leaves_nothing` runs after all others.
When a run holds unit and lab tests, the unit tests go first and the lab comes
up and takes its first deploy meanwhile, in a background shell (most of a
deploy is waiting on the hosts): the first lab test waits for it, and the
session stops it if it ends first.
"""

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from seawall import inventory, lab
from seawall.inventory import Topology
from seawall.lab import faults
from seawall.lab.config import lab_config
from seawall.postgres import failover as pg_failover
from seawall.redis.failover import wait_healthy
from seawall.ssh import ssh_args

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
    """`seawall lab up`, then the first site deploy: one shell, its output in files.

    No thread and no pipe: pyinfra's import monkey-patches threads into gevent
    greenlets, which run only when the unit tests yield, and a pipe nobody
    reads would stall the deploy.
    """

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="seawall-lab-up-"))
        seawall = shlex.quote(str(Path(sys.executable).with_name("seawall")))
        up = f"{seawall} lab up -i {shlex.quote(str(LAB_INVENTORY))}"
        deploy = f"{shlex.quote(PYINFRA)} -y inventories/lab.py deploys/site.py"
        out = shlex.quote(str(self.dir))
        script = (
            f"{up} >{out}/up.out 2>{out}/up.err; echo $? >{out}/up.rc; "
            f'[ "$(cat {out}/up.rc)" = 0 ] || exit 0; '
            f"{deploy} >{out}/deploy.out 2>{out}/deploy.err; echo $? >{out}/deploy.rc"
        )
        self.process = subprocess.Popen(
            ["sh", "-c", script],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own group: stopped whole, by its id
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def _step(self, name: str) -> subprocess.CompletedProcess[str] | None:
        rc = self.dir / f"{name}.rc"
        if not rc.is_file():
            return None
        return subprocess.CompletedProcess(
            [name],
            int(rc.read_text()),
            (self.dir / f"{name}.out").read_text(errors="replace"),
            (self.dir / f"{name}.err").read_text(errors="replace"),
        )

    def wait(self) -> tuple[subprocess.CompletedProcess[str] | None, ...]:
        """Return (lab up, first deploy), each None if it did not run."""
        self.process.wait(timeout=3000)
        return self._step("up"), self._step("deploy")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


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


def remote_python(topology: Topology, host: str, code: str, payload: Any, timeout: int) -> Any:
    """Run ``code`` with python3 on ``host``, ``payload`` as JSON on its stdin (secrets stay
    off command lines); return the JSON its last line prints."""
    result = subprocess.run(
        [*ssh_args(topology, host), f"timeout {timeout} python3 -c {shlex.quote(code)}"],
        input=json.dumps(payload) + "\n",
        capture_output=True,
        text=True,
        timeout=timeout + 30,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


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
    if _background:
        up, _ = _background[0].wait()
        if up is not None:
            print(up.stderr[-4000:], file=sys.stderr)
    # Quick when the background brought it up; says what is wrong otherwise.
    report = lab.up(topology, log=lambda line: print(line, file=sys.stderr))
    assert report.ok, report
    yield topology


@pytest.fixture(scope="session")
def first_deploy(lab_topology: Topology) -> subprocess.CompletedProcess[str]:
    """The result of the first full site deploy of this run (the background's, if any)."""
    done = _background[0].wait()[1] if _background else None
    result = done if done is not None else run_site_deploy()
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


@pytest.fixture(scope="session")
def deployed_lab(
    lab_topology: Topology, first_deploy: subprocess.CompletedProcess[str]
) -> Topology:
    """The lab after one successful site deploy."""
    return lab_topology


# How long a test that needs the lab to itself waits for other users' fault locks.
QUIET_LOCK_WAIT_S = 1800


@pytest.fixture
def quiet_lab(deployed_lab: Topology) -> Iterator[Topology]:
    """The deployed lab, healthy, with no other session's fault in it while the test runs."""
    wait = QUIET_LOCK_WAIT_S
    with faults.exclusive_lock(faults.DATA_FAULT_LOCK, timeout=wait), faults.app_fault_lock(wait):
        assert faults.active_faults(lab_config(deployed_lab)) == []
        wait_healthy(deployed_lab, 120)  # raises unless healthy
        healthy, _ = pg_failover.wait_healthy(deployed_lab, 120)
        assert healthy
        yield deployed_lab

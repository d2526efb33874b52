"""The common baseline on the lab: every promise holds; a redeploy from a wheel changes nothing."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from seawall.inventory import Topology
from seawall.ssh import ssh_args
from seawall.verify import CHECKS, verify_settled
from tests.lab.conftest import changed_operations, run_site_deploy
from tests.unit.test_wheel import build_wheel, copy_entry_files, install_wheel

# The README's `seawall verify --settle` bound after a cold deploy.
SETTLE_S = 120


@pytest.fixture(scope="module")
def second_deploy(
    deployed_lab: Topology, tmp_path_factory: pytest.TempPathFactory
) -> subprocess.CompletedProcess[str]:
    """The site deploy run again right after the first: JSON results on stdout, log on stderr.

    It runs as the ops host will: from a built wheel of seawall, installed in a
    folder of its own, and a copy of deploys/, inventories/ and config.py.
    """
    tmp = tmp_path_factory.mktemp("wheel-deploy")
    site = install_wheel(build_wheel(tmp / "build"), tmp / "site")
    ops = copy_entry_files(tmp / "ops")
    env = {**os.environ, "PYTHONPATH": str(site)}
    found = subprocess.run(
        [sys.executable, "-c", "import seawall; print(seawall.__file__)"],
        cwd=ops,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(found.stdout.strip()).is_relative_to(site), found.stdout
    result = run_site_deploy("--json", cwd=ops, pythonpath=site)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def test_every_common_promise_holds(deployed_lab: Topology) -> None:
    # As the README's main job does: right after the cold deploy, a replica may
    # still be syncing and a service's /health says DEGRADED until it has.
    report = verify_settled(deployed_lab, within=SETTLE_S)
    for host in report.hosts:
        # The common checks come first; each role's checks follow them.
        assert [check.name for check in host.checks][: len(CHECKS)] == list(CHECKS), host.host
    assert sorted(host.host for host in report.hosts) == sorted(h.name for h in deployed_lab)
    assert report.ok, report.summary()


def test_second_deploy_changes_nothing(
    deployed_lab: Topology, second_deploy: subprocess.CompletedProcess[str]
) -> None:
    assert changed_operations(second_deploy) == {}
    results: dict[str, Any] = json.loads(second_deploy.stdout)["results"]
    # Every host really took part: each ran the common deploy's operations.
    common = [op for op in results["operations"] if "Common host baseline" in op["name"]]
    assert common
    for op in common:
        assert op["no_change"] == sorted(host.name for host in deployed_lab), op["name"]


def test_kernel_tuning_is_skipped_in_containers_and_said(
    deployed_lab: Topology, second_deploy: subprocess.CompletedProcess[str]
) -> None:
    log = re.sub(r"\x1b\[[0-9;]*m", "", second_deploy.stderr)
    for host in deployed_lab:
        assert re.search(
            rf"\[{re.escape(host.name)}\]\s+Skip kernel tuning: container \(lxc\)", log
        )


def test_sshd_offers_no_password_login(deployed_lab: Topology) -> None:
    for host in deployed_lab:
        ssh, *args = ssh_args(deployed_lab, host.name, user=str(host.data["admin_user"]))
        attempt = subprocess.run(
            [
                ssh,
                *("-o", "PubkeyAuthentication=no"),
                *("-o", "PreferredAuthentications=password,keyboard-interactive"),
                *args,
                "true",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert attempt.returncode == 255
        # sshd lists the methods it would accept: keys only.
        assert "Permission denied (publickey)." in attempt.stderr, attempt.stderr

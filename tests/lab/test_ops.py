"""The ops host as controller (issue 13 items 1, 3, drift cron), on the lab after the site deploy.

ops-1 runs `seawall drift` from its own venv, over its own key, and finds no
drift; its restart timer next fires at 04:00 UTC; the drift cron line is there;
its secrets file is root's, 0600; a second ops deploy changes nothing.
"""

import json
import re
import shlex

import pytest

from seawall import ssh
from seawall.inventory import Topology
from seawall.settings import setting
from tests.lab.conftest import changed_operations, run_deploy

pytestmark = pytest.mark.lab

OPS = "ops-1"


def on_ops(topology: Topology, command: str, timeout: float = 600) -> tuple[int, str]:
    result = ssh.run(topology, OPS, command, timeout=timeout)
    return result.returncode, result.stdout + result.stderr


@pytest.fixture(scope="module")
def deployed(lab_topology: Topology) -> Topology:
    # The site deploy includes deploys/ops.py; the ops deploy alone makes sure of it.
    changed_operations(run_deploy("deploys/ops.py"))
    return lab_topology


def test_ops_host_runs_drift_from_its_own_venv_and_finds_none(deployed: Topology) -> None:
    data = deployed.host(OPS).data
    site, venv = setting(data, "ops_site_dir"), setting(data, "ops_venv_dir")
    result = ssh.run(
        deployed,
        OPS,
        f"cd {shlex.quote(site)} && {shlex.quote(venv)}/bin/seawall drift "
        "-i inventories/lab.py --json",
        timeout=600,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    report = json.loads(result.stdout)
    assert report["drift"] == {} and report["error"] is None, report


def test_restart_timer_next_fires_at_0400_utc(deployed: Topology) -> None:
    code, output = on_ops(
        deployed,
        "TZ=UTC systemctl show -p NextElapseUSecRealtime -p ActiveState -p UnitFileState "
        "seawall-restart.timer",
    )
    assert code == 0, output
    assert "ActiveState=active" in output and "UnitFileState=enabled" in output
    assert re.search(r"NextElapseUSecRealtime=\w{3} \d{4}-\d\d-\d\d 04:00:00 UTC", output), output


def test_drift_cron_line_is_there(deployed: Topology) -> None:
    code, output = on_ops(deployed, "crontab -l -u root")
    assert code == 0, output
    assert "# pyinfra-name=seawall-drift" in output
    # The lab's own schedule (its group data sets one), as the inventory states it.
    schedule = str(setting(deployed.host(OPS).data, "drift_cron"))
    line = f"{schedule} /usr/local/libexec/seawall-drift-run"
    assert line in output.splitlines(), output


def test_secrets_file_is_roots_and_0600(deployed: Topology) -> None:
    path = setting(deployed.host(OPS).data, "secrets_file")
    code, output = on_ops(deployed, f"stat -c '%U:%G %a' {shlex.quote(str(path))}")
    assert code == 0, output
    assert output.strip() == "root:root 600"


def test_a_second_ops_deploy_changes_nothing(deployed: Topology) -> None:
    assert changed_operations(run_deploy("deploys/ops.py")) == {}

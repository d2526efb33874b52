"""The one-fact operations on real hosts: a hand change still reaches the real fix, and a
redeploy after it changes nothing.

seawall's ``files.put``, ``systemd.service`` and ``install_packages`` decide from
one shell command each (``FileState``, ``UnitState``, ``DebInstallState``); the
unit tests check their decisions against fixtures and pyinfra's own operations,
this checks the commands themselves on the lab's hosts, through pyinfra's
shell, as root. Every hand change is undone by the redeploy (and again in
``finally``); the app-fault lock is held so no other session's fault is read
as a change.
"""

from collections.abc import Iterator

import pytest

from seawall.components import common, metrics
from seawall.facts.deb import DebInstallState
from seawall.inventory import Topology
from seawall.lab.faults import DATA_FAULT_LOCK, app_fault_lock, exclusive_lock
from seawall.ssh import run as ssh
from tests.lab.conftest import changed_operations, run_site_deploy

HOST = "app-1"
LOCK_WAIT_S = 1800
TIMEZONE_OP = "Record the timezone for tools that read /etc/timezone"
JOURNALD_OP = "Keep the journal on disk within bounds"
NODE_UNIT = f"{metrics.NODE}.service"
NODE_OP = f"Run {metrics.NODE} now and at boot"
# A base package every host has (common_packages); the probe only reads dpkg's database.
PACKAGE = "curl"


@pytest.fixture
def locked(deployed_lab: Topology) -> Iterator[Topology]:
    with exclusive_lock(DATA_FAULT_LOCK, timeout=LOCK_WAIT_S), app_fault_lock(LOCK_WAIT_S):
        yield deployed_lab


def _sh(lab: Topology, command: str) -> str:
    return ssh(lab, HOST, command, timeout=60, check=True).stdout.strip()


def test_hand_changes_reach_the_real_fix_and_then_nothing_changes(locked: Topology) -> None:
    lab = locked
    before = {
        "timezone": _sh(lab, "cat /etc/timezone"),
        "journald": _sh(lab, f"stat -c '%a %U %G' {common.JOURNALD}"),
    }
    try:
        # Content and mode of one file, the mode alone of another, a unit stopped and
        # disabled: each must be found by the one fact its operation asks.
        _sh(lab, "echo Etc/Nowhere > /etc/timezone && chmod 600 /etc/timezone")
        _sh(lab, f"chmod 600 {common.JOURNALD}")
        _sh(lab, f"systemctl disable --now {NODE_UNIT}")
        fixed = run_site_deploy("--json")
        changed = changed_operations(fixed)
        for op in (TIMEZONE_OP, JOURNALD_OP, NODE_OP):
            # pyinfra names them "deploy file | deploy | operation".
            hosts = [h for name, on in changed.items() if name.endswith(f"| {op}") for h in on]
            assert HOST in hosts, (op, changed)
        assert _sh(lab, "cat /etc/timezone") == before["timezone"]
        assert _sh(lab, "stat -c '%a %U %G' /etc/timezone") == "644 root root"
        assert _sh(lab, f"stat -c '%a %U %G' {common.JOURNALD}") == before["journald"]
        assert _sh(lab, f"systemctl is-active {NODE_UNIT}") == "active"
        assert _sh(lab, f"systemctl is-enabled {NODE_UNIT}") == "enabled"
        again = changed_operations(run_site_deploy("--json"))
        assert again == {}, again
    finally:
        # The redeploy above restores all of it; this is for a run that failed before.
        ssh(lab, HOST, f"systemctl enable --now {NODE_UNIT}", timeout=60)
        ssh(lab, HOST, f"chmod 644 /etc/timezone {common.JOURNALD}", timeout=60)
        ssh(lab, HOST, f"echo {before['timezone']} > /etc/timezone", timeout=60)


def test_the_package_probe_sees_what_dpkg_sees(locked: Topology) -> None:
    fact = DebInstallState()
    command = fact.command(
        [PACKAGE, "seawall-no-such-package"], common.POLICY_RC_D, common._POLICY_MARKER
    )
    state = fact.process(_sh(locked, command).splitlines())
    version = _sh(locked, f"dpkg-query -W -f='${{Version}}' {PACKAGE}")
    assert state == {"installed": {PACKAGE: version}, "policy_rc_d": None}

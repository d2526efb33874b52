"""The four units sandboxed for issue 14 item 5 still do their job, run by systemd itself.

``tests/unit/test_sandbox.py`` scores them offline and runs their programs under
their user and capability bound; only the hosts' systemd applies the rest (mount
namespaces, seccomp, address families). Each test starts the unit the way its
timer or the boot does (``systemctl start``, or ``restart`` for the firewall's
oneshot that stays active), then asks for its result and for the service's own
state: the live table, the central journal, ``pgbackrest info``, the restart's
metrics. Every wait is bounded.
"""

import json

from seawall.components import firewall, ops
from seawall.components import logging as journal
from seawall.inventory import Topology
from seawall.lab import faults
from seawall.lab.config import lab_config
from seawall.lab.faults import app_fault_lock
from seawall.names import BACKUP_SERVICE, CENTRAL_JOURNAL
from seawall.postgres import drill
from seawall.settings import setting
from seawall.ssh import run as ssh
from tests.lab.test_firewall import intended, live_comment

# The firewall drill host (app-2, as tests/lab/test_firewall.py uses it).
FIREWALL_HOST = "app-2"
# A full backup of the lab's cluster takes well under this.
BACKUP_TIMEOUT_S = 1800
# The whole lab's rolling restart (tests/lab/test_restart.py's bound).
RESTART_TIMEOUT_S = 2400


def unit_name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def started(topology: Topology, host: str, unit: str, timeout: float, verb: str = "start") -> None:
    """Run ``unit`` through systemd on ``host``; it must end (or stay) with Result=success."""
    result = ssh(topology, host, f"systemctl {verb} {unit}", timeout=timeout)
    shown = ssh(topology, host, f"systemctl show -p Result -p ExecMainStatus {unit}").stdout
    logs = ssh(topology, host, f"journalctl -u {unit} -n 30 --no-pager").stdout
    assert result.returncode == 0, f"{host} {unit}: {result.stderr}\n{shown}\n{logs}"
    assert "Result=success" in shown, f"{host} {unit}: {shown}\n{logs}"


def test_the_firewall_unit_loads_the_table_in_its_sandbox(deployed_lab: Topology) -> None:
    # What the boot runs: the same file, replaced atomically; SSH stays up.
    with app_fault_lock(300):
        started(deployed_lab, FIREWALL_HOST, firewall.UNIT, 60, verb="restart")
        assert live_comment(deployed_lab, FIREWALL_HOST) == intended(deployed_lab, FIREWALL_HOST)[1]
        active = ssh(deployed_lab, FIREWALL_HOST, f"systemctl is-active {firewall.UNIT}")
        assert active.stdout.strip() == "active"


# Boots of the firewall host in a row: the sandbox's failure at boot (below) came
# on one boot of two, so one boot alone could pass by chance.
BOOTS = 3


def test_the_firewall_unit_loads_the_table_at_every_boot(deployed_lab: Topology) -> None:
    # It starts at sysinit, where a mount namespace once failed to set up
    # (226/NAMESPACE) and the host came up without its table.
    config = lab_config(deployed_lab)
    with app_fault_lock(600):
        try:
            for boot in range(1, BOOTS + 1):
                faults.crash(config, FIREWALL_HOST)
                faults.restore(config)
                shown = ssh(
                    deployed_lab,
                    FIREWALL_HOST,
                    f"systemctl show -p Result -p ActiveState "
                    f"{firewall.UNIT}; journalctl -b -u {firewall.UNIT} --no-pager -n 20",
                    check=True,
                ).stdout
                assert "Result=success" in shown and "ActiveState=active" in shown, (boot, shown)
                got = live_comment(deployed_lab, FIREWALL_HOST)
                assert got == intended(deployed_lab, FIREWALL_HOST)[1], boot
                # And the whole boot ends with no unit failed (the next test finds it booted).
                state = ssh(
                    deployed_lab,
                    FIREWALL_HOST,
                    "timeout 180 systemctl is-system-running --wait; systemctl --failed --plain",
                    timeout=240,
                ).stdout
                assert state.startswith("running"), (boot, state)
        finally:
            faults.restore(config)


def test_the_vacuum_runs_as_journal_remote_and_keeps_the_central_journal(
    deployed_lab: Topology,
) -> None:
    sink = deployed_lab.group("ops")[0].name
    service = unit_name(journal.VACUUM_SERVICE)
    started(deployed_lab, sink, service, 300)
    owner = ssh(deployed_lab, sink, f"stat -c %U {CENTRAL_JOURNAL}", check=True).stdout
    assert owner.strip() == "systemd-journal-remote"
    # journal-remote still writes there: every host's file is still searchable.
    files = ssh(deployed_lab, sink, f"journalctl -D {CENTRAL_JOURNAL} -n 1 -q -o json")
    assert files.returncode == 0 and json.loads(files.stdout.splitlines()[-1])


def test_the_full_backup_unit_takes_a_backup_in_its_sandbox(quiet_lab: Topology) -> None:
    healthy, _ = drill.wait_healthy(quiet_lab, 180)
    assert healthy
    repo = quiet_lab.group("ops")[0]
    user, stanza = setting(repo.data, "pgbackrest_user"), setting(repo.data, "pgbackrest_stanza")
    info = f"cd / && runuser -u {user} -- pgbackrest --stanza={stanza} --output=json info"

    def labels() -> list[str]:
        out = ssh(quiet_lab, repo.name, info, check=True, timeout=120).stdout
        return [b["label"] for b in json.loads(out)[0]["backup"]]

    before = labels()
    started(quiet_lab, repo.name, unit_name(BACKUP_SERVICE), BACKUP_TIMEOUT_S)
    after = labels()
    new = [label for label in after if label not in before]
    assert new and new[-1].endswith("F"), (before, after)
    # Its lock stayed the host's own: the folder pgBackRest made is in the host's /tmp.
    lock = ssh(quiet_lab, repo.name, "stat -c %U /tmp/pgbackrest", check=True).stdout
    assert lock.strip() == user


def test_the_restart_unit_runs_a_rolling_restart_in_its_sandbox(quiet_lab: Topology) -> None:
    sink = quiet_lab.group("ops")[0]
    started(quiet_lab, sink.name, unit_name(ops.SERVICE), RESTART_TIMEOUT_S)
    # Its ExecStopPost= recorder wrote node_exporter's textfile directory.
    textfile = setting(sink.data, "services_textfile_dir")
    prom = ssh(quiet_lab, sink.name, f"cat {textfile}/seawall_restart.prom", check=True).stdout
    assert "seawall_restart_ok 1" in prom

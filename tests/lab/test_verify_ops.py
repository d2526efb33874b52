"""`seawall verify` on the first ops host: its drift cron and its jobs' last runs, on the lab.

After the site deploy the three checks hold (the drift cron may not have run
yet: "no run yet" while its line is new). A drift cron line with another
schedule, and a drift run that ended in an error, are each named; the fault is
undone in a ``finally``. Both faults are on ops-1 alone, yet every verify of the
lab would see them: they are taken under the data- and app-fault locks (data
first), as tests/lab/test_verify.py takes its faults, so no other session's
verify reads them.
"""

import json
import re
import shlex
import time
from collections.abc import Iterator

import pytest

from seawall import drift, ssh
from seawall.inventory import Topology
from seawall.lab.faults import DATA_FAULT_LOCK, app_fault_lock, exclusive_lock
from seawall.settings import setting
from seawall.verify import VerifyReport, verify, verify_settled
from seawall.verify import ops as verify_ops

pytestmark = pytest.mark.lab

OPS = "ops-1"
HEAL_WITHIN = 120
# A dry run of the lab takes well under this (drift.DEFAULT_TIMEOUT_S bounds it).
DRIFT_RUN_S = 300


@pytest.fixture
def quiet_ops(deployed_lab: Topology) -> Iterator[Topology]:
    with exclusive_lock(DATA_FAULT_LOCK, timeout=600), app_fault_lock(600):
        report = verify_settled(deployed_lab, HEAL_WITHIN, every=3)
        assert report.ok, report.summary()
        yield deployed_lab


def on_ops(topology: Topology, command: str) -> str:
    return ssh.run(topology, OPS, command, timeout=60, check=True).stdout


def check(report: VerifyReport, name: str) -> tuple[bool, str]:
    found = next(h for h in report.hosts if h.host == OPS).check(name)
    return found.ok, found.detail


def test_the_ops_jobs_hold_after_the_deploy(quiet_ops: Topology) -> None:
    report = verify(quiet_ops)
    schedule = setting(quiet_ops.host(OPS).data, "drift_cron")
    assert check(report, "drift cron") == (True, f"root: {schedule} {verify_ops.DRIFT_RUN}")
    ok, detail = check(report, "drift last run")
    assert ok and re.fullmatch(
        r"no run yet \(cron line .+ old\)|.+ ago, \d+ operations of drift", detail
    ), detail
    ok, detail = check(report, "restart last run")
    assert ok and (detail == "no run yet" or detail.startswith("succeeded ")), detail


def test_a_drift_cron_line_with_another_schedule_is_named(quiet_ops: Topology) -> None:
    backup = "/root/.seawall-test-crontab"
    on_ops(
        quiet_ops,
        f"crontab -l -u root > {backup} && "
        f"sed 's|^[^#].* {verify_ops.DRIFT_RUN}$|0 * * * * {verify_ops.DRIFT_RUN}|' {backup} "
        "| crontab -u root -",
    )
    try:
        report = verify(quiet_ops)
    finally:
        on_ops(quiet_ops, f"crontab -u root {backup} && rm -f {backup}")
    ok, detail = check(report, "drift cron")
    assert not ok and f"is '0 * * * * {verify_ops.DRIFT_RUN}'" in detail, detail
    assert {name for host, name in report.failures() if host == OPS} == {"drift cron"}
    assert verify_settled(quiet_ops, HEAL_WITHIN, every=3).ok


def wait_for_no_drift_run(topology: Topology) -> None:
    """Wait (bounded) until no drift run is under way and none starts within a minute."""
    minutes = verify_ops.cron_field(
        str(setting(topology.host(OPS).data, "drift_cron")).split()[0], 0, 59
    )
    give_up = time.monotonic() + DRIFT_RUN_S + 120
    while time.monotonic() < give_up:
        # [/]usr...: the pattern does not match the shell whose command line holds it.
        pattern = shlex.quote(f"[{verify_ops.DRIFT_RUN[0]}]{verify_ops.DRIFT_RUN[1:]}")
        out = on_ops(topology, f"date +%M; pgrep -f {pattern} || true").split()
        minute, running = int(out[0]), len(out) > 1
        if not running and not {minute, (minute + 1) % 60} & minutes:
            return
        time.sleep(5)
    pytest.fail("a drift run was always under way or about to start")


def test_a_drift_run_that_failed_is_named_with_its_reason(quiet_ops: Topology) -> None:
    data = quiet_ops.host(OPS).data
    textfile = f"{setting(data, 'services_textfile_dir')}/{drift.TEXTFILE_NAME}"
    report_file = f"{setting(data, 'ops_state_dir')}/{verify_ops.DRIFT_REPORT}"
    reason = "unreachable: data-2 (a lab test's fault)"
    failed = drift.DriftReport("inventories/lab.py", ("data-2",), (), error=reason)
    wait_for_no_drift_run(quiet_ops)
    # Kept aside (or marked absent) and put back, as the cron left them.
    keep = "; ".join(
        f"if [ -e {p} ]; then cp -p {p} {p}.keep; else rm -f {p}.keep; fi"
        for p in (textfile, report_file)
    )
    on_ops(
        quiet_ops,
        f"{keep}; "
        f"printf %s {shlex.quote(drift.textfile(failed))} > {textfile}.new && "
        f"mv -f {textfile}.new {textfile} && "
        f"printf %s {shlex.quote(json.dumps(failed.to_json()))} > {report_file}",
    )
    try:
        report = verify(quiet_ops)
    finally:
        restore = "; ".join(
            f"if [ -e {p}.keep ]; then mv -f {p}.keep {p}; else rm -f {p}; fi"
            for p in (textfile, report_file)
        )
        on_ops(quiet_ops, restore)
    ok, detail = check(report, "drift last run")
    assert not ok and detail.endswith(f"ago: {reason}"), detail
    assert verify_settled(quiet_ops, HEAL_WITHIN, every=3).ok

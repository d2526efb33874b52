"""The central journal on the lab (issue 12, item 7 and acceptance): search, outage, redeploy.

- a request through the gateway, with a fresh X-Request-ID, is found by
  ``seawall logs --request-id`` on at least two hosts (the gateway and the app
  host that served it) within a bounded wait;
- journal upload loses no entry across a 30 s outage of ops-1: numbered entries
  written on app-1 while ops-1 is crashed (``faults.crash``) all reach the
  central journal, within a bounded wait after it is restored;
- a second deploy of ``deploys/logging.py`` changes nothing.

The outage test holds the app- and data-fault locks (in bench/gateway.py's
order): ``faults.restore`` undoes every fault in the lab, so no other session
may have one in place meanwhile.
"""

import json
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from seawall.inventory import Topology
from seawall.lab import faults
from seawall.lab.config import lab_config
from seawall.names import CENTRAL_JOURNAL
from seawall.ssh import run as ssh
from tests.lab.conftest import ROOT, changed_operations, run_deploy
from tests.lab.test_gateway import GATEWAY, Client
from tests.lab.test_services import PREFIX

SEAWALL = str(Path(sys.executable).with_name("seawall"))
SINK = "ops-1"
WRITER = "app-1"
# How long a request may take to show in `seawall logs` here (the acceptance's
# 5 s is measured by bench/logs.py; this bound only keeps the test finite).
FOUND_WITHIN_S = 30.0
OUTAGE_S = 30.0
ENTRIES = 200
# After ops-1 is back: its boot, the upload's 5 s restart delay, the backlog.
CAUGHT_UP_WITHIN_S = 120.0
LOCK_WAIT_S = 1800


@pytest.fixture(scope="module")
def gateway_tls(deployed_lab: Topology) -> ssl.SSLContext:
    """Trust exactly gw-1's certificate (self-signed in the lab, for its address)."""
    cert = ssh(deployed_lab, GATEWAY, "cat /etc/nginx/tls/gateway.crt", check=True).stdout
    return ssl.create_default_context(cadata=cert)


@pytest.fixture
def gateway(deployed_lab: Topology, gateway_tls: ssl.SSLContext) -> Iterator[Client]:
    made = Client(deployed_lab, gateway_tls)
    yield made
    made.close()


def seawall_logs(request_id: str) -> subprocess.CompletedProcess[str]:
    """Run `seawall logs --request-id ... --json` against the lab, as an engineer would."""
    return subprocess.run(
        [SEAWALL, "logs", "--request-id", request_id, "--json", "-i", "inventories/lab.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )


def found(request_id: str, within: float) -> tuple[dict[str, Any], float]:
    """Return the report once it has lines on 2+ hosts, and the seconds that took; else fail."""
    started = time.monotonic()
    last: subprocess.CompletedProcess[str] | None = None
    while time.monotonic() - started < within:
        last = seawall_logs(request_id)
        # Exit 1 (nothing yet) is expected while the lines travel; 2 is an error.
        assert last.returncode in (0, 1), last.stderr
        if last.returncode == 0:
            report = json.loads(last.stdout)
            if len(report["hosts"]) >= 2:
                return report, time.monotonic() - started
        time.sleep(0.5)
    pytest.fail(
        f"request {request_id} not on 2 hosts within {within} s: "
        f"{last.stdout if last else ''} {last.stderr if last else ''}"
    )


def test_a_request_is_found_on_the_gateway_and_its_app_host(
    deployed_lab: Topology, gateway: Client
) -> None:
    request_id = f"lab-{uuid.uuid4().hex}"
    status, headers, body = gateway.request(
        "GET", "/api/risk/items/1", headers={"X-Request-ID": request_id}
    )
    assert status == 200 and headers["x-request-id"] == request_id
    report, took = found(request_id, FOUND_WITHIN_S)
    print(f"found on {report['hosts']} after {took:.1f} s", file=sys.stderr)
    assert GATEWAY in report["hosts"] and body["host"] in report["hosts"]
    # The gateway's access line, and the service's own line with the same id.
    messages = [json.loads(line["message"]) for line in report["lines"]]
    assert all(message["request_id"] == request_id for message in messages)
    assert any(line["host"] == GATEWAY for line in report["lines"])
    # Its SERVICE field names it; without one, its unit does.
    served = {"risk-safety", f"{PREFIX}risk-safety.service"}
    assert any(line["host"] == body["host"] and line["unit"] in served for line in report["lines"])
    times = [line["realtime_us"] for line in report["lines"]]
    assert times == sorted(times)


def test_an_unknown_request_exits_1(deployed_lab: Topology) -> None:
    result = seawall_logs(f"lab-never-sent-{uuid.uuid4().hex}")
    assert result.returncode == 1, result.stdout + result.stderr
    assert json.loads(result.stdout)["lines"] == []


def _central_numbers(topology: Topology, tag: str) -> list[int]:
    """The entry numbers the central journal holds for ``tag`` (duplicates kept)."""
    result = ssh(
        topology,
        SINK,
        f"journalctl -D {CENTRAL_JOURNAL} -o cat --no-pager SYSLOG_IDENTIFIER={tag}",
    )
    if result.returncode != 0:
        return []
    numbers = []
    for line in result.stdout.splitlines():
        words = line.split()
        if len(words) == 4 and words[:2] == [tag, "entry"] and words[2].isdigit():
            numbers.append(int(words[2]))
    return numbers


def _write(topology: Topology, tag: str, first: int, last: int, pause: float) -> None:
    """Log entries ``first..last`` on the writer host, ``pause`` seconds apart."""
    script = (
        f'for i in $(seq {first} {last}); do logger -t {tag} "{tag} entry $i {ENTRIES}"; '
        f"sleep {pause}; done"
    )
    result = ssh(topology, WRITER, script, timeout=120)
    assert result.returncode == 0, result.stderr


def _wait_for(topology: Topology, tag: str, wanted: set[int], within: float) -> float:
    started = time.monotonic()
    numbers: list[int] = []
    while time.monotonic() - started < within:
        numbers = _central_numbers(topology, tag)
        if wanted <= set(numbers):
            return time.monotonic() - started
        time.sleep(2)
    missing = sorted(wanted - set(numbers))
    pytest.fail(f"{len(missing)} entries never reached {SINK} within {within} s: {missing[:20]}")


def test_upload_loses_no_entry_across_a_30_s_outage_of_the_ops_host(
    deployed_lab: Topology,
) -> None:
    config = lab_config(deployed_lab)
    tag = f"seawall-outage-{uuid.uuid4().hex[:10]}"
    # The pipeline works before the outage: entry 0 arrives.
    _write(deployed_lab, tag, 0, 0, 0)
    _wait_for(deployed_lab, tag, {0}, 60)
    with (
        faults.app_fault_lock(timeout=LOCK_WAIT_S),
        faults.exclusive_lock(faults.DATA_FAULT_LOCK, timeout=LOCK_WAIT_S),
    ):
        try:
            faults.crash(config, SINK)
            crashed = time.monotonic()
            # Spread over two thirds of the outage, so the upload keeps failing
            # (and restarting) while entries keep coming.
            _write(deployed_lab, tag, 1, ENTRIES, round(OUTAGE_S * 2 / 3 / ENTRIES, 3))
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - crashed)))
            assert time.monotonic() - crashed >= OUTAGE_S
        finally:
            faults.restore(config)
    took = _wait_for(deployed_lab, tag, set(range(ENTRIES + 1)), CAUGHT_UP_WITHIN_S)
    numbers = _central_numbers(deployed_lab, tag)
    print(
        f"{ENTRIES} entries caught up {took:.1f} s after restore; "
        f"{len(numbers) - len(set(numbers))} duplicated",
        file=sys.stderr,
    )
    # The upload outlived the outage: running, never given up on.
    state = ssh(
        deployed_lab, WRITER, "systemctl show -p ActiveState,NRestarts systemd-journal-upload"
    ).stdout
    print(f"{WRITER}'s upload after the outage: {' '.join(state.split())}", file=sys.stderr)
    assert "ActiveState=active" in state, state


def test_a_second_logging_deploy_changes_nothing(deployed_lab: Topology) -> None:
    assert changed_operations(run_deploy("deploys/logging.py", timeout=600)) == {}


def test_every_host_uploads_and_only_ops_1_listens(deployed_lab: Topology) -> None:
    for host in deployed_lab:
        state = ssh(
            deployed_lab,
            host.name,
            "systemctl is-active systemd-journal-upload.service; "
            "systemctl is-active systemd-journal-remote.socket",
        ).stdout.split()
        assert state[0] == "active", (host.name, state)
        assert (state[1] == "active") == (host.name == SINK), (host.name, state)
    # Every host's journal has reached the central one.
    names = ssh(
        deployed_lab, SINK, f"journalctl -D {CENTRAL_JOURNAL} -F _HOSTNAME", check=True
    ).stdout.split()
    assert {host.name for host in deployed_lab} <= set(names), names


@pytest.fixture(autouse=True)
def _no_fault_left(deployed_lab: Topology) -> None:
    assert faults.active_faults(lab_config(deployed_lab)) == []

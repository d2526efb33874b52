"""The platform services on the app hosts: units as promised, healing, draining, no drift.

Faults stay on app hosts, are serialised with other sessions through
/tmp/seawall-app-faults.lock and are always undone. Every wait is bounded.
"""

import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from seawall import defaults
from seawall.inventory import Topology
from seawall.lab.faults import app_fault_lock
from seawall.ssh import run as ssh

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = {s["name"]: s for s in defaults.SERVICES["services"]}
PREFIX = defaults.SERVICES["services_unit_prefix"]


def app_faults(timeout: float = 300) -> AbstractContextManager[None]:
    """Hold the app-fault lock; still held after `timeout` s, the test fails (SeawallError)."""
    return app_fault_lock(timeout)


def health_url(topology: Topology, host: str, service: str) -> str:
    return f"http://{topology.host(host).address}:{CATALOGUE[service]['port']}/health"


def get_json(url: str, timeout: float = 3.0) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def main_pid(topology: Topology, host: str, service: str) -> int:
    out = ssh(topology, host, f"systemctl show -p MainPID --value {PREFIX}{service}.service")
    return int(out.stdout.strip() or 0)


def wait_until(
    predicate: Callable[[], bool], within: float, step: float = 0.2, what: str = "condition"
) -> float:
    """Return the seconds it took ``predicate`` to hold; fail after ``within``."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        if predicate():
            return time.monotonic() - started
        time.sleep(step)
    pytest.fail(f"{what}: not within {within} s")


def answers(url: str) -> bool:
    # Longer than a /health probe's own timeout (1.5 s): a slow dependency is not silence.
    try:
        get_json(url, timeout=3.0)
    except (OSError, ValueError):
        return False
    return True


def test_every_service_runs_as_its_own_sandboxed_user(deployed_lab: Topology) -> None:
    units = " ".join(f"{PREFIX}{name}.service" for name in CATALOGUE)
    properties = (
        "Id,ActiveState,User,Restart,NoNewPrivileges,ProtectSystem,ProtectHome,PrivateTmp,"
        "MemoryMax,TasksMax,TimeoutStopUSec,StartLimitBurst,OnFailure,Environment"
    )
    for host in ("app-1", "app-2"):
        out = ssh(deployed_lab, host, f"systemctl show -p {properties} {units}", check=True)
        blocks = [b for b in out.stdout.strip().split("\n\n") if b]
        assert len(blocks) == len(CATALOGUE)
        for block in blocks:
            props = dict(line.split("=", 1) for line in block.splitlines())
            name = props["Id"].removeprefix(PREFIX).removesuffix(".service")
            assert props["ActiveState"] == "active", (host, name)
            assert props["User"] == f"{PREFIX}{name}"
            assert props["Restart"] == "on-failure"
            assert props["NoNewPrivileges"] == "yes"
            assert props["ProtectSystem"] == "strict"
            assert props["PrivateTmp"] == "yes"
            assert props["StartLimitBurst"] == "5"
            assert props["OnFailure"] == f"seawall-unit-failed@{props['Id']}.service"
            # Secrets are in the EnvironmentFile, never in what systemctl shows.
            assert "PASSWORD" not in props["Environment"]


def test_every_service_answers_the_health_contract(deployed_lab: Topology) -> None:
    for host in ("app-1", "app-2"):
        for name in CATALOGUE:
            code, body = get_json(health_url(deployed_lab, host, name))
            assert body["service"] == name
            assert body["status"] in ("OK", "DEGRADED", "DOWN")
            assert code == (503 if body["status"] == "DOWN" else 200)
            assert {"version", "timestamp", "uptime_seconds", "dependencies", "metrics"} <= set(
                body
            )


def test_kill_9_is_healthy_again_within_10_s(deployed_lab: Topology) -> None:
    host, service = "app-2", "marketdata"
    url = health_url(deployed_lab, host, service)
    with app_faults():
        before = main_pid(deployed_lab, host, service)
        ssh(deployed_lab, host, f"kill -9 {before}", check=True)
        took = wait_until(
            lambda: main_pid(deployed_lab, host, service) not in (0, before) and answers(url), 10
        )
    print(f"kill -9 -> answering /health in {took:.1f} s", file=sys.stderr)
    recorded = ssh(
        deployed_lab,
        host,
        f"journalctl -t seawall-unit-failed --since -60s -o cat | grep {PREFIX}{service}",
    )
    assert '"result":"signal"' in recorded.stdout


def test_a_hung_service_is_restarted_by_the_health_check_within_30_s(
    deployed_lab: Topology,
) -> None:
    host, service = "app-2", "rl-training"
    url = health_url(deployed_lab, host, service)
    with app_faults():
        before = main_pid(deployed_lab, host, service)
        ssh(deployed_lab, host, f"kill -STOP {before}", check=True)
        try:
            took = wait_until(
                lambda: main_pid(deployed_lab, host, service) not in (0, before) and answers(url),
                30,
                step=0.5,
            )
        finally:
            # If it was not restarted, never leave it stopped.
            ssh(deployed_lab, host, f"kill -CONT {before} 2>/dev/null || true")
    print(f"SIGSTOP -> restarted and answering in {took:.1f} s", file=sys.stderr)
    hung = ssh(
        deployed_lab, host, "journalctl -u seawall-healthwatch --since -60s -o cat | grep hung"
    )
    assert f"{PREFIX}{service}" in hung.stdout


def test_graceful_stop_finishes_in_flight_requests(deployed_lab: Topology) -> None:
    host, service = "app-2", "ai-engine"
    address = deployed_lab.host(host).address
    port = CATALOGUE[service]["port"]
    outcome: dict[str, Any] = {}

    def slow_request() -> None:
        try:
            with urllib.request.urlopen(
                f"http://{address}:{port}/slow?seconds=3", timeout=15
            ) as response:
                outcome["status"] = response.status
                outcome["body"] = json.loads(response.read())
        except Exception as error:  # reported by the assertion below
            outcome["error"] = repr(error)

    with app_faults():
        worker = threading.Thread(target=slow_request)
        worker.start()
        time.sleep(0.8)
        started = time.monotonic()
        ssh(deployed_lab, host, f"systemctl restart {PREFIX}{service}.service", check=True)
        restart_took = time.monotonic() - started
        worker.join(20)
    assert outcome.get("status") == 200, outcome
    # The stop waited for the request (about 2 s left of it), not for the 30 s timeout.
    assert 1.5 < restart_took < 15, restart_took
    drained = ssh(
        deployed_lab, host, f"journalctl -u {PREFIX}{service} --since -60s -o cat | grep /slow"
    )
    assert '"status":200' in drained.stdout


def _my_concerns_changed(output: str) -> list[str]:
    # Result rows: "<deploy> | <operation>   hosts  success  error  no-change".
    changed = []
    for line in output.splitlines():
        match = re.match(
            r"\s*((?:Platform services|NGINX gateway) \| .*?)\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s*$",
            line,
        )
        if match and match.group(3) != "-":
            changed.append(match.group(1))
    return changed


def test_a_second_deploy_changes_nothing(deployed_lab: Topology) -> None:
    pyinfra = str(Path(sys.executable).with_name("pyinfra"))
    for deploy in ("deploys/services.py", "deploys/gateway.py"):
        result = subprocess.run(
            [pyinfra, "-y", "inventories/lab.py", deploy],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert _my_concerns_changed(result.stdout) == [], deploy


def test_the_on_failure_hook_records_a_unit_that_gave_up(deployed_lab: Topology) -> None:
    # The hook OnFailure= starts once a unit hits its start limit; run it as systemd would.
    unit = f"{PREFIX}marketdata.service"
    ssh(deployed_lab, "app-2", f"systemctl start seawall-unit-failed@{unit}.service", check=True)
    recorded = ssh(
        deployed_lab,
        "app-2",
        'journalctl -t seawall-unit-failed --since -30s -o cat | grep -F \'"event":"gave-up"\'',
    )
    assert f'"unit":"{unit}"' in recorded.stdout
    log = defaults.SERVICES["services_failure_log"]
    assert unit in ssh(deployed_lab, "app-2", f"tail -5 {log}").stdout


# -- orders: idempotent by request id, events through the outbox (issue 10 item 4) --

ORDERS_SERVICE = "execution"
ORDER_STREAM = "quantum:stream:order_created"


def post_order(
    topology: Topology, host: str, request_id: str, body: bytes = b'{"qty": 1}'
) -> tuple[int, dict[str, Any]]:
    address = topology.host(host).address
    request = urllib.request.Request(
        f"http://{address}:{CATALOGUE[ORDERS_SERVICE]['port']}/orders",
        data=body,
        headers={"X-Request-ID": request_id, "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def order_event_counts(topology: Topology, event_ids: set[str]) -> dict[str, int]:
    """How often each of ``event_ids`` is in the order stream's latest entries."""
    from seawall.redis.client import redis_settings
    from seawall.runtime.reconnect import MajorityClient

    client = MajorityClient(redis_settings(topology))
    try:
        entries: Any = client.call(lambda conn: conn.xrevrange(ORDER_STREAM, count=5000))
    finally:
        client.close()
    counts = dict.fromkeys(event_ids, 0)
    for _, fields in entries:
        found = fields[b"event_id"].decode()
        if found in counts:
            counts[found] += 1
    return counts


def orders_with_request_id(topology: Topology, request_id: str, within: float = 30) -> int:
    """Count the order rows of ``request_id`` (retried for ``within`` s: a switchover is not it)."""
    import psycopg

    give_up = time.monotonic() + within
    while True:
        try:
            return _count_orders(topology, request_id)
        except psycopg.OperationalError:
            if time.monotonic() > give_up:
                raise
            time.sleep(1)


def _count_orders(topology: Topology, request_id: str) -> int:
    import psycopg

    from seawall.postgres import drill
    from seawall.postgres.tunnel import tunnel

    app = topology.host("app-1")
    role = CATALOGUE[ORDERS_SERVICE]["postgres_role"]
    with (
        tunnel(topology, app.name, app.data["pgbouncer_port"]) as port,
        psycopg.connect(
            host="127.0.0.1",
            port=port,
            dbname="trading",
            user=role,
            password=drill.role_password(topology, role),
            prepare_threshold=None,
            connect_timeout=5,
        ) as conn,
    ):
        row = conn.execute(
            "SELECT count(*) FROM refservice_orders WHERE service = %s AND request_id = %s",
            (ORDERS_SERVICE, request_id),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_an_order_retried_with_its_request_id_is_placed_once(deployed_lab: Topology) -> None:
    request_id = f"order-{uuid.uuid4().hex}"
    first = post_order(deployed_lab, "app-1", request_id)
    assert first[0] == 201, first
    # The acknowledgement was lost: the client retries, through either app host.
    again = post_order(deployed_lab, "app-1", request_id)
    elsewhere = post_order(deployed_lab, "app-2", request_id)
    assert again[0] == elsewhere[0] == 200, (again, elsewhere)
    assert first[1]["order_id"] == again[1]["order_id"] == elsewhere[1]["order_id"]
    assert first[1]["created"] and not again[1]["created"]
    assert orders_with_request_id(deployed_lab, request_id) == 1
    conflict = post_order(deployed_lab, "app-2", request_id, b'{"qty": 2}')
    assert conflict[0] == 409, conflict


def test_an_orders_event_is_in_the_stream_exactly_once(deployed_lab: Topology) -> None:
    request_id = f"order-{uuid.uuid4().hex}"
    status, body = post_order(deployed_lab, "app-2", request_id)
    assert status == 201, body
    post_order(deployed_lab, "app-1", request_id)  # a retry adds no event
    event_id = f"{ORDERS_SERVICE}:{body['order_id']}"
    wait_until(
        lambda: order_event_counts(deployed_lab, {event_id})[event_id] >= 1,
        10,
        step=0.5,
        what="the order's event in the stream",
    )
    time.sleep(2)  # both hosts' relays poll each second: a second copy would be there now
    assert order_event_counts(deployed_lab, {event_id}) == {event_id: 1}


def test_orders_accepted_before_a_kill_9_have_their_events_once(deployed_lab: Topology) -> None:
    unit = f"{PREFIX}{ORDERS_SERVICE}.service"
    urls = {h: health_url(deployed_lab, h, ORDERS_SERVICE) for h in ("app-1", "app-2")}
    accepted: list[int] = []
    lock = threading.Lock()

    def place(n: int) -> None:
        status, body = post_order(deployed_lab, "app-1", f"order-{uuid.uuid4().hex}")
        if status == 201:
            with lock:
                accepted.append(int(body["order_id"]))

    with app_faults():
        before = {h: main_pid(deployed_lab, h, ORDERS_SERVICE) for h in urls}
        workers = [threading.Thread(target=place, args=(n,)) for n in range(30)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
        # Right after the acknowledgements, both relays die (publishing or not yet).
        for host in urls:
            ssh(deployed_lab, host, f"systemctl kill -s KILL {unit}", check=True)
        for host, url in urls.items():
            wait_until(
                lambda h=host, u=url: (
                    main_pid(deployed_lab, h, ORDERS_SERVICE)  # type: ignore[misc]
                    not in (0, before[h])
                    and answers(u)
                ),
                20,
                what=f"{ORDERS_SERVICE} on {host} back after kill -9",
            )
    assert len(accepted) >= 25, accepted  # some may meet the trading rate limit or a hiccup
    wanted = {f"{ORDERS_SERVICE}:{order_id}" for order_id in accepted}
    wait_until(
        lambda: min(order_event_counts(deployed_lab, wanted).values()) >= 1,
        30,
        step=0.5,
        what="every accepted order's event in the stream",
    )
    time.sleep(2)
    counts = order_event_counts(deployed_lab, wanted)
    assert set(counts.values()) == {1}, {e: c for e, c in counts.items() if c != 1}

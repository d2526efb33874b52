"""`seawall restart --rolling`: the plan from groups, the orchestration, the drain, the lock.

No lab: the orchestration runs with its step executor injected as a plain
function (the plan/execution split), the drain is rendered through the real
gateway template, and the lock is a real flock in tmp_path. What needs live
hosts (the gates themselves) is in tests/lab/test_restart.py.
"""

import json
import shlex
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pyinfra_cli.cli import _set_override_data
from typer.testing import CliRunner

from seawall import drift as drift_module
from seawall import inventory, oplock
from seawall import restart as restart_module
from seawall.cli import app
from seawall.components import gateway
from seawall.errors import SeawallError
from seawall.restart import (
    PHASES,
    GateFailed,
    RestartReport,
    Step,
    gateway_deploy_args,
    plan_restart,
    rolling_restart,
    run_plan,
)
from seawall.status import PlatformStatus
from tests.unit.test_inventory_rules import Listener, write_site

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def with_lock(topology: inventory.Topology, path: Path) -> inventory.Topology:
    """The topology with restart_lock_file in tmp_path (never the machine's /run/lock)."""
    hosts = tuple(
        replace(host, data={**host.data, "restart_lock_file": str(path)}) for host in topology
    )
    return replace(topology, hosts=hosts)


def pairs(steps: list[Step]) -> list[tuple[str, str, str]]:
    return [(s.phase, s.host, s.action) for s in steps]


# --- the plan ------------------------------------------------------------------------


def test_the_lab_plan_in_order(lab: inventory.Topology) -> None:
    plan = plan_restart(lab)
    assert plan.roles_from == "inventory"
    assert (plan.redis_master, plan.postgres_leader) == ("data-1", "data-1")
    assert pairs(plan.steps) == [
        ("app", "app-1", "drain"),
        ("app", "app-1", "restart"),
        ("app", "app-1", "undrain"),
        ("app", "app-2", "drain"),
        ("app", "app-2", "restart"),
        ("app", "app-2", "undrain"),
        ("redis-replica", "data-2", "restart"),
        ("redis-replica", "data-3", "restart"),
        ("sentinel", "data-1", "restart"),
        ("sentinel", "data-2", "restart"),
        ("sentinel", "data-3", "restart"),
        ("redis-switchover", "data-1", "switchover"),
        ("redis-old-master", "data-1", "restart"),
        ("etcd", "data-1", "restart"),
        ("etcd", "data-2", "restart"),
        ("etcd", "data-3", "restart"),
        ("postgres-replica", "data-2", "restart"),
        ("postgres-switchover", "data-1", "switchover"),
        ("postgres-old-leader", "data-1", "restart"),
        ("gateway", "gw-1", "reload"),
    ]
    switchover = next(s for s in plan.steps if s.phase == "postgres-switchover")
    assert switchover.target == "data-2"


def test_app_units_come_from_the_catalogue(lab: inventory.Topology) -> None:
    restart = next(s for s in plan_restart(lab).steps if s.action == "restart")
    services = lab.host("app-1").data["services"]
    prefix = lab.host("app-1").data["services_unit_prefix"]
    assert restart.units == tuple(f"{prefix}{s['name']}.service" for s in services)
    assert "quantum-execution.service" in restart.units
    assert restart.gate == "every unit active and every /health 200 within 60 s"


def test_the_data_units_are_the_deploys(lab: inventory.Topology) -> None:
    units = {(s.phase, s.units) for s in plan_restart(lab).steps if s.phase != "app"}
    assert ("redis-replica", ("redis-server.service",)) in units
    assert ("sentinel", ("redis-sentinel.service",)) in units
    assert ("etcd", ("etcd.service",)) in units
    assert ("postgres-replica", ("patroni@15-main.service",)) in units


def test_live_roles_order_the_data_tier(lab: inventory.Topology) -> None:
    plan = plan_restart(lab, redis_master="data-3", postgres_leader="data-2")
    assert plan.roles_from == "live"
    redis = [(s.phase, s.host) for s in plan.steps if s.phase.startswith("redis")]
    assert redis == [
        ("redis-replica", "data-1"),
        ("redis-replica", "data-2"),
        ("redis-switchover", "data-3"),
        ("redis-old-master", "data-3"),
    ]
    postgres = [(s.phase, s.host, s.target) for s in plan.steps if s.phase.startswith("postgres")]
    assert postgres == [
        ("postgres-replica", "data-1", None),
        ("postgres-switchover", "data-2", "data-1"),
        ("postgres-old-leader", "data-2", None),
    ]


def test_a_master_outside_its_group_is_refused(lab: inventory.Topology) -> None:
    with pytest.raises(SeawallError, match="Redis master 'app-1' is not in group redis"):
        plan_restart(lab, redis_master="app-1")


BIG_HOSTS = {
    **{f"data-{n}": f"10.9.0.{10 + n}" for n in range(1, 6)},
    **{f"app-{n}": f"10.9.0.{20 + n}" for n in range(1, 5)},
    "gw-1": "10.9.0.31",
    "gw-2": "10.9.0.32",
    "ops-1": "10.9.0.41",
}
BIG_GROUPS = {
    "redis": [f"data-{n}" for n in range(1, 6)],
    "sentinel": ["data-1", "data-2", "data-3", "data-4", "data-5"],
    "etcd": ["data-1", "data-2", "data-3", "data-4", "data-5"],
    "postgres": ["data-1", "data-2", "data-3"],
    "app": [f"app-{n}" for n in range(1, 5)],
    "gateway": ["gw-1", "gw-2"],
}


@pytest.fixture
def big(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> inventory.Topology:
    """A synthetic site: 5 Redis/Sentinel/etcd, 3 Postgres, 4 app hosts, 2 gateways."""
    monkeypatch.chdir(tmp_path)
    # Five Sentinels: quorum 3 is their majority.
    path = write_site(
        tmp_path, hosts=BIG_HOSTS, groups=BIG_GROUPS, group_data="sentinel_quorum = 3\n"
    )
    topology = inventory.load(path)
    assert inventory.validate(topology) == []
    return topology


def test_a_bigger_site_plan_follows_its_groups(big: inventory.Topology) -> None:
    plan = plan_restart(big, redis_master="data-4", postgres_leader="data-3")
    steps = plan.steps
    # Phases in order, each once, as a contiguous run.
    runs = [steps[0].phase] + [
        b.phase for a, b in zip(steps, steps[1:], strict=False) if a.phase != b.phase
    ]
    assert runs == list(PHASES)
    # App hosts one at a time: drain, restart, undrain, then the next; never two drained.
    app = [(s.host, s.action) for s in steps if s.phase == "app"]
    assert app == [
        (f"app-{n}", action) for n in range(1, 5) for action in ("drain", "restart", "undrain")
    ]
    drained: set[str] = set()
    for host, action in app:
        if action == "drain":
            drained.add(host)
        elif action == "undrain":
            drained.discard(host)
        assert len(drained) <= 1
    # Every Redis replica before the switchover, the old master after it.
    index = {(s.phase, s.host): i for i, s in enumerate(steps)}
    switch = index[("redis-switchover", "data-4")]
    replicas = [h for h in BIG_GROUPS["redis"] if h != "data-4"]
    assert all(index[("redis-replica", h)] < switch for h in replicas)
    assert switch < index[("redis-old-master", "data-4")]
    assert [s.host for s in steps if s.phase == "sentinel"] == BIG_GROUPS["sentinel"]
    assert [s.host for s in steps if s.phase == "etcd"] == BIG_GROUPS["etcd"]
    # Both Postgres replicas before the switchover to the first of them.
    assert [s.host for s in steps if s.phase == "postgres-replica"] == ["data-1", "data-2"]
    switchover = next(s for s in steps if s.phase == "postgres-switchover")
    assert (switchover.host, switchover.target) == ("data-3", "data-1")
    assert [s.host for s in steps if s.phase == "gateway"] == ["gw-1", "gw-2"]
    # The drain names every gateway.
    assert "gw-1, gw-2" in steps[0].gate


def test_a_site_without_a_component_has_no_phase_for_it(tmp_path: Path) -> None:
    # New components plug in by data: a site with no Postgres has no Postgres steps.
    path = write_site(tmp_path)
    topology = inventory.load(path)
    no_pg = replace(
        topology,
        hosts=tuple(
            replace(h, groups=tuple(g for g in h.groups if g != "postgres")) for h in topology
        ),
    )
    plan = plan_restart(no_pg)
    assert not [s for s in plan.steps if s.phase.startswith("postgres")]
    assert plan.postgres_leader is None


def test_every_planned_step_has_a_live_handler(big: inventory.Topology) -> None:
    # The real executor dispatches on (phase, action); building it contacts nothing.
    live = restart_module.LiveSteps(big, log=lambda _: None)
    for step in plan_restart(big).steps:
        handler = f"_{step.phase.replace('-', '_')}_{step.action}"
        assert callable(getattr(live, handler, None)), handler


# --- running a plan: the executor injected ----------------------------------------------


class Recorder:
    """A step executor that records each step and fails the one it is told to."""

    def __init__(self, fail: tuple[str, str] | None = None, error: Exception | None = None) -> None:
        self.ran: list[tuple[str, str, str]] = []
        self.fail, self.error = fail, error

    def __call__(self, step: Step) -> None:
        self.ran.append((step.phase, step.host, step.action))
        if (step.host, step.action) == self.fail:
            raise self.error or GateFailed(
                "units or /health not ready: /health not 200: execution 503"
            )


def test_every_step_runs_once_in_order_and_nothing_is_left_drained(
    lab: inventory.Topology,
) -> None:
    plan = plan_restart(lab)
    execute = Recorder()
    report = run_plan(plan, execute, log=lambda _: None)
    assert execute.ran == pairs(plan.steps)
    assert report.ok and report.failed is None and report.drained == []
    assert list(report.phase_seconds()) == list(PHASES)


def test_a_failed_gate_stops_the_run_and_leaves_the_host_drained(
    lab: inventory.Topology,
) -> None:
    plan = plan_restart(lab)
    execute = Recorder(fail=("app-2", "restart"))
    lines: list[str] = []
    report = run_plan(plan, execute, log=lines.append)
    # Nothing after the failed step ran: app-2 is never undrained, no data host touched.
    assert execute.ran == pairs(plan.steps)[:5]
    assert execute.ran[-1] == ("app", "app-2", "restart")
    assert not report.ok
    assert report.drained == ["app-2"]
    failed = report.failed
    assert failed is not None and (failed.step.host, failed.step.action) == ("app-2", "restart")
    assert failed.error == "units or /health not ready: /health not 200: execution 503"
    text = report.to_text()
    assert "FAILED at app-2, step restart 8 units (app):" in text
    assert "execution 503" in text
    assert "left drained at the gateway: app-2" in text
    assert f"stopped there: {len(plan.steps) - 5} step(s) not run" in text
    data = report.to_json()
    assert data["ok"] is False and data["drained"] == ["app-2"]
    assert (data["failed"]["host"], data["failed"]["action"]) == ("app-2", "restart")
    assert any("FAILED" in line for line in lines)


def test_a_failed_drain_counts_as_drained(lab: inventory.Topology) -> None:
    # The deploy may have applied before it failed: the report must not say "not drained".
    report = run_plan(plan_restart(lab), Recorder(fail=("app-1", "drain")), log=lambda _: None)
    assert report.drained == ["app-1"]


def test_a_data_tier_failure_leaves_no_app_host_drained(lab: inventory.Topology) -> None:
    execute = Recorder(fail=("data-2", "restart"), error=OSError("connection refused"))
    report = run_plan(plan_restart(lab), execute, log=lambda _: None)
    assert report.drained == []
    assert report.failed is not None and report.failed.step.phase == "redis-replica"
    # An unexpected error is a failed step too, named, not a crash of the run.
    assert "connection refused" in (report.failed.error or "")
    assert execute.ran[-1] == ("redis-replica", "data-2", "restart")


def _ok_preflight(topology: inventory.Topology) -> tuple[str | None, PlatformStatus]:
    return None, PlatformStatus(None, None)


def test_a_failed_preflight_touches_nothing(lab: inventory.Topology, tmp_path: Path) -> None:
    execute = Recorder()
    report = rolling_restart(
        with_lock(lab, tmp_path / "lock"),
        dry_run=False,
        log=lambda _: None,
        execute=execute,
        preflight=lambda _t: ("seawall health: app-1/execution DOWN", PlatformStatus(None, None)),
    )
    assert execute.ran == []
    assert not report.ok and report.results == []
    assert report.to_text() == "NOT STARTED, nothing touched: seawall health: app-1/execution DOWN"


def test_the_run_holds_the_lock_exclusively(lab: inventory.Topology, tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    seen: list[str] = []

    def execute(step: Step) -> None:
        if not seen:
            try:
                with oplock.held(lock, exclusive=False):
                    seen.append("drift got the lock")
            except oplock.LockBusy:
                seen.append("busy")

    report = rolling_restart(
        with_lock(lab, lock),
        dry_run=False,
        log=lambda _: None,
        execute=execute,
        preflight=_ok_preflight,
    )
    assert report.ok
    assert seen == ["busy"]
    # Let go afterwards.
    with oplock.held(lock, exclusive=True):
        pass


def test_a_running_drift_check_holds_the_restart_off(
    lab: inventory.Topology, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(restart_module, "LOCK_WAIT_S", 0.3)
    lock = tmp_path / "lock"
    execute = Recorder()
    waited: list[str] = []
    with oplock.held(lock, exclusive=False), pytest.raises(oplock.LockBusy):
        rolling_restart(
            with_lock(lab, lock),
            dry_run=False,
            log=waited.append,
            execute=execute,
            preflight=_ok_preflight,
        )
    assert execute.ran == []
    assert waited == [f"waiting for {lock} (a drift check is running)"]


def test_dry_run_is_the_plan_and_asks_nothing(lab: inventory.Topology) -> None:
    def forbidden(*_args: Any) -> Any:
        raise AssertionError("a dry run connected")

    report = rolling_restart(
        with_lock(lab, Path("/nonexistent/dir/lock")),  # not even the lock is taken
        dry_run=True,
        log=lambda _: None,
        execute=forbidden,
        preflight=forbidden,
    )
    assert report.ok and report.dry_run and report.results == []
    text = report.to_text()
    assert "dry run: nothing was touched" in text
    assert "a real run asks the cluster" in text
    assert [line.split()[1:3] for line in text.splitlines()[1:4]] == [["app", "app-1"]] * 3
    data = report.to_json()
    assert len(data["plan"]["steps"]) == 20
    assert data["plan"]["steps"][0] == {
        "phase": "app",
        "host": "app-1",
        "action": "drain",
        "units": [],
        "target": None,
        "gate": data["plan"]["steps"][0]["gate"],
    }


# --- the drain: a key, validated, rendered, passed to pyinfra ----------------------------


def test_a_drained_host_that_is_not_an_app_host_is_refused_naming_the_key(
    tmp_path: Path,
) -> None:
    path = write_site(tmp_path, host_data={"gw-1": {"gateway_drained_hosts": ["data-1"]}})
    problems = inventory.validate(inventory.load(path))
    assert [(p.host, p.key) for p in problems] == [("gw-1", "gateway_drained_hosts")]
    assert "'data-1' is not an app host (app: app-1)" in problems[0].message
    with pytest.raises(SeawallError, match="gw-1: gateway_drained_hosts: 'data-1' is not"):
        inventory.check(path)


def test_an_app_host_may_be_drained(tmp_path: Path) -> None:
    path = write_site(tmp_path, host_data={"gw-1": {"gateway_drained_hosts": ["app-1"]}})
    assert inventory.validate(inventory.load(path)) == []


def test_the_drain_wait_must_cover_the_slowest_read_timeout(tmp_path: Path) -> None:
    path = write_site(tmp_path, group_data="restart_drain_timeout_sec = 100\n")
    problems = inventory.validate(inventory.load(path))
    assert [p.key for p in problems] == ["restart_drain_timeout_sec"]
    assert "under the slowest gateway read timeout (120 s)" in problems[0].message


def test_a_drained_host_must_be_a_name(tmp_path: Path) -> None:
    path = write_site(tmp_path, host_data={"gw-1": {"gateway_drained_hosts": "app-1"}})
    problems = inventory.validate(inventory.load(path))
    assert [p.key for p in problems] == ["gateway_drained_hosts"]


def _upstreams(conf: str) -> list[str]:
    blocks = conf.split("    upstream ")[1:]
    assert blocks
    return [block.split("}", 1)[0] for block in blocks]


def test_the_gateway_renders_a_drained_host_down(lab: inventory.Topology) -> None:
    data = {**lab.host("gw-1").data, "gateway_drained_hosts": ["app-1"]}
    members = [(h.name, h.address) for h in lab.group("app")]
    drained = gateway.drained_addresses(data, members)
    assert drained == [lab.host("app-1").address]
    conf = gateway.render(
        gateway.NGINX_CONF,
        gateway.context(data, [address for _, address in members], drained),
    )
    one, two = lab.host("app-1").address, lab.host("app-2").address
    for block in _upstreams(conf):
        lines = [line.strip() for line in block.splitlines() if line.strip().startswith("server ")]
        assert len(lines) == 2
        assert lines[0].startswith(f"server {one}:") and lines[0].endswith(" down;")
        assert lines[1].startswith(f"server {two}:") and not lines[1].endswith(" down;")


def test_the_normal_gateway_drains_nothing(lab: inventory.Topology) -> None:
    data = lab.host("gw-1").data
    members = [(h.name, h.address) for h in lab.group("app")]
    assert gateway.drained_addresses(data, members) == []
    conf = gateway.render(gateway.NGINX_CONF, gateway.context(data, [a for _, a in members], []))
    assert " down;" not in conf


@pytest.mark.parametrize("drained", [["app-1"], ["app-1", "app-2"], []])
def test_pyinfra_reads_the_drain_as_a_list(lab: inventory.Topology, drained: list[str]) -> None:
    args = gateway_deploy_args(lab, drained)
    assert args[1:5] == ["-y", "--json", "--limit", "gw-1"]
    assert args[-1] == "deploys/gateway.py" and args[-2].endswith("inventories/lab.py")
    value = args[args.index("--data") + 1]
    # pyinfra's own parser of --data (pyinfra_cli.cli), as the deploy will see it.
    assert _set_override_data([value], None, None, None, None, None) == {
        "gateway_drained_hosts": drained
    }


# --- the live gates' own logic ---------------------------------------------------------------


def _access(upstream: str, status: int) -> str:
    # The gateway's log_format seawall_json, as NGINX writes it (fields trimmed).
    return json.dumps(
        {"request_id": "seawall-restart-x-0", "status": status, "upstream_addr": upstream}
    )


def test_served_by_reads_the_upstream_that_answered() -> None:
    lines = [
        _access("10.77.0.21:8080", 200),
        _access("10.77.0.22:8080", 200),
        # A retry: the first host failed, the second answered.
        _access("10.77.0.21:8080, 10.77.0.22:8080", 200),
        _access("10.77.0.21:8080", 502),
        "not json",
    ]
    assert restart_module.served_by(lines, "10.77.0.21") == 1
    assert restart_module.served_by(lines, "10.77.0.22") == 2
    # 10.77.0.2 is not 10.77.0.21's prefix once the port's colon is part of the match.
    assert restart_module.served_by(lines, "10.77.0.2") == 0


def test_a_gate_that_never_holds_fails_at_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(restart_module, "POLL_S", 0.05)
    asked: list[float] = []

    def never() -> str:
        asked.append(time.monotonic())
        return "old NGINX worker on gw-1"

    started = time.monotonic()
    with pytest.raises(GateFailed, match="old NGINX workers still run: old NGINX worker on gw-1"):
        restart_module._wait(started + 0.5, never, "old NGINX workers still run")
    assert 0.5 <= time.monotonic() - started < 3
    assert len(asked) > 2


def test_a_gate_survives_a_daemon_refusing_while_it_restarts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(restart_module, "POLL_S", 0.01)
    answers: list[str | None | Exception] = [ConnectionRefusedError("refused"), "starting", None]

    def check() -> str | None:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    restart_module._wait(time.monotonic() + 5, check, "redis")
    assert answers == []


def test_the_old_worker_pattern_finds_workers_but_not_the_shell_that_runs_it() -> None:
    # Over SSH the command runs in a shell whose own command line holds the pattern:
    # pgrep -f must not count that shell, and must count a real shutting-down worker.
    command = f"pgrep -c -f {shlex.quote(restart_module.OLD_WORKERS)}"
    alone = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=10)
    assert (alone.returncode, alone.stdout.strip()) == (1, "0")
    worker = subprocess.Popen(
        ["bash", "-c", "exec -a 'nginx: worker process is shutting down' sleep 30"]
    )
    try:
        deadline = time.monotonic() + 5
        while True:
            found = subprocess.run(
                ["bash", "-c", command], capture_output=True, text=True, timeout=10
            )
            if found.stdout.strip() == "1" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert (found.returncode, found.stdout.strip()) == (0, "1")
    finally:
        worker.kill()
        worker.wait()


# --- the lock: drift stays out while a restart runs ---------------------------------------


@pytest.fixture
def listener() -> Iterator[Listener]:
    served = Listener()
    yield served
    served.close()


def test_drift_during_a_restart_reports_why_and_runs_no_pyinfra(
    tmp_path: Path, listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = tmp_path / "operations.lock"
    path = write_site(
        tmp_path, ssh_port=listener.port, group_data=f"restart_lock_file = {str(lock)!r}\n"
    )
    monkeypatch.chdir(REPO)

    def no_pyinfra(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("pyinfra ran during a restart")

    monkeypatch.setattr(drift_module.subprocess, "run", no_pyinfra)
    with oplock.held(lock, exclusive=True):
        report = drift_module.drift(path)
        result = runner.invoke(
            app,
            ["drift", "-i", str(path), "--json", "--textfile-dir", str(tmp_path)],
            catch_exceptions=False,
        )
    assert report.error == "a rolling restart is running"
    assert report.exit_code == 2 and report.checked == ()
    textfile = drift_module.textfile(report)
    assert "# error: a rolling restart is running" in textfile
    assert "seawall_drift_last_run_success 0" in textfile
    assert result.exit_code == 2, result.output
    assert json.loads(result.stdout)["error"] == "a rolling restart is running"
    written = (tmp_path / drift_module.TEXTFILE_NAME).read_text()
    assert "seawall_drift_last_run_success 0" in written
    assert listener.accepted == 0


def test_drift_checks_may_overlap_each_other(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    with oplock.held(lock, exclusive=False), oplock.held(lock, exclusive=False):
        pass
    with (
        oplock.held(lock, exclusive=False),
        pytest.raises(oplock.LockBusy),
        oplock.held(lock, exclusive=True, wait=0.2, poll=0.05),
    ):
        pass


def test_an_unopenable_lock_is_an_error(tmp_path: Path) -> None:
    with (
        pytest.raises(SeawallError, match="cannot open the operations lock"),
        oplock.held(tmp_path / "missing" / "lock", exclusive=True),
    ):
        pass


# --- the CLI ------------------------------------------------------------------------------


def test_cli_dry_run_prints_the_plan_and_connects_nowhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(REPO)

    def forbidden(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("a dry run connected")

    monkeypatch.setattr(restart_module, "_preflight", forbidden)
    monkeypatch.setattr(restart_module, "LiveSteps", forbidden)
    result = runner.invoke(
        app, ["restart", "--rolling", "--dry-run", "-i", "inventories/lab.py", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["dry_run"] is True and report["ok"] is True
    assert [s["host"] for s in report["plan"]["steps"]][:3] == ["app-1"] * 3


def test_cli_without_rolling_is_an_error() -> None:
    result = runner.invoke(app, ["restart", "--dry-run"])
    assert result.exit_code == 2
    assert "say --rolling" in result.stderr


def test_cli_help_says_the_dry_run_connects_nowhere() -> None:
    result = runner.invoke(app, ["restart", "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    assert "no lock, no connection, no preflight" in result.output
    assert "1 preflight not ok" in result.output


@pytest.mark.parametrize("fail", [None, ("app-2", "restart")])
def test_cli_exit_code_follows_the_report(
    lab: inventory.Topology, monkeypatch: pytest.MonkeyPatch, fail: tuple[str, str] | None
) -> None:
    monkeypatch.chdir(REPO)
    report = run_plan(plan_restart(lab), Recorder(fail=fail), log=lambda _: None)

    def fake(topology: inventory.Topology, *, dry_run: bool, log: Any) -> RestartReport:
        assert dry_run is False
        return report

    monkeypatch.setattr(restart_module, "rolling_restart", fake)
    monkeypatch.setattr("seawall.cli._load", lambda path, check_secrets=True: lab)
    result = runner.invoke(app, ["restart", "--rolling", "--yes", "--json"])
    assert result.exit_code == (0 if fail is None else 1), result.output
    assert json.loads(result.stdout)["drained"] == ([] if fail is None else ["app-2"])

"""CLI conventions, exit codes and error output (no lab needed: library calls are replaced)."""

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from seawall.cli import app
from seawall.lab.lifecycle import HostStatus, LabReport
from tests.unit.test_inventory import HOSTS, write_inventory

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@dataclass
class FakeReport:
    """A report as any library function returns one."""

    ok: bool

    def to_json(self) -> dict[str, Any]:
        return {"fake": "report"}

    def to_text(self) -> str:
        return "fake report text"


def _commands() -> dict[str, Any]:
    """Every leaf command of the app by its full name ("lab fault host"), as click sees it."""
    found: dict[str, Any] = {}

    def walk(command: Any, prefix: str) -> None:
        children = getattr(command, "commands", None)
        if children is None:
            found[prefix] = command
            return
        for name, child in children.items():
            walk(child, f"{prefix} {name}".strip())

    walk(typer.main.get_command(app), "")
    return found


# Commands that read no inventory, and commands that print no report.
NO_INVENTORY = {"tradestore migrate"}
NO_REPORT = {"lab ssh"}  # it becomes an SSH session (exec)


def test_the_command_list_is_what_these_tests_know() -> None:
    # A new command must be added to the driven lists below (or the exemptions above).
    assert set(_commands()) == {
        "lab up",
        "lab down",
        "lab status",
        "lab ssh",
        "lab box",
        "lab fault host",
        "lab fault partition",
        "lab fault restore",
        "drill redis",
        "drill postgres",
        "drill pg-restore",
        "logs",
        "status",
        "drift",
        "restart",
        "check",
        "verify",
        "health",
        "tradestore migrate",
    }


@pytest.mark.parametrize("name", sorted(set(_commands()) - NO_INVENTORY))
def test_every_command_takes_the_inventory_as_dash_i(name: str) -> None:
    params = _commands()[name].params
    inventory = [p for p in params if p.name == "inventory_path"]
    assert len(inventory) == 1
    assert inventory[0].param_type_name == "option"
    assert set(inventory[0].opts) == {"--inventory", "-i"}
    assert inventory[0].default == Path("inventories/lab.py")


@pytest.mark.parametrize("name", sorted(set(_commands()) - NO_REPORT))
def test_every_reporting_command_takes_json(name: str) -> None:
    assert any("--json" in p.opts for p in _commands()[name].params)


def test_help_documents_exit_codes() -> None:
    for args in ([], ["lab"], ["lab", "fault"], ["drill"]):
        result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "250"})
        assert result.exit_code == 0
        assert "0 ok, 1 finding" in result.output
        assert "3 declined (nothing done)" in result.output


def test_check_valid_inventory_exits_0(tmp_path: Path) -> None:
    result = runner.invoke(app, ["check", "-i", str(write_inventory(tmp_path))])
    assert result.exit_code == 0, result.output
    assert "data-1" in result.stdout
    assert "redis,sentinel,etcd,postgres" in result.stdout
    assert "valid, 6 hosts" in result.stdout


def test_check_json_lists_hosts_and_groups(tmp_path: Path) -> None:
    result = runner.invoke(app, ["check", "--inventory", str(write_inventory(tmp_path)), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert [host["name"] for host in report["hosts"]] == list(HOSTS)
    assert report["hosts"][0]["address"] == "10.9.0.11"
    assert report["groups"]["redis"] == ["data-1", "data-2", "data-3"]
    assert report["secrets_checked"] is True


def test_check_invalid_inventory_exits_2_naming_host_and_key(tmp_path: Path) -> None:
    path = write_inventory(tmp_path, hosts={**HOSTS, "ops-1": HOSTS["app-1"]})
    result = runner.invoke(app, ["check", "-i", str(path), "--json"])
    assert result.exit_code == 2
    assert "ops-1: private_address: 10.9.0.21 is also the address of app-1" in result.stderr
    assert result.stdout == ""


def test_positional_inventory_is_refused(tmp_path: Path) -> None:
    # One convention: `seawall check FILE` is a usage error, `-i FILE` is the way.
    result = runner.invoke(app, ["check", str(write_inventory(tmp_path))])
    assert result.exit_code == 2
    assert "unexpected extra argument" in result.output.lower()


def test_missing_inventory_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["lab", "status", "-i", str(tmp_path / "none.py")])
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


def test_lab_commands_refuse_a_non_lab_inventory(tmp_path: Path) -> None:
    result = runner.invoke(app, ["lab", "status", "-i", str(write_inventory(tmp_path))])
    assert result.exit_code == 2
    assert "lab_bridge is missing: not a lab inventory" in result.stderr


# --- declined confirmations: exit 3, nothing done -------------------------------------

DESTRUCTIVE = [
    (["lab", "down"], "seawall.lab.down", "Destroy every lab host?"),
    (["lab", "fault", "host", "crash", "data-1"], "seawall.lab.faults.inject", "crash data-1?"),
    (
        ["lab", "fault", "partition", "data-1", "data-2"],
        "seawall.lab.faults.inject",
        "partition data-1 from data-2?",
    ),
    (["drill", "redis", "switchover"], "seawall.redis.drill.run_drill", "Run switchover"),
    (["drill", "postgres", "switchover"], "seawall.postgres.drill.drill_postgres", "Run switch"),
    (["drill", "pg-restore"], "seawall.postgres.restore.restore_drill", "take a backup"),
    (["restart", "--rolling"], "seawall.restart.rolling_restart", "Restart every daemon"),
]


def _forbid(monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"{target} ran after a declined confirmation")

    monkeypatch.setattr(target, refuse)


@pytest.mark.parametrize(("args", "target", "question"), DESTRUCTIVE)
def test_a_declined_confirmation_exits_3_and_does_nothing(
    monkeypatch: pytest.MonkeyPatch, args: list[str], target: str, question: str
) -> None:
    monkeypatch.chdir(REPO)
    _forbid(monkeypatch, target)
    result = runner.invoke(app, args, input="n\n")
    assert result.exit_code == 3, result.output
    assert question in result.output
    assert "declined, nothing done" in result.stderr


@pytest.mark.parametrize(("args", "target", "question"), DESTRUCTIVE)
def test_help_of_a_destructive_command_says_declining_exits_3(
    args: list[str], target: str, question: str
) -> None:
    result = runner.invoke(app, [*_words(args), "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "declining exits 3" in result.output


def _words(args: list[str]) -> list[str]:
    """The command words of an argument list (its leading run of known group/command names)."""
    names = {word for name in _commands() for word in name.split()}
    words = []
    for arg in args:
        if arg not in names:
            break
        words.append(arg)
    return words


@pytest.mark.parametrize(("args", "target", "question"), DESTRUCTIVE)
def test_no_terminal_to_confirm_on_is_a_decline_too(
    monkeypatch: pytest.MonkeyPatch, args: list[str], target: str, question: str
) -> None:
    # cron: stdin is empty, confirm() aborts; that is not a finding either.
    monkeypatch.chdir(REPO)
    _forbid(monkeypatch, target)
    assert runner.invoke(app, args, input="").exit_code == 3


# --- every reporting command goes through one renderer ----------------------------------


def _lab_report(state: str, present: bool) -> LabReport:
    return LabReport(
        bridge="seawall0",
        bridge_present=present,
        guard_present=present,
        proxy_pid=1234 if present else None,
        hosts=[HostStatus("data-1", "seawall-data-1", "10.9.0.11", state, present)],
    )


def test_lab_down_exits_1_when_parts_of_the_lab_are_left(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    left = replace(_lab_report("STOPPED", present=False), goal="down")
    monkeypatch.setattr("seawall.lab.down", lambda topology, log: left)
    result = runner.invoke(app, ["lab", "down", "-y"])
    assert result.exit_code == 1, result.output
    assert "parts of the lab are LEFT" in result.stdout


def test_lab_down_exits_0_when_nothing_is_left(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    gone = replace(_lab_report("ABSENT", present=False), goal="down")
    monkeypatch.setattr("seawall.lab.down", lambda topology, log: gone)
    result = runner.invoke(app, ["lab", "down", "-y", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ok"] is True


# (arguments, library function the command calls, whether -i takes a full inventory with
# secrets rather than the lab's). Each returns a FakeReport.
REPORTING = [
    (["lab", "up"], "seawall.lab.up", False),
    (["lab", "down", "-y"], "seawall.lab.down", False),
    (["lab", "status"], "seawall.lab.status", False),
    (["lab", "fault", "host", "freeze", "data-1", "-y"], "seawall.lab.faults.inject", False),
    (["lab", "fault", "partition", "data-1", "data-2", "-y"], "seawall.lab.faults.inject", False),
    (["lab", "fault", "restore"], "seawall.lab.faults.inject", False),
    (["drill", "postgres", "switchover", "-y"], "seawall.postgres.drill.drill_postgres", False),
    (["status"], "seawall.status.platform_status", True),
    (["verify"], "seawall.verify.verify", True),
    (["health"], "seawall.health_report.collect", True),
    (["drill", "pg-restore", "-y"], "seawall.postgres.restore.restore_drill", True),
]


@pytest.mark.parametrize("ok", [True, False])
@pytest.mark.parametrize(("args", "target", "full_inventory"), REPORTING)
def test_reporting_commands_render_through_one_function(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    args: list[str],
    target: str,
    full_inventory: bool,
    ok: bool,
) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(target, lambda *a, **k: FakeReport(ok))
    if full_inventory:
        args = [*args, "-i", str(write_inventory(tmp_path))]

    text = runner.invoke(app, args)
    assert text.exit_code == (0 if ok else 1), text.output
    assert text.stdout == "fake report text\n"

    as_json = runner.invoke(app, [*args, "--json"])
    assert as_json.exit_code == (0 if ok else 1), as_json.output
    assert json.loads(as_json.stdout) == {"fake": "report", "ok": ok}


def test_redis_drill_json_has_every_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from seawall.redis.drill import DrillResult

    def run_drill(topology: object, name: str, **kwargs: object) -> DrillResult:
        return DrillResult(name, "data-1", "data-2", 1.0, 2.0, 3.0, 100, 99, 1, 0, 0, 0, True, True)

    monkeypatch.chdir(REPO)
    monkeypatch.setattr("seawall.redis.drill.run_drill", run_drill)
    result = runner.invoke(app, ["drill", "redis", "switchover", "--runs", "2", "-y", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert [run["scenario"] for run in report["results"]] == ["switchover", "switchover"]


def test_lab_box_prints_the_path_or_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    box = tmp_path / "seawall-bookworm-lxc.box"
    monkeypatch.chdir(REPO)
    monkeypatch.setattr("seawall.lab.vagrant.build_box", lambda topology, force: box)
    result = runner.invoke(app, ["lab", "box"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{box}\n"
    result = runner.invoke(app, ["lab", "box", "--json"])
    assert json.loads(result.stdout) == {
        "box": str(box),
        "name": "seawall/bookworm-lxc",
        "ok": True,
    }


def test_tradestore_migrate_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("seawall.postgres.tradestore.migrate", lambda *a, **k: FakeReport(False))
    args = ["tradestore", "migrate", "--sqlite", str(tmp_path / "t.db"), "--dsn", "host=x"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout)["ok"] is False

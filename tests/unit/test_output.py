"""One report protocol, one renderer: every report class speaks it, `emit` maps it to a code."""

import json
from pathlib import Path
from typing import Any, Literal

import pytest

from seawall import output
from seawall.check import check_inventory
from seawall.health_report import HealthSummary, ServiceHealth
from seawall.lab.faults import FaultReport
from seawall.lab.lifecycle import HostStatus, LabReport
from seawall.lab.vagrant import BoxReport
from seawall.postgres.drill import DrillReport as PostgresDrillReport
from seawall.postgres.drill import DrillResult as PostgresDrillResult
from seawall.postgres.restore import RestoreReport
from seawall.postgres.status import EtcdMember, Member, PostgresStatus
from seawall.postgres.tradestore import MigrationReport, TableResult
from seawall.redis.drill import DrillReport as RedisDrillReport
from seawall.redis.drill import DrillResult as RedisDrillResult
from seawall.redis.topology import NodeState, RedisStatus, SentinelView
from seawall.status import PlatformStatus
from seawall.verify import Check, HostReport, VerifyReport
from tests.unit.test_inventory import write_inventory


def _lab(state: str, present: bool, goal: Literal["up", "down"] = "up") -> LabReport:
    return LabReport(
        bridge="seawall0",
        bridge_present=present,
        guard_present=present,
        proxy_pid=99 if present else None,
        hosts=[HostStatus("data-1", "seawall-data-1", "10.9.0.11", state, present)],
        goal=goal,
    )


def _redis_run(lost: int = 0, notes: list[str] | None = None) -> RedisDrillResult:
    return RedisDrillResult(
        "master-host-crash", "data-1", "data-2", 1.2, 6.5, 7.0, 700, 690, 10, lost, 0, 0,
        True, True, notes or [],
    )  # fmt: skip


def _postgres_status() -> PostgresStatus:
    return PostgresStatus(
        leader="data-1",
        members=[Member("data-1", "10.9.0.11", "leader", "running", 3, None)],
        etcd=[EtcdMember("data-1", "10.9.0.11", True)],
    )


def _redis_status() -> RedisStatus:
    return RedisStatus(
        master="10.9.0.11:6379",
        master_host="data-1",
        nodes=[NodeState("data-1", "10.9.0.11", "master")],
        sentinels=[SentinelView("data-1", "10.9.0.11", "10.9.0.11:6379")],
    )


def every_report(tmp_path: Path) -> list[Any]:
    """One instance of every report class a command renders."""
    return [
        _lab("RUNNING", present=True),
        FaultReport("crash", ["data-1"], ["data-1: stopped"]),
        BoxReport(tmp_path / "box"),
        check_inventory(write_inventory(tmp_path)),
        RedisDrillReport([_redis_run()]),
        PostgresDrillReport(
            [PostgresDrillResult("switchover", "data-1", "data-2", 10, 0, 1, 1.5, 5.0, 2.0, 8.0)]
        ),
        RestoreReport("main", "ops-1", "run-1", 1000, 1000),
        MigrationReport("trades.db", [TableResult("trades", 5, 5, 5)]),
        PlatformStatus(_redis_status(), _postgres_status()),
        HealthSummary((ServiceHealth("app-1", "pricing", "http://x/health", "OK"),)),
        VerifyReport((HostReport("data-1", (Check("sshd", True, "ok"),)),)),
    ]


def test_every_report_speaks_the_protocol(tmp_path: Path) -> None:
    for report in every_report(tmp_path):
        assert isinstance(report, output.Report), type(report)
        assert isinstance(report.ok, bool), type(report)
        data = json.loads(output.render(report, as_json=True))
        assert data["ok"] is report.ok, type(report)
        assert output.render(report, as_json=False) == report.to_text()
        assert report.to_text().strip(), type(report)


@pytest.mark.parametrize(("ok", "code"), [(True, 0), (False, 1)])
def test_emit_prints_and_maps_ok_to_the_exit_code(
    capsys: pytest.CaptureFixture[str], ok: bool, code: int
) -> None:
    report = FaultReport("restore", [], [] if ok else ["data-1: frozen"])
    assert output.emit(report, as_json=False) == code
    assert capsys.readouterr().out == report.to_text() + "\n"
    assert output.emit(report, as_json=True) == code
    assert json.loads(capsys.readouterr().out) == {
        "action": "restore",
        "hosts": [],
        "active": [] if ok else ["data-1: frozen"],
        "ok": ok,
    }


def test_render_adds_ok_to_json_that_lacks_it() -> None:
    class Bare:
        ok = False

        def to_json(self) -> dict[str, Any]:
            return {"x": 1}

        def to_text(self) -> str:
            return "x"

    assert json.loads(output.render(Bare(), as_json=True)) == {"x": 1, "ok": False}


def test_exit_codes_are_distinct_and_documented() -> None:
    codes = [output.EXIT_OK, output.EXIT_FINDING, output.EXIT_ERROR, output.EXIT_DECLINED]
    assert codes == [0, 1, 2, 3]
    for code, meaning in zip(codes, ["ok", "finding", "error", "declined"], strict=True):
        assert f"{code} {meaning}" in output.EXIT_CODES


def test_lab_report_ok_depends_on_the_goal() -> None:
    assert _lab("RUNNING", present=True).ok
    assert not _lab("STOPPED", present=True).ok
    assert not _lab("ABSENT", present=False).ok
    assert _lab("ABSENT", present=False, goal="down").ok
    assert not _lab("STOPPED", present=False, goal="down").ok
    assert not _lab("ABSENT", present=True, goal="down").ok
    assert "parts of the lab are LEFT" in _lab("STOPPED", present=False, goal="down").to_text()
    assert "nothing of the lab is left" in _lab("ABSENT", present=False, goal="down").to_text()
    assert json.loads(output.render(_lab("RUNNING", present=True), True))["goal"] == "up"


def test_fault_report_restore_is_ok_only_when_no_fault_is_left() -> None:
    assert FaultReport("crash", ["data-1"], ["data-1: stopped"]).ok
    assert FaultReport("restore", [], []).ok
    left = FaultReport("restore", [], ["data-2: frozen"])
    assert not left.ok
    assert "faults are LEFT" in left.to_text() and "data-2: frozen" in left.to_text()
    assert FaultReport("partition", ["a", "b"], []).to_text().startswith("partition: a <-> b")


def test_redis_drill_report_fails_on_any_failed_run() -> None:
    report = RedisDrillReport([_redis_run(), _redis_run(lost=3, notes=["writer stalled"])])
    assert not report.ok
    assert [run["ok"] for run in report.to_json()["results"]] == [True, False]
    text = report.to_text()
    assert "FAIL" in text and "master-host-crash: writer stalled" in text


def test_check_report_groups(tmp_path: Path) -> None:
    report = check_inventory(write_inventory(tmp_path))
    assert report.groups["sentinel"] == ["data-1", "data-2", "data-3"]
    assert "valid, 6 hosts" in report.to_text()

"""Drill timelines: what the drills keep (buckets, marks), and the SVG drawn from them.

Drawing uses the real matplotlib (the `plot` extra, installed by bootstrap.sh);
a missing matplotlib is simulated in a subprocess by blocking its import.
"""

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seawall import plot
from seawall.cli import app
from seawall.errors import SeawallError
from seawall.plot import Mark, Timeline, timeline
from seawall.postgres import drill as pg_drill
from seawall.redis import drill as redis_drill

REPO = Path(__file__).resolve().parents[2]
SVG = "{http://www.w3.org/2000/svg}"


def redis_result(
    scenario: str = "master-process-kill", **changes: object
) -> redis_drill.DrillResult:
    """A synthetic run: 100 writes/s, a 5 s outage from 3 s spooled, replayed at 8 s."""
    acked = [i / 100 for i in range(300)] + [8 + i / 100 for i in range(500)]
    line = timeline(
        acked,
        [
            Mark(3.0, "fault", "SIGKILL redis-server"),
            Mark(4.6, "detection", "first +odown"),
            Mark(5.9, "promotion", "first +switch-master"),
            Mark(8.0, "recovery"),
            Mark(11.0, "heal"),
        ],
        spooled=[3 + i / 100 for i in range(500)],
        replayed=[8.05 + i / 10_000 for i in range(500)],
    )
    base = redis_drill.DrillResult(
        scenario, "data-1", "data-2", 1.6, 2.9, 5.0, 1300, 800, 500, 0, 0, 0, True, True
    )
    changes.setdefault("timeline", line)
    return replace(base, **changes)  # type: ignore[arg-type]


def svg(path: Path) -> ET.Element:
    return ET.parse(path).getroot()


def texts(root: ET.Element) -> set[str]:
    return {"".join(node.itertext()).strip() for node in root.iter(f"{SVG}text")}


def bar_ids(root: ET.Element, panel: int) -> list[str]:
    prefix = f"run{panel}-acked-"
    return [node.get("id", "") for node in root.iter() if node.get("id", "").startswith(prefix)]


# --- the timeline -----------------------------------------------------------------


def test_moments_are_counted_into_100_ms_buckets() -> None:
    line = timeline([0.0, 0.05, 0.099, 0.1, 0.35, 1.0], [Mark(0.7, "fault")])
    assert line.bucket_s == 0.1
    assert line.acked == [3, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1]
    assert line.spooled == [] and line.replayed == []  # nothing spooled: no series
    assert sum(line.acked) == 6


def test_the_series_share_one_length_reaching_the_last_mark() -> None:
    line = timeline([0.15], [Mark(2.04, "heal"), Mark(0.5, "fault")], spooled=[0.3], replayed=[1.2])
    assert len(line.acked) == len(line.spooled) == len(line.replayed) == 21
    assert line.spooled[3] == 1 and line.replayed[12] == 1
    assert [mark.kind for mark in line.marks] == ["fault", "heal"]  # in time order


def test_a_long_run_gets_wider_buckets_never_more_than_the_bound() -> None:
    # 20 min of 100 writes/s: 12,000 buckets at 100 ms would be too many.
    acked = [i / 100 for i in range(120_000)]
    line = timeline(acked)
    assert len(line.acked) <= plot.MAX_BUCKETS
    assert line.bucket_s == pytest.approx(0.8)
    assert sum(line.acked) == len(acked)  # nothing dropped
    assert line.acked[0] == 80


def test_moments_outside_the_run_land_in_its_first_or_last_bucket() -> None:
    # A replay stamped by a host clock a hair behind the controller's.
    line = timeline([0.5], replayed=[-0.02])
    assert line.replayed[0] == 1 and sum(line.replayed) == 1


def test_recovery_is_the_end_of_the_longest_gap_if_it_is_an_outage() -> None:
    times = [0.0, 0.1, 0.2, 3.7, 3.8, 10.0, 10.3]
    assert plot.longest_gap(times) == (3.8, 10.0)
    assert plot.longest_gap(times, since=0.15) == (3.8, 10.0)
    assert plot.longest_gap(times[:5], since=0.15) == (0.2, 3.7)
    [mark] = plot.recovery_mark((0.2, 3.7), offset=0.2)
    assert (mark.kind, mark.at_s) == ("recovery", pytest.approx(3.5))
    assert "3.50 s" in mark.what
    assert plot.recovery_mark((1.0, 1.2)) == []  # the writer's pace, not an outage
    assert plot.recovery_mark(None) == []


def test_the_timeline_round_trips_through_the_results_json() -> None:
    result = redis_result()
    data = json.loads(json.dumps(result.to_json()))
    assert result.timeline is not None
    assert Timeline.from_json(data["timeline"]) == result.timeline
    assert data["timeline"]["marks"][0] == {
        "at_s": 3.0,
        "kind": "fault",
        "what": "SIGKILL redis-server",
    }


# The results' JSON keys before timelines (bench --jsonl files hold these).
REDIS_KEYS = [
    "scenario",
    "old_master",
    "new_master",
    "detect_s",
    "new_master_s",
    "outage_s",
    "writes",
    "acked",
    "spooled",
    "lost_acked",
    "lost_spooled",
    "duplicated",
    "old_master_rejoined",
    "healthy_after",
    "notes",
    "outage_limit_s",
    "switch_masters",
    "republished",
    "refused",
    "publish_p99_ms",
    "faults",
    "ok",
]
POSTGRES_KEYS = [
    "scenario",
    "old_leader",
    "new_leader",
    "committed",
    "lost",
    "failed_attempts",
    "write_outage_s",
    "outage_limit_s",
    "recovered_s",
    "rejoin_s",
    "problems",
    "ok",
]


def test_the_timeline_adds_a_key_and_changes_no_other() -> None:
    plain = pg_drill.DrillResult("switchover", "data-1", "data-2", 500, 0, 3, 1.2, 3, 1.5, 0.5)
    for without, keys in ((redis_result(timeline=None), REDIS_KEYS), (plain, POSTGRES_KEYS)):
        with_line = replace(without, timeline=timeline([0.1]))
        full, bare = with_line.to_json(), without.to_json()
        assert set(full) == set(bare) == {*keys, "timeline"}
        assert bare["timeline"] is None and full["timeline"]["acked"] == [0, 1]
        assert {k: v for k, v in full.items() if k != "timeline"} == {
            k: v for k, v in bare.items() if k != "timeline"
        }
        assert with_line.ok == without.ok


# --- what each drill keeps ---------------------------------------------------------


def test_the_redis_drill_keeps_acks_spooled_replays_and_sentinel_moments() -> None:
    started, wall = 1000.0, 1_700_000_000.0
    tally = redis_drill._Tally()
    for n in range(300):  # acked up to 3 s
        tally.add("acked", f"e-{n}", started + n / 100, 0.001)
    for n in range(300, 500):  # spooled from 3 s to 5 s
        tally.add("spooled", f"e-{n}", started + n / 100, 0.001)
    for n in range(800, 900):  # acked again from 8 s
        tally.add("acked", f"e-{n}", started + n / 100, 0.001)
    tally.ended_at = started + 9.0
    # Replayed at 8.2 s by the master's clock (entry ids in ms); acked entries too.
    entries = [
        (f"{round((wall + 8.2) * 1000)}-{n}".encode(), {b"event_id": f"e-{n}".encode()})
        for n in range(300, 500)
    ] + [(b"1700000000001-0", {b"event_id": b"e-0"})]
    events = redis_drill._SentinelEvents.__new__(redis_drill._SentinelEvents)
    events.first = {"+odown": started + 4.5, "+switch-master": started + 6.0}
    steps: list[redis_drill.Step] = [(3.0, "fault", lambda: None), (11.0, "heal", lambda: None)]

    line = redis_drill._timeline(tally, steps, events, entries, started, wall)

    marks = {mark.kind: mark.at_s for mark in line.marks}
    assert marks == {
        "fault": 3.0,
        "detection": 4.5,
        "promotion": 6.0,
        "recovery": pytest.approx(8.0),
        "heal": 11.0,
    }
    assert sum(line.acked) == 400 and line.acked[0] == 10 and line.acked[40] == 0
    assert sum(line.spooled) == 200 and line.spooled[35] == 10
    assert sum(line.replayed) == 200 and line.replayed[82] == 200


def test_a_redis_writer_stopped_while_spooling_has_no_recovery_mark() -> None:
    tally = redis_drill._Tally()
    tally.add("acked", "e-1", 0.5, 0.001)
    tally.add("spooled", "e-2", 3.5, 0.001)
    tally.ended_at, tally.fault_at = 9.0, 3.0
    events = redis_drill._SentinelEvents.__new__(redis_drill._SentinelEvents)
    events.first = {}
    line = redis_drill._timeline(tally, [(3.0, "cut", lambda: None)], events, [], 0.0, 0.0)
    assert [mark.kind for mark in line.marks] == ["fault"]


def test_the_postgres_drill_keeps_commits_and_its_moments() -> None:
    begun, fault = 5000.0, 5003.0
    acks = [[n, begun + 0.5 + n / 50] for n in range(125)]  # up to 3 s
    acks += [[n, begun + 7.0 + (n - 200) / 50] for n in range(200, 300)]  # again from 7 s
    errors = [[126, begun + 2.0, "OperationalError", "a blip before the fault"]]
    errors += [[n, begun + 3.4 + n / 100, "OperationalError", "gone"] for n in range(126, 130)]
    result = {"acks": acks, "errors": errors, "attempts": 300}

    line = pg_drill._timeline(result, begun, fault, "data-2", 3.2, begun + 9.0)

    assert [(m.kind, m.at_s) for m in line.marks] == [
        ("fault", 3.0),
        ("detection", pytest.approx(4.66)),
        ("promotion", pytest.approx(6.2)),
        ("recovery", pytest.approx(7.0)),
        ("heal", 9.0),
    ]
    assert sum(line.acked) == len(acks)
    assert line.spooled == [] and line.replayed == []


def test_a_postgres_run_without_failover_or_outage_marks_only_the_fault() -> None:
    acks = [[n, 100.0 + n / 50] for n in range(500)]
    line = pg_drill._timeline({"acks": acks, "errors": []}, 100.0, 103.0, None, 0.5, None)
    assert [m.kind for m in line.marks] == ["fault"]


# --- the picture -------------------------------------------------------------------


def test_the_svg_has_a_bar_group_per_bucket_and_every_label(tmp_path: Path) -> None:
    first = redis_result()
    second = replace(redis_result("replica-down"), timeline=timeline([0.05, 0.15, 0.25]))
    path = plot.draw([first, second], tmp_path / "runs.svg")

    root = svg(path)
    assert first.timeline is not None
    assert len(bar_ids(root, 0)) == len(first.timeline.acked) == 130
    assert len(bar_ids(root, 1)) == 3
    labels = texts(root)
    assert {"fault", "detection", "promotion", "recovery", "heal"} <= labels
    assert {"acknowledged writes per 100 ms", "spooled (cumulative)", "replayed (cumulative)"} <= (
        labels
    )
    assert {"master-process-kill: ok", "replica-down: ok"} <= labels
    import matplotlib

    assert matplotlib.get_backend().lower() == "agg"  # off-screen, no display needed


def test_a_run_without_a_timeline_or_spool_is_still_drawn(tmp_path: Path) -> None:
    bare = redis_result(timeline=None, lost_acked=1)
    plain = pg_drill.DrillResult(
        "switchover", "data-1", "data-2", 3, 0, 0, 0.1, None, 1.0, 2.0, timeline=timeline([0.1])
    )
    root = svg(plot.draw([bare, plain], tmp_path / "bare.svg"))
    labels = texts(root)
    assert {"master-process-kill: FAIL", "no timeline recorded", "switchover: ok"} <= labels
    # No spool in a Postgres run: no second axis, no spooled/replayed lines.
    assert "spooled (cumulative)" not in labels
    assert bar_ids(root, 0) == [] and len(bar_ids(root, 1)) == 2


def test_one_svg_per_scenario_of_its_median_run(tmp_path: Path) -> None:
    runs = [  # each run's timeline is as many seconds long as its outage
        redis_result(outage_s=9.0, timeline=timeline([9.0])),
        redis_result(outage_s=1.0, timeline=timeline([1.0])),
        redis_result(outage_s=5.0, timeline=timeline([5.0])),
        redis_result("replica-down", outage_s=0.1, timeline=None),
        redis_result("switchover", outage_s=0.2),
    ]
    drawn = plot.draw_scenarios(runs, tmp_path, "redis", lambda run: run.outage_s)
    assert drawn == [tmp_path / "redis-master-process-kill.svg", tmp_path / "redis-switchover.svg"]
    assert len(bar_ids(svg(drawn[0]), 0)) == 51  # the median run: 5 s in 100 ms buckets


def test_too_many_runs_for_one_picture_is_refused_before_drawing() -> None:
    with pytest.raises(SeawallError, match="at most 40 runs"):
        plot.require(plot.MAX_PANELS + 1)
    plot.require(plot.MAX_PANELS)


def test_an_unwritable_target_is_a_seawall_error(tmp_path: Path) -> None:
    with pytest.raises(SeawallError, match="cannot write"):
        plot.draw([redis_result()], tmp_path / "missing" / "x.svg")


BLOCKED = """
import sys
sys.modules["matplotlib"] = None  # as if the plot extra were not installed
{body}
"""


def blocked(body: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKED.format(body=body)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_without_matplotlib_drawing_names_the_extra(tmp_path: Path) -> None:
    done = blocked(
        "from seawall import plot\n"
        "from seawall.errors import SeawallError\n"
        "try:\n"
        f"    plot.draw([object()], {str(tmp_path / 'x.svg')!r})\n"
        "except SeawallError as error:\n"
        "    print('error:', error)\n"
    )
    assert done.returncode == 0, done.stderr
    assert "error: drawing needs matplotlib" in done.stdout
    assert "pip install 'seawall[plot]'" in done.stdout
    assert not (tmp_path / "x.svg").exists()


def test_without_matplotlib_a_drill_with_plot_stops_before_the_lab(tmp_path: Path) -> None:
    # Exit 2 with the extra named, before the confirmation or any inventory or lab access.
    for drill in ("redis", "postgres"):
        args = ["drill", drill, "switchover", "-i", "/nonexistent.py"]
        done = blocked(
            f"from seawall.cli import app\napp({[*args, '--plot', str(tmp_path / 'x.svg')]!r})"
        )
        assert done.returncode == 2, done.stderr
        assert "seawall: drawing needs matplotlib" in done.stderr
        assert "seawall[plot]" in done.stderr
        assert "Run " not in done.stdout + done.stderr  # never asked to confirm


def test_drill_redis_plot_draws_the_runs_it_reports(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def run_drill(topology: object, name: str, **kwargs: object) -> redis_drill.DrillResult:
        return redis_result(name)

    monkeypatch.chdir(REPO)
    monkeypatch.setattr("seawall.redis.drill.run_drill", run_drill)
    target = tmp_path / "drill.svg"
    result = CliRunner().invoke(
        app, ["drill", "redis", "switchover", "--runs", "2", "-y", "--json", "--plot", str(target)]
    )
    assert result.exit_code == 0, result.output
    assert [run["scenario"] for run in json.loads(result.stdout)["results"]] == ["switchover"] * 2
    root = svg(target)
    assert len(bar_ids(root, 0)) == len(bar_ids(root, 1)) == 130
    assert "switchover: ok" in texts(root)


def test_drill_postgres_plot_draws_the_runs_it_reports(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def run_drills(topology: object, chosen: list[str], log: object) -> pg_drill.DrillReport:
        return pg_drill.DrillReport(
            [
                pg_drill.DrillResult(
                    name, "data-1", "data-2", 3, 0, 0, 0.1, None, 1, 2, timeline=timeline([0.1])
                )
                for name in chosen
            ]
        )

    monkeypatch.chdir(REPO)
    monkeypatch.setattr("seawall.postgres.drill.drill_postgres", run_drills)
    target = tmp_path / "pg.svg"
    result = CliRunner().invoke(
        app, ["drill", "postgres", "switchover", "replica-down", "-y", "--plot", str(target)]
    )
    assert result.exit_code == 0, result.output
    labels = texts(svg(target))
    assert {"switchover: ok", "replica-down: ok"} <= labels


def test_results_recorded_with_a_timeline_read_back_for_the_bench(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import redis_failover
    finally:
        sys.path.remove(str(REPO / "bench"))
    record = {"down_after_ms": 1500, **redis_result().to_json()}
    old = {k: v for k, v in record.items() if k != "timeline"}  # recorded before timelines
    path = tmp_path / "runs.jsonl"
    path.write_text(json.dumps(record) + "\n" + json.dumps(old) + "\n")
    [[new, before]] = redis_failover.recorded([str(path)], None).values()
    assert new.timeline == redis_result().timeline
    assert before.timeline is None

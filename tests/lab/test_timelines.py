"""Drill timelines on the lab: what a real run keeps agrees with its own figures, and draws.

The unit tests (tests/unit/test_plot.py) check the counting and the drawing on
synthetic runs; here a real fault checks that the moments and counts match what
the drill itself reports (detect_s, new_master_s, outage_s, acked, spooled...).
"""

from pathlib import Path
from xml.etree import ElementTree

import pytest

from seawall import plot
from seawall.inventory import Topology
from seawall.plot import Mark, Timeline
from seawall.postgres import drill as pg_drill
from seawall.redis.drill import run_drill


def marks(line: Timeline) -> dict[str, Mark]:
    """The first mark of each kind."""
    found: dict[str, Mark] = {}
    for mark in line.marks:
        found.setdefault(mark.kind, mark)
    return found


def gap_s(mark: Mark) -> float:
    """The gap a recovery mark ends ("writes acknowledged again after 4.21 s")."""
    return float(mark.what.split()[-2])


def bars(path: Path) -> int:
    root = ElementTree.parse(path).getroot()
    return sum(1 for node in root.iter() if node.get("id", "").startswith("run0-acked-"))


@pytest.mark.parametrize("scenario", ["master-process-kill", "cut-heals-5s"])
def test_a_redis_run_keeps_a_timeline_that_matches_its_figures(
    deployed_lab: Topology, scenario: str, tmp_path: Path
) -> None:
    result = run_drill(deployed_lab, scenario, duration=12, fault_at=2, heal_after=6)
    summary = result.to_json()
    line = result.timeline
    assert line is not None and line.bucket_s == 0.1, summary
    # Every write the drill counts is in a bucket, once.
    assert sum(line.acked) == result.acked, summary
    assert sum(line.spooled) == result.spooled, summary
    # Every spooled event that reached Redis was replayed, at or after the fault.
    assert sum(line.replayed) == result.spooled - result.lost_spooled, summary
    moments = marks(line)
    fault = moments["fault"].at_s
    assert fault == 2.0, summary
    first_replay = next((i for i, n in enumerate(line.replayed) if n), None)
    if first_replay is not None:
        assert first_replay * line.bucket_s >= fault - line.bucket_s, summary
    if result.detect_s is not None:
        assert moments["detection"].at_s - fault == pytest.approx(result.detect_s, abs=0.002)
    if result.new_master_s is not None:
        assert moments["promotion"].at_s - fault == pytest.approx(result.new_master_s, abs=0.002)
    if result.outage_s >= plot.OUTAGE_MIN_S:
        # The recovery ends the very gap outage_s measures.
        assert gap_s(moments["recovery"]) == pytest.approx(result.outage_s, abs=0.006), summary
        assert moments["recovery"].at_s > fault, summary
    if scenario.startswith("cut"):
        assert moments["heal"].at_s == 7.0, summary
        assert result.spooled > 0 and sum(line.replayed) > 0, summary
    path = plot.draw([result], tmp_path / f"{scenario}.svg")
    assert bars(path) == len(line.acked)


def test_a_postgres_failover_keeps_a_timeline_that_matches_its_figures(
    deployed_lab: Topology, tmp_path: Path
) -> None:
    healthy, _ = pg_drill.wait_healthy(deployed_lab, 180)
    assert healthy
    result = pg_drill.drill_postgres(deployed_lab, ["leader-host-crash"], log=print).results[0]
    summary = result.to_json()
    line = result.timeline
    assert line is not None, summary
    assert sum(line.acked) == result.committed, summary
    assert line.spooled == [] and line.replayed == []
    moments = marks(line)
    fault = moments["fault"].at_s
    # A 3 s baseline of commits comes first.
    assert fault >= 3.0 and sum(line.acked[: int(fault / line.bucket_s)]) > 0, summary
    assert result.recovered_s is not None and result.new_leader != result.old_leader, summary
    assert moments["promotion"].at_s - fault == pytest.approx(result.recovered_s, abs=0.01)
    assert moments["heal"].at_s > moments["promotion"].at_s, summary
    if "detection" in moments:
        assert moments["detection"].at_s >= fault, summary
    if result.write_outage_s >= plot.OUTAGE_MIN_S:
        assert gap_s(moments["recovery"]) == pytest.approx(result.write_outage_s, abs=0.006)
    path = plot.draw([result], tmp_path / "leader-host-crash.svg")
    assert bars(path) == len(line.acked)

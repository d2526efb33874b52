"""What a drill's timeline keeps agrees with the drill's own figures, and draws.

The lab's drill tests call these on the runs they make anyway (no drill runs
twice for its picture). The unit tests (tests/unit/test_plot.py) check the
counting and drawing on synthetic runs; here real faults check that the
moments and counts match what the drill reports (detect_s, new_master_s,
outage_s, acked, spooled...). With SEAWALL_DRILL_PLOTS=DIR each run's picture
is kept there as redis-<scenario>.svg or postgres-<scenario>.svg (docs/benchmarks.md shows them).
"""

import os
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from seawall import plot
from seawall.plot import Mark, Timeline


def marks(line: Timeline) -> dict[str, Mark]:
    """The first mark of each kind."""
    found: dict[str, Mark] = {}
    for mark in line.marks:
        found.setdefault(mark.kind, mark)
    return found


def gap_s(mark: Mark) -> float:
    """The gap a recovery mark ends ("writes acknowledged again after 4.21 s")."""
    return float(mark.what.split()[-2])


def drawn(result: Any, name: str, tmp_path: Path) -> None:
    """Draw the run as ``name``.svg (``redis-<scenario>``: both drills have a
    switchover); every 100 ms bucket of the timeline is one bar of the picture."""
    line = result.timeline
    assert line is not None, result.to_json()
    keep = os.environ.get("SEAWALL_DRILL_PLOTS")
    directory = Path(keep) if keep else tmp_path
    directory.mkdir(parents=True, exist_ok=True)
    path = plot.draw([result], directory / f"{name}.svg")
    root = ElementTree.parse(path).getroot()
    bars = sum(1 for node in root.iter() if node.get("id", "").startswith("run0-acked-"))
    assert bars == len(line.acked)


def check_redis_timeline(
    result: Any, scenario: str, fault_at: float, tmp_path: Path, heal_at: float | None = None
) -> None:
    """The counts always; the moments too when the drill reports them."""
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
    assert fault == fault_at, summary
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
    if heal_at is not None:
        assert moments["heal"].at_s == heal_at, summary
        assert result.spooled > 0 and sum(line.replayed) > 0, summary
    drawn(result, f"redis-{scenario}", tmp_path)


def check_postgres_timeline(result: Any, scenario: str, tmp_path: Path, failover: bool) -> None:
    """The commits always; with ``failover``, the promotion and heal moments too."""
    summary = result.to_json()
    line = result.timeline
    assert line is not None, summary
    assert sum(line.acked) == result.committed, summary
    assert line.spooled == [] and line.replayed == []
    if failover:
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
    drawn(result, f"postgres-{scenario}", tmp_path)

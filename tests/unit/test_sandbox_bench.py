"""bench/sandbox.py without the lab: which units it scores, and how it reads the scores.

The reports parsed here are systemd-analyze's own (systemd 252, offline mode on
rendered units), not hand-written samples.
"""

import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from seawall import inventory
from seawall.components import services
from tests.unit.benches import load_bench

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_bench("sandbox")


def test_units_are_every_unit_we_write_and_every_drop_in(bench: ModuleType) -> None:
    found = {u.pattern: u.ours for u in bench.units()}
    assert found["quantum-*.service"] is True
    assert found["seawall-healthwatch.service"] is True
    assert found["seawall-unit-failed@.service"] is True
    assert found["redis-server.service"] is False and found["patroni@.service"] is False
    assert found["systemd-journal-remote.service"] is False
    # Sockets and timers are not what systemd-analyze security scores.
    assert not [p for p in found if not p.endswith(".service")]


def test_a_template_is_scored_through_a_loaded_instance_or_a_probe(bench: ModuleType) -> None:
    wanted = bench.units()
    listed = [
        "patroni@.service",
        "patroni@15-main.service",
        "seawall-unit-failed@.service",
        "quantum-execution.service",
        "ssh.service",  # not ours: left out
    ]
    assert bench.to_score(listed, wanted) == [
        "patroni@15-main.service",
        f"seawall-unit-failed@{bench.INSTANCE}.service",
        "quantum-execution.service",
    ]


def analyze(unit: str, text: str, tmp_path: Path) -> str:
    path = tmp_path / unit
    path.write_text(text)
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return out


def test_parse_reads_real_reports_and_names_the_costliest_settings(
    bench: ModuleType, lab: inventory.Topology, tmp_path: Path
) -> None:
    watch = services.render(
        services.HEALTHWATCH_UNIT, services.healthwatch_unit_context(lab.host("app-1").data)
    )
    bare = "[Service]\nExecStart=/bin/true\n"
    output = (
        f"{bench.MARK}seawall-healthwatch.service\n"
        + analyze("seawall-healthwatch.service", watch, tmp_path)
        + f"{bench.MARK}bare.service\n"
        + analyze("bare.service", bare, tmp_path)
    )
    parsed = bench.parse(output)
    assert parsed["seawall-healthwatch.service"][0] <= bench.THRESHOLD
    exposure, costs = parsed["bare.service"]
    assert exposure > 9 and len(costs) == bench.REASONS
    weights = [float(c.rsplit(", ", 1)[1].rstrip(")")) for c in costs]
    assert weights == sorted(weights, reverse=True) and weights[0] > 0


def test_the_table_flags_only_our_units_above_the_threshold(bench: ModuleType) -> None:
    scores = [
        bench.Score("quantum-execution.service", "app-1", 1.7, True),
        bench.Score("seawall-x.service", "app-1", 6.1, True, ("PrivateNetwork= (net, 0.5)",)),
        bench.Score("redis-server.service", "data-1", 7.0, False, ("User= (root, 0.4)",)),
    ]
    text = bench.table(scores)
    assert "| quantum-execution.service | app-1 | 1.7 | OK | - |" in text
    assert (
        "| seawall-x.service | app-1 | 6.1 | **above 4.0** | PrivateNetwork= (net, 0.5) |" in text
    )
    assert "| redis-server.service | data-1 | 7.0 | Debian's unit + our drop-in" in text
    assert "Units we write above 4.0: 1." in text


def test_the_section_goes_to_docs_security(bench: ModuleType, tmp_path: Path) -> None:
    assert bench.DOC == REPO / "docs" / "security.md"
    doc = tmp_path / "security.md"
    doc.write_text("# Security\n\nkept\n")
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import report  # bench/report.py

        report.write_section("sandbox", "| a |", doc=doc)
        report.write_section("sandbox", "| b |", doc=doc)
    finally:
        sys.path.remove(str(REPO / "bench"))
    text = doc.read_text()
    assert "kept" in text and "| b |" in text and "| a |" not in text

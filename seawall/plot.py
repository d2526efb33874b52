"""A drill run's timeline, and its picture (``--plot FILE.svg``).

A ``Timeline`` is what a drill keeps to be drawn: acknowledged writes per
bucket (100 ms, wider for a long run so the list stays under ``MAX_BUCKETS``),
events spooled and replayed per bucket (Redis), and the moments of the fault,
detection, promotion, recovery and heal, in seconds from the writer's start.
It is plain data, part of each drill result's JSON, judged by nothing.

``draw`` renders runs as one SVG, a panel per run. matplotlib is an optional
extra (``pip install 'seawall[plot]'``), imported only here, only when drawing,
with the Agg backend (no display); without it ``require`` raises a
SeawallError naming the extra, so a drill can check before it starts.
"""

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from seawall.errors import SeawallError

BUCKET_S = 0.1
# A 4-minute run at 100 ms; a longer one (a stalled writer runs up to 3x its
# duration) gets wider buckets, so a result's JSON stays a few kilobytes.
MAX_BUCKETS = 2400
# A gap between acknowledged writes shorter than this is the writer's own pace
# on a loaded machine, not an outage: it gets no recovery mark.
OUTAGE_MIN_S = 0.5
# One SVG of more runs than this is too large to read (or to open).
MAX_PANELS = 40
KINDS = ("fault", "detection", "promotion", "recovery", "heal")
MISSING = "drawing needs matplotlib, an optional extra: pip install 'seawall[plot]'"

_COLOURS = {
    "fault": "#d62728",
    "detection": "#ff7f0e",
    "promotion": "#9467bd",
    "recovery": "#2ca02c",
    "heal": "#7f7f7f",
}


@dataclass
class Mark:
    """A moment of the run: ``kind`` is one of KINDS, ``what`` says more."""

    at_s: float
    kind: str
    what: str = ""


@dataclass
class Timeline:
    """Counts per bucket of ``bucket_s`` seconds from the writer's start, and the marks."""

    bucket_s: float
    acked: list[int]
    spooled: list[int] = field(default_factory=list)
    replayed: list[int] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Timeline":
        """The inverse of ``dataclasses.asdict`` (results read back from a --jsonl file)."""
        return cls(
            bucket_s=float(data["bucket_s"]),
            acked=list(data["acked"]),
            spooled=list(data.get("spooled", [])),
            replayed=list(data.get("replayed", [])),
            marks=[Mark(**mark) for mark in data.get("marks", [])],
        )


def timeline(
    acked: Iterable[float],
    marks: Iterable[Mark] = (),
    spooled: Iterable[float] = (),
    replayed: Iterable[float] = (),
) -> Timeline:
    """Count the given moments (seconds from the start) into buckets; keep the marks in order."""
    series = [sorted(acked), sorted(spooled), sorted(replayed)]
    kept = sorted((mark for mark in marks if math.isfinite(mark.at_s)), key=lambda m: m.at_s)
    # In whole milliseconds, so that 0.3 s is bucket 3 (0.3 / 0.1 is 2.999... in floats).
    end = round(1000 * max([0.0, *(s[-1] for s in series if s), *(m.at_s for m in kept)]))
    width = round(BUCKET_S * 1000)
    while end // width + 1 > MAX_BUCKETS:
        width *= 2
    size = end // width + 1

    def count(times: list[float]) -> list[int]:
        counts = [0] * size
        for moment in times:
            # Clamped: a moment a hair before the start (another host's clock) is its first bucket.
            counts[min(size - 1, max(0, round(moment * 1000) // width))] += 1
        return counts

    acked_counts, spooled_counts, replayed_counts = (count(s) for s in series)
    return Timeline(
        bucket_s=width / 1000,
        acked=acked_counts,
        spooled=spooled_counts if series[1] else [],
        replayed=replayed_counts if series[2] else [],
        marks=[Mark(round(m.at_s, 3), m.kind, m.what) for m in kept],
    )


def longest_gap(times: Sequence[float], since: float = -math.inf) -> tuple[float, float] | None:
    """The longest gap between consecutive sorted ``times`` that ends after ``since``."""
    ordered = sorted(times)
    gaps = [(a, b) for a, b in zip(ordered, ordered[1:], strict=False) if b >= since]
    return max(gaps, key=lambda gap: gap[1] - gap[0], default=None)


def recovery_mark(gap: tuple[float, float] | None, offset: float = 0.0) -> list[Mark]:
    """A recovery mark at the end of ``gap`` (shifted by ``offset``) if it is an outage."""
    if gap is None or gap[1] - gap[0] < OUTAGE_MIN_S:
        return []
    what = f"writes acknowledged again after {gap[1] - gap[0]:.2f} s"
    return [Mark(gap[1] - offset, "recovery", what)]


class Run(Protocol):
    """A drill result that can be drawn (both drills' DrillResult)."""

    @property
    def scenario(self) -> str: ...

    @property
    def timeline(self) -> Timeline | None: ...

    @property
    def ok(self) -> bool: ...


def require(panels: int = 1) -> None:
    """Check that ``panels`` runs can be drawn, before a drill spends minutes producing them.

    Raises:
        SeawallError: matplotlib is missing, or too many runs for one picture.
    """
    if panels > MAX_PANELS:
        raise SeawallError(f"--plot draws at most {MAX_PANELS} runs in one picture, not {panels}")
    _matplotlib()


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError as error:
        raise SeawallError(MISSING) from error
    # No display on the controller: render off-screen, whatever the environment says.
    matplotlib.use("Agg")
    return matplotlib


def draw(runs: Sequence[Run], path: Path | str) -> Path:
    """Draw every run's timeline as one panel of an SVG at ``path``; return the path.

    Raises:
        SeawallError: matplotlib is missing, too many runs, or the file cannot be written.
    """
    require(len(runs))
    if not runs:
        raise SeawallError("no runs to draw")
    matplotlib = _matplotlib()
    from matplotlib.figure import Figure

    # Text stays text in the SVG (searchable, and tests find the labels); a fixed
    # hash salt keeps element ids stable between two drawings of the same data.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "seawall"}):
        figure = Figure(figsize=(11, 3.0 * len(runs)), layout="constrained")
        axes = figure.subplots(len(runs), 1, squeeze=False)
        for number, (run, row) in enumerate(zip(runs, axes, strict=True)):
            _panel(row[0], number, run)
        target = Path(path)
        try:
            figure.savefig(target, format="svg")
        except OSError as error:
            raise SeawallError(f"cannot write {target}: {error}") from error
    return target


def draw_scenarios(
    runs: Sequence[Run], directory: Path | str, prefix: str, outage: Callable[[Any], float]
) -> list[Path]:
    """One SVG per scenario, ``<directory>/<prefix>-<scenario>.svg``, of its median run.

    The median by ``outage`` among the scenario's runs that kept a timeline: the
    typical run, not the luckiest or the worst (the benches' tables give those).

    Raises:
        SeawallError: matplotlib is missing or a file cannot be written.
    """
    by_scenario: dict[str, list[Run]] = {}
    for run in runs:
        if run.timeline is not None:
            by_scenario.setdefault(run.scenario, []).append(run)
    drawn = []
    for scenario, found in by_scenario.items():
        ordered = sorted(found, key=outage)
        target = Path(directory) / f"{prefix}-{scenario}.svg"
        drawn.append(draw([ordered[(len(ordered) - 1) // 2]], target))
    return drawn


def _panel(ax: Any, number: int, run: Run) -> None:
    ax.set_title(f"{run.scenario}: {'ok' if run.ok else 'FAIL'}", loc="left", fontsize=10)
    line = run.timeline
    if line is None:
        ax.text(0.5, 0.5, "no timeline recorded", transform=ax.transAxes, ha="center")
        return
    width = line.bucket_s
    starts = [index * width for index in range(len(line.acked))]
    bars = ax.bar(
        starts,
        line.acked,
        width=width,
        align="edge",
        color="#1f77b4",
        label=f"acknowledged writes per {width * 1000:.0f} ms",
    )
    # One SVG group per bucket, named, so a reader (or a test) can find each.
    for index, bar in enumerate(bars):
        bar.set_gid(f"run{number}-acked-{index}")
    ax.set_xlabel("seconds from the writer's start")
    ax.set_ylabel(f"acked / {width * 1000:.0f} ms")
    ax.set_xlim(0, max(width, len(line.acked) * width))
    # Headroom above the tallest bar for the marks' labels.
    ax.set_ylim(0, max([1, *line.acked]) * 1.3)
    handles, labels = ax.get_legend_handles_labels()
    if any(line.spooled) or any(line.replayed):
        other = ax.twinx()
        edges = [*starts, len(line.acked) * width]
        for name, counts, colour in (
            ("spooled", line.spooled, "#e377c2"),
            ("replayed", line.replayed, "#17becf"),
        ):
            if counts:
                total = [0, *_cumulative(counts)]
                other.step(edges, total, where="pre", color=colour, label=f"{name} (cumulative)")
        other.set_ylabel("events spooled / replayed")
        other.set_ylim(bottom=0)
        more_handles, more_labels = other.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    for mark in line.marks:
        colour = _COLOURS.get(mark.kind, "#000000")
        ax.axvline(mark.at_s, color=colour, linestyle="--", linewidth=1.2)
        ax.text(
            mark.at_s,
            0.98,
            f" {mark.kind}",
            transform=ax.get_xaxis_transform(),
            rotation=90,
            va="top",
            ha="right",
            fontsize=8,
            color=colour,
        )
    # Beside the panel, never over the bars.
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.07, 1.0), fontsize=8)


def _cumulative(counts: list[int]) -> list[int]:
    total, out = 0, []
    for count in counts:
        total += count
        out.append(total)
    return out

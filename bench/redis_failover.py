"""Benchmark Redis failover on the lab: every drill scenario N times, medians in docs/benchmarks.md.

    .venv/bin/python bench/redis_failover.py --runs 5

Needs the lab up and deployed (README's first command). Each run is one
`seawall drill redis` scenario: a bounded writer (100 events/s, 20 s) through
the runtime's EventPublisher, a real fault at 3 s, healed 8 s later.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import write_section  # noqa: E402  (bench/report.py)

from seawall import inventory  # noqa: E402
from seawall.redis_ha.drill import (  # noqa: E402
    SCENARIOS,
    DrillResult,
    false_failovers,
    run_drill,
)

# Acceptance targets for the median client write outage, in seconds.
TARGETS = {
    "master-process-kill": 3.0,
    "master-host-crash": 3.0,
    "master-isolated": 3.0,
    "master-partitioned-from-peers": 5.0,
}


def median(values: list[float | None]) -> str:
    present = [value for value in values if value is not None]
    return f"{statistics.median(present):.2f}" if present else "-"


def spread(values: list[float]) -> str:
    return f"{min(values):.2f}–{max(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scenario", action="append", choices=SCENARIOS)
    parser.add_argument("--idle", type=float, default=60, help="idle check seconds")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    topology = inventory.load(ROOT / "inventories" / "lab.py")
    results: dict[str, list[DrillResult]] = {}
    for scenario in args.scenario or SCENARIOS:
        for run in range(args.runs):
            result = run_drill(topology, scenario)
            results.setdefault(scenario, []).append(result)
            print(
                f"{scenario} #{run + 1}: outage {result.outage_s:.2f} s, "
                f"lost {result.lost_acked}, dup {result.duplicated}, ok {result.ok}",
                file=sys.stderr,
                flush=True,
            )

    idle = false_failovers(topology, args.idle)
    lines = [
        f"Redis drills, {time.strftime('%Y-%m-%d', time.gmtime())}: {args.runs} runs per "
        "scenario, writer 100 events/s for 20 s through EventPublisher (WAIT 1, disk spool), "
        f"fault at 3 s; Sentinel down-after {topology.value('sentinel_down_after_ms')} ms, "
        f"failover-timeout {topology.value('sentinel_failover_timeout_ms')} ms. Medians, "
        "seconds (outage min–max in brackets).",
        "",
        "| scenario | detect | new master | client write outage | target | acked lost | "
        "spooled lost | duplicated | old master rejoined | all runs ok |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scenario, runs in results.items():
        outages = [r.outage_s for r in runs]
        target = TARGETS.get(scenario)
        rejoined = [r.old_master_rejoined for r in runs]
        lines.append(
            f"| {scenario} | {median([r.detect_s for r in runs])} | "
            f"{median([r.new_master_s for r in runs])} | "
            f"{statistics.median(outages):.2f} ({spread(outages)}) | "
            f"{f'<= {target:.0f}' if target else ''} | {sum(r.lost_acked for r in runs)} | "
            f"{sum(r.lost_spooled for r in runs)} | {sum(r.duplicated for r in runs)} | "
            f"{'-' if None in rejoined else f'{sum(map(bool, rejoined))}/{len(runs)}'} | "
            f"{sum(r.ok for r in runs)}/{len(runs)} |"
        )
    lines += [
        "",
        f"Idle check, {args.idle:.0f} s with no fault: Sentinel events about the master: "
        + ", ".join(f"{channel} {count}" for channel, count in idle.items())
        + " (any non-zero count would be a false alarm).",
    ]
    report = "\n".join(lines)
    print(report)
    if not args.no_write:
        write_section("redis", report)


if __name__ == "__main__":
    main()

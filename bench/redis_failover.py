"""Benchmark Redis failover on the lab: drill scenarios N times, per Sentinel down-after.

    .venv/bin/python bench/redis_failover.py --runs 5
    .venv/bin/python bench/redis_failover.py --runs 20 --scenario master-process-kill \\
        --down-after 800 --down-after 1000 --down-after 1500 --section redis-storms
    .venv/bin/python bench/redis_failover.py --runs 20 --scenario lagging-replica-then-cut \\
        --scenario cut-heals-9s --section redis-issue15

Needs the lab up and deployed (README's first command). Each run is one
`seawall drill redis` scenario: a bounded writer (100 events/s) through the
runtime's EventPublisher (WAIT 1, disk spool), a real fault, the heal. Every
run's result is appended as one JSON line to ``--jsonl`` as it finishes.
``--plot DIR`` draws each scenario's median run (by outage) as
``DIR/redis-<scenario>.svg`` (``--plot docs/img`` for docs/benchmarks.md),
from the runs just made or, with ``--from-jsonl``, from recorded ones.

``--down-after MS`` sets Sentinel's down-after-milliseconds live on every
Sentinel (SENTINEL SET) for the runs that follow; the inventory's value is put
back at the end. The whole bench holds the data-fault lock.
"""

import argparse
import json
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import publish  # noqa: E402  (bench/report.py)

from seawall import inventory  # noqa: E402
from seawall.inventory import Topology  # noqa: E402
from seawall.plot import Timeline, draw_scenarios, require  # noqa: E402
from seawall.redis.client import redis_settings  # noqa: E402
from seawall.redis.drill import (  # noqa: E402
    SCENARIOS,
    SINGLE_FAULTS,
    DrillResult,
    data_fault_lock,
    false_failovers,
    run_drill,
    wait_healthy,
)
from seawall.runtime.reconnect import connect  # noqa: E402


def set_down_after(topology: Topology, milliseconds: int) -> None:
    """Set down-after-milliseconds on every Sentinel, live (the deploy sets it the same way)."""
    settings = redis_settings(topology)
    wait_healthy(topology)
    for host, port in settings.sentinels:
        conn = connect(host, port, settings.sentinel_password, 2)
        try:
            conn.execute_command(
                "SENTINEL", "SET", settings.master_name, "down-after-milliseconds", milliseconds
            )
        finally:
            conn.close()


def median(values: list[float | None]) -> str:
    present = [value for value in values if value is not None]
    return f"{statistics.median(present):.2f}" if present else "-"


def spread(values: list[float]) -> str:
    return f"{min(values):.2f}–{max(values):.2f}"


def switch_counts(runs: list[DrillResult]) -> str:
    counts = Counter("?" if r.switch_masters is None else str(r.switch_masters) for r in runs)
    return ", ".join(f"{n}×{key}" for key, n in sorted(counts.items()))


def table(results: dict[tuple[int, str], list[DrillResult]]) -> list[str]:
    lines = [
        "| down-after ms | scenario | runs | +switch-master per fault (runs×count) | storms | "
        "detect | new master | client write outage | limit | acked lost | spooled lost | "
        "duplicated | re-published | refused (spool full) | publish p99 ms (max) | all runs ok |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (down_after, scenario), runs in results.items():
        outages = [r.outage_s for r in runs]
        limit = runs[0].outage_limit_s
        lines.append(
            f"| {down_after} | {scenario} | {len(runs)} | {switch_counts(runs)} | "
            f"{sum(r.storm for r in runs)} | {median([r.detect_s for r in runs])} | "
            f"{median([r.new_master_s for r in runs])} | "
            f"{statistics.median(outages):.2f} ({spread(outages)}) | "
            f"{f'<= {limit:.0f}' if limit else '-'} | {sum(r.lost_acked for r in runs)} | "
            f"{sum(r.lost_spooled for r in runs)} | {sum(r.duplicated for r in runs)} | "
            f"{sum(r.republished for r in runs)} | {sum(r.refused for r in runs)} | "
            f"{max((r.publish_p99_ms or 0.0) for r in runs):.1f} | "
            f"{sum(r.ok for r in runs)}/{len(runs)} |"
        )
    return lines


def recorded(
    paths: list[str], scenarios: list[str] | None
) -> dict[tuple[int, str], list[DrillResult]]:
    """The runs earlier invocations appended to their --jsonl files, by down-after and scenario."""
    fields = set(DrillResult.__dataclass_fields__)
    results: dict[tuple[int, str], list[DrillResult]] = {}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            record = json.loads(line)
            if scenarios and record["scenario"] not in scenarios:
                continue
            result = DrillResult(**{k: v for k, v in record.items() if k in fields})
            if record.get("timeline"):  # runs recorded before timelines have none
                result.timeline = Timeline.from_json(record["timeline"])
            results.setdefault((record["down_after_ms"], result.scenario), []).append(result)
    return results


def plot(args: argparse.Namespace, results: dict[tuple[int, str], list[DrillResult]]) -> None:
    runs = [run for found in results.values() for run in found]
    for path in draw_scenarios(runs, args.plot, "redis", lambda run: run.outage_s):
        print(f"timeline drawn in {path}", file=sys.stderr)


def tabulate(args: argparse.Namespace) -> None:
    results = recorded(args.from_jsonl, args.scenario)
    if args.plot:
        plot(args, results)
    lines = [
        f"Redis drills recorded in {len(args.from_jsonl)} run file(s) up to "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}: writer 100 events/s (500 for "
        "writer-killed-mid-replay) through EventPublisher (WAIT 1, disk spool), fault at 2-3 s, "
        "the writer running on 8 s past the last heal. Medians in seconds (outage min–max in "
        "brackets); a storm is more +switch-master than faults (the Sentinels' journals).",
        "",
        *table(results),
    ]
    publish(args.section, lines, write=not args.no_write)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scenario", action="append", choices=SCENARIOS)
    parser.add_argument("--down-after", type=int, action="append", help="ms; repeatable")
    parser.add_argument("--duration", type=float, default=20, help="writer seconds")
    parser.add_argument("--fault-at", type=float, default=3, help="seconds into the run")
    parser.add_argument("--idle", type=float, default=60, help="idle check seconds (0: none)")
    parser.add_argument("--section", default="redis", help="docs/benchmarks.md section")
    parser.add_argument("--jsonl", default="/tmp/seawall-redis-failover.jsonl")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--from-jsonl",
        action="append",
        metavar="FILE",
        help="no drills: tabulate the runs these --jsonl files recorded (repeatable)",
    )
    parser.add_argument(
        "--plot", metavar="DIR", help="draw each scenario's median run as DIR/redis-<scenario>.svg"
    )
    args = parser.parse_args()
    if args.plot:
        require()  # before the drills, not after them
    if args.from_jsonl:
        tabulate(args)
        return
    topology = inventory.load(ROOT / "inventories" / "lab.py")
    configured = int(topology.value("sentinel_down_after_ms"))
    values = args.down_after or [configured]
    load_before = os.getloadavg()[0]
    results: dict[tuple[int, str], list[DrillResult]] = {}
    idle: dict[str, int] = {}
    with data_fault_lock(lambda message: print(message, file=sys.stderr, flush=True)):
        try:
            for down_after in values:
                set_down_after(topology, down_after)
                for scenario in args.scenario or SINGLE_FAULTS:
                    for run in range(args.runs):
                        result = run_drill(
                            topology, scenario, duration=args.duration, fault_at=args.fault_at
                        )
                        results.setdefault((down_after, scenario), []).append(result)
                        with open(args.jsonl, "a") as out:
                            record = {"down_after_ms": down_after, **result.to_json()}
                            out.write(json.dumps(record) + "\n")
                        print(
                            f"{down_after} ms {scenario} #{run + 1}: outage "
                            f"{result.outage_s:.2f} s, switches {result.switch_masters}, "
                            f"lost {result.lost_acked}+{result.lost_spooled}, "
                            f"dup {result.duplicated}, ok {result.ok} {result.notes}",
                            file=sys.stderr,
                            flush=True,
                        )
                if args.idle:
                    idle = false_failovers(topology, args.idle)
        finally:
            set_down_after(topology, configured)

    if args.plot:
        plot(args, results)
    lines = [
        f"Redis drills, {time.strftime('%Y-%m-%d', time.gmtime())}: {args.runs} runs per "
        f"scenario and down-after, writer 100 events/s for {args.duration:.0f} s (fault at "
        f"{args.fault_at:.0f} s; issue 15 scenarios run on to 8 s past the heal) through "
        "EventPublisher (WAIT 1, disk "
        "spool); Sentinel failover-timeout "
        f"{topology.value('sentinel_failover_timeout_ms')} ms. Medians in seconds (outage "
        "min–max in brackets); a storm is more than one +switch-master for one fault "
        "(counted in the Sentinels' journals).",
        "",
        *table(results),
    ]
    if idle:
        lines += [
            "",
            f"Idle check at {values[-1]} ms, {args.idle:.0f} s with no fault: Sentinel events "
            "about the master: "
            + ", ".join(f"{channel} {count}" for channel, count in idle.items())
            + " (any non-zero count would be a false alarm).",
        ]
    lines += [
        "",
        f"Load average (1 min): {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at "
        "the end; other sessions' work shares the 2 cores.",
    ]
    publish(args.section, lines, write=not args.no_write)


if __name__ == "__main__":
    main()

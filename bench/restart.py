"""Benchmark `seawall restart --rolling` on the 7-host lab under client load.

Each run starts the bounded load of tests/lab/restart_load.py (GETs and
client-retried POSTs through the gateway, a Redis event writer, a Postgres
writer), runs `seawall restart --rolling --yes --json -i inventories/lab.py` as
the ops host's timer does, stops the load and counts what failed or was lost.
Printed, and written into docs/benchmarks.md between the `bench:restart`
markers: the duration of each phase (median over the runs), the whole run, and
the failure counts summed over the runs (the acceptance: all 0).

    .venv/bin/python bench/restart.py --runs 1

The lab must be up and deployed. It holds the lab's data- and app-fault locks
while it runs, so no other session's fault lands in it.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import LAB_INVENTORY, load_note, publish, spread  # noqa: E402

from seawall import inventory  # noqa: E402
from seawall.lab.faults import DATA_FAULT_LOCK, app_fault_lock, exclusive_lock  # noqa: E402
from seawall.netguard import require_lab_network  # noqa: E402
from seawall.redis.failover import wait_healthy  # noqa: E402
from seawall.restart import PHASES  # noqa: E402
from tests.lab.restart_load import RestartLoad  # noqa: E402

BIN = Path(sys.executable).parent
RESTART_TIMEOUT_S = 2400
# The counts the acceptance wants at 0, summed over the runs.
FAILURES = (
    "failed_gets",
    "posts_unacknowledged",
    "orders_not_stored_once",
    "events_lost",
    "events_duplicated",
    "rows_lost",
)


def restart_run() -> tuple[float, dict[str, Any]]:
    """One `seawall restart --rolling` under load; (seconds, report with the load's counts)."""
    topology = inventory.load(ROOT / LAB_INVENTORY)
    load = RestartLoad(topology, tag="bench-restart")
    started = time.monotonic()
    try:
        time.sleep(5)  # a baseline of traffic before the first step
        result = subprocess.run(
            [str(BIN / "seawall"), "restart", "--rolling", "--yes", "--json", "-i", LAB_INVENTORY],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=RESTART_TIMEOUT_S,
        )
        seconds = time.monotonic() - started - 5
    finally:
        counts = load.stop().summary()
    if result.returncode != 0:
        raise SystemExit(
            f"seawall restart exited {result.returncode}:\n{result.stdout[-3000:]}\n"
            f"{result.stderr[-3000:]}\nload: {json.dumps(counts)}"
        )
    return seconds, {**json.loads(result.stdout), "load": counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="rounds (default 1)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    os.chdir(ROOT)
    topology = inventory.load(ROOT / LAB_INVENTORY)
    require_lab_network(topology)
    load_before = os.getloadavg()[0]
    totals: list[float] = []
    phases: dict[str, list[float]] = {phase: [] for phase in PHASES}
    failures = dict.fromkeys(FAILURES, 0)
    traffic = {"gets": 0, "posts": 0, "post_retries": 0, "events": 0, "rows_committed": 0}
    with exclusive_lock(DATA_FAULT_LOCK, timeout=600), app_fault_lock(600):
        for run in range(args.runs):
            wait_healthy(topology, 120)
            seconds, report = restart_run()
            totals.append(seconds)
            for phase, spent in report["phase_seconds"].items():
                phases[phase].append(spent)
            for key in failures:
                failures[key] += int(report["load"][key])
            for key in traffic:
                traffic[key] += int(report["load"][key])
            print(
                f"run {run + 1}: {seconds:.1f} s, load {json.dumps(report['load'])}",
                file=sys.stderr,
            )

    lines = [
        "## `seawall restart --rolling` on the 7-host lab under load",
        "",
        f"`bench/restart.py --runs {args.runs}`: the whole lab restarted by "
        "`seawall restart --rolling --yes --json` (20 steps: app hosts drained one at a time, "
        "Redis replicas, Sentinels, a switchover, the old master, etcd, the Postgres replica, "
        "a Patroni switchover, the old leader, the gateway's reload) while "
        f"{traffic['gets']} GETs and {traffic['posts']} POSTs ({traffic['post_retries']} "
        f"client retries with the same request id) went through the gateway, "
        f"{traffic['events']} Redis events were published and {traffic['rows_committed']} "
        "Postgres rows committed (totals over the runs).",
        "",
        "| phase | median s | min s | max s |",
        "|---|---|---|---|",
        *(f"| {phase} | {spread(values)} |" for phase, values in phases.items() if values),
        f"| **whole run** | {spread(totals)} |",
        "",
        "| failure (sum over the runs; acceptance: 0) | count |",
        "|---|---|",
        *(f"| {key.replace('_', ' ')} | {count} |" for key, count in failures.items()),
        "",
        f"Median whole run: {statistics.median(totals):.1f} s." if totals else "No run.",
        *load_note(load_before),
    ]
    publish("restart", lines, write=not args.no_write)


if __name__ == "__main__":
    main()

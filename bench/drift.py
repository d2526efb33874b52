"""Benchmark `seawall drift` on the 7-host lab with no drift, beside a no-op site redeploy.

Each round times one `seawall drift -i inventories/lab.py --json` (the command
cron runs; it must find no drift, exit 0) and one no-op site redeploy
(`pyinfra -y --json inventories/lab.py deploys/site.py`, which must change
nothing), in alternating order so both see the same machine. Figures are
median, min and max over the rounds, against the 15 s target for each (issue
13). A first untimed redeploy brings the lab to what this tree writes. Results
are printed and written into docs/benchmarks.md between the `bench:drift` markers.

    .venv/bin/python bench/drift.py --runs 5

The lab must be up and deployed. It injects no fault, but holds the lab's data-
and app-fault locks while it runs, so no other session's fault lands in it.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import LAB_INVENTORY, load_note, publish, spread, timed_site_deploy  # noqa: E402

from seawall import inventory  # noqa: E402
from seawall.lab.faults import DATA_FAULT_LOCK, app_fault_lock, exclusive_lock  # noqa: E402
from seawall.netguard import require_lab_network  # noqa: E402

BIN = Path(sys.executable).parent
# The acceptance target (issue 13) for a drift check and a no-op redeploy of the 7-host lab.
TARGET_S = 15.0


def drift_run(tree: Path = ROOT) -> tuple[float, dict]:
    """One `seawall drift --json` of ``tree``'s lab inventory, as cron runs it; (seconds,
    report). Stops unless exit 0. ``tree``: a checkout, or bench/scale.py's copy of one."""
    started = time.monotonic()
    result = subprocess.run(
        [str(BIN / "seawall"), "drift", "-i", LAB_INVENTORY, "--json"],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=600,
    )
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(
            f"seawall drift exited {result.returncode} (the lab must be deployed, no drift):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return seconds, json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    os.chdir(ROOT)
    topology = inventory.load(ROOT / LAB_INVENTORY)
    require_lab_network(topology)
    load_before = os.getloadavg()[0]
    drift_s: list[float] = []
    deploy_s: list[float] = []
    op_hosts = changed = 0
    checked = 0
    with exclusive_lock(DATA_FAULT_LOCK, timeout=600), app_fault_lock(600):
        timed_site_deploy()  # untimed: the lab as this tree writes it
        for run in range(args.runs):
            order = ("drift", "deploy") if run % 2 == 0 else ("deploy", "drift")
            for what in order:
                if what == "drift":
                    seconds, report = drift_run()
                    drift_s.append(seconds)
                    checked = len(report["checked"])
                else:
                    seconds, op_hosts, changed = timed_site_deploy()
                    deploy_s.append(seconds)
                    if changed:
                        raise SystemExit(f"the no-op redeploy changed {changed} operation-hosts")
            print(
                f"run {run + 1}: drift {drift_s[-1]:.2f} s, no-op redeploy {deploy_s[-1]:.2f} s",
                file=sys.stderr,
            )

    def verdict(values: list[float]) -> str:
        median = sorted(values)[len(values) // 2]
        return "met" if median <= TARGET_S else "NOT met"

    lines = [
        "## `seawall drift` and the no-op site redeploy on the 7-host lab",
        "",
        f"`bench/drift.py --runs {args.runs}`: `seawall drift -i inventories/lab.py --json` "
        f"({checked} hosts checked, no drift, exit 0) and a no-op `pyinfra -y` site redeploy",
        f"({op_hosts} operation-hosts, 0 changed), alternating in each round. Target: "
        f"≤ {TARGET_S:.0f} s each (median).",
        "",
        "| what | median s | min s | max s | target |",
        "|---|---|---|---|---|",
        f"| seawall drift | {spread(drift_s)} | {verdict(drift_s)} |",
        f"| no-op site redeploy | {spread(deploy_s)} | {verdict(deploy_s)} |",
        *load_note(load_before),
    ]
    publish("drift", lines, write=not args.no_write)


if __name__ == "__main__":
    main()

"""Benchmark the no-op site redeploy against an earlier version of seawall, on the same lab.

Each round deploys one version twice: the first run brings the hosts to what
that version writes (untimed), the second is its no-op redeploy (timed, and
checked to change nothing). Versions alternate, so both see the same machine
load; the ratio current / baseline is the figure. Results are printed and
written into docs/benchmarks.md between the `bench:noop-deploy` markers.

    .venv/bin/python bench/noop_deploy.py --baseline 9f211c9 --runs 2

The baseline runs from a temporary `git worktree` of ``--baseline`` (its own
deploys, templates and seawall package, first on PYTHONPATH), with the
controller's venv for pyinfra. It runs on the lab you work on: no drill, test
or other deploy may run meanwhile.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import load_note, publish, spread, timed_site_deploy  # noqa: E402

from seawall import inventory  # noqa: E402
from seawall.netguard import require_lab_bridge  # noqa: E402

# The last commit before issue 11 changed deploys (templates became package data).
BASELINE = "9f211c9"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=BASELINE, help="git revision to compare with")
    parser.add_argument("--runs", type=int, default=2, help="rounds (each deploys both twice)")
    args = parser.parse_args()

    require_lab_bridge(inventory.load(ROOT / "inventories" / "lab.py"))
    load_before = os.getloadavg()[0]
    times: dict[str, list[float]] = {"baseline": [], "current": []}
    counts: dict[str, tuple[int, int]] = {}
    with tempfile.TemporaryDirectory(prefix="seawall-baseline-") as tmp:
        old = Path(tmp) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-q", str(old), args.baseline],
            cwd=ROOT,
            check=True,
        )
        try:
            for round_ in range(args.runs):
                order = [("baseline", old), ("current", ROOT)]
                for name, tree in order if round_ % 2 == 0 else reversed(order):
                    timed_site_deploy(tree)
                    seconds, total, changed = timed_site_deploy(tree)
                    if changed:
                        raise SystemExit(f"{name}: the second deploy changed {changed} operations")
                    times[name].append(seconds)
                    counts[name] = (total, changed)
                    print(f"round {round_ + 1}: {name} no-op redeploy {seconds:.1f} s", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT)
        # Leave the lab as the current version deploys it.
        if times["current"] and args.runs % 2 == 0:
            timed_site_deploy(ROOT)

    ratio = statistics.median(times["current"]) / statistics.median(times["baseline"])
    lines = [
        f"No-op site redeploy of the 7-host lab, current version against {args.baseline} "
        f"(before issue 11), {args.runs} alternating rounds; each timed run follows an "
        "untimed deploy of the same version and changed nothing.",
        "",
        "| version | operation-hosts | median s | min s | max s |",
        "|---|---|---|---|---|",
    ]
    for name in ("baseline", "current"):
        lines.append(f"| {name} | {counts[name][0]} | {spread(times[name])} |")
    lines += ["", f"Ratio current / baseline: {ratio:.2f} (target <= 1.00 within the spread)."]
    lines += load_note(load_before)
    publish("noop-deploy", lines)


if __name__ == "__main__":
    main()

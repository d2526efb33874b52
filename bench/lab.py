"""Benchmark the lab and the common deploy: cold/warm/hot `lab up`, first and no-op deploy.

Each figure is the median (with min and max) of several runs in one session, so
ratios between them hold on a noisy machine. Results are printed and written
into docs/benchmarks.md between the `bench:lab` markers.

    .venv/bin/python bench/lab.py --runs 3 --cold-runs 1

Destroys and recreates the lab hosts (the base cache too, for cold runs).
"""

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seawall import inventory, lab  # noqa: E402
from seawall.lab.config import lab_config  # noqa: E402

INVENTORY = ROOT / "inventories" / "lab.py"
DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- bench:lab:start -->", "<!-- bench:lab:end -->"
# Acceptance targets from the foundation issue, in seconds.
TARGETS = {"warm lab up (7 hosts)": 30.0, "no-op site deploy (7 hosts)": 15.0}


def quiet(_: str) -> None:
    pass


def timed(action: Callable[[], object]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def deploy() -> None:
    pyinfra = str(Path(sys.executable).with_name("pyinfra"))
    result = subprocess.run(
        [pyinfra, "-y", "inventories/lab.py", "deploys/site.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if result.returncode != 0:
        raise SystemExit(f"deploy failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cold-runs", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    topology = inventory.load(INVENTORY)
    config = lab_config(topology)
    figures: dict[str, list[float]] = {}

    def record(name: str, seconds: float) -> None:
        figures.setdefault(name, []).append(seconds)
        print(f"{name}: {seconds:.2f} s", file=sys.stderr, flush=True)

    for _ in range(args.cold_runs):
        lab.down(topology, log=quiet)
        shutil.rmtree(config.base_rootfs.parent, ignore_errors=True)
        record("cold lab up (7 hosts, base built)", timed(lambda: lab.up(topology, log=quiet)))
    for _ in range(args.runs):
        lab.down(topology, log=quiet)
        record("warm lab up (7 hosts)", timed(lambda: lab.up(topology, log=quiet)))
        record("hot lab up (already up)", timed(lambda: lab.up(topology, log=quiet)))
        record("first site deploy (7 fresh hosts)", timed(deploy))
        record("no-op site deploy (7 hosts)", timed(deploy))

    lines = [
        f"Lab and common deploy, {time.strftime('%Y-%m-%d', time.gmtime())}: "
        f"{args.runs} runs ({args.cold_runs} cold), 2 cores; seconds of wall time.",
        "",
        "| figure | median | min | max | target |",
        "|---|---|---|---|---|",
    ]
    for name, values in figures.items():
        target = TARGETS.get(name)
        verdict = f"<= {target:.0f}" if target else ""
        lines.append(
            f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} | "
            f"{max(values):.2f} | {verdict} |"
        )
    noop = statistics.median(figures["no-op site deploy (7 hosts)"])
    first = statistics.median(figures["first site deploy (7 fresh hosts)"])
    warm = statistics.median(figures["warm lab up (7 hosts)"])
    hot = statistics.median(figures["hot lab up (already up)"])
    lines += [
        "",
        f"Ratios: no-op / first deploy = {noop / first:.2f}; hot / warm lab up = {hot / warm:.2f}.",
    ]
    report = "\n".join(lines)
    print(report)
    if not args.no_write:
        text = DOC.read_text() if DOC.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
        head, _, rest = text.partition(START)
        _, _, tail = rest.partition(END)
        DOC.write_text(f"{head}{START}\n{report}\n{END}{tail}")


if __name__ == "__main__":
    main()

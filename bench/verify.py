"""Benchmark `seawall verify` on the 7-host lab against a bare SSH baseline.

Each round times, interleaved so both see the same machine: the baseline (one
SSH session running `true` on every host, all in parallel, the least any
per-host check can cost), then one whole `verify()`. It also times each part of
verify alone (the host sessions, Redis, Postgres, /health, gateway routes), to
show where the time goes. Figures are median, min and max over the rounds.
Results are printed and written into docs/benchmarks.md between the
`bench:verify` markers.

    .venv/bin/python bench/verify.py --runs 5

The lab must be up and deployed. It injects no fault, but holds the lab's data-
and app-fault locks while it runs, so no other session's fault lands in it.
"""

import argparse
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import load_note, publish, spread  # noqa: E402  (bench/report.py)

from seawall import inventory, ssh  # noqa: E402
from seawall.health_report import collect  # noqa: E402
from seawall.lab.faults import DATA_FAULT_LOCK, app_fault_lock, exclusive_lock  # noqa: E402
from seawall.netguard import require_lab_network  # noqa: E402
from seawall.postgres.status import postgres_status  # noqa: E402
from seawall.redis.topology import redis_status  # noqa: E402
from seawall.verify import _admin, _probe, cluster, verify  # noqa: E402

INVENTORY = ROOT / "inventories" / "lab.py"
# The acceptance target for one verify of the 7-host lab, in seconds.
TARGET_S = 10.0


def timed(action: Callable[[], object]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def on_every_host(topology: inventory.Topology, task: Callable[[inventory.Host], object]) -> None:
    with ThreadPoolExecutor(max_workers=len(topology.hosts)) as pool:
        list(pool.map(task, topology.hosts))


def sessions(topology: inventory.Topology) -> None:
    """Every host's probe session and admin login, all at once, as verify() runs them."""
    with ThreadPoolExecutor(max_workers=2 * len(topology.hosts)) as pool:
        probes = [pool.submit(_probe, topology, h) for h in topology.hosts]
        admins = [pool.submit(_admin, topology, h) for h in topology.hosts]
        for probe, admin in zip(probes, admins, strict=True):
            probe.result(), admin.result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    os.chdir(ROOT)
    topology = inventory.load(INVENTORY)
    require_lab_network(topology)
    hosts = len(topology.hosts)
    load_before = os.getloadavg()[0]

    def bare() -> None:
        on_every_host(topology, lambda h: ssh.run(topology, h.name, "true", check=True))

    parts: dict[str, Callable[[], object]] = {
        "host sessions (probe and admin login, 14 sessions in parallel)": lambda: sessions(
            topology
        ),
        "Redis + Sentinels (redis_status)": lambda: redis_status(topology),
        "Patroni + etcd (postgres_status)": lambda: postgres_status(topology),
        "every service's /health (collect)": lambda: collect(topology),
        "gateway routes": lambda: cluster.gateway_findings(topology),
    }
    baseline: list[float] = []
    whole: list[float] = []
    alone: dict[str, list[float]] = {name: [] for name in parts}
    not_ok: list[str] = []
    with exclusive_lock(DATA_FAULT_LOCK, timeout=600), app_fault_lock(600):
        for run in range(args.runs):
            baseline.append(timed(bare))
            started = time.monotonic()
            report = verify(topology)
            whole.append(time.monotonic() - started)
            if not report.ok:
                failed = ", ".join(f"{host} {check}" for host, check in report.failures())
                not_ok.append(f"run {run + 1}: {failed}")
            for name, part in parts.items():
                alone[name].append(timed(part))
            print(
                f"run {run + 1}: bare {baseline[-1]:.2f} s, verify {whole[-1]:.2f} s "
                f"({len(report.rows())} checks, ok={report.ok})",
                file=sys.stderr,
            )
    checks = len(report.rows())
    median = sorted(whole)[len(whole) // 2]
    ratio = median / sorted(baseline)[len(baseline) // 2]
    lines = [
        "## `seawall verify` on the 7-host lab",
        "",
        f"`bench/verify.py --runs {args.runs}`: {checks} checks on {hosts} hosts (every role's",
        "units, timers and listeners in one SSH session per host plus the admin login; Redis,",
        "Sentinel, Patroni, etcd, every service's /health and every gateway route at the same",
        "time). Baseline: one SSH session running `true` on every host, in parallel, in the",
        "same round.",
        "",
        "| what | median s | min s | max s |",
        "|---|---|---|---|",
        f"| bare: one `ssh true` per host, parallel | {spread(baseline)} |",
        f"| **`verify()`, whole** | {spread(whole)} |",
        *(f"| alone: {name} | {spread(values)} |" for name, values in alone.items()),
        "",
        f"Median verify / median bare baseline: {ratio:.1f}x. Target: under {TARGET_S:.0f} s; "
        f"median {median:.2f} s, max {max(whole):.2f} s: "
        + ("met." if max(whole) < TARGET_S else "NOT met."),
    ]
    if not_ok:
        lines += ["", "Runs whose report was not ok: " + "; ".join(not_ok)]
    lines += load_note(load_before)
    publish("verify", lines, write=not args.no_write)


if __name__ == "__main__":
    main()

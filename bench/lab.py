"""Benchmark the lab and the common deploy: cold/warm/hot `lab up`, first and no-op deploy.

Each figure is the median (with min and max) of several runs in one session, so
ratios between them hold on a noisy machine. Results are printed and written
into docs/benchmarks.md between the `bench:lab` markers.

    .venv/bin/python bench/lab.py --runs 3 --cold-runs 1

It runs on a lab of its own, derived from inventories/lab.py (same hosts and
roles, another bridge, subnet, state directory and container prefix), so the
lab you work on is left alone. It creates and destroys that second lab.
"""

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import publish, run_deploy  # noqa: E402  (bench/report.py)

from seawall import inventory, lab  # noqa: E402
from seawall.lab.config import lab_config  # noqa: E402

INVENTORY = ROOT / "inventories" / "lab.py"
# The benchmark lab: what differs from the lab it is derived from.
BENCH_LAB = {
    "lab_bridge": "swbench0",
    "lab_state_dir": "/var/lib/seawall/bench",
    "lab_container_prefix": "seawallbench-",
}
BENCH_SUBNET = "10.78.0"
# Acceptance targets from the foundation issue, in seconds.
TARGETS = {"warm lab up (7 hosts)": 30.0, "no-op common deploy (7 hosts)": 15.0}


def quiet(_: str) -> None:
    pass


def timed(action: Callable[[], object]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def derive_inventory(folder: Path) -> Path:
    """Write the benchmark lab's inventory: the lab's hosts and groups on another subnet."""
    source = inventory.load(INVENTORY)
    readdress = {h.name: f"{BENCH_SUBNET}.{h.address.rsplit('.', 1)[1]}" for h in source}
    hosts = [
        (h.name, {"ssh_hostname": readdress[h.name], "private_address": readdress[h.name]})
        for h in source
    ]
    groups = {
        role: [h.name for h in source.group(role)] for role in {g for h in source for g in h.roles}
    }
    (folder / "group_data").mkdir(parents=True, exist_ok=True)
    (folder / "lab.py").write_text(
        f"all = {hosts!r}\n" + "".join(f"{role} = {names!r}\n" for role, names in groups.items())
    )
    lab_data = {key: value for key, value in source.hosts[0].data.items() if key.startswith("lab_")}
    lab_data.update(BENCH_LAB, lab_bridge_address=f"{BENCH_SUBNET}.1")
    state = BENCH_LAB["lab_state_dir"]
    lab_data.update(
        ssh_user="root",
        ssh_key=f"{state}/id_ed25519",
        ssh_known_hosts_file=f"{state}/known_hosts",
        ssh_strict_host_key_checking="yes",
        admin_ssh_public_key_file=f"{state}/id_ed25519.pub",
        secrets_file=f"{state}/secrets",
        apt_proxy=f"http://{BENCH_SUBNET}.1:{lab_data['lab_apt_proxy_port']}",
    )
    (folder / "group_data" / "lab.py").write_text(
        "".join(f"{key} = {value!r}\n" for key, value in lab_data.items())
    )
    return folder / "lab.py"


def deploy(inventory_file: Path) -> None:
    run_deploy("deploys/common.py", inventory_file=inventory_file, timeout=1800)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cold-runs", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    inventory_file = derive_inventory(Path(tempfile.mkdtemp(prefix="seawall-bench-")))
    topology = inventory.load(inventory_file)
    config = lab_config(topology)
    figures: dict[str, list[float]] = {}

    def record(name: str, seconds: float) -> None:
        figures.setdefault(name, []).append(seconds)
        print(f"{name}: {seconds:.2f} s", file=sys.stderr, flush=True)

    try:
        for _ in range(args.cold_runs):
            lab.down(topology, log=quiet)
            shutil.rmtree(config.base_rootfs.parent, ignore_errors=True)
            record("cold lab up (7 hosts, base built)", timed(lambda: lab.up(topology, log=quiet)))
        for _ in range(args.runs):
            lab.down(topology, log=quiet)
            record("warm lab up (7 hosts)", timed(lambda: lab.up(topology, log=quiet)))
            record("hot lab up (already up)", timed(lambda: lab.up(topology, log=quiet)))
            record("first common deploy (7 fresh hosts)", timed(lambda: deploy(inventory_file)))
            record("no-op common deploy (7 hosts)", timed(lambda: deploy(inventory_file)))
    finally:
        # The benchmark's lab goes away whatever happened; its base stays cached.
        lab.down(topology, log=quiet)

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
    noop = statistics.median(figures["no-op common deploy (7 hosts)"])
    first = statistics.median(figures["first common deploy (7 fresh hosts)"])
    warm = statistics.median(figures["warm lab up (7 hosts)"])
    hot = statistics.median(figures["hot lab up (already up)"])
    lines += [
        "",
        f"Ratios: no-op / first deploy = {noop / first:.2f}; hot / warm lab up = {hot / warm:.2f}.",
    ]
    publish("lab", lines, write=not args.no_write)


if __name__ == "__main__":
    main()

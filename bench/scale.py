"""Benchmark how the no-op site redeploy and `seawall drift` grow with the lab's hosts.

Issue 13, item 5: 3x the hosts in <= 1.5x the time. At each size (``--sizes``,
default 7,14,21) the lab inventory is copied with app hosts added (app-3, app-4...,
each a copy of the last app host's inventory data at the next free address of the
lab's network after the lab's own) into a temporary tree outside the checkout:
``inventories/lab.py`` written there, its ``group_data``, ``deploys/`` and
``config.py`` linked to the checkout's (pyinfra runs in that tree, so the ops
deploy copies the inventory under the same relative path). The added hosts are
brought up by ``seawall.lab.lifecycle.up`` with that inventory (what
``seawall lab up -i INVENTORY`` runs), the site is deployed once to every host
(untimed: the new hosts get everything, the others their new peers), then each
of ``--rounds`` rounds times a no-op site redeploy (must change nothing) and a
``seawall drift --json`` (must find no drift), alternating their order. The
table and the ratios to the smallest size go to stdout and docs/benchmarks.md
(`bench:scale` markers).

What it does to the lab: the 7 hosts stay up and keep serving; the gateway's
upstreams, every host's firewall, pg_hba, Prometheus' targets and ops-1's copy
of the inventory and known_hosts follow the inventory's groups, so they take in
the added hosts while it runs. At the end (also after a failure or Ctrl-C) it
removes the containers of the hosts it added, by their names, rewrites the
lab's known_hosts for its own hosts, and redeploys the site with the lab
inventory (that puts the gateway's upstream list and the firewall, and the rest
above, back to the 7 hosts), then checks with `seawall drift` that the lab has
no drift. It holds the lab's data- and app-fault locks throughout, as
bench/drift.py does; no test, drill or other deploy may run meanwhile.

    .venv/bin/python bench/scale.py [--sizes 7,14,21] [--rounds 2] [--pin] [--no-write]

``--pin`` separates seawall's cost from this machine's: the controller (this
process and its pyinfra children) gets CPU 0 to itself and every lab host
CPU 1 (their containers' cpusets), as a controller with a core of its own would,
however many hosts share the other. Both go back to every CPU at the end. Its
figures go to their own section (`bench:scale-pinned` markers).

Every wait is bounded: the locks (10 min), each host's boot (``--boot-timeout``),
each deploy (30 min) and each drift run (10 min). It refuses to start when the
lab's bridge is absent, or a size is smaller than the lab.
"""

import argparse
import ipaddress
import os
import re
import resource
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterable, Mapping
from contextlib import chdir
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from drift import drift_run  # noqa: E402
from report import LAB_INVENTORY, load_note, publish, spread, timed_site_deploy  # noqa: E402

from seawall import inventory  # noqa: E402
from seawall.errors import SeawallError  # noqa: E402
from seawall.inventory import Topology  # noqa: E402
from seawall.lab import hosts, lifecycle  # noqa: E402
from seawall.lab.config import lab_config  # noqa: E402
from seawall.lab.faults import DATA_FAULT_LOCK, app_fault_lock, exclusive_lock  # noqa: E402
from seawall.local import run  # noqa: E402
from seawall.netguard import lab_network, require_lab_bridge  # noqa: E402

# The role whose hosts are added: they hold no cluster membership, so adding one
# changes no quorum, and they are the hosts a busier platform would have more of.
ROLE = "app"
# Issue 13's target: this many times the hosts in at most TARGET_RATIO times the time.
HOSTS_FACTOR = 3
TARGET_RATIO = 1.5
DEFAULT_SIZES = "7,14,21"
# What of the checkout the tree links to: pyinfra runs there and reads both.
LINKED = ("deploys", "config.py")
# Bounds on the waits for another session's locks and for the added hosts' boot.
LOCK_WAIT_S = 600
BOOT_WAIT_S = 300
# `lxc.net.0.ipv4.address = 10.77.0.21/24 ...` in a container's config.
_LXC_ADDRESS = re.compile(r"^lxc\.net\.\d+\.ipv4\.address\s*=\s*([0-9.]+)/", re.MULTILINE)


def parse_sizes(text: str, lab_size: int) -> list[int]:
    """Return the sizes in ``text`` ("7,14,21"), ascending, each at least the lab's.

    Raises:
        SeawallError: a size is not a number or is smaller than the lab.
    """
    try:
        sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise SeawallError(f"--sizes {text!r}: give host counts, e.g. {DEFAULT_SIZES}") from None
    if not sizes:
        raise SeawallError(f"--sizes {text!r}: give host counts, e.g. {DEFAULT_SIZES}")
    small = [size for size in sizes if size < lab_size]
    if small:
        raise SeawallError(
            f"--sizes: {', '.join(map(str, small))} is smaller than the lab's {lab_size} "
            "hosts: the benchmark only adds hosts"
        )
    return sizes


def lxc_claims(lxc_path: Path = hosts.LXC_PATH) -> dict[str, str]:
    """Return {address: container} for every LXC container on this machine that sets one."""
    claims: dict[str, str] = {}
    if not lxc_path.is_dir():
        return claims
    for conf in sorted(lxc_path.glob("*/config")):
        try:
            text = conf.read_text(errors="replace")
        except OSError:
            continue
        for address in _LXC_ADDRESS.findall(text):
            claims[address] = conf.parent.name
    return claims


def file_data(topology: Topology, name: str) -> dict[str, Any]:
    """The data the inventory file itself gives host ``name`` (not group data, not defaults)."""
    host = topology.host(name)
    own = str(topology.path)
    return {key: host.data[key] for key, origin in host.origins.items() if origin == own}


def _template(lab: Topology) -> str:
    members = lab.listed.get(ROLE) or ()
    if not members:
        raise SeawallError(f"{lab.path}: no {ROLE} host to copy")
    return members[-1]


def _mentions(value: Any, address: str) -> bool:
    """True when ``address`` appears in ``value`` (nested too) as an address of its own."""
    if isinstance(value, str):
        return re.search(rf"(?<![\d.]){re.escape(address)}(?![\d])", value) is not None
    if isinstance(value, Mapping):
        return any(_mentions(item, address) for pair in value.items() for item in pair)
    if isinstance(value, list | tuple | set | frozenset):
        return any(_mentions(item, address) for item in value)
    return False


def extra_hosts(
    lab: Topology, count: int, claims: Mapping[str, str] | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """Return ``count`` new app hosts as (name, inventory data), copies of the lab's last one.

    Names go on from the app hosts' numbering (app-3 after app-2); each address is
    the next of the lab network after every lab address (hosts and bridge) that no
    other LXC container claims (``claims``: {address: container}; a container of
    the new host's own name, left by an interrupted run, does not count).

    Raises:
        SeawallError: the lab network has too few free addresses, or the copied
            host's data holds its address other than as a whole value.
    """
    claims = claims or {}
    template = _template(lab)
    template_address = lab.host(template).address
    data = file_data(lab, template)
    numbered = re.fullmatch(r"(.*?)(\d+)", template)
    if numbered is None:
        raise SeawallError(f"{lab.path}: {ROLE} host {template!r} has no number to go on from")
    prefix = numbered[1]
    taken = {host.name for host in lab}
    numbers = [int(m[1]) for n in taken if (m := re.fullmatch(re.escape(prefix) + r"(\d+)", n))]
    number = max(numbers) + 1
    network = lab_network(lab)
    bridge = ipaddress.IPv4Address(str(lab.value("lab_bridge_address")))
    last = max([bridge, *(ipaddress.IPv4Address(host.address) for host in lab)])
    candidates = (address for address in network.hosts() if address > last)
    container_prefix = str(lab.value("lab_container_prefix"))
    extras = []
    for _ in range(count):
        while f"{prefix}{number}" in taken:
            number += 1
        name = f"{prefix}{number}"
        number += 1
        for candidate in candidates:
            owner = claims.get(str(candidate))
            if owner is None or owner == container_prefix + name:
                break
        else:
            raise SeawallError(
                f"the lab network {network} has no free address after {last} for {name} "
                f"({count} hosts wanted)"
            )
        copied = {
            key: str(candidate) if value == template_address else value
            for key, value in data.items()
        }
        if _mentions(copied, template_address):
            raise SeawallError(
                f"{lab.path}: {template}'s data holds its address {template_address} inside "
                "a value: cannot copy it to a new host"
            )
        extras.append((name, copied))
    return extras


def inventory_text(lab: Topology, extras: Iterable[tuple[str, dict[str, Any]]]) -> str:
    """The lab inventory file with ``extras`` added to `all` and to the copied host's groups."""
    extras = list(extras)
    if "all" not in lab.listed:
        raise SeawallError(f"{lab.path}: it defines no `all` list to copy")
    template = _template(lab)
    lines = [
        f'"""Written by bench/scale.py: {lab.path} plus {len(extras)} {ROLE} hosts. Temporary."""',
        "",
        "from seawall.inventory import check_before_connect",
        "",
        "check_before_connect(__file__)",
        "",
        "all = [",
    ]
    lines += [f"    ({name!r}, {file_data(lab, name)!r})," for name in lab.listed["all"]]
    lines += [f"    ({name!r}, {data!r})," for name, data in extras]
    lines += ["]", ""]
    for group, members in lab.listed.items():
        if group == "all":
            continue
        added = [name for name, _ in extras] if template in members else []
        lines.append(f"{group} = {[*members, *added]!r}")
    return "\n".join(lines) + "\n"


def write_tree(tree: Path, lab: Topology, extras: list[tuple[str, dict[str, Any]]]) -> Path:
    """Write the scaled inventory at ``tree``/inventories/lab.py, linking the rest; return it.

    The file keeps the lab inventory's name: pyinfra puts its hosts in the group
    named after it (`lab`), whose group data makes them lab hosts.
    """
    path = tree / LAB_INVENTORY
    path.parent.mkdir(parents=True, exist_ok=True)
    links = {tree / name: ROOT / name for name in LINKED}
    links[path.parent / "group_data"] = lab.path.resolve().parent / "group_data"
    for link, target in links.items():
        if not link.is_symlink():
            link.symlink_to(target)
    path.write_text(inventory_text(lab, extras))
    return path


def load_tree(tree: Path) -> Topology:
    """Load the tree's inventory where pyinfra will run (its ./group_data rule)."""
    with chdir(tree):
        return inventory.load(tree / LAB_INVENTORY)


@dataclass
class SizeResult:
    hosts: int
    app_hosts: int
    op_hosts: int = 0
    deploy_s: list[float] = field(default_factory=list)
    drift_s: list[float] = field(default_factory=list)
    # The controller's CPU (user + system) of each timed run, and the machine's load
    # average as it ended: the 2 cores also run every lab host's services.
    deploy_cpu_s: list[float] = field(default_factory=list)
    drift_cpu_s: list[float] = field(default_factory=list)
    load: list[float] = field(default_factory=list)
    # Why this size has no figures: what stopped the run there (the sizes before it keep theirs).
    failure: str | None = None


def ratios(medians: Mapping[int, float]) -> dict[int, float]:
    """Return {size: median / the smallest size's median} for every larger size."""
    base = min(medians)
    return {size: medians[size] / medians[base] for size in sorted(medians) if size != base}


def verdict(ratio: float) -> str:
    return "met" if ratio <= TARGET_RATIO else "NOT met"


def report_lines(
    results: Mapping[int, SizeResult], rounds: int, sizes_arg: str, pinned: bool = False
) -> list[str]:
    """The report: one row per size, then the ratios to the smallest size against the target."""
    sizes = sorted(results)
    lines = [
        "## No-op site redeploy and `seawall drift` as the lab grows"
        + (", the controller on a core of its own" if pinned else ""),
        "",
        f"`bench/scale.py --sizes {sizes_arg} --rounds {rounds}{' --pin' if pinned else ''}`: "
        f"the lab inventory plus "
        f"{ROLE} hosts on the lab's network; at each size one untimed site deploy, then per "
        "round a no-op site redeploy (0 changed) and `seawall drift --json` (no drift, exit 0) "
        f"in alternating order. Target (issue 13): {HOSTS_FACTOR}x the hosts in "
        f"<= {TARGET_RATIO}x the time."
        + (
            " Pinned: the controller (pyinfra) alone on CPU 0, every lab host on CPU 1."
            if pinned
            else ""
        ),
        "",
        "| hosts | app hosts | operation-hosts | redeploy median s | min s | max s "
        "| drift median s | min s | max s | controller CPU s, redeploy / drift (median) "
        "| load average (1 min) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    measured = [
        s
        for s in sizes
        if results[s].failure is None and results[s].deploy_s and results[s].drift_s
    ]
    for size in sizes:
        r = results[size]
        if size not in measured:
            why = " ".join((r.failure or "stopped before its timed runs").split())[:300]
            lines.append(f"| {r.hosts} | {r.app_hosts} | - | not measured: {why} |")
            continue
        cpu = (
            f"{statistics.median(r.deploy_cpu_s):.1f} / {statistics.median(r.drift_cpu_s):.1f}"
            if r.deploy_cpu_s and r.drift_cpu_s
            else "-"
        )
        load = f"{min(r.load):.1f}-{max(r.load):.1f}" if r.load else "-"
        lines.append(
            f"| {r.hosts} | {r.app_hosts} | {r.op_hosts} | {spread(r.deploy_s)} "
            f"| {spread(r.drift_s)} | {cpu} | {load} |"
        )
    if not measured:
        return lines
    base = measured[0]
    deploy = ratios({s: statistics.median(results[s].deploy_s) for s in measured})
    drift = ratios({s: statistics.median(results[s].drift_s) for s in measured})
    if deploy:
        lines += [
            "",
            f"| time(hosts) / time({base}) | no-op redeploy | drift | target "
            f"<= {TARGET_RATIO} (redeploy / drift) |",
            "|---|---:|---:|---|",
        ]
        for size in deploy:
            lines.append(
                f"| time({size}) / time({base}) | {deploy[size]:.2f} | {drift[size]:.2f} "
                f"| {verdict(deploy[size])} / {verdict(drift[size])} |"
            )
    return lines


def pin_hosts(topology: Topology, cpus: str) -> None:
    """Put every lab host of ``topology`` on ``cpus`` (its container's cpuset), by name."""
    for host in lab_config(topology).hosts:
        run(["lxc-cgroup", "-n", host.container, "cpuset.cpus", cpus])


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(tree: Path, result: SizeResult, rounds: int) -> None:
    """Deploy the tree's inventory once (untimed), then time ``rounds`` no-op redeploys and
    drift checks into ``result``. Stops when a redeploy changes anything or drift is found."""
    timed_site_deploy(tree)
    for round_ in range(rounds):
        order = ("deploy", "drift") if round_ % 2 == 0 else ("drift", "deploy")
        for what in order:
            before = _children_cpu()
            if what == "deploy":
                seconds, result.op_hosts, changed = timed_site_deploy(tree)
                result.deploy_cpu_s.append(_children_cpu() - before)
                if changed:
                    raise SystemExit(
                        f"{result.hosts} hosts: the no-op redeploy changed {changed} "
                        "operation-hosts"
                    )
                result.deploy_s.append(seconds)
            else:
                seconds, report = drift_run(tree)
                if len(report["checked"]) != result.hosts:
                    raise SystemExit(
                        f"{result.hosts} hosts: drift checked {len(report['checked'])} hosts"
                    )
                result.drift_s.append(seconds)
                result.drift_cpu_s.append(_children_cpu() - before)
            result.load.append(os.getloadavg()[0])
        print(
            f"{result.hosts} hosts, round {round_ + 1}: no-op redeploy "
            f"{result.deploy_s[-1]:.1f} s, drift {result.drift_s[-1]:.1f} s",
            file=sys.stderr,
            flush=True,
        )


def restore(
    lab: Topology, scaled: Topology | None, added: list[str], tree: Path, touched: bool
) -> None:
    """Leave the 7-host lab as it was: remove the added hosts, redeploy, check for drift.

    ``touched``: hosts were added or the tree's inventory deployed; else only the
    tree goes. Every step is tried even when one before it failed.

    Raises:
        SystemExit: a step failed (each named).
    """
    failures: list[str] = []

    def step(what: str, action: Any) -> None:
        print(f"restore: {what}", file=sys.stderr, flush=True)
        try:
            action()
        except (Exception, SystemExit) as error:
            failures.append(f"{what}: {error}")

    if not touched:
        shutil.rmtree(tree, ignore_errors=True)
        return
    config = lab_config(lab)
    if added and scaled is not None:
        grown = scaled
        step(
            f"remove {', '.join(added)}",
            lambda: lifecycle.remove(grown, added, log=print, lock_timeout=LOCK_WAIT_S),
        )
        for name in added:
            shutil.rmtree(config.state_dir / "hostkeys" / name, ignore_errors=True)
    step("write the lab's known_hosts", lambda: hosts.write_known_hosts(config))
    # The gateway's upstreams and the firewall (and pg_hba, Prometheus' targets,
    # ops-1's inventory copy) follow the inventory: back to the lab's own hosts.
    step(f"redeploy the site with {LAB_INVENTORY}", lambda: timed_site_deploy(ROOT))
    step("check the lab for drift", lambda: drift_run(ROOT))
    shutil.rmtree(tree, ignore_errors=True)
    if failures:
        raise SystemExit("restoring the lab failed:\n" + "\n".join(f"  {f}" for f in failures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help=f"host counts ({DEFAULT_SIZES})")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds per size (2)")
    parser.add_argument(
        "--boot-timeout", type=float, default=BOOT_WAIT_S, help="seconds for added hosts to boot"
    )
    parser.add_argument(
        "--pin", action="store_true", help="the controller on CPU 0, every lab host on CPU 1"
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    every_cpu = os.sched_getaffinity(0)
    if args.pin and not {0, 1} <= every_cpu:
        parser.error("--pin needs CPUs 0 and 1")

    os.chdir(ROOT)
    lab = inventory.load(ROOT / LAB_INVENTORY)
    try:
        sizes = parse_sizes(args.sizes, len(lab.hosts))
    except SeawallError as error:
        parser.error(str(error))
    require_lab_bridge(lab)
    load_before = os.getloadavg()[0]
    results: dict[int, SizeResult] = {}
    added: list[str] = []
    scaled: Topology | None = None
    # Resolved: the ops deploy finds the inventory under pyinfra's working directory.
    tree = Path(tempfile.mkdtemp(prefix="seawall-scale-")).resolve()
    with exclusive_lock(DATA_FAULT_LOCK, timeout=LOCK_WAIT_S), app_fault_lock(LOCK_WAIT_S):
        try:
            claims = lxc_claims()
            for size in sizes:
                extras = extra_hosts(lab, size - len(lab.hosts), claims)
                # A tree per size: pyinfra keeps the code of a file it ran by its path,
                # so a rewritten inventory at the same path would load the old hosts.
                sized = tree / str(size)
                write_tree(sized, lab, extras)
                scaled = load_tree(sized)
                problems = inventory.validate(scaled, check_secrets=False)
                if problems:
                    raise SystemExit("\n".join(f"{sized}: {problem}" for problem in problems))
                new = [name for name, _ in extras if name not in added]
                if new:
                    print(f"{size} hosts: bringing up {', '.join(new)}", file=sys.stderr)
                    # Recorded first: a host half made by a failed `up` is removed too.
                    added += new
                    report = lifecycle.up(
                        scaled, log=print, timeout=args.boot_timeout, lock_timeout=LOCK_WAIT_S
                    )
                    if not report.ok:
                        raise SystemExit(report.to_text())
                results[size] = SizeResult(
                    hosts=size, app_hosts=len(scaled.group(ROLE)), op_hosts=0
                )
                if args.pin:
                    pin_hosts(scaled, "1")
                    os.sched_setaffinity(0, {0})  # pyinfra and drift inherit it
                measure(sized, results[size], args.rounds)
        except BaseException as error:
            # Said now: the restore's own failure would otherwise be all that shows.
            print(f"stopped: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
            if not isinstance(error, SystemExit) or not results:
                raise
            # A size the machine could not run: the sizes before it are still reported.
            stopped_at = max(results)
            results[stopped_at].failure = " ".join(str(error).splitlines()[:4])
        finally:
            if args.pin:
                os.sched_setaffinity(0, every_cpu)
                cpus = ",".join(map(str, sorted(every_cpu)))
                try:
                    pin_hosts(lab, cpus)
                except SeawallError as error:
                    print(f"restore: the lab hosts' CPUs: {error}", file=sys.stderr)
            restore(lab, scaled, added, tree, touched=bool(added or results))

    lines = report_lines(results, args.rounds, args.sizes, args.pin) + load_note(load_before)
    publish("scale-pinned" if args.pin else "scale", lines, write=not args.no_write)
    if any(r.failure for r in results.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()

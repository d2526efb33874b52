"""Probe who reaches which port in the lab: every port x every source, expected vs measured.

Every port a firewall rule can open (each `*_port` key, sshd, every service
port) is probed on every lab host from every other lab host (over SSH, with
bash's /dev/tcp under `timeout`) and from the controller (the admin source,
the lab's bridge address). A probe is:

- open: the connection was accepted;
- refused: a RST came back (the firewall let it through, nothing listens);
- filtered: no answer within the timeout (the firewall dropped it).

Expected comes from the inventory's rules as the deploy renders them
(seawall.components.firewall.host_rules): open where the source is allowed,
filtered everywhere else. A cell passes when expected open is measured open
and expected closed is measured filtered; anything else (refused included) is
a difference. The table goes to stdout and into docs/security.md between the
`bench:reachability` markers; the exit code is 1 if any cell differs.

    .venv/bin/python bench/reachability.py

The lab must be up and deployed. It injects no fault.
"""

import argparse
import ipaddress
import shlex
import socket
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import write_section  # noqa: E402  (bench/report.py)

from seawall import defaults, inventory, ssh  # noqa: E402
from seawall.components import firewall  # noqa: E402
from seawall.inventory import Host, Topology  # noqa: E402
from seawall.netguard import require_lab_network  # noqa: E402

INVENTORY = ROOT / "inventories" / "lab.py"
DOC = ROOT / "docs" / "security.md"
CONTROLLER = "controller"
# A dropped SYN is retried for far longer: 2 s of silence on a LAN means dropped.
TIMEOUT_S = 2
# Probes in flight at once on one host.
PARALLEL = 64
OPEN, REFUSED, FILTERED = "open", "refused", "filtered"


@dataclass(frozen=True)
class Target:
    """One port of one host."""

    host: str
    key: str
    port: int
    # Whether the host's roles serve it (a rule can only open it there).
    served: bool


def targets(topology: Topology) -> list[Target]:
    """Every port of the stack on every host, once (a port two keys share: the served one)."""
    out: list[Target] = []
    for host in topology:
        by_port: dict[int, Target] = {}
        for key in defaults.FIREWALL_SERVED_BY:
            served = firewall.serves(key, host.groups)
            for port in firewall.ports(key, host.data):
                if port not in by_port or (served and not by_port[port].served):
                    by_port[port] = Target(host.name, key, port, served)
        out += sorted(by_port.values(), key=lambda t: (not t.served, t.port))
    return out


def expected_open(topology: Topology, target: Target, source: str) -> bool:
    """Whether the rules the deploy renders for the target host let ``source`` in."""
    host = topology.host(target.host)
    address = ipaddress.ip_address(source)
    for rule in firewall.host_rules(host.groups, host.data, list(topology)):
        if target.port not in rule.ports:
            continue
        networks = [ipaddress.ip_network(n) for n in (*rule.v4, *rule.v6)]
        if rule.any or any(address in network for network in networks):
            return True
    return False


def probe_from_host(topology: Topology, source: str, wanted: Iterable[Target]) -> dict:
    """Probe ``wanted`` from lab host ``source`` in one SSH command; {(host, port): state}."""
    by_address = {topology.host(t.host).address: t.host for t in wanted}
    lines = "\n".join(f"{topology.host(t.host).address} {t.port}" for t in wanted)
    # Exit 0: connected; 124: timed out (dropped); anything else: refused.
    script = f"printf %s {shlex.quote(lines)} | xargs -P {PARALLEL} -n 2 sh -c " + shlex.quote(
        f'timeout {TIMEOUT_S} bash -c "</dev/tcp/$0/$1" 2>/dev/null; echo "$0 $1 $?"'
    )
    result = ssh.run(topology, source, script, timeout=600, check=True)
    states = {}
    for line in result.stdout.splitlines():
        address, port, code = line.split()
        state = OPEN if code == "0" else FILTERED if code == "124" else REFUSED
        states[(by_address[address], int(port))] = state
    return states


def _connect(address: str, port: int) -> str:
    try:
        with socket.create_connection((address, port), timeout=TIMEOUT_S):
            return OPEN
    except ConnectionRefusedError:
        return REFUSED
    except OSError:
        return FILTERED


def probe_from_controller(topology: Topology, wanted: Iterable[Target]) -> dict:
    wanted = list(wanted)
    with ThreadPoolExecutor(PARALLEL) as pool:
        states = pool.map(lambda t: _connect(topology.host(t.host).address, t.port), wanted)
        return {(t.host, t.port): state for t, state in zip(wanted, states, strict=True)}


def roles(host: Host) -> str:
    return ", ".join(host.roles) or "-"


def cell(expected: bool, state: str) -> tuple[str, bool]:
    """Return (the table cell, whether it matches)."""
    if expected and state == OPEN:
        return "✓", True
    if not expected and state == FILTERED:
        return "·", True
    return f"**expected {'open' if expected else 'filtered'}, measured {state}**", False


def measure(topology: Topology) -> tuple[str, int]:
    """Probe everything; return (the report, the number of cells that differ)."""
    rows = targets(topology)
    sources = {host.name: host.address for host in topology}
    sources[CONTROLLER] = str(topology.value("lab_bridge_address"))
    states = {
        name: probe_from_host(topology, name, [t for t in rows if t.host != name])
        for name in sources
        if name != CONTROLLER
    }
    states[CONTROLLER] = probe_from_controller(topology, rows)
    columns = list(sources)
    header = ["host (roles)", "port key", "port", *columns]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    differ = 0
    closed_probes = 0
    closed_differ: list[str] = []
    for target in rows:
        cells = []
        for name in columns:
            if name == target.host:
                cells.append("self")
                continue
            want = expected_open(topology, target, sources[name])
            text, ok = cell(want, states[name][(target.host, target.port)])
            differ += not ok
            if not target.served:
                closed_probes += 1
                if not ok:
                    closed_differ.append(f"{target.host}:{target.port} ({target.key}) from {name}")
            cells.append(text)
        if target.served:
            host = topology.host(target.host)
            lines.append(
                f"| {host.name} ({roles(host)}) | {target.key} | {target.port} | "
                + " | ".join(cells)
                + " |"
            )
    legend = (
        "✓ expected and measured open; · expected and measured filtered (dropped); "
        "self: not probed (a host reaches itself over loopback)."
    )
    report = [
        f"Each port a host serves, probed from every other lab host and from the "
        f"controller (`{CONTROLLER}`, the admin source: the lab's bridge address), with a "
        f"{TIMEOUT_S} s timeout. {legend}",
        "",
        *lines,
        "",
        f"Ports of the stack a host does not serve: {closed_probes} probes, "
        + (
            "every one filtered, as expected."
            if not closed_differ
            else "differences: " + "; ".join(closed_differ)
        ),
        "",
        f"Cells that differ: {differ}.",
    ]
    return "\n".join(report), differ


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    topology = inventory.check(INVENTORY, check_secrets=False)
    require_lab_network(topology)
    report, differ = measure(topology)
    print(report)
    if not args.no_write:
        write_section("reachability", report, doc=DOC)
    raise SystemExit(1 if differ else 0)


if __name__ == "__main__":
    main()

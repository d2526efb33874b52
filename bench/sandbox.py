"""Score every unit seawall writes or drops into with `systemd-analyze security`, on every lab host.

The units come from the templates (seawall/templates/*/etc/systemd/system/):
a unit file there is one we write (`SERVICE.service` stands for every platform
service, `x@.service` is scored as an instance); a `<unit>.d/` directory is our
drop-in into a Debian daemon's unit. Each host is asked over SSH, once, which
of them it has (loaded, or installed as a unit file), and each is scored there:

    systemd-analyze security --no-pager <unit>

A unit we write passes at 4.0 or below ("OK"); above, the table names the
settings that cost the most. Debian's daemons with our drop-ins are measured
only: the drop-ins set restart policy and limits, and hardening Debian's units
is not this deploy's business. The table goes to stdout and into
docs/security.md between the `bench:sandbox` markers; the exit code is 1 if a
unit we write scores above 4.0.

    .venv/bin/python bench/sandbox.py

The lab must be up and deployed. It changes nothing on the hosts.
"""

import argparse
import re
import shlex
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import write_section  # noqa: E402

from seawall import defaults, inventory, ssh  # noqa: E402
from seawall.components.templates import TEMPLATES  # noqa: E402
from seawall.inventory import Topology  # noqa: E402
from seawall.netguard import require_lab_network  # noqa: E402

INVENTORY = ROOT / "inventories" / "lab.py"
DOC = ROOT / "docs" / "security.md"
THRESHOLD = 4.0
# A template unit is scored through this instance when none is loaded.
INSTANCE = "sandbox-probe"
# Settings named per unit above the threshold: the costliest first.
REASONS = 5
MARK = "@@unit "


@dataclass(frozen=True)
class Unit:
    """A unit name (or glob) and whether we write it (else: our drop-in into Debian's)."""

    pattern: str
    ours: bool


@dataclass(frozen=True)
class Score:
    unit: str
    host: str
    exposure: float
    ours: bool
    # The costliest settings ("Name= (description, weight)"), when above the threshold.
    reasons: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.exposure <= THRESHOLD


def units(templates: Path = TEMPLATES) -> list[Unit]:
    """Every service unit the templates write, or drop into, once."""
    prefix = defaults.SERVICES["services_unit_prefix"]
    found: dict[str, bool] = {}
    for path in sorted(templates.glob("*/etc/systemd/system/*")):
        name = path.name
        if name.endswith(".service.j2"):
            unit = name[: -len(".j2")]
            found[f"{prefix}*.service" if unit == "SERVICE.service" else unit] = True
        elif name.endswith(".service.d") and path.is_dir():
            found.setdefault(name[: -len(".d")], False)
    return [Unit(pattern, ours) for pattern, ours in found.items()]


def list_script(wanted: list[Unit]) -> str:
    """A shell command printing every wanted unit this host has: loaded, or a unit file."""
    patterns = " ".join(shlex.quote(u.pattern) for u in wanted)
    return (
        f"{{ systemctl list-units --all --plain --no-legend --type=service {patterns}; "
        f"systemctl list-unit-files --no-legend --type=service {patterns}; }}"
        " | awk '{print $1}' | sort -u"
    )


def to_score(listed: list[str], wanted: list[Unit]) -> list[str]:
    """The units to score from what a host listed: a template only through an instance."""
    names = [name for name in listed if owner(name, wanted) is not None]
    out = []
    for name in names:
        if name.endswith("@.service"):
            stem = name[: -len(".service")]
            if any(other.startswith(stem) and other != name for other in names):
                continue  # an instance of it is loaded and scored itself
            name = f"{stem}{INSTANCE}.service"
        out.append(name)
    return out


def score_script(names: list[str]) -> str:
    """A shell command scoring each unit, each report after a marker line."""
    return "; ".join(
        f"echo {shlex.quote(MARK + name)}; systemd-analyze security --no-pager "
        f"{shlex.quote(name)} 2>&1"
        for name in names
    )


def parse(output: str) -> dict[str, tuple[float, tuple[str, ...]]]:
    """{unit: (exposure, the costliest settings)} from ``host_script``'s output."""
    out: dict[str, tuple[float, tuple[str, ...]]] = {}
    for block in output.split(MARK)[1:]:
        unit, _, report = block.partition("\n")
        found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", report)
        if not found:
            continue
        costs = []
        for line in report.splitlines():
            fields = re.match(r"✗ (\S+)\s{2,}(.+?)\s{2,}([0-9.]+)$", line.strip())
            if fields:
                name, what, weight = fields.groups()
                costs.append((float(weight), f"{name} ({what}, {weight})"))
        costs.sort(key=lambda c: -c[0])
        out[unit.strip()] = (float(found.group(1)), tuple(c for _, c in costs[:REASONS]))
    return out


def owner(unit: str, wanted: list[Unit]) -> Unit | None:
    """The template entry ``unit`` comes from (a glob or an instance of a template)."""
    for entry in wanted:
        pattern = entry.pattern
        if "*" in pattern:
            head, _, tail = pattern.partition("*")
            if unit.startswith(head) and unit.endswith(tail):
                return entry
        elif pattern.endswith("@.service"):
            if unit.startswith(pattern[: -len(".service")]):
                return entry
        elif unit == pattern:
            return entry
    return None


def measure_host(topology: Topology, host: str, wanted: list[Unit]) -> list[Score]:
    listed = ssh.run(topology, host, list_script(wanted), timeout=60, check=True)
    names = to_score(listed.stdout.split(), wanted)
    if not names:
        return []
    result = ssh.run(topology, host, score_script(names), timeout=300, check=True)
    scores = []
    for unit, (exposure, costs) in sorted(parse(result.stdout).items()):
        entry = owner(unit, wanted)
        assert entry is not None, unit
        keep = costs if exposure > THRESHOLD else ()
        scores.append(Score(unit, host, exposure, entry.ours, keep))
    return scores


def verdict(score: Score) -> str:
    if not score.ours:
        return "Debian's unit + our drop-in: measured only"
    return "OK" if score.ok else f"**above {THRESHOLD}**"


def table(scores: list[Score]) -> str:
    lines = [
        "| unit | host | score | verdict | what costs the most (above 4.0) |",
        "|---|---|---|---|---|",
    ]
    for s in sorted(scores, key=lambda s: (not s.ours, s.unit, s.host)):
        reasons = "; ".join(s.reasons) or "-"
        lines.append(f"| {s.unit} | {s.host} | {s.exposure:.1f} | {verdict(s)} | {reasons} |")
    failing = [s for s in scores if s.ours and not s.ok]
    return "\n".join(
        [
            "`systemd-analyze security --no-pager <unit>` (systemd 252) on each lab host, "
            "for every unit seawall writes and every Debian unit it drops into. Lower is "
            f"tighter; a unit we write passes at {THRESHOLD} or below.",
            "",
            *lines,
            "",
            f"Units we write above {THRESHOLD}: {len(failing)}.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    topology = inventory.check(INVENTORY, check_secrets=False)
    # The lab's bridge first: nothing here may reach a host outside the lab.
    require_lab_network(topology)
    wanted = units()
    names = [host.name for host in topology]
    with ThreadPoolExecutor(len(names)) as pool:
        per_host = pool.map(lambda name: measure_host(topology, name, wanted), names)
        scores = [score for found in per_host for score in found]
    report = table(scores)
    print(report)
    if not args.no_write:
        write_section("sandbox", report, doc=DOC)
    raise SystemExit(1 if any(s.ours and not s.ok for s in scores) else 0)


if __name__ == "__main__":
    main()

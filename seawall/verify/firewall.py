"""The firewall's promises on a host: its boot unit, its live table, no rollback left armed.

The firewall deploy (``seawall/components/firewall.py``) runs on every host (no
setting turns it off), so every host gets these checks, from probes in its one
verify session:

- ``firewall unit``: the boot unit is enabled and its last run did not fail. It
  is a oneshot with ``RemainAfterExit``: ``active (exited)`` once it loaded the
  table at boot; ``inactive`` with result ``success`` when it has not run since
  this boot (the deploy enables it and loads the table itself, with its
  rollback), which holds too; ``failed`` is the host that booted without its table;
- ``firewall table``: table ``inet seawall`` is loaded, from the ruleset the
  deploy renders from inventory data (its comment, as ``FirewallState`` reads
  it), and holds exactly that ruleset's rules. The rendered ruleset travels in
  the probe and is loaded into a throwaway network namespace on the host, so
  the host's own nft prints both tables the same way: a rule added or deleted by
  hand shows, though the comment still matches;
- ``firewall boot file``: the file the unit loads at boot is that same ruleset
  (by its SHA-256), so the next boot puts back the table this check just passed;
- ``firewall rollback``: no rollback timer is armed (``FirewallState``). One is
  armed only between a deploy's load and its confirmation: outside a deploy, it
  is an unconfirmed load whose table is about to be replaced by the one saved
  before it.

This is the one deploy module verify loads: only it renders the ruleset (the
template, the rules from every host's data), and a second rendering could drift
from it.
"""

import difflib
import hashlib
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from seawall.components.firewall import RULESET, UNIT, ruleset
from seawall.facts.firewall import ROLLBACK_UNIT, TABLE, FirewallState, is_loaded
from seawall.inventory import Host, Topology
from seawall.operations.firewall import SAVED
from seawall.verify.probe import Probe, probe_of
from seawall.verify.report import Check
from seawall.verify.roles import parse_show

CHECKS = ("firewall unit", "firewall table", "firewall boot file", "firewall rollback")
# Differing rules named in a detail, each way; the rest are counted.
SHOWN = 3
_UNIT_PROPERTIES = (
    "Id",
    "LoadState",
    "ActiveState",
    "SubState",
    "UnitFileState",
    "Result",
    "ExecMainStatus",
)


@dataclass(frozen=True)
class Intended:
    """The ruleset the firewall deploy renders for a host, and the comment naming it."""

    content: str
    comment: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content.encode()).hexdigest()


def intended(topology: Topology, host: Host) -> Intended:
    """Return the ruleset the firewall deploy installs on ``host``, from inventory data."""
    content, comment = ruleset(host.name, host.groups, host.data, topology.hosts)
    return Intended(content, comment)


def probe_commands(topology: Topology, host: Host) -> dict[str, str]:
    """Return the shell command of each firewall probe run on ``host``."""
    want = intended(topology, host)
    listing = f"nft list table inet {TABLE}"
    return {
        # The fact's own command: table loaded, its comment, a pending rollback.
        "firewall_state": FirewallState().command(),
        "firewall_unit": "systemctl show "
        + " ".join(f"-p {p}" for p in _UNIT_PROPERTIES)
        + f" {shlex.quote(UNIT)}",
        "firewall_live": listing,
        # A network namespace of its own: the host's tables are not touched, and
        # it goes with the command.
        "firewall_intended": f"printf '%s' {shlex.quote(want.content)} | "
        f"unshare -n sh -c {shlex.quote(f'nft -f - && {listing}')}",
        "firewall_boot_file": f"sha256sum {shlex.quote(RULESET)}",
        # The host's clock, then when the armed rollback saved the table it restores.
        "firewall_saved": f"date +%s; stat -c %Y {shlex.quote(SAVED)}",
    }


def judge(want: Intended, probes: Mapping[str, Probe]) -> list[Check]:
    """Turn a host's firewall probes into its checks, in :data:`CHECKS` order."""
    state = FirewallState().process(probe_of(probes, "firewall_state").output.splitlines())
    return [
        _unit(probe_of(probes, "firewall_unit")),
        _table(
            want, state, probe_of(probes, "firewall_live"), probe_of(probes, "firewall_intended")
        ),
        _boot_file(want, probe_of(probes, "firewall_boot_file")),
        _rollback(state, probe_of(probes, "firewall_saved")),
    ]


def _unit(show: Probe) -> Check:
    props = parse_show(show.output).get(UNIT)
    if props is None:
        return Check("firewall unit", False, f"{UNIT} not reported: {_first_line(show.output)}")
    if props.get("LoadState") != "loaded":
        return Check("firewall unit", False, f"{UNIT} {props.get('LoadState')}")
    active, enabled = props.get("ActiveState"), props.get("UnitFileState")
    result = props.get("Result")
    state = f"{UNIT} {active} ({props.get('SubState')}), {enabled}"
    problems = []
    if enabled != "enabled":
        problems.append("the next boot loads no table")
    if active == "failed" or result != "success":
        problems.append(f"its last run failed ({result}, status {props.get('ExecMainStatus')})")
    elif active == "inactive":
        # Enabled by a deploy after this boot (which loaded the table itself), or
        # stopped by hand (no ExecStop: the table stays); the next boot runs it.
        state += ", idle (the table is checked on its own)"
    elif active != "active":
        problems.append("its load has not settled")
    return Check("firewall unit", not problems, "; ".join([state, *problems]))


def _table(want: Intended, state: dict[str, Any], live: Probe, scratch: Probe) -> Check:
    if not state["table"]:
        return Check("firewall table", False, f"no table inet {TABLE} loaded")
    if not is_loaded(state, want.comment):
        seen = state["comment"] or "no comment"
        return Check(
            "firewall table",
            False,
            f"table inet {TABLE} is another ruleset ({seen}), not {want.comment}",
        )
    if scratch.code != 0:
        return Check(
            "firewall table",
            False,
            f"rules not compared: the intended ruleset did not load in a scratch namespace "
            f"({_first_line(scratch.output)})",
        )
    ours, theirs = live.output.splitlines(), scratch.output.splitlines()
    if ours == theirs:
        return Check(
            "firewall table", True, f"inet {TABLE} is the intended ruleset ({want.comment})"
        )
    return Check(
        "firewall table",
        False,
        f"inet {TABLE} ({want.comment}) differs: {differences(theirs, ours)}",
    )


def differences(intended_lines: list[str], live_lines: list[str]) -> str:
    """Name the lines the live listing has more and those it lacks (``nft list`` lines)."""
    more: list[str] = []
    less: list[str] = []
    matcher = difflib.SequenceMatcher(a=intended_lines, b=live_lines, autojunk=False)
    for op, a1, a2, b1, b2 in matcher.get_opcodes():
        if op != "equal":
            less += intended_lines[a1:a2]
            more += live_lines[b1:b2]
    if sorted(more) == sorted(less):
        return "the same lines in another order"
    parts = []
    for label, lines in (("more in the kernel", more), ("missing", less)):
        if lines:
            shown = ", ".join(f"`{line.strip()}`" for line in lines[:SHOWN])
            rest = f" and {len(lines) - SHOWN} more" if len(lines) > SHOWN else ""
            parts.append(f"{label}: {shown}{rest}")
    return "; ".join(parts)


def _boot_file(want: Intended, digest: Probe) -> Check:
    if digest.code != 0:
        return Check("firewall boot file", False, _first_line(digest.output))
    seen = digest.output.split()[0] if digest.output.split() else ""
    if seen != want.sha256:
        return Check(
            "firewall boot file",
            False,
            f"{RULESET} is not the intended ruleset ({want.comment}): the next boot loads another",
        )
    return Check("firewall boot file", True, f"{RULESET} is the intended ruleset")


def _rollback(state: dict[str, Any], saved: Probe) -> Check:
    if not state["rollback_pending"]:
        return Check("firewall rollback", True, "none armed")
    numbers = [int(word) for word in saved.output.split() if word.isdigit()]
    since = f" {numbers[0] - numbers[1]} s ago" if len(numbers) == 2 else ""
    return Check(
        "firewall rollback",
        False,
        f"{ROLLBACK_UNIT}.timer armed{since}: unless a deploy confirms its last load, it puts "
        f"back the table saved before it ({SAVED}); with no deploy running, that load was "
        "never confirmed: run deploys/firewall.py",
    )


def _first_line(output: str) -> str:
    # nft follows its error with the command and a caret line: the first says what.
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[0] if lines else "no output"

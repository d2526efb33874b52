"""Count Sentinel's master switches from its logs: one fault must cause at most one.

A Sentinel logs ``+switch-master <name> <old ip> <old port> <new ip> <new port>``
each time it takes a new master, whether it ran the failover or heard of it
from another Sentinel. A storm (LAB-NOTES, down-after 800 ms) is a second
switch for the same fault: the just-promoted master declared down in turn.

Logs are read from the journal after a run rather than from pub/sub during it:
a Sentinel cut off the bridge cannot publish to the controller, and its
journal still holds every line.
"""

import re
from dataclasses import dataclass

_SWITCH = re.compile(r"\+switch-master (\S+) (\S+) (\d+) (\S+) (\d+)")


@dataclass(frozen=True)
class Switch:
    master_name: str
    old: str  # "ip:port"
    new: str


def parse_switches(log: str) -> list[Switch]:
    """Return the ``+switch-master`` events of one Sentinel's log, in order."""
    return [
        Switch(m[1], f"{m[2]}:{m[3]}", f"{m[4]}:{m[5]}")
        for line in log.splitlines()
        if (m := _SWITCH.search(line))
    ]


def count_switches(logs: dict[str, str], master_name: str | None = None) -> int:
    """Return how many master switches the Sentinels' logs show, over all of them.

    Every Sentinel logs the same switch once, so the count is the most any one
    Sentinel saw; a Sentinel that missed a switch (cut off) cannot lower it, and
    distinct old->new pairs across all logs are counted too, so a switch seen
    by one Sentinel only still counts.

    **Example**: three Sentinels each logging ``A->B`` once: 1. One logging
    ``A->B``, ``B->C`` and another only ``A->B``: 2.
    """
    per_sentinel = []
    pairs: set[tuple[str, str]] = set()
    for log in logs.values():
        switches = [
            s for s in parse_switches(log) if master_name is None or s.master_name == master_name
        ]
        per_sentinel.append(len(switches))
        pairs.update((s.old, s.new) for s in switches)
    return max([len(pairs), *per_sentinel])

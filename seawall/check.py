"""`seawall check`: validate an inventory without touching a host, and say what it holds."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seawall.inventory import Host, check
from seawall.output import table


@dataclass(frozen=True)
class CheckReport:
    """The hosts and groups of an inventory that passed every check."""

    inventory: Path
    hosts: tuple[Host, ...]
    secrets_checked: bool

    @property
    def ok(self) -> bool:
        # An invalid inventory raises (exit 2): a report exists only for a valid one.
        return True

    @property
    def groups(self) -> dict[str, list[str]]:
        names = sorted({group for host in self.hosts for group in host.groups})
        return {
            group: [host.name for host in self.hosts if group in host.groups] for group in names
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "inventory": str(self.inventory),
            "secrets_checked": self.secrets_checked,
            "hosts": [
                {
                    "name": host.name,
                    "address": host.address,
                    "roles": list(host.roles),
                    "groups": list(host.groups),
                }
                for host in self.hosts
            ],
            "groups": self.groups,
        }

    def to_text(self) -> str:
        rows = [(h.name, h.address, ",".join(h.roles) or "-") for h in self.hosts]
        secrets = "" if self.secrets_checked else " (secrets not checked)"
        verdict = f"{self.inventory}: valid, {len(self.hosts)} hosts{secrets}"
        return table(["host", "address", "roles"], rows) + "\n" + verdict


def check_inventory(path: str | Path, check_secrets: bool = True) -> CheckReport:
    """Load and validate an inventory; report its hosts and groups.

    Raises:
        SeawallError: the inventory is missing or invalid, naming each host and key.
    """
    topology = check(path, check_secrets=check_secrets)
    return CheckReport(topology.path, topology.hosts, check_secrets)

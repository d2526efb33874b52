"""Facts that ask Patroni (through ``patronictl``) about its cluster."""

import json
import shlex
from typing import Any

from pyinfra.api import FactBase


def running_leader(members: list[dict[str, Any]]) -> str | None:
    """Return the name of the running leader among ``PatroniCluster`` members, or ``None``."""
    for member in members:
        if member.get("Role") == "Leader" and member.get("State") == "running":
            return str(member.get("Member"))
    return None


class PatroniCluster(FactBase[list[dict[str, Any]]]):
    """Returns the members of this host's Patroni cluster, as ``patronictl list`` sees them.

    .. code:: python

        [{"Member": "data-1", "Role": "Leader", "State": "running", "TL": 1}, ...]
    """

    default = list

    def command(self, config: str) -> str:
        return f"patronictl -c {shlex.quote(config)} list -f json 2>/dev/null || echo '[]'"

    def requires_command(self, config: str) -> str:
        return "patronictl"

    def process(self, output: list[str]) -> list[dict[str, Any]]:
        try:
            members = json.loads("\n".join(output) or "[]")
        except ValueError:
            return []
        return members if isinstance(members, list) else []


class PatroniDynamicConfig(FactBase[dict[str, Any] | None]):
    """Returns the cluster's dynamic configuration (``patronictl show-config``), or ``None``.

    .. code:: python

        {"ttl": 20, "loop_wait": 2, "postgresql": {"parameters": {...}}}
    """

    def command(self, config: str) -> str:
        # The controller need not have PyYAML: the host's Patroni brings it.
        to_json = "import json,sys,yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"
        return (
            f"patronictl -c {shlex.quote(config)} show-config 2>/dev/null "
            f"| python3 -c {shlex.quote(to_json)} || echo null"
        )

    def requires_command(self, config: str) -> str:
        return "patronictl"

    def process(self, output: list[str]) -> dict[str, Any] | None:
        try:
            value = json.loads("\n".join(output) or "null")
        except ValueError:
            return None
        return value if isinstance(value, dict) and value else None

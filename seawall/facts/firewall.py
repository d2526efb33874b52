"""Facts about seawall's firewall: the live ``inet seawall`` table and its pending rollback."""

from typing import Any

from pyinfra.api import FactBase

TABLE = "seawall"
# The transient unit (timer + service) that restores the saved table (operations.firewall).
ROLLBACK_UNIT = "seawall-firewall-rollback"


class FirewallState(FactBase[dict[str, Any]]):
    """Returns whether table ``inet seawall`` is loaded, its comment, and a pending rollback.

    The comment names the ruleset the table was loaded from (``seawall <digest>``).

    .. code:: python

        {"table": True, "comment": "seawall 3f2a9c0d1e2b4a5c", "rollback_pending": False}
    """

    def command(self) -> str:
        # The table's own comment sits one tab in; sets' comments sit deeper.
        return (
            f"if nft list tables inet 2>/dev/null | grep -qx 'table inet {TABLE}'; then "
            f"echo table; nft list table inet {TABLE} | "
            "sed -n 's/^\\tcomment \"\\(.*\\)\"$/comment=\\1/p' | head -n 1; fi; "
            f"if systemctl is-active --quiet {ROLLBACK_UNIT}.timer 2>/dev/null; then "
            "echo rollback-pending; fi"
        )

    def requires_command(self) -> str:
        return "nft"

    @staticmethod
    def default() -> dict[str, Any]:
        return {"table": False, "comment": None, "rollback_pending": False}

    def process(self, output: list[str]) -> dict[str, Any]:
        state = self.default()
        for line in output:
            line = line.strip()
            if line == "table":
                state["table"] = True
            elif line.startswith("comment="):
                state["comment"] = line.removeprefix("comment=")
            elif line == "rollback-pending":
                state["rollback_pending"] = True
        return state


def is_loaded(state: dict[str, Any], comment: str) -> bool:
    """Whether ``state`` (a ``FirewallState``) says the live table is ruleset ``comment``."""
    return bool(state["table"]) and state["comment"] == comment

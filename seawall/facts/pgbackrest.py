"""Facts that ask pgBackRest about its repository."""

import json
import shlex

from pyinfra.api import FactBase


class PgbackrestStanzaOk(FactBase[bool]):
    """Returns whether the repository has the stanza, valid (``pgbackrest info`` status 0).

    .. code:: python

        True
    """

    default = bool

    def command(self, user: str, stanza: str) -> str:
        info = f"pgbackrest --stanza={shlex.quote(stanza)} --output=json info"
        return f"cd / && runuser -u {user} -- {info} 2>/dev/null || echo '[]'"

    def requires_command(self, user: str, stanza: str) -> str:
        return "pgbackrest"

    def process(self, output: list[str]) -> bool:
        try:
            stanzas = json.loads("\n".join(output) or "[]")
        except ValueError:
            return False
        # Code 0: ok; 2: no backup yet (the stanza exists); 1: missing.
        return bool(stanzas) and stanzas[0].get("status", {}).get("code") in (0, 2)

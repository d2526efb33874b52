"""Shape a pgBackRest repository."""

import shlex

from pyinfra import host
from pyinfra.api import operation

from seawall.facts.pgbackrest import PgbackrestStanzaOk


@operation()
def stanza(user: str, stanza: str):
    """
    Create the pgBackRest stanza in the repository unless it is there and valid.

    + user: the repository's account
    + stanza: the stanza's name

    **Example:**

    .. code:: python

        stanza(name="Create the stanza", user="pgbackrest", stanza="seawall")
    """
    if host.get_fact(PgbackrestStanzaOk, user=user, stanza=stanza):
        host.noop(f"stanza {stanza} exists")
        return
    yield f"cd / && runuser -u {user} -- pgbackrest --stanza={shlex.quote(stanza)} stanza-create"

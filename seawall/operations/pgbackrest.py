"""Shape a pgBackRest repository."""

import shlex
from collections.abc import Mapping
from typing import Any

from pyinfra import host
from pyinfra.api import OperationError, operation

from seawall.facts.pgbackrest import PgbackrestRepositories

# What ``repository`` does, in this order (see ``migration_steps``).
STANZA_CREATE = "stanza-create"
FULL_BACKUP = "full-backup"
RETIRE_OLD = "retire-old"


def migration_steps(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Return what brings the encrypted repository ``new`` up, and the unencrypted ``old``
    down once it may go (``PgbackrestRepositories`` values).

    - ``new`` without the stanza: create it;
    - ``old`` holds the stanza unencrypted: a full backup into ``new`` first unless it
      holds one already, then retire ``old``. Never ``old`` without a full backup in
      ``new`` (the steps run in order and stop at the first failure).

    Raises:
        OperationError: ``new`` holds the stanza unencrypted (it was made without the
            cipher: deleting it is for a person to decide), ``old`` encrypted (not a
            repository this migration made), or either in a format not known here.
    """
    if "unknown" in (old["stanza"], new["stanza"]):
        raise OperationError("a repository's backup.info is in a format this deploy does not know")
    if new["stanza"] == "plain":
        raise OperationError("the encrypted repository's path holds an unencrypted stanza")
    if old["stanza"] == "encrypted":
        raise OperationError("the old repository's path holds an encrypted stanza")
    steps = [] if new["stanza"] else [STANZA_CREATE]
    if old["stanza"] == "plain":
        if not new["full_backups"]:
            steps.append(FULL_BACKUP)
        steps.append(RETIRE_OLD)
    return steps


@operation()
def repository(user: str, stanza: str, old_path: str, new_path: str):
    """
    Bring the stanza up in the encrypted repository; retire an unencrypted one it replaces.

    + user: the repository's account
    + stanza: the stanza's name
    + old_path: where an unencrypted repository may be (retired once ``new_path`` holds a
      full backup: its ``archive/<stanza>`` and ``backup/<stanza>`` are removed)
    + new_path: the encrypted repository, the one pgBackRest's configuration names

    pgBackRest's configuration must already name ``new_path`` and the cipher: the
    stanza is created, and the full backup taken, through it.

    **Example:**

    .. code:: python

        repository(
            name="Create the encrypted repository",
            user="pgbackrest",
            stanza="seawall",
            old_path="/var/lib/pgbackrest",
            new_path="/var/lib/pgbackrest/aes-256-cbc",
        )
    """
    found = host.get_fact(PgbackrestRepositories, stanza=stanza, paths=[old_path, new_path])
    absent = {"stanza": None, "full_backups": 0}
    steps = migration_steps(found.get(old_path, absent), found.get(new_path, absent))
    if not steps:
        host.noop(f"stanza {stanza} is in the encrypted repository {new_path}")
        return
    q = shlex.quote
    run = f"cd / && runuser -u {user} -- pgbackrest --stanza={q(stanza)}"
    for step in steps:
        if step == STANZA_CREATE:
            yield f"install -d -m 750 -o {user} -g {user} {q(new_path)}"
            yield f"{run} stanza-create"
        elif step == FULL_BACKUP:
            # The one backup a deploy takes: the old repository may go only after it.
            yield f"{run} --type=full backup"
        else:
            yield f'{run} --output=json info | grep -q \'"type":"full"\''
            yield (
                f"rm -rf -- {q(f'{old_path}/archive/{stanza}')} {q(f'{old_path}/backup/{stanza}')}"
                f" && rmdir --ignore-fail-on-non-empty -- {q(f'{old_path}/archive')}"
                f" {q(f'{old_path}/backup')}"
            )

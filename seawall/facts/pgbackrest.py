"""Facts about pgBackRest's repositories."""

import shlex
from typing import Any

from pyinfra.api import FactBase

# pgBackRest (bookworm's 2.45) writes its encrypted files in OpenSSL's format,
# which opens with this; an unencrypted info file opens with its INI section.
MAGIC = "Salted__"
PLAIN = "[backrest]"


class PgbackrestRepositories(FactBase[dict[str, dict[str, Any]]]):
    """Returns, for each repository path, whether it holds the stanza, encrypted or not,
    and how many complete full backups it holds.

    Read from the files, so without the cipher pass (and without pgBackRest's
    configuration, which may name another path): ``backup.info`` is encrypted
    when it starts with OpenSSL's magic, plain when with ``[backrest]``, and
    ``unknown`` otherwise (a format this code does not know: nothing may act on
    it); a full backup is a ``<label>F`` directory whose ``backup.manifest``
    exists (pgBackRest writes it last).

    .. code:: python

        {
            "/var/lib/pgbackrest": {"stanza": "plain", "full_backups": 3},
            "/var/lib/pgbackrest/aes-256-cbc": {"stanza": None, "full_backups": 0},
        }
    """

    default = dict

    def command(self, stanza: str, paths: list[str]) -> str:
        q = shlex.quote
        return (
            f"for p in {' '.join(q(path) for path in paths)}; do "
            f'd="$p/backup/"{q(stanza)}; s=none; '
            'if [ -f "$d/backup.info" ]; then s=unknown; '
            f'[ "$(head -c {len(MAGIC)} "$d/backup.info")" = {MAGIC} ] && s=encrypted; '
            f'[ "$(head -c {len(PLAIN)} "$d/backup.info")" = {shlex.quote(PLAIN)} ] && s=plain; '
            "fi; "
            "n=$(find \"$d\" -mindepth 2 -maxdepth 2 -path '*F/backup.manifest' 2>/dev/null"
            " | wc -l); "
            'printf \'%s\\t%s\\t%s\\n\' "$p" "$s" "$n"; done'
        )

    def process(self, output: list[str]) -> dict[str, dict[str, Any]]:
        repositories: dict[str, dict[str, Any]] = {}
        for line in output:
            path, state, count = line.split("\t")
            repositories[path] = {
                "stanza": None if state == "none" else state,
                "full_backups": int(count),
            }
        return repositories

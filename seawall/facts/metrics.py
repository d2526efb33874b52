"""Facts about the exporters' web configurations (Prometheus's exporter-toolkit).

The file holds bcrypt hashes only, never a password: reading one back lets a
deploy keep a hash that still verifies the secret instead of salting anew
(a new salt is a new file, so a change and a restart, on every deploy).
"""

import re
import shlex

from pyinfra.api import FactBase

# A bcrypt hash as crypt(3) and Go's x/crypto/bcrypt write it: $2a$, $2b$ or $2y$,
# two cost digits, 22 salt and 31 hash characters.
BCRYPT = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")


class BasicAuthHash(FactBase[str | None]):
    """Returns the bcrypt hash ``user`` has under ``basic_auth_users`` in a web
    configuration file, or None (no file, no such user, or not a bcrypt hash).

    .. code:: python

        "$2b$12$Iv67ppLAdF1Z9xwdK7icquTjgDn0B/TUiuk.XEo.tfqGkLO6FjdcS"
    """

    def command(self, path: str, user: str) -> str:
        quoted = shlex.quote(path)
        # The user first: process() sees the output only.
        return f"echo {shlex.quote(user)}; if [ -f {quoted} ]; then cat {quoted}; fi"

    def process(self, output: list[str]) -> str | None:
        if not output:
            return None
        user, lines = output[0].strip(), output[1:]
        # The shapes YAML allows for a plain string: `  user: "hash"`, `  user: 'hash'`
        # or `  user: hash`, with a comment after it or not.
        wanted = re.compile(rf"\s+{re.escape(user)}:\s*(['\"]?)({BCRYPT.pattern})\1\s*(#.*)?")
        users = False
        for line in lines:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if not line[0].isspace():
                users = line.rstrip() == "basic_auth_users:"
                continue
            match = wanted.fullmatch(line)
            if users and match:
                return match.group(2)
        return None

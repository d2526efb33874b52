"""Facts about the host itself that pyinfra's own server facts do not give."""

import shlex
from collections.abc import Sequence

from pyinfra.api import FactBase


class Container(FactBase[str | None]):
    """Returns the container technology the host runs in, or ``None`` on a VM or bare metal.

    .. code:: python

        "lxc"
    """

    def command(self) -> str:
        # It prints "none" and exits 1 outside a container.
        return "systemd-detect-virt --container || true"

    def requires_command(self) -> str:
        return "systemd-detect-virt"

    def process(self, output: list[str]) -> str | None:
        value = output[0].strip() if output else ""
        return None if value in ("", "none") else value


class PasswdEntries(FactBase[dict[str, dict[str, str]]]):
    """Returns the passwd entry (home, shell) of each of ``users`` that exists.

    One ``getent`` for every user a deploy makes: pyinfra's ``Users`` fact reads
    every account's groups and last login, about a second per gathering.

    .. code:: python

        {"quantum-backend": {"home": "/var/lib/quantum-backend", "shell": "/usr/sbin/nologin"}}
    """

    @staticmethod
    def default() -> dict[str, dict[str, str]]:
        return {}

    def command(self, users: Sequence[str]) -> str:
        # getent exits 2 when one of the names is missing: the others still print.
        return "getent passwd " + " ".join(shlex.quote(user) for user in users) + " || true"

    def process(self, output: list[str]) -> dict[str, dict[str, str]]:
        entries = {}
        for line in output:
            fields = line.strip().split(":")
            if len(fields) == 7:
                entries[fields[0]] = {"home": fields[5], "shell": fields[6]}
        return entries

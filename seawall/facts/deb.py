"""What an install of some Debian packages must do: asked of dpkg about those packages only."""

import shlex
from collections.abc import Sequence
from typing import Any

from pyinfra.api import FactBase

# dpkg's "installed" and "held, installed", as pyinfra's DebPackages counts them.
INSTALLED = ("ii", "hi")


class DebInstallState(FactBase[dict[str, Any]]):
    """Returns the installed version of each of ``packages`` that is installed, and what is
    at ``policy_rc_d`` (``"ours"`` when it holds ``marker``, ``"other"``, or ``None``).

    ``dpkg-query`` of the named packages, or of every package when ``packages``
    is empty (dpkg answers in milliseconds either way: the round trip is the
    cost, so a host's installs can all decide from one listing). pyinfra's
    ``DebPackages`` lists every package too, through ``apt`` (about 0.5 s a
    gathering). The ``policy-rc.d`` probe rides along, so an install decides
    from one round trip.

    .. code:: python

        {"installed": {"nginx": "1.22.1-9"}, "policy_rc_d": None}
    """

    def requires_command(self, packages: Sequence[str], policy_rc_d: str, marker: str) -> str:
        return "dpkg-query"

    @staticmethod
    def default() -> dict[str, Any]:
        return {"installed": {}, "policy_rc_d": None}

    def command(self, packages: Sequence[str], policy_rc_d: str, marker: str) -> str:
        names = " ".join(shlex.quote(package) for package in packages)
        policy = shlex.quote(policy_rc_d)
        # dpkg-query exits 1 and says so on stderr for a name it never saw; the
        # names it knows are still printed, and a missing one is simply absent.
        return (
            "dpkg-query -W -f='${db:Status-Abbrev} ${Package} ${Version}\\n' "
            f"{'-- ' + names if names else ''} 2>/dev/null; "
            f"if [ -e {policy} ]; then if grep -qF -- {shlex.quote(marker)} {policy}; "
            "then echo 'policy-rc.d: ours'; else echo 'policy-rc.d: other'; fi; fi; true"
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        installed: dict[str, str] = {}
        policy = None
        for line in output:
            fields = line.split()
            if fields[:1] == ["policy-rc.d:"] and len(fields) == 2:
                policy = fields[1]
            elif len(fields) == 3 and fields[0] in INSTALLED:
                installed[fields[1]] = fields[2]
        return {"installed": installed, "policy_rc_d": policy}

"""What the lab needs on the controller, checked before `lab up` creates anything.

`bootstrap.sh` installs the Debian packages listed in ``controller-packages.txt``
(the only install step). This module says which file or command proves each one,
so a missing package is named in a second instead of surfacing minutes later as
a host that never boots (``lxc-templates``: LXC then refuses every container).
``tests/unit/test_controller_packages.py`` asks dpkg that every command the lab
and the tests run, and every file the lab's LXC config includes, belongs to a
package listed there.
"""

import shutil
from pathlib import Path

from seawall.errors import SeawallError

# Read by bootstrap.sh too: one package a line, '#' starts a comment.
PACKAGES_FILE = Path(__file__).resolve().parents[2] / "controller-packages.txt"

# Commands run on the controller, by the Debian package that ships them.
# Essential packages (coreutils, tar, util-linux...) need no entry.
COMMANDS: dict[str, str] = {
    "apt-cacher-ng": "apt-cacher-ng",
    "debootstrap": "debootstrap",
    "git": "git",
    "ip": "iproute2",
    "journalctl": "systemd",
    # seawall.schema checks restart_calendar with it (as the hosts' systemd 252 would).
    "systemd-analyze": "systemd",
    "ss": "iproute2",
    "lxc-attach": "lxc",
    "lxc-cgroup": "lxc",
    "lxc-destroy": "lxc",
    "lxc-freeze": "lxc",
    "lxc-info": "lxc",
    "lxc-ls": "lxc",
    "lxc-start": "lxc",
    "lxc-stop": "lxc",
    "lxc-unfreeze": "lxc",
    "mtail": "mtail",
    "nft": "nftables",
    "openssl": "openssl",
    "ps": "procps",
    "promtool": "prometheus",
    "redis-server": "redis-server",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "vagrant": "vagrant",
    "wrk": "wrk",
}

# Debian's own python3 (not a venv's): what the hosts run the reference service with.
HOST_PYTHON = "/usr/bin/python3"

# Files the lab uses that no command proves, by package. The LXC include is
# the one bootstrap once missed (a Recommends of lxc).
FILES: dict[str, str] = {
    "/usr/share/lxc/config/debian.common.conf": "lxc-templates",
    "/usr/share/vagrant-plugins/plugins.d/vagrant-lxc.json": "vagrant-lxc",
    # initdb is off PATH; the unit tests' loopback Postgres runs it.
    "/usr/lib/postgresql/15/bin/initdb": "postgresql-15",
    # Off PATH too; the unit tests run both on loopback.
    "/lib/systemd/systemd-journal-remote": "systemd-journal-remote",
    "/lib/systemd/systemd-journal-upload": "systemd-journal-remote",
    # Debian's interpreter and the reference service's libraries, as on the hosts:
    # the unit tests run the service with them (a venv's python shadows python3 on PATH).
    HOST_PYTHON: "python3-minimal",
    "/usr/lib/python3/dist-packages/fastapi/__init__.py": "python3-fastapi",
    "/usr/lib/python3/dist-packages/uvicorn/__init__.py": "python3-uvicorn",
    "/usr/lib/python3/dist-packages/psycopg/__init__.py": "python3-psycopg",
    "/usr/lib/python3/dist-packages/redis/__init__.py": "python3-redis",
}


def listed_packages(path: Path = PACKAGES_FILE) -> list[str]:
    """Return the packages bootstrap.sh installs, in file order."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def missing() -> dict[str, list[str]]:
    """Return {package: [missing command or file, ...]} for what is absent here."""
    absent: dict[str, list[str]] = {}
    for command, package in COMMANDS.items():
        if shutil.which(command) is None:
            absent.setdefault(package, []).append(command)
    for file, package in FILES.items():
        if not Path(file).exists():
            absent.setdefault(package, []).append(file)
    return absent


def require() -> None:
    """Fail naming every missing package, before the lab touches anything.

    Raises:
        SeawallError: a package the lab needs is not installed.
    """
    absent = missing()
    if absent:
        lines = [f"  {package}: no {', '.join(what)}" for package, what in sorted(absent.items())]
        raise SeawallError(
            "the controller lacks Debian packages the lab needs (run ./bootstrap.sh):\n"
            + "\n".join(lines)
        )

"""The baseline every seawall host gets, whatever its roles: ``deploy_common()``.

What it guarantees on every host:

- apt goes through ``apt_proxy`` when one is set, directly otherwise;
  ``common_packages`` are installed, and installing them starts no daemon with
  stock configuration (a ``policy-rc.d`` is in place during the install only);
- the clock runs in ``timezone`` and systemd-timesyncd syncs it from
  ``ntp_servers`` (on real hosts: a container shares its host's clock);
- ``admin_user`` logs in with the key in ``admin_ssh_public_key_file`` and no
  other, and has passwordless sudo;
- sshd accepts keys only, root as ``sshd_permit_root_login`` says, with bounded
  login time and attempts;
- journald keeps logs on disk, within ``journald_*`` bounds;
- on real hosts, ``sysctl`` and transparent huge pages are set now and at boot;
- ``role_marker_path`` lists the host's roles.

What it never does:

- restart sshd: pyinfra is connected over it. sshd is reloaded, only when its
  drop-in changed and only once ``sshd -t`` accepts the whole configuration;
- install a sudoers or sshd file its validator rejects (the old file stays);
- touch kernel settings inside a container (read-only there): it says so instead;
- edit a file Debian ships: everything it writes is a seawall drop-in.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.api.host import HostData
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.files import FileContents
from pyinfra.operations import apt, server

from seawall import defaults, secrets
from seawall.components import templates
from seawall.defaults import COMMON
from seawall.errors import SeawallError
from seawall.facts import memo
from seawall.facts.deb import DebInstallState
from seawall.facts.server import Container, PasswdEntries
from seawall.operations import files, systemd
from seawall.operations.files import validated_file
from seawall.settings import setting

# Templates mirror the path they render to: seawall/templates/common/etc/... -> /etc/...
APT_PROXY = "/etc/apt/apt.conf.d/01seawall-proxy"
SUDOERS = "/etc/sudoers.d/seawall"
# sshd keeps the first value it reads: 00- wins over other drop-ins.
SSHD = "/etc/ssh/sshd_config.d/00-seawall.conf"
JOURNALD = "/etc/systemd/journald.conf.d/seawall.conf"
TIMESYNCD = "/etc/systemd/timesyncd.conf.d/seawall.conf"
SYSCTL = "/etc/sysctl.d/60-seawall.conf"
THP_UNIT = "seawall-thp.service"
THP_UNIT_PATH = f"/etc/systemd/system/{THP_UNIT}"
# The role marker's template; the file goes to role_marker_path.
ROLE_MARKER = "/etc/seawall/roles"
POLICY_RC_D = "/usr/sbin/policy-rc.d"

# Every template this deploy renders (as target paths), for the tests.
TEMPLATES: tuple[str, ...] = (
    APT_PROXY,
    SUDOERS,
    SSHD,
    JOURNALD,
    TIMESYNCD,
    SYSCTL,
    THP_UNIT_PATH,
    ROLE_MARKER,
)

_POLICY_MARKER = "# seawall: installing packages"
# Exit 101 = "action forbidden": invoke-rc.d and deb-systemd-invoke start nothing.
_POLICY_RC_D_SCRIPT = f"#!/bin/sh\n{_POLICY_MARKER}, start no daemon with stock config\nexit 101\n"


def render(target: str, context: Mapping[str, Any]) -> str:
    """Render the template of ``target``, a path on the host (``/etc/sysctl.d/60-seawall.conf``)."""
    return templates.render("common", target, context)


def template_context(data: Mapping[str, Any] | HostData, groups: Sequence[str]) -> dict[str, Any]:
    """Return what the templates see: the COMMON keys of a host's data, and its roles."""
    context = {key: setting(data, key) for key in COMMON}
    context["roles"] = [role for role in defaults.ROLES if role in groups]
    context["sshd_allowed_users"] = allowed_users(data, groups)
    return context


def allowed_users(data: Mapping[str, Any] | HostData, groups: Sequence[str]) -> list[str]:
    """Return the accounts sshd lets in on a host (``sshd_allow_users``, see defaults)."""
    users = setting(data, "sshd_allow_users")
    if users is None:
        # ssh_user unset: root, as seawall's own SSH assumes (seawall/ssh.py).
        users = [str(data.get("ssh_user") or "root"), str(setting(data, "admin_user"))]
        if "postgres" in groups:
            users.append("postgres")
        if "ops" in groups:
            users.append(str(setting(data, "pgbackrest_user")))
    return list(dict.fromkeys([*users, *setting(data, "sshd_allow_users_extra")]))


def install_packages(name: str, packages: Sequence[str], no_recommends: bool = True) -> None:
    """Install Debian packages with ``policy-rc.d`` in place, so no daemon starts with stock config.

    Updates the package lists only when a package is missing, and runs apt only
    then (or for a version pin the installed version differs from), so a run
    that installs nothing changes nothing and costs one ``dpkg-query`` of the
    packages. A ``policy-rc.d`` seawall left behind by an interrupted run is
    removed; one from anyone else is left alone.

    Every install on a host decides from one listing of all its packages, asked
    once per run (``seawall.facts.memo``: an install that runs drops it).
    """
    state = memo.get_fact(
        host, DebInstallState, packages=(), policy_rc_d=POLICY_RC_D, marker=_POLICY_MARKER
    )
    installed = state["installed"]
    missing = [package for package in packages if package.split("=")[0] not in installed]
    # apt.packages' own test: a pin is met when that exact version is installed.
    repin = [
        package
        for package in packages
        if "=" in package and installed.get(package.split("=")[0]) != package.split("=", 1)[1]
    ]
    ours = state["policy_rc_d"] == "ours"
    guard = bool(missing) and state["policy_rc_d"] in (None, "ours")
    if guard:
        files.put(
            name="Stop Debian from starting daemons while packages install",
            src=StringIO(_POLICY_RC_D_SCRIPT),
            dest=POLICY_RC_D,
            mode="755",
        )
    if missing:
        # Bounded and retried: under parallel load apt-cacher-ng can fail a
        # fetch of an index file, and apt-get then sometimes waits forever on
        # the dropped connection. A hung update is killed and run again.
        server.shell(
            name="Update the package lists",
            commands=[
                "for attempt in 1 2 3; do "
                "timeout -k 10 120 apt-get update -q && exit 0; sleep 3; done; exit 1"
            ],
        )
    # With nothing missing and every pin met, apt.packages would only gather
    # the whole package list again (about 0.5 s per call) to find nothing to do.
    if missing or repin:
        apt.packages(
            name=name,
            packages=list(packages),
            no_recommends=no_recommends,
            # The lab's apt proxy sometimes drops a fetch under parallel load
            # ("Method http has died unexpectedly"); apt resumes where it stopped.
            _retries=2,
            _retry_delay=5,
            _timeout=900,
        )
    if guard or ours:
        files.file(name="Let Debian start daemons again", path=POLICY_RC_D, present=False)


def group_members(group: str) -> list[tuple[str, str]]:
    """Return (name, private address) of every host in ``group``, in inventory order."""
    return [
        (member.name, str(member.data.get("private_address")))
        for member in inventory.get_group(group, default=[])
    ]


def host_secrets(names: Sequence[str], purpose: str = "") -> dict[str, str]:
    """Resolve this host's secrets ``names`` (secrets file, then environment).

    Raises:
        DeployError: one is missing, naming the host, the secret and where it was looked for.
    """
    try:
        return secrets.require(names, setting(host.data, "secrets_file"), host.name, purpose)
    except SeawallError as error:
        raise DeployError(str(error)) from None


def unit_dropin(name: str, content: str, dest: str, unit: str) -> OperationMeta:
    """Put a systemd drop-in (root-owned, 644); reload systemd only when it changed.

    ``unit`` names the unit in the reload's operation name.
    """
    dropin = files.put(
        name=name, src=StringIO(content), dest=dest, user="root", group="root", mode="644"
    )
    systemd.daemon_reload(name=f"Reload systemd (the {unit} unit changed)", _if=dropin.did_change)
    return dropin


@dataclass(frozen=True)
class _Changed:
    """The configure operations whose change the activate phase acts on."""

    timesyncd: OperationMeta
    sshd: OperationMeta
    journald: OperationMeta
    sysctl: OperationMeta | None
    thp_unit: OperationMeta | None


@deploy("Common host baseline", data_defaults=COMMON)
def deploy_common() -> None:
    """
    Apply the common baseline to a host: install, then configure, then activate.

    **Example:**

    .. code:: python

        from seawall.components.common import deploy_common

        deploy_common()
    """
    context = template_context(host.data, host.groups)
    container = host.get_fact(Container)
    _install(context)
    changed = _configure(context, container)
    _activate(context, container, changed)


def _file(name: str, target: str, context: Mapping[str, Any], dest: str | None = None) -> Any:
    return files.put(
        name=name,
        src=StringIO(render(target, context)),
        dest=dest or target,
        user="root",
        group="root",
        mode="644",
    )


def _install(context: Mapping[str, Any]) -> None:
    # The proxy goes first: on the lab it is the only way to a package.
    if context["apt_proxy"]:
        _file("Send apt through the package proxy", APT_PROXY, context)
    else:
        files.file(name="Let apt reach its mirrors directly", path=APT_PROXY, present=False)
    install_packages("Install base packages", context["common_packages"])


def _configure(context: Mapping[str, Any], container: str | None) -> _Changed:
    timezone = context["timezone"]
    # A link to zoneinfo/<name> itself (not the file it resolves to), so
    # `timedatectl` reports the name as configured.
    files.link(
        name=f"Set the timezone to {timezone}",
        path="/etc/localtime",
        target=f"/usr/share/zoneinfo/{timezone}",
    )
    files.put(
        name="Record the timezone for tools that read /etc/timezone",
        src=StringIO(f"{timezone}\n"),
        dest="/etc/timezone",
        mode="644",
    )
    timesyncd = _file("Configure time sync servers", TIMESYNCD, context)

    admin = context["admin_user"]
    keys = _admin_keys(context["admin_ssh_public_key_file"])
    if _admin_holds(admin, keys):
        # server.user's own fact reads every account's groups and last login
        # (~2 s a host); the login itself is what `seawall verify` checks.
        host.noop(f"{admin} exists with a bash shell and the admin key only")
    else:
        server.user(
            name=f"Create the admin user {admin} with the admin key only",
            user=admin,
            shell="/bin/bash",
            public_keys=keys,
            delete_keys=True,
        )
    validated_file(
        name=f"Grant {admin} passwordless sudo",
        src=render(SUDOERS, context),
        dest=SUDOERS,
        validate="visudo -cqf {path}",
        check_installed="visudo -cq",
        mode=440,
    )
    sshd = validated_file(
        name="Harden sshd: keys only, bounded logins",
        src=render(SSHD, context),
        dest=SSHD,
        validate="sshd -t -f {path}",
        check_installed="sshd -t",
        mode=644,
    )
    journald = _file("Keep the journal on disk within bounds", JOURNALD, context)

    sysctl = thp_unit = None
    if container:
        host.log(
            f"Skip kernel tuning: container ({container}) shares its host's kernel; "
            "set sysctl and transparent huge pages on that host"
        )
    else:
        sysctl = _file("Persist kernel settings", SYSCTL, context)
        thp_unit = _file("Install the transparent huge pages unit", THP_UNIT_PATH, context)

    _file(
        "Write the role marker",
        ROLE_MARKER,
        context,
        dest=context["role_marker_path"],
    )
    return _Changed(timesyncd, sshd, journald, sysctl, thp_unit)


def _activate(context: Mapping[str, Any], container: str | None, changed: _Changed) -> None:
    systemd.service(
        name="Reload sshd (its configuration changed)",
        service="ssh.service",
        running=True,
        reloaded=True,
        _if=changed.sshd.did_change,
    )
    systemd.service(
        name="Restart journald (its configuration changed)",
        service="systemd-journald.service",
        running=True,
        restarted=True,
        _if=changed.journald.did_change,
    )

    if container:
        # timesyncd's unit has ConditionVirtualization=!container: it would never start.
        host.log(f"Skip time sync: container ({container}) uses its host's clock")
    else:
        systemd.service(
            name="Restart timesyncd (its configuration changed)",
            service="systemd-timesyncd.service",
            running=True,
            restarted=True,
            _if=changed.timesyncd.did_change,
        )
        systemd.service(
            name="Start and enable timesyncd",
            service="systemd-timesyncd.service",
            running=True,
            enabled=True,
        )

    if changed.sysctl is None or changed.thp_unit is None:
        return
    for key, value in sorted(context["sysctl"].items()):
        server.sysctl(name=f"Set {key} to {value}", key=key, value=value)
    systemd.daemon_reload(
        name="Reload systemd (the huge pages unit changed)", _if=changed.thp_unit.did_change
    )
    systemd.service(
        name="Apply the transparent huge pages setting (it changed)",
        service=THP_UNIT,
        running=True,
        restarted=True,
        _if=changed.thp_unit.did_change,
    )
    systemd.service(
        name=f"Set transparent huge pages to {context['transparent_hugepages']} at every boot",
        service=THP_UNIT,
        running=True,
        enabled=True,
    )


def _admin_holds(admin: str, keys: list[str]) -> bool:
    """True when ``admin`` exists with bash and exactly ``keys`` in its authorized_keys."""
    entry = host.get_fact(PasswdEntries, users=(admin,)).get(admin)
    if entry is None or entry["shell"] != "/bin/bash":
        return False
    held = host.get_fact(FileContents, path=f"{entry['home']}/.ssh/authorized_keys")
    return held is not None and sorted(line.strip() for line in held if line.strip()) == sorted(
        keys
    )


def _admin_keys(key_file: str | None) -> list[str]:
    if not key_file or not Path(key_file).is_file():
        raise DeployError(
            f"{host.name}: admin_ssh_public_key_file: {key_file!r} is not a file on this machine"
        )
    keys = [
        line.strip()
        for line in Path(key_file).read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    if not keys:
        raise DeployError(f"{host.name}: admin_ssh_public_key_file: {key_file} holds no key")
    return keys

"""The common deploy's promises on one host, judged from what the host itself says.

Each check asks the running system (``timedatectl``, ``apt-config``, ``sshd -T``,
a real login as the admin), not the file the deploy wrote, so a drop-in that
another file overrides shows up as a failure.
"""

import shlex
from collections.abc import Mapping
from typing import Any

from seawall.inventory import Host
from seawall.verify.probe import Probe, probe_of
from seawall.verify.report import Check

# The common check names, in the order every host reports them (role checks follow).
CHECKS = (
    "timezone",
    "time sync",
    "apt proxy",
    "admin login",
    "sshd keys only",
    "journal persistent",
    "role marker",
    "kernel tuning",
)


def probe_commands(host: Host) -> dict[str, str]:
    """Return the shell command of each probe run on ``host``."""
    data = host.data
    sysctl_keys = " ".join(shlex.quote(key) for key in sorted(data["sysctl"]))
    return {
        "container": "systemd-detect-virt --container || true",
        "timezone": "timedatectl show -p Timezone --value",
        "timesyncd": "systemctl is-active systemd-timesyncd; timedatectl show -p NTP --value",
        # apt's own view of its configuration, whichever file sets it.
        "apt": "apt-config dump Acquire::http::Proxy",
        "sshd": "sshd -T",
        "journald": "systemd-analyze cat-config systemd/journald.conf",
        # journald itself writes there once it keeps logs on disk.
        "journal_file": 'test -s "/var/log/journal/$(cat /etc/machine-id)/system.journal"',
        "roles": f"cat {shlex.quote(str(data['role_marker_path']))}",
        "sysctl": f"sysctl {sysctl_keys}",
        "thp": "cat /sys/kernel/mm/transparent_hugepage/enabled",
    }


def judge(
    data: Mapping[str, Any], roles: list[str], probes: Mapping[str, Probe], admin: Probe
) -> tuple[Check, ...]:
    """Turn a host's probe results into its checks, in :data:`CHECKS` order."""

    def probe(name: str) -> Probe:
        return probe_of(probes, name)

    virt = probe("container").output
    container = None if virt in ("", "none") else virt
    return (
        _timezone(data, probe("timezone")),
        _time_sync(container, probe("timesyncd")),
        _apt_proxy(data, probe("apt")),
        _admin_login(data, admin),
        _sshd(data, probe("sshd")),
        _journal(probe("journald"), probe("journal_file")),
        _role_marker(roles, probe("roles")),
        _kernel(data, container, probe("sysctl"), probe("thp")),
    )


def _timezone(data: Mapping[str, Any], zone: Probe) -> Check:
    return Check("timezone", zone.output == data["timezone"], zone.output)


def _time_sync(container: str | None, state: Probe) -> Check:
    if container:
        return Check("time sync", True, f"skipped: container ({container}) uses its host's clock")
    words = state.output.split()
    return Check("time sync", words == ["active", "yes"], "timesyncd, NTP: " + " ".join(words))


def _apt_proxy(data: Mapping[str, Any], dump: Probe) -> Check:
    want = data["apt_proxy"]
    if want:
        ok = dump.output == f'Acquire::http::Proxy "{want}";'
        return Check("apt proxy", ok, dump.output or "no proxy")
    return Check("apt proxy", dump.output == "", dump.output or "direct")


def _admin_login(data: Mapping[str, Any], login: Probe) -> Check:
    user = str(data["admin_user"])
    ok = login.code == 0 and login.output.splitlines()[-1:] == [user]
    return Check("admin login", ok, f"{user}: key login, sudo -n" if ok else login.output)


def parse_sshd_t(output: str) -> dict[str, str]:
    """Return ``sshd -T`` output as a dict of lower-case keyword to value."""
    settings: dict[str, str] = {}
    for line in output.splitlines():
        key, _, value = line.partition(" ")
        settings.setdefault(key.lower(), value.strip())
    return settings


# `sshd -T` prints the old name of prohibit-password.
_ROOT_LOGIN_ALIASES = {"without-password": "prohibit-password"}


def _sshd(data: Mapping[str, Any], probe: Probe) -> Check:
    if probe.code != 0:
        return Check("sshd keys only", False, probe.output)
    seen = parse_sshd_t(probe.output)
    root = seen.get("permitrootlogin", "")
    seen["permitrootlogin"] = _ROOT_LOGIN_ALIASES.get(root, root)
    want = {
        "passwordauthentication": "no",
        "kbdinteractiveauthentication": "no",
        "permitemptypasswords": "no",
        "permitrootlogin": str(data["sshd_permit_root_login"]),
        "maxauthtries": str(data["sshd_max_auth_tries"]),
        "logingracetime": str(data["sshd_login_grace_time"]),
        "x11forwarding": "no",
    }
    wrong = [
        f"{key} {seen.get(key)} (want {value})"
        for key, value in want.items()
        if seen.get(key) != value
    ]
    detail = "; ".join(wrong) or f"no passwords, permitrootlogin {want['permitrootlogin']}"
    return Check("sshd keys only", not wrong, detail)


def last_setting(config: str, key: str) -> str | None:
    """Return the value ``key`` ends up with in ``systemd-analyze cat-config`` output."""
    value = None
    for line in config.splitlines():
        name, sep, rest = line.strip().partition("=")
        if sep and name.strip() == key:
            value = rest.strip()
    return value


def _journal(config: Probe, journal_file: Probe) -> Check:
    storage = last_setting(config.output, "Storage")
    writing = journal_file.code == 0
    where = "writing to /var/log/journal" if writing else "nothing in /var/log/journal"
    return Check(
        "journal persistent", storage == "persistent" and writing, f"Storage={storage}, {where}"
    )


def _role_marker(roles: list[str], marker: Probe) -> Check:
    if marker.code != 0:
        return Check("role marker", False, marker.output)
    seen = [
        line.strip() for line in marker.output.splitlines() if line.strip()[:1] not in ("", "#")
    ]
    return Check("role marker", seen == roles, ",".join(seen) or "no roles")


def _kernel(data: Mapping[str, Any], container: str | None, sysctl: Probe, thp: Probe) -> Check:
    if container:
        return Check(
            "kernel tuning", True, f"skipped: container ({container}) shares its host's kernel"
        )
    seen = dict(
        (key.strip(), value.strip())
        for key, sep, value in (line.partition("=") for line in sysctl.output.splitlines())
        if sep
    )
    settings: Mapping[str, Any] = data["sysctl"]
    wrong = [
        f"{key}={seen.get(key)} (want {value})"
        for key, value in sorted(settings.items())
        if (seen.get(key) or "").split() != str(value).split()
    ]
    want_thp = f"[{data['transparent_hugepages']}]"
    if want_thp not in thp.output.split():
        wrong.append(f"transparent_hugepage {thp.output} (want {want_thp})")
    detail = "; ".join(wrong) or f"{len(settings)} sysctls, transparent huge pages {want_thp}"
    return Check("kernel tuning", not wrong, detail)

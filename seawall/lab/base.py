"""The cached base root filesystem every lab host overlays.

Minimal on purpose, like a fresh cloud host: systemd, sshd, python3, sudo. It
holds no SSH host keys, no machine id and no authorized key; each host gets
those in its own overlay layer.
"""

import hashlib
import json
import shutil
from pathlib import Path

from seawall.lab.config import LabConfig
from seawall.local import run

SUITE = "bookworm"

# Bump when the customisation below changes, so cached bases are rebuilt.
_LAYOUT_VERSION = "3"

_HOSTKEYS_UNIT = """\
# /etc/systemd/system/seawall-hostkeys.service (seawall lab base)
[Unit]
Description=Generate missing SSH host keys at first boot
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
"""

# Timers that take the dpkg lock at random times and fight the deploys.
_MASKED_UNITS = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "apt-daily.service",
    "apt-daily-upgrade.service",
    "e2scrub_all.timer",
    "fstrim.timer",
)


def base_key(config: LabConfig) -> str:
    """Return the cache key of the base: what it is built from."""
    recipe = json.dumps(
        [
            SUITE,
            config.mirror,
            sorted(config.base_packages),
            _LAYOUT_VERSION,
            _HOSTKEYS_UNIT,
            _MASKED_UNITS,
        ]
    )
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def _marker(config: LabConfig) -> Path:
    return config.base_rootfs.parent / "built"


def base_current(config: LabConfig) -> bool:
    marker = _marker(config)
    return marker.exists() and marker.read_text().strip() == base_key(config)


def _customise(rootfs: Path, mirror: str) -> None:
    (rootfs / "etc/apt/sources.list").write_text(
        f"deb {mirror} {SUITE} main\n"
        f"deb {mirror} {SUITE}-updates main\n"
        f"deb {mirror.rsplit('/', 1)[0]}/debian-security {SUITE}-security main\n"
    )
    # A fresh machine id per host, made at first boot.
    (rootfs / "etc/machine-id").write_text("")
    (rootfs / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    unit = rootfs / "etc/systemd/system/seawall-hostkeys.service"
    unit.write_text(_HOSTKEYS_UNIT)
    wants = rootfs / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / unit.name
    if not link.is_symlink():
        link.symlink_to(f"/etc/systemd/system/{unit.name}")
    for name in _MASKED_UNITS:
        masked = rootfs / "etc/systemd/system" / name
        masked.unlink(missing_ok=True)
        masked.symlink_to("/dev/null")
    # debootstrap leaves its own apt caches; the hosts fetch through the proxy.
    for cached in (rootfs / "var/cache/apt/archives").glob("*.deb"):
        cached.unlink()


def ensure_base(config: LabConfig, log=print) -> bool:
    """Build the base root filesystem unless a current one is cached; return True if built."""
    if base_current(config) and config.base_rootfs.is_dir():
        return False
    target = config.base_rootfs
    staging = target.with_name("rootfs.new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    log(f"building the base root filesystem ({SUITE}, minbase) in {target} ...")
    run(
        [
            "debootstrap",
            "--variant=minbase",
            "--include=" + ",".join(config.base_packages),
            SUITE,
            str(staging),
            config.mirror,
        ],
        timeout=900,
    )
    _customise(staging, config.mirror)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    _marker(config).write_text(base_key(config) + "\n")
    return True

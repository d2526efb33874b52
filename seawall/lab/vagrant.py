"""Vagrant machines for an inventory: the host data the Vagrantfile reads, and a vagrant-lxc box.

The Vagrantfile states no address: it runs ``python3 -m seawall.lab.vagrant [INVENTORY]``
and reads the JSON this prints. The box is packed from the lab's cached base root
filesystem in a temporary copy; the base itself is only ever read.
"""

import argparse
import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seawall import inventory
from seawall.errors import SeawallError
from seawall.inventory import Topology

# The machines have addresses of their own, so they run beside the lab.
DEFAULT_INVENTORY = "inventories/vagrant.py"

# The lxc provider's box, added by `vagrant up` from the file build_box() writes.
BOX_NAME = "seawall/bookworm-lxc"
BOX_FILE_NAME = "seawall-bookworm-lxc.box"

# The virtualbox and libvirt providers use Debian's own box of the same release.
UPSTREAM_BOX = "debian/bookworm64"

# Not the lab's "seawall-" prefix: the lab manages every container with that
# prefix, and Vagrant must own its machines alone.
CONTAINER_PREFIX = "vagrant-seawall-"

# Bump when _prepare_rootfs() changes, so a cached box is rebuilt (the unit
# and config texts below are part of the fingerprint already).
BOX_RECIPE = "1"

# Where distributions put Vagrant's insecure public key (Debian's package, HashiCorp's).
_VAGRANT_KEY_GLOBS = (
    "/usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub",
    "/usr/share/vagrant/keys/vagrant.pub",
    "/opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant.pub",
)

# Runs before sshd at every boot. Host keys: the base has none (a host
# recreated at an address must get a new key). /etc/hosts: Vagrant sets the
# host name only if `hostname -f` already gives it; otherwise it restarts
# ifupdown units this container does not have, and sudo warns without it.
_FIRSTBOOT_UNIT = """\
# /etc/systemd/system/seawall-vagrant-firstboot.service, managed by seawall (vagrant-lxc box)
[Unit]
Description=Give this Vagrant machine its SSH host keys and its name in /etc/hosts
DefaultDependencies=no
After=local-fs.target
Before=ssh.service ssh.socket sysinit.target

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
ExecStart=/bin/sh -c 'grep -qE "[[:space:]]%H([[:space:]]|$)" /etc/hosts \\
    || echo "127.0.1.1 %H" >> /etc/hosts'

[Install]
WantedBy=sysinit.target
"""

# The same container settings as the lab's hosts (seawall/lab/hosts.py). It
# follows /etc/lxc/default.conf in the container's config, so these win; the
# network comes last, from the Vagrantfile's lxc.customize lines.
_LXC_CONFIG = """\
# vagrant-lxc box config, managed by seawall (seawall/lab/vagrant.py)
lxc.include = /usr/share/lxc/config/debian.common.conf
lxc.arch = linux64
lxc.apparmor.profile = unconfined
lxc.apparmor.allow_nesting = 0
lxc.mount.auto = proc:mixed sys:mixed cgroup:mixed
lxc.autodev = 1
"""


def mac_address(address: str) -> str:
    """Return the MAC the lxc provider pins for an IPv4 address.

    LXC draws a new MAC at every start, and the outer machine's stale ARP entry
    then blocks SSH for ~19 s. 06:56 is locally administered and unicast, and
    differs from what the lab uses, so a machine never shares a MAC with a lab host.
    """
    octets = ipaddress.IPv4Address(address).packed
    return ":".join(f"{byte:02x}" for byte in b"\x06\x56" + octets)


def box_file(topology: Topology) -> Path:
    """Return where build_box() writes the vagrant-lxc box: under the lab's state directory."""
    return Path(str(_lab_value(topology, "lab_state_dir"))) / "vagrant" / BOX_FILE_NAME


def _stamp(box: Path) -> Path:
    return box.with_name(box.name + ".fingerprint")


def box_name(topology: Topology) -> str:
    """Return the name `vagrant up` adds the current box under.

    Vagrant never re-reads a box it already added under the same name, so the
    name carries the build's fingerprint: a rebuilt box is added as a new one.
    """
    try:
        fingerprint = _stamp(box_file(topology)).read_text(encoding="utf-8").strip()
    except OSError:
        # Not built yet, or the state directory is root's: `vagrant validate` still works.
        return BOX_NAME
    return f"{BOX_NAME}-{fingerprint[:12]}"


def hosts_json(topology: Topology) -> dict[str, Any]:
    """Return what the Vagrantfile needs: hosts, addresses, bridge, prefix, box, keys.

    Raises:
        SeawallError: a host has no valid private_address, or lab data is missing.
    """
    bridge = str(_lab_value(topology, "lab_bridge"))
    prefix = int(_lab_value(topology, "lab_prefix_length"))
    network = ipaddress.IPv4Network(
        f"{_lab_value(topology, 'lab_bridge_address')}/{prefix}", strict=False
    )
    hosts = []
    for host in topology:
        try:
            address = ipaddress.IPv4Address(host.address)
        except (KeyError, ValueError) as error:
            raise SeawallError(f"{host.name}: private_address: {error}") from None
        if address not in network:
            raise SeawallError(f"{host.name}: private_address: {address} is not in {network}")
        hosts.append(
            {
                "name": host.name,
                "address": str(address),
                "mac": mac_address(str(address)),
                "container": CONTAINER_PREFIX + host.name,
                "groups": list(host.groups),
            }
        )
    return {
        "inventory": str(topology.path.resolve()),
        "bridge": bridge,
        "bridge_address": str(_lab_value(topology, "lab_bridge_address")),
        "prefix": prefix,
        "netmask": str(network.netmask),
        "broadcast": str(network.broadcast_address),
        "box": box_name(topology),
        "box_file": str(box_file(topology)),
        "upstream_box": UPSTREAM_BOX,
        # The key pyinfra logs in as root with (the lab's): the machines authorize it.
        "root_key": _public_key(topology),
        "known_hosts": str(topology.value("ssh_known_hosts_file") or ""),
        "hosts": hosts,
    }


def _public_key(topology: Topology) -> str:
    """The public half of the inventory's ssh_key, or '' before `seawall lab up` made it."""
    try:
        return Path(f"{topology.value('ssh_key')}.pub").read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def _lab_value(topology: Topology, key: str) -> Any:
    value = topology.value(key)
    if value in (None, ""):
        raise SeawallError(f"{topology.path}: {key} is not set (it is lab group data)")
    return value


def vagrant_public_key() -> str:
    """Return Vagrant's insecure public key, which `vagrant up` swaps for a machine's own.

    Raises:
        SeawallError: Vagrant is not installed where its packages put it.
    """
    for pattern in _VAGRANT_KEY_GLOBS:
        for path in sorted(Path("/").glob(pattern.lstrip("/")), reverse=True):
            return path.read_text(encoding="utf-8").strip()
    raise SeawallError("Vagrant's insecure public key not found: install vagrant")


def _fingerprint(base: Path, public_key: str) -> str:
    """Summarise the base rootfs (every entry's path, size, mtime) and the box recipe."""
    digest = hashlib.sha256(
        "\n".join([BOX_RECIPE, public_key, _FIRSTBOOT_UNIT, _LXC_CONFIG]).encode()
    )
    for directory, dirnames, filenames in os.walk(base):
        dirnames.sort()
        for name in sorted(filenames) + dirnames:
            path = os.path.join(directory, name)
            stat = os.lstat(path)
            relative = os.path.relpath(path, base)
            digest.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _run(command: list[str], timeout: float) -> None:
    try:
        subprocess.run(command, check=True, timeout=timeout, capture_output=True, text=True)
    except subprocess.CalledProcessError as error:
        raise SeawallError(f"{' '.join(command)} failed: {error.stderr.strip()}") from None
    except subprocess.TimeoutExpired:
        raise SeawallError(f"{' '.join(command)} did not finish within {timeout:.0f} s") from None


def _prepare_rootfs(rootfs: Path, public_key: str) -> None:
    """Turn a copy of the base into a vagrant-lxc guest: vagrant user, sudo, first-boot unit."""
    # The guest's own useradd, so ids and skeleton follow the guest's settings.
    if not (rootfs / "home" / "vagrant").exists():
        _run(
            [
                "chroot",
                str(rootfs),
                "useradd",
                "--create-home",
                "--user-group",
                "--shell",
                "/bin/bash",
                "vagrant",
            ],
            timeout=60,
        )
    passwd = (rootfs / "etc" / "passwd").read_text(encoding="utf-8")
    entry = next(line.split(":") for line in passwd.splitlines() if line.startswith("vagrant:"))
    uid, gid = int(entry[2]), int(entry[3])

    ssh_dir = rootfs / "home" / "vagrant" / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    keys = ssh_dir / "authorized_keys"
    keys.write_text(public_key + "\n", encoding="utf-8")
    keys.chmod(0o600)
    for path in (ssh_dir, keys):
        os.chown(path, uid, gid)

    sudoers = rootfs / "etc" / "sudoers.d" / "vagrant"
    sudoers.write_text("vagrant ALL=(ALL) NOPASSWD: ALL\n", encoding="utf-8")
    sudoers.chmod(0o440)

    # Every machine must draw its own identity at boot, even if the base has one.
    for key in (rootfs / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()
    # systemd would name the machine after the base's /etc/hostname; without it,
    # the name vagrant-lxc gives the container (the inventory name) stays.
    (rootfs / "etc" / "hostname").unlink(missing_ok=True)
    machine_id = rootfs / "etc" / "machine-id"
    if machine_id.exists():
        machine_id.write_text("", encoding="utf-8")

    units = rootfs / "etc" / "systemd" / "system"
    (units / "seawall-vagrant-firstboot.service").write_text(_FIRSTBOOT_UNIT, encoding="utf-8")
    wants = units / "sysinit.target.wants"
    wants.mkdir(exist_ok=True)
    link = wants / "seawall-vagrant-firstboot.service"
    if not link.is_symlink():
        link.symlink_to("/etc/systemd/system/seawall-vagrant-firstboot.service")


@dataclass(frozen=True)
class BoxReport:
    """The vagrant-lxc box `build_box` made (or found current)."""

    box: Path
    name: str = BOX_NAME

    @property
    def ok(self) -> bool:
        # A build that fails raises: a report exists only for a box on disk.
        return True

    def to_json(self) -> dict[str, Any]:
        return {"box": str(self.box), "name": self.name, "ok": self.ok}

    def to_text(self) -> str:
        # The path alone, so `$(seawall lab box)` gives the file.
        return str(self.box)


def build_box(topology: Topology, force: bool = False) -> Path:
    """Pack the lab's base rootfs as a vagrant-lxc box and return the box file.

    The box is cached under ``<lab_state_dir>/vagrant/`` and rebuilt only when the
    base rootfs or the recipe changed (or with ``force``). The base is copied, never
    changed. Needs root, as the base's files belong to the guest's users.

    Raises:
        SeawallError: no base rootfs yet (run `seawall lab up`), or a build step failed.
    """
    state_dir = Path(str(_lab_value(topology, "lab_state_dir")))
    base = state_dir / "base" / "rootfs"
    if not (base / "etc" / "os-release").exists():
        raise SeawallError(f"no base root filesystem at {base}: run `seawall lab up` first")
    public_key = vagrant_public_key()
    target = box_file(topology)
    stamp = _stamp(target)
    fingerprint = _fingerprint(base, public_key)
    if (
        not force
        and target.is_file()
        and stamp.is_file()
        and stamp.read_text(encoding="utf-8").strip() == fingerprint
    ):
        return target

    target.parent.mkdir(parents=True, exist_ok=True)
    # On the base's own filesystem, so the copy is fast (and reflinked where possible).
    work = Path(tempfile.mkdtemp(prefix="box-build-", dir=target.parent))
    try:
        rootfs = work / "rootfs"
        rootfs.mkdir(mode=0o755)
        # "base/." copies the contents, also when base is a symlink to the rootfs.
        _run(["cp", "-a", "--reflink=auto", f"{base}/.", str(rootfs)], timeout=600)
        _prepare_rootfs(rootfs, public_key)
        # vagrant-lxc's template unpacks with --strip-components=2: "./rootfs/...".
        # gzip -1: the box is unpacked at every `vagrant up`; size matters less than time.
        _run(
            [
                "tar",
                "--numeric-owner",
                "--xattrs",
                "--xattrs-include=*",
                "--use-compress-program=gzip -1",
                "-cf",
                str(work / "rootfs.tar.gz"),
                "-C",
                str(work),
                "./rootfs",
            ],
            timeout=900,
        )
        metadata = {
            "provider": "lxc",
            "version": "1.0.0",
            "built-on": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seawall-base": str(base),
            "seawall-fingerprint": fingerprint,
        }
        (work / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
        (work / "lxc-config").write_text(_LXC_CONFIG, encoding="utf-8")
        partial = target.with_name(target.name + ".partial")
        _run(
            [
                "tar",
                "-cf",
                str(partial),
                "-C",
                str(work),
                "metadata.json",
                "lxc-config",
                "rootfs.tar.gz",
            ],
            timeout=300,
        )
        os.replace(partial, target)
        stamp.write_text(fingerprint + "\n", encoding="utf-8")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def main(argv: list[str] | None = None) -> int:
    """Print hosts_json() of an inventory (the Vagrantfile's one source of addresses)."""
    parser = argparse.ArgumentParser(
        prog="python3 -m seawall.lab.vagrant",
        description="Print the hosts, addresses and bridge of an inventory as JSON, "
        "for the Vagrantfile. Exit codes: 0 ok, 2 error.",
    )
    parser.add_argument(
        "inventory",
        nargs="?",
        default=os.environ.get("SEAWALL_INVENTORY", DEFAULT_INVENTORY),
        help="inventory file (default: $SEAWALL_INVENTORY, else %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        data = hosts_json(inventory.load(args.inventory))
    except SeawallError as error:
        print(f"seawall: {error}", file=sys.stderr)
        return 2
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Lab hosts as privileged LXC system containers overlaying the base root filesystem."""

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from seawall.errors import SeawallError
from seawall.lab.config import LabConfig, LabHost
from seawall.lab.network import require_bridge
from seawall.local import run

T = TypeVar("T")

LXC_PATH = Path("/var/lib/lxc")
CONFIG_MARKER = "# managed by seawall lab"


def container_dir(host: LabHost) -> Path:
    return LXC_PATH / host.container


def state(host: LabHost) -> str:
    """Return the LXC state (RUNNING, STOPPED, FROZEN...), ABSENT, or BROKEN.

    BROKEN: the container is defined but LXC cannot load its config (why: `refusal`).
    """
    if not (container_dir(host) / "config").exists():
        return "ABSENT"
    result = run(["lxc-info", "-n", host.container, "-s", "-H"], check=False, timeout=20)
    return result.stdout.strip() or "BROKEN"


def log_file(host: LabHost) -> Path:
    """LXC's own log of the container's last start (lxc-start -o)."""
    return container_dir(host) / "lxc.log"


def log_tail(host: LabHost, lines: int = 5) -> str:
    """The last error lines LXC logged for the host, one string, or '' if none."""
    try:
        text = log_file(host).read_text(errors="replace")
    except OSError:
        return ""
    # LXC prefixes every line with the container and a timestamp: keep the message.
    kept = [line.split(" - ", 1)[-1] for line in text.splitlines() if " ERROR " in line]
    return " | ".join(kept[-lines:])


def ensure_lab_key(config: LabConfig) -> None:
    """Generate the lab's SSH key once (it never leaves the state directory), and keep
    the admin's public key file, where the inventory names it, a copy of its public half."""
    key = config.ssh_key
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "seawall-lab", "-f", str(key)])
    public = key.with_suffix(".pub").read_text()
    admin = Path(str(config.topology.value("admin_ssh_public_key_file")))
    if admin != key.with_suffix(".pub") and (not admin.exists() or admin.read_text() != public):
        _write_file(admin, public, 0o644)


def _host_key(config: LabConfig, host: LabHost) -> Path:
    """Return the host's SSH host key, made on the controller so its public half is known."""
    key = config.state_dir / "hostkeys" / host.name / "ssh_host_ed25519_key"
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                f"root@{host.name}",
                "-f",
                str(key),
            ]
        )
    return key


def write_known_hosts(config: LabConfig) -> None:
    """Write the lab's own known_hosts: every host's key at its address, nothing else."""
    lines = []
    for host in config.hosts:
        public = _host_key(config, host).with_suffix(".pub").read_text().split()
        lines.append(f"{host.address} {public[0]} {public[1]}")
    config.known_hosts.write_text("\n".join(lines) + "\n")


def _write_file(path: Path, text: str | bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode() if isinstance(text, str) else text
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)


def _seed_delta(config: LabConfig, host: LabHost, delta: Path) -> None:
    """Put the host's identity into its overlay layer before its first boot."""
    # The overlay takes an upper directory's mode, so match the base's.
    for folder, mode in (("etc", 0o755), ("etc/ssh", 0o755), ("root", 0o700), ("root/.ssh", 0o700)):
        (delta / folder).mkdir(parents=True, exist_ok=True)
        os.chmod(delta / folder, mode)
    _write_file(delta / "etc/hostname", host.name + "\n", 0o644)
    # sudo resolves the host's own name; there is no DNS in the lab (LAB-NOTES 4).
    _write_file(
        delta / "etc/hosts",
        f"127.0.0.1 localhost\n127.0.1.1 {host.name}\n::1 localhost ip6-localhost\n",
        0o644,
    )
    public_key = config.ssh_key.with_suffix(".pub").read_text()
    _write_file(delta / "root/.ssh/authorized_keys", public_key, 0o600)
    key = _host_key(config, host)
    _write_file(delta / "etc/ssh/ssh_host_ed25519_key", key.read_bytes(), 0o600)
    _write_file(
        delta / "etc/ssh/ssh_host_ed25519_key.pub", key.with_suffix(".pub").read_bytes(), 0o644
    )


def lxc_config(config: LabConfig, host: LabHost) -> str:
    delta = container_dir(host) / "delta"
    return f"""{CONFIG_MARKER}: host {host.name}
lxc.include = /usr/share/lxc/config/debian.common.conf
lxc.arch = linux64
lxc.uts.name = {host.name}
lxc.rootfs.path = overlay:{config.base_rootfs}:{delta}
lxc.apparmor.profile = unconfined
lxc.mount.auto = proc:mixed sys:mixed cgroup:mixed
lxc.autodev = 1
lxc.start.auto = 0
# The address is set here only, never inside the host too (LAB-NOTES 1).
lxc.net.0.type = veth
lxc.net.0.link = {config.bridge}
lxc.net.0.flags = up
lxc.net.0.name = eth0
lxc.net.0.veth.pair = {host.veth}
lxc.net.0.hwaddr = {host.hwaddr}
lxc.net.0.ipv4.address = {host.address}/{config.prefix_length} {config.network.broadcast_address}
"""


def ensure_defined(config: LabConfig, host: LabHost) -> bool:
    """Create or refresh the container definition; return True if it was created."""
    directory = container_dir(host)
    created = not (directory / "config").exists()
    if not created and state(host) not in ("STOPPED", "BROKEN"):
        return False
    directory.mkdir(parents=True, exist_ok=True, mode=0o770)
    delta = directory / "delta"
    delta.mkdir(exist_ok=True)
    _seed_delta(config, host, delta)
    (directory / "config").write_text(lxc_config(config, host))
    return created


def remove_stale_link(host: LabHost) -> None:
    """Delete the host's interface if it outlived its container (LXC would refuse the name).

    A leftover container no longer in the inventory has no known interface name.
    """
    if host.veth and Path(f"/sys/class/net/{host.veth}").exists():
        run(["ip", "link", "delete", host.veth], check=False)


def start(host: LabHost) -> None:
    """Start (or unfreeze) a host; fail at once with LXC's own reason if it refuses.

    Raises:
        SeawallError: lxc-start refused the container.
    """
    current = state(host)
    if current == "FROZEN":
        run(["lxc-unfreeze", "-n", host.container])
    elif current != "RUNNING":
        remove_stale_link(host)
        log_file(host).unlink(missing_ok=True)
        result = run(
            ["lxc-start", "-n", host.container, "-d", "-l", "INFO", "-o", str(log_file(host))],
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            reason = log_tail(host) or " | ".join(result.stderr.strip().splitlines()[-3:])
            raise SeawallError(
                f"{host.name}: lxc-start refused {host.container} "
                f"(state {state(host)}): {reason or 'no reason logged'}"
            )


def start_all(hosts: list[LabHost]) -> None:
    """Start every host, then fail naming each one LXC refused.

    Raises:
        SeawallError: one or more hosts did not start; the message has LXC's reasons.
    """
    refused = []
    for host in hosts:
        try:
            start(host)
        except SeawallError as error:
            refused.append(str(error))
    if refused:
        raise SeawallError("\n".join(refused))


def stop(host: LabHost) -> None:
    """Stop a host hard (like pulling its power) if it runs."""
    current = state(host)
    if current == "FROZEN":
        run(["lxc-unfreeze", "-n", host.container])
    # A BROKEN container cannot be loaded, so not started either: nothing to stop.
    if current not in ("ABSENT", "STOPPED", "BROKEN"):
        run(["lxc-stop", "-n", host.container, "-k"], timeout=60)


def destroy(host: LabHost) -> None:
    stop(host)
    directory = container_dir(host)
    if (directory / "config").exists():
        if CONFIG_MARKER not in (directory / "config").read_text():
            raise SeawallError(f"{host.container} was not made by seawall: not removing it")
        run(["lxc-destroy", "-n", host.container], timeout=60, check=False)
    # lxc-destroy leaves an overlay's upper and work directories behind.
    shutil.rmtree(directory, ignore_errors=True)
    remove_stale_link(host)


def ssh_ready(address: str) -> bool:
    try:
        with socket.create_connection((address, 22), timeout=0.5) as sock:
            sock.settimeout(1)
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def _booted(host: LabHost, deadline: float) -> str:
    """Wait for the host's systemd to finish booting; return its state (running, degraded...).

    Returns "container STOPPED" (or the state) at once if the container dies meanwhile.
    """
    while True:
        current = state(host)
        if current != "RUNNING":
            return f"container {current}"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "timeout"
        try:
            result = subprocess.run(
                [
                    "lxc-attach",
                    "-n",
                    host.container,
                    "--",
                    "systemctl",
                    "is-system-running",
                    "--wait",
                ],
                capture_output=True,
                text=True,
                # Bounded so a container that dies mid-boot is noticed within seconds.
                timeout=min(remaining, 10),
            )
        except subprocess.TimeoutExpired:
            continue
        answer = result.stdout.strip()
        if answer in ("running", "degraded", "maintenance", "stopping"):
            return answer
        # Attaching right after lxc-start can fail before init is up: try again.
        time.sleep(0.2)


def _in_host(host: LabHost, *command: str) -> str:
    """Run a short command inside a host through LXC (not SSH); its stdout, '' on failure."""
    try:
        result = subprocess.run(
            ["lxc-attach", "-n", host.container, "--", *command],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except subprocess.TimeoutExpired:
        return ""
    return result.stdout.strip()


def _ssh_stage(host: LabHost, deadline: float) -> str | None:
    """Wait for sshd's banner; None once it answers, else the stage the host reached."""
    while True:
        if ssh_ready(host.address):
            return None
        sshd = _in_host(host, "systemctl", "is-active", "ssh.service")
        if sshd == "failed" or time.monotonic() > deadline:
            listening = _in_host(host, "ss", "-Hltn", "sport = :22")
            return (
                f"booted, ssh.service {sshd or 'unknown'}, "
                f"{'listening on port 22' if listening else 'nothing listening on port 22'}, "
                f"no SSH banner from {host.address}:22"
            )
        time.sleep(0.2)


def _on_each(hosts: list[LabHost], wait: Callable[[LabHost], T]) -> dict[str, T]:
    """Run one wait per host, all at once; return {host name: its result}."""
    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        return dict(zip((h.name for h in hosts), pool.map(wait, hosts), strict=True))


def wait_ready(config: LabConfig, hosts: list[LabHost], timeout: float = 120) -> dict[str, str]:
    """Wait until each host's systemd has finished booting and sshd answers.

    Returns the system state per host (running or degraded). A container that
    stops, or an sshd that fails, is reported at once, not at the deadline.

    Raises:
        SeawallError: a host is not ready; the message names the stage it reached.
    """
    require_bridge(config)
    deadline = time.monotonic() + timeout
    states = _on_each(hosts, lambda host: _booted(host, deadline))
    problems = []
    for host in hosts:
        booted = states[host.name]
        if booted.startswith("container "):
            reason = log_tail(host)
            problems.append(
                f"{host.name}: {booted} while booting"
                + (f" (LXC: {reason})" if reason else f" (see {log_file(host)})")
            )
        elif booted == "timeout":
            problems.append(
                f"{host.name}: container running, systemd still booting after {timeout:.0f} s"
            )
    if problems:
        raise SeawallError("hosts not ready:\n" + "\n".join(f"  {p}" for p in problems))
    stages = _on_each(hosts, lambda host: _ssh_stage(host, deadline))
    problems = [f"{name}: {stage}" for name, stage in stages.items() if stage]
    if problems:
        raise SeawallError(
            "hosts not reachable over SSH:\n" + "\n".join(f"  {p}" for p in problems)
        )
    return states

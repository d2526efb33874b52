"""The lab's bridge, its nft guard and the apt proxy on the bridge address.

Lab hosts reach the bridge address (the apt proxy) and each other, nothing
else: no IP forwarding is turned on, and an nft table drops anything that would
leave or enter the bridge through another interface.
"""

import os
import re
import signal
import time
from pathlib import Path

from seawall import netguard
from seawall.errors import SeawallError
from seawall.lab.config import LabConfig
from seawall.local import run

PROXY_BINARY = "/usr/sbin/apt-cacher-ng"


def bridge_exists(config: LabConfig) -> bool:
    return netguard.bridge_exists(config.bridge)


def require_bridge(config: LabConfig) -> None:
    """Refuse to send lab traffic unless the lab's own bridge is up with its address.

    Raises:
        SeawallError: the bridge is missing (the lab is down).
    """
    netguard.require_bridge(config.bridge, config.bridge_address)


def ensure_bridge(config: LabConfig) -> None:
    if not bridge_exists(config):
        run(["ip", "link", "add", config.bridge, "type", "bridge"])
    run(
        [
            "ip",
            "addr",
            "replace",
            f"{config.bridge_address}/{config.prefix_length}",
            "dev",
            config.bridge,
        ]
    )
    run(["ip", "link", "set", config.bridge, "up"])


def remove_bridge(config: LabConfig) -> None:
    if bridge_exists(config):
        run(["ip", "link", "delete", config.bridge])


def guard_ruleset(config: LabConfig) -> str:
    """Return the nft script of the guard table (replaces any older version atomically)."""
    bridge, address, port = config.bridge, config.bridge_address, config.apt_proxy_port
    table = config.guard_table
    return f"""
table inet {table}
delete table inet {table}
table inet {table} {{
    chain forward {{
        type filter hook forward priority -10; policy accept;
        # Nothing is routed between the lab bridge and any other interface.
        iifname "{bridge}" oifname != "{bridge}" drop
        oifname "{bridge}" iifname != "{bridge}" drop
    }}
    chain input {{
        type filter hook input priority -10; policy accept;
        # From the lab, the controller answers only the apt proxy and replies.
        iifname "{bridge}" ct state established,related accept
        iifname "{bridge}" ip daddr {address} tcp dport {port} accept
        iifname "{bridge}" icmp type echo-request accept
        iifname "{bridge}" drop
    }}
}}
"""


def ensure_guard(config: LabConfig) -> None:
    run(["nft", "-f", "-"], input=guard_ruleset(config))


def guard_present(config: LabConfig) -> bool:
    return run(["nft", "list", "table", "inet", config.guard_table], check=False).returncode == 0


def remove_guard(config: LabConfig) -> None:
    if guard_present(config):
        run(["nft", "delete", "table", "inet", config.guard_table])


# --- apt proxy ---------------------------------------------------------------


def _proxy_dir(config: LabConfig) -> Path:
    return config.state_dir / "apt-proxy"


def _proxy_pidfile(config: LabConfig) -> Path:
    return _proxy_dir(config) / "apt-cacher-ng.pid"


def proxy_pid(config: LabConfig) -> int | None:
    """Return the pid of the proxy this lab started, if it still runs."""
    try:
        pid = int(_proxy_pidfile(config).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    # The pid file may be stale and the pid reused: only our own binary counts.
    return pid if b"apt-cacher-ng" in cmdline else None


def _write_proxy_config(config: LabConfig) -> Path:
    base = _proxy_dir(config)
    conf = base / "conf"
    for folder in (conf, base / "cache", base / "log"):
        folder.mkdir(parents=True, exist_ok=True)
    # apt-cacher-ng's stock Debian backend list answered 503 here (LAB-NOTES 7):
    # name the mirror explicitly.
    (conf / "backends_debian").write_text(config.mirror.rstrip("/") + "/\n")
    (conf / "acng.conf").write_text(
        "# written by seawall lab: the lab's apt proxy, on the bridge address only\n"
        f"CacheDir: {base / 'cache'}\n"
        f"LogDir: {base / 'log'}\n"
        "SupportDir: /usr/lib/apt-cacher-ng\n"
        f"BindAddress: {config.bridge_address}\n"
        f"Port: {config.apt_proxy_port}\n"
        f"PidFile: {_proxy_pidfile(config)}\n"
        f"SocketPath: {base / 'socket'}\n"
        "Remap-debrep: file:deb_mirror*.gz /debian ; file:backends_debian\n"
        "Remap-secdeb: security.debian.org security.debian.org/debian-security "
        "deb.debian.org/debian-security /debian-security ; deb.debian.org/debian-security\n"
        "ExThreshold: 4\n"
    )
    return conf


def _listener_pids(address: str, port: int) -> set[int]:
    """Return the pids listening on ``address``:``port``, or on that port on every address."""
    out = run(["ss", "-Hltnp", f"sport = :{port}"], check=False).stdout
    pids: set[int] = set()
    for line in out.splitlines():
        local = line.split()[3].rsplit(":", 1)[0]
        if local in (address, "0.0.0.0", "*", "[::]"):
            pids |= {int(pid) for pid in re.findall(r"pid=(\d+)", line)}
    return pids


def ensure_proxy(config: LabConfig, wait: float = 15) -> int:
    """Start the apt proxy on the bridge address unless it runs; return its pid.

    Raises:
        SeawallError: it did not come up within ``wait`` seconds.
    """
    require_bridge(config)
    pid = proxy_pid(config)
    if pid is None:
        conf = _write_proxy_config(config)
        run([PROXY_BINARY, "-c", str(conf), "ForeGround=0"])
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        pid = proxy_pid(config)
        listeners = _listener_pids(config.bridge_address, config.apt_proxy_port)
        if pid is not None and listeners == {pid}:
            return pid
        if listeners - {pid}:
            # Someone else holds the port (e.g. Debian's own apt-cacher-ng on
            # every address): hosts would talk to it instead of ours.
            raise SeawallError(
                f"port {config.apt_proxy_port} is taken by process(es) "
                f"{sorted(listeners - {pid})}: stop them, then run `seawall lab up` again"
            )
        time.sleep(0.2)
    raise SeawallError(
        f"apt proxy did not listen on {config.bridge_address}:{config.apt_proxy_port} "
        f"within {wait:.0f} s (log: {_proxy_dir(config) / 'log'})"
    )


def stop_proxy(config: LabConfig, wait: float = 10) -> None:
    pid = proxy_pid(config)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and proxy_pid(config) == pid:
        time.sleep(0.1)
    if proxy_pid(config) == pid:
        os.kill(pid, signal.SIGKILL)
    _proxy_pidfile(config).unlink(missing_ok=True)

"""`seawall lab up | down | status`: the lab's whole life, from nothing and from leftovers."""

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from seawall import secrets
from seawall.inventory import Topology
from seawall.lab import base, controller, faults, hosts, network
from seawall.lab.config import LabConfig, lab_config
from seawall.local import run
from seawall.output import table

Log = Callable[[str], None]

# Every systemd in a privileged container takes inotify instances from root's
# kernel-wide allowance (default 128); seven hosts plus the controller's own
# use run it dry, and units then fail with "Too many open files".
INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")
MIN_INOTIFY_INSTANCES = 1024


@dataclass
class HostStatus:
    name: str
    container: str
    address: str
    state: str
    ssh: bool


@dataclass
class LabReport:
    """What the lab looks like (and, after `up`, what it took).

    `goal` is what the command wanted: "up" is ok when every part runs and every
    host answers SSH, "down" when no part of the lab is left.
    """

    bridge: str
    bridge_present: bool
    guard_present: bool
    proxy_pid: int | None
    hosts: list[HostStatus]
    faults: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    goal: Literal["up", "down"] = "up"

    @property
    def ok(self) -> bool:
        if self.goal == "down":
            return (
                not self.bridge_present
                and not self.guard_present
                and self.proxy_pid is None
                and all(host.state == "ABSENT" for host in self.hosts)
            )
        return (
            self.bridge_present
            and self.guard_present
            and self.proxy_pid is not None
            and all(host.state == "RUNNING" and host.ssh for host in self.hosts)
        )

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def to_text(self) -> str:
        rows = [(h.name, h.address, h.state, "yes" if h.ssh else "no") for h in self.hosts]
        lines = [table(["host", "address", "state", "ssh"], rows), ""]
        lines.append(
            f"bridge {self.bridge}: {'up' if self.bridge_present else 'absent'}; "
            f"guard: {'on' if self.guard_present else 'absent'}; "
            f"apt proxy: {self.proxy_pid or 'not running'}"
        )
        if self.faults:
            lines.append("faults: " + "; ".join(self.faults))
        if self.timings:
            lines.append("timings (s): " + ", ".join(f"{k} {v}" for k, v in self.timings.items()))
        if self.goal == "down":
            lines.append("nothing of the lab is left" if self.ok else "parts of the lab are LEFT")
        else:
            lines.append("the lab is up" if self.ok else "the lab is NOT (all) up")
        return "\n".join(lines)


def status(topology: Topology) -> LabReport:
    """Report the bridge, guard, proxy and every host's state."""
    config = lab_config(topology)
    bridge = network.bridge_exists(config)
    rows = []
    for host in config.hosts:
        current = hosts.state(host)
        # Probe SSH only on the lab's own bridge.
        ssh = bridge and current == "RUNNING" and hosts.ssh_ready(host.address)
        rows.append(HostStatus(host.name, host.container, host.address, current, ssh))
    return LabReport(
        bridge=config.bridge,
        bridge_present=bridge,
        guard_present=network.guard_present(config),
        proxy_pid=network.proxy_pid(config),
        hosts=rows,
        faults=faults.active_faults(config) if bridge else [],
    )


def ensure_controller_limits(log: Log) -> None:
    """Raise the controller's inotify instance limit if it is too low for the lab's hosts."""
    current = int(INOTIFY_INSTANCES.read_text())
    if current < MIN_INOTIFY_INSTANCES:
        log(f"raising fs.inotify.max_user_instances from {current} to {MIN_INOTIFY_INSTANCES}")
        INOTIFY_INSTANCES.write_text(f"{MIN_INOTIFY_INSTANCES}\n")


@contextmanager
def _exclusive(config: LabConfig, timeout: float | None = None) -> Iterator[None]:
    """Serialise lab changes: two `up`s at once would race for the same containers.

    ``timeout`` None waits for the lock without end (the CLI); a number bounds the wait.
    """
    config.state_dir.mkdir(parents=True, exist_ok=True)
    with faults.exclusive_lock(config.state_dir / "lock", timeout=timeout):
        yield


def up(
    topology: Topology, log: Log = print, timeout: float = 180, lock_timeout: float | None = None
) -> LabReport:
    """Bring the lab up from any state: nothing, stopped hosts, or a lab already up.

    ``lock_timeout`` bounds the wait for another session's `up`/`down` (None: no bound).

    Raises:
        SeawallError: a step failed, or the lab lock stayed held; the message says which.
    """
    with _exclusive(lab_config(topology), lock_timeout):
        return _up(topology, log, timeout)


def remove(
    topology: Topology, names: list[str], log: Log = print, lock_timeout: float | None = None
) -> None:
    """Remove the named hosts' containers, leaving the rest of the lab as it is.

    For hosts a benchmark added to a copy of the lab inventory (``bench/scale.py``).
    Every name must be a host of ``topology``; nothing is removed otherwise.

    Raises:
        SeawallError: a name is not a host of ``topology``, or the lab lock stayed held.
    """
    config = lab_config(topology)
    chosen = [config.host(name) for name in names]
    with _exclusive(config, lock_timeout):
        for host in chosen:
            if hosts.state(host) != "ABSENT" or hosts.container_dir(host).exists():
                log(f"{host.name}: removing {host.container}")
                hosts.destroy(host)


def _up(topology: Topology, log: Log, timeout: float) -> LabReport:
    timings: dict[str, float] = {}
    started = time.monotonic()
    # Before anything is created: a missing package is named now, not as a
    # host that never boots minutes later.
    controller.require()
    ensure_controller_limits(log)
    config = lab_config(topology)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(config.state_dir, 0o700)
    hosts.ensure_lab_key(config)
    names = sorted({name for host in topology for name in host.required_secrets})
    added = secrets.ensure_file(config.secrets_file, names)
    if added:
        log(f"generated secrets {', '.join(added)} into {config.secrets_file}")
    timings["prepare"] = time.monotonic() - started

    mark = time.monotonic()
    if not base.base_current(config):
        # Hosts overlay the base: a new base means new hosts.
        for host in config.hosts:
            hosts.destroy(host)
    if base.ensure_base(config, log=log):
        timings["base_build"] = time.monotonic() - mark

    mark = time.monotonic()
    network.ensure_bridge(config)
    network.ensure_guard(config)
    network.ensure_proxy(config)
    timings["network"] = time.monotonic() - mark

    mark = time.monotonic()
    # Definitions first: a stopped host must start with the current configuration.
    for host in config.hosts:
        if hosts.ensure_defined(config, host):
            log(f"{host.name}: created {host.container} at {host.address}")
    hosts.write_known_hosts(config)
    # Starts stopped hosts and undoes any fault a previous run left: `up` means a
    # healthy lab. Then every host, started now or before, must answer.
    faults.restore(config, wait=timeout)
    hosts.wait_ready(config, list(config.hosts), timeout=timeout)
    timings["hosts"] = time.monotonic() - mark
    timings["total"] = time.monotonic() - started

    report = status(topology)
    report.timings = {key: round(value, 2) for key, value in timings.items()}
    return report


def _leftover_containers(config: LabConfig) -> list[hosts.LabHost]:
    """Containers of ours no longer in the inventory (renamed or removed hosts)."""
    known = {host.container for host in config.hosts}
    container_prefix = str(config.topology.value("lab_container_prefix"))
    leftovers = []
    if hosts.LXC_PATH.is_dir():
        for directory in sorted(hosts.LXC_PATH.iterdir()):
            conf = directory / "config"
            if (
                directory.name.startswith(container_prefix)
                and directory.name not in known
                and conf.exists()
                and hosts.CONFIG_MARKER in conf.read_text()
            ):
                name = directory.name[len(container_prefix) :]
                leftovers.append(hosts.LabHost(name, "", directory.name, "", ""))
    return leftovers


def down(topology: Topology, log: Log = print) -> LabReport:
    """Remove the lab's containers, bridge, nft tables and proxy; keep the cached base."""
    with _exclusive(lab_config(topology)):
        return _down(topology, log)


def _down(topology: Topology, log: Log) -> LabReport:
    config = lab_config(topology)
    for host in [*config.hosts, *_leftover_containers(config)]:
        if hosts.state(host) != "ABSENT" or hosts.container_dir(host).exists():
            log(f"{host.name}: removing {host.container}")
            hosts.destroy(host)
    network.stop_proxy(config)
    run(["nft", "delete", "table", "bridge", config.fault_table], check=False)
    network.remove_guard(config)
    network.remove_bridge(config)
    return replace(status(topology), goal="down")

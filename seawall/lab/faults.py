"""Real faults for drills and tests: crash, freeze, cut off or partition lab hosts.

Also the lab-wide locks that keep two sessions (a benchmark, a test run, a drill)
from injecting faults on the same hosts at once.
"""

import fcntl
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from seawall.errors import SeawallError
from seawall.lab.config import LabConfig
from seawall.lab.hosts import start_all, state, stop, wait_ready
from seawall.lab.network import require_bridge
from seawall.local import run

# Held around faults injected on app hosts, and on data hosts (drills); `flock PATH
# CMD` from a shell takes the same lock.
APP_FAULT_LOCK = Path("/tmp/seawall-app-faults.lock")
DATA_FAULT_LOCK = Path("/tmp/seawall-data-faults.lock")


def crash(config: LabConfig, name: str) -> None:
    """Stop a host hard, as a power loss would."""
    stop(config.host(name))


def freeze(config: LabConfig, name: str) -> None:
    """Freeze every process of a host: alive to the network stack, answering nothing."""
    host = config.host(name)
    if state(host) == "RUNNING":
        run(["lxc-freeze", "-n", host.container])


def unfreeze(config: LabConfig, name: str) -> None:
    host = config.host(name)
    if state(host) == "FROZEN":
        run(["lxc-unfreeze", "-n", host.container])


def cut(config: LabConfig, name: str) -> None:
    """Cut a host off the bridge (its link goes down) while it keeps running."""
    require_bridge(config)
    run(["ip", "link", "set", config.host(name).veth, "down"])


def _ensure_fault_table(config: LabConfig) -> None:
    # Bridged traffic between two hosts passes the bridge family's forward hook.
    run(
        ["nft", "-f", "-"],
        input=(
            f"table bridge {config.fault_table} {{\n"
            "  chain forward { type filter hook forward priority 0; policy accept; }\n"
            "}\n"
        ),
    )


def partition(config: LabConfig, first: str, second: str) -> None:
    """Drop all traffic between two hosts in both directions; each still reaches the others."""
    require_bridge(config)
    a, b = config.host(first).address, config.host(second).address
    _ensure_fault_table(config)
    for source, target in ((a, b), (b, a)):
        run(
            [
                "nft",
                "add",
                "rule",
                "bridge",
                config.fault_table,
                "forward",
                "ip",
                "saddr",
                source,
                "ip",
                "daddr",
                target,
                "drop",
            ]
        )


def isolate(config: LabConfig, name: str) -> None:
    """Partition one host from every other lab host (clients on the controller still reach it)."""
    for other in config.hosts:
        if other.name != name:
            partition(config, name, other.name)


def active_faults(config: LabConfig) -> list[str]:
    """Describe the faults in place now."""
    faults = []
    table = run(["nft", "list", "table", "bridge", config.fault_table], check=False)
    if table.returncode == 0:
        faults += [
            f"partition: {line.strip()}"
            for line in table.stdout.splitlines()
            if line.strip().endswith("drop")
        ]
    for host in config.hosts:
        current = state(host)
        if current in ("STOPPED", "FROZEN"):
            faults.append(f"{host.name}: {current.lower()}")
        elif current == "RUNNING":
            link = run(["ip", "-o", "link", "show", host.veth], check=False).stdout
            if link and "state DOWN" in link and ",UP" not in link.split(">")[0]:
                faults.append(f"{host.name}: cut off")
    return faults


def restore(config: LabConfig, wait: float = 120) -> None:
    """Undo every fault: heal partitions, reconnect, unfreeze and start every host."""
    run(["nft", "delete", "table", "bridge", config.fault_table], check=False)
    stopped = []
    for host in config.hosts:
        current = state(host)
        if current == "FROZEN":
            run(["lxc-unfreeze", "-n", host.container])
        elif current in ("STOPPED", "BROKEN"):
            stopped.append(host)
    # A host LXC refuses fails here, with LXC's reason, not at the boot deadline.
    start_all(stopped)
    for host in config.hosts:
        if state(host) == "RUNNING":
            run(["ip", "link", "set", host.veth, "up"], check=False)
    if stopped:
        wait_ready(config, stopped, timeout=wait)


@dataclass
class FaultReport:
    """One fault injected (or, for `restore`, every fault undone) and the faults in place after."""

    action: str
    hosts: list[str]
    active: list[str]

    @property
    def ok(self) -> bool:
        # An injection that fails raises; `restore` has done its job only if nothing is left.
        return self.action != "restore" or not self.active

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def to_text(self) -> str:
        if self.action == "restore":
            done = "every fault undone" if self.ok else "faults are LEFT after restore"
        else:
            done = f"{self.action}: {' <-> '.join(self.hosts)}"
        now = "; ".join(self.active) if self.active else "none"
        return f"{done}\nfaults in place: {now}"


_ACTIONS: dict[str, Callable[..., None]] = {
    "crash": crash,
    "freeze": freeze,
    "unfreeze": unfreeze,
    "cut": cut,
    "isolate": isolate,
    "partition": partition,
    "restore": restore,
}


def inject(config: LabConfig, action: str, *hosts: str) -> FaultReport:
    """Apply one fault (`restore` undoes them all) and report the faults in place after it.

    Raises:
        SeawallError: an unknown action or host, or a step failed.
    """
    if action not in _ACTIONS:
        raise SeawallError(f"unknown fault {action!r} (one of {', '.join(_ACTIONS)})")
    _ACTIONS[action](config, *hosts)
    return FaultReport(action, list(hosts), active_faults(config))


@contextmanager
def exclusive_lock(
    path: Path,
    timeout: float | None = None,
    on_wait: Callable[[], None] | None = None,
    poll: float = 0.5,
) -> Iterator[None]:
    """Hold an exclusive flock(2) on `path` (created if missing) for the block.

    Another process holding it (`flock PATH CMD` from a shell included) makes this
    wait: `on_wait` is called once, then the wait is without end if `timeout` is
    None (a blocking flock: under gevent's patching it stalls the whole process),
    else a poll every `poll` seconds for at most `timeout` seconds.

    Raises:
        SeawallError: `timeout` passed and the lock is still held elsewhere.
    """
    with open(path, "a") as handle:
        give_up = None if timeout is None else time.monotonic() + timeout
        waiting = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if give_up is not None and time.monotonic() > give_up:
                    raise SeawallError(f"{path} still held after {timeout} s") from None
                if not waiting:
                    waiting = True
                    if on_wait is not None:
                        on_wait()
                if give_up is None:
                    fcntl.flock(handle, fcntl.LOCK_EX)
                    break
                time.sleep(poll)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def app_fault_lock(timeout: float) -> AbstractContextManager[None]:
    """Hold the app-fault lock (`APP_FAULT_LOCK`) while injecting faults on app hosts.

    Waits at most `timeout` seconds for another session to let go.

    Raises:
        SeawallError: the lock was still held after `timeout` seconds.
    """
    return exclusive_lock(APP_FAULT_LOCK, timeout=timeout)

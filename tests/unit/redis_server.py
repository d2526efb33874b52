"""Real redis-server and Sentinel processes on loopback for the runtime's unit tests.

Each server gets a free port and its own directory, is started by the test and
stopped by its pid: Debian's own redis-server service is never touched.
"""

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from seawall.runtime.reconnect import MajorityClient, RedisSettings

BINARY = shutil.which("redis-server") or "/usr/bin/redis-server"


def _die_with_parent() -> None:
    # A test run killed by a timeout must not leave servers behind (PR_SET_PDEATHSIG).
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One redis-server on 127.0.0.1, in memory only: a restart comes back empty.

    (An fsync per write made WAIT wait on a busy shared disk for up to a second.)
    """

    def __init__(self, directory: Path, *options: str, sentinel_of: int | None = None) -> None:
        # A missing redis-server fails here, never a skip counted as a pass.
        assert os.path.exists(BINARY), "redis-server is not installed: run ./bootstrap.sh"
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.options = options
        self.sentinel_of = sentinel_of
        self.process: subprocess.Popen[bytes] | None = None

    def _command(self) -> list[str]:
        common = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        common += ["--logfile", str(self.directory / "log"), "--save", ""]
        # Replicas sync at once (the default waits 5 s for more replicas to join).
        common += ["--repl-diskless-sync-delay", "0"]
        if self.sentinel_of is None:
            return [BINARY, *common, "--appendonly", "no", *self.options]
        config = self.directory / "sentinel.conf"
        if not config.exists():
            config.write_text(
                f"sentinel monitor seawall 127.0.0.1 {self.sentinel_of} 1\n"
                # Never a failover of its own: tests and benches stage their own.
                "sentinel down-after-milliseconds seawall 86400000\n"
            )
        return [BINARY, str(config), "--sentinel", *common[:-2]]

    def start(self) -> "RedisServer":
        self.process = subprocess.Popen(
            self._command(), stdout=subprocess.DEVNULL, preexec_fn=_die_with_parent
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.client().ping():
                    return self
            except redis.exceptions.RedisError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.directory / "log").read_text()[-2000:]
                raise RuntimeError(f"redis-server on port {self.port} did not start: {log}")
            time.sleep(0.01)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=1)

    def stop(self) -> None:
        """Kill it (SIGKILL: a crash, not a shutdown) and wait for the pid to go."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def freeze(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


class Servers:
    """Start servers for one test; stop them all at its end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[RedisServer] = []

    def redis(self, *options: str) -> RedisServer:
        server = RedisServer(self.directory / f"redis-{len(self.started)}", *options)
        self.started.append(server)
        return server.start()

    def sentinel(self, master: RedisServer) -> RedisServer:
        server = RedisServer(
            self.directory / f"sentinel-{len(self.started)}", sentinel_of=master.port
        )
        self.started.append(server)
        return server.start()

    def pair(self) -> tuple[RedisServer, RedisServer]:
        """A master and one replica, linked (so WAIT 1 is satisfied)."""
        master = self.redis()
        replica = self.redis("--replicaof", "127.0.0.1", str(master.port))
        wait_for_link(master, 1)
        return master, replica

    def stop_all(self) -> None:
        for server in reversed(self.started):
            server.stop()


def wait_for_link(master: RedisServer, replicas: int, timeout: float = 10) -> None:
    """Wait until ``replicas`` replicas confirm the master's writes (INFO says "online"
    before a diskless-synced replica's first ACK: WAIT is the real test)."""
    conn = master.client()
    deadline = time.monotonic() + timeout
    while int(conn.execute_command("WAIT", replicas, 100)) < replicas:
        info = conn.info("replication")
        assert time.monotonic() < deadline, f"no {replicas} replicas confirm writes: {info}"


def settings_for(sentinel: RedisServer, **overrides: object) -> RedisSettings:
    return settings_at(sentinel.port, **overrides)


def settings_at(sentinel_port: int, **overrides: object) -> RedisSettings:
    """Settings for a process that has only the Sentinel's port (a child process)."""
    values: dict[str, object] = {
        "sentinels": (("127.0.0.1", sentinel_port),),
        "master_name": "seawall",
        "operation_deadline": 2.0,
        # Room for a slow fsync on a shared test machine (WAIT gets 4/5 of it).
        "socket_timeout": 1.0,
    }
    values.update(overrides)
    return RedisSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    started = Servers(tmp_path / "servers")
    try:
        yield started
    finally:
        started.stop_all()


def majority_client(sentinel: RedisServer, **overrides: object) -> MajorityClient:
    return MajorityClient(settings_for(sentinel, **overrides))


def copy_keys(source: RedisServer, target: RedisServer, *keys: str) -> None:
    """Give ``target`` the data ``source`` has now: a replica that stops here."""
    for key in keys:
        target.client().restore(key, 0, source.client().dump(key), replace=True)


def promote(sentinel: RedisServer, new: RedisServer, old: RedisServer) -> None:
    """What Sentinel does when it promotes ``new``: the Sentinel names it, ``old`` is gone."""
    sentinel.client().execute_command("SENTINEL", "REMOVE", "seawall")
    sentinel.client().execute_command("SENTINEL", "MONITOR", "seawall", "127.0.0.1", new.port, 1)
    old.stop()

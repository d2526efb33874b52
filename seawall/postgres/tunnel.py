"""An SSH tunnel from the controller to a loopback port of an inventory host.

App hosts' HAProxy and PgBouncer listen on loopback only: tests, benchmarks
and an operator's one-off tools (the trade-store migration) reach them through
the host's SSH, as the services on the host would.
"""

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from seawall.errors import SeawallError
from seawall.inventory import Topology
from seawall.netguard import require_lab_network
from seawall.ssh import ssh_args


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def tunnel(topology: Topology, host: str, remote_port: int, wait: float = 10) -> Iterator[int]:
    """Forward a free local port to ``127.0.0.1:remote_port`` on ``host``; yield the local port.

    Raises:
        SeawallError: the tunnel did not come up within ``wait`` seconds.
    """
    require_lab_network(topology)
    local = _free_port()
    args = ssh_args(topology, host)
    command = [
        args[0],
        "-N",
        "-o",
        "ExitOnForwardFailure=yes",
        "-L",
        f"127.0.0.1:{local}:127.0.0.1:{remote_port}",
        *args[1:],
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + wait
        while True:
            if process.poll() is not None:
                raise SeawallError(f"{host}: SSH tunnel failed: {process.stderr.read().decode()}")  # type: ignore[union-attr]
            try:
                with socket.create_connection(("127.0.0.1", local), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SeawallError(f"{host}: SSH tunnel not up within {wait} s") from None
                time.sleep(0.1)
        yield local
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()

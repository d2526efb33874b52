"""Redis role changes from the controller, for drills and production alike (no lab code).

``wait_healthy`` waits for one master, every replica linked to it and every
Sentinel agreeing; ``switchover`` moves the master role to a replica without
losing an acknowledged write. The rolling restart (``seawall.restart``) and
the drills (``seawall.redis.drill``) share them.
"""

import time
from typing import Any

from redis import exceptions as redis_exceptions

from seawall.errors import SeawallError
from seawall.inventory import Topology
from seawall.redis.client import redis_settings
from seawall.redis.topology import RedisStatus, redis_status
from seawall.runtime.reconnect import MajorityClient, connect


def wait_healthy(topology: Topology, timeout: float = 60) -> RedisStatus:
    """Wait until one master, all replicas connected to it and all Sentinels agree.

    Raises:
        SeawallError: not healthy within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        status = redis_status(topology, timeout=0.5)
        if status.ok:
            return status
        if time.monotonic() > deadline:
            raise SeawallError(f"Redis is not healthy after {timeout:.0f} s: {status.to_json()}")
        time.sleep(0.5)


def switchover(topology: Topology, timeout: float = 30) -> str:
    """Move the master role to a replica without losing an acknowledged write.

    Writes on the old master are paused first, so nothing lands there between
    the promotion and the old master's demotion; paused clients then get
    READONLY and follow the Sentinels to the new master.

    Raises:
        SeawallError: the cluster is unhealthy, or no new master within ``timeout``.
    """
    status = wait_healthy(topology, timeout=timeout)
    assert status.master is not None
    settings = redis_settings(topology)
    host, port = status.master.split(":")

    def on_old_master(*command: object) -> Any:
        # Redis drops its clients' connections when Sentinel demotes it: a
        # command cut off that way is sent once more on a fresh connection
        # (CLIENT PAUSE/UNPAUSE and ROLE act on the server, not the connection).
        for attempt in (1, 2):
            conn = connect(host, int(port), settings.password, 2)
            try:
                return conn.execute_command(*command)
            except (OSError, redis_exceptions.ConnectionError):  # OSError covers ConnectionError
                if attempt == 2:
                    raise
            finally:
                conn.close()

    on_old_master("CLIENT", "PAUSE", int(timeout * 1000), "WRITE")
    try:
        sentinel_host, sentinel_port = settings.sentinels[0]
        sentinel = connect(sentinel_host, sentinel_port, settings.sentinel_password, 2)
        try:
            sentinel.execute_command("SENTINEL", "FAILOVER", settings.master_name)
        finally:
            sentinel.close()
        deadline = time.monotonic() + timeout
        client = MajorityClient(settings)
        try:
            while True:
                try:
                    new = client.discover()
                    if f"{new[0]}:{new[1]}" != status.master:
                        break
                except Exception:  # mid-failover the majority may not name anyone yet
                    pass
                if time.monotonic() > deadline:
                    raise SeawallError(f"no new master within {timeout:.0f} s of SENTINEL FAILOVER")
                time.sleep(0.05)
            # Sentinel demotes the old master right after; unpause only then.
            while time.monotonic() < deadline:
                if on_old_master("ROLE")[0] in (b"slave", "slave"):
                    break
                time.sleep(0.05)
        finally:
            client.close()
    finally:
        on_old_master("CLIENT", "UNPAUSE")
    return f"{new[0]}:{new[1]}"

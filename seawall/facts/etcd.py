"""Facts about this etcd member and, asked from this host, the other members."""

import shlex

from pyinfra.api import FactBase


def _health_probe(endpoint: str) -> str:
    address, _, port = endpoint.rpartition(":")
    # bash's /dev/tcp: no curl or etcdctl needed (a rebuilt host has neither yet).
    request = (
        f"exec 3<>/dev/tcp/{address}/{int(port)} && "
        "printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3"
    )
    return (
        f"if timeout 3 bash -c {shlex.quote(request)} 2>/dev/null "
        f'| grep -q \'"health":"true"\'; then echo {endpoint} healthy; '
        f"else echo {endpoint} unhealthy; fi"
    )


class EtcdHealth(FactBase[dict[str, bool]]):
    """Returns, per ``address:port`` client endpoint, whether that member answers healthy.

    Asked from this host (etcd's ``GET /health``, 3 s each), so a member this
    host cannot reach counts as unhealthy.

    .. code:: python

        {"10.77.0.12:2379": True, "10.77.0.13:2379": False}
    """

    def command(self, endpoints: list[str]) -> str:
        return "; ".join(_health_probe(endpoint) for endpoint in endpoints) or "true"

    def process(self, output: list[str]) -> dict[str, bool]:
        health = {}
        for line in output:
            endpoint, _, verdict = line.strip().partition(" ")
            if verdict in ("healthy", "unhealthy"):
                health[endpoint] = verdict == "healthy"
        return health

    @staticmethod
    def default() -> dict[str, bool]:
        return {}


class EtcdConfigPending(FactBase[bool]):
    """Returns whether ``path`` changed after the running etcd started (a restart is pending).

    .. code:: python

        False
    """

    def command(self, path: str) -> str:
        quoted = shlex.quote(path)
        return (
            'started="$(systemctl show -p ExecMainStartTimestamp --value etcd.service)"; '
            f'if [ -n "$started" ] && [ -f {quoted} ] && '
            f'[ "$(stat -c %Y {quoted})" -gt "$(date -d "$started" +%s)" ]; '
            "then echo yes; else echo no; fi"
        )

    def process(self, output: list[str]) -> bool:
        return [line.strip() for line in output] == ["yes"]

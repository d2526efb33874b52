"""Facts about this etcd member and, asked from this host, the other members."""

import shlex

from pyinfra.api import FactBase


def _health_request(address: str, port: int) -> str:
    # bash's /dev/tcp: no curl or etcdctl needed (a rebuilt host has neither yet).
    request = (
        f"exec 3<>/dev/tcp/{address}/{int(port)} && "
        "printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3"
    )
    return f'timeout 3 bash -c {shlex.quote(request)} 2>/dev/null | grep -q \'"health":"true"\''


def _health_probe(endpoint: str, fallback_port: int) -> str:
    address, _, port = endpoint.rpartition(":")
    probe = _health_request(address, int(port))
    if fallback_port:
        # A member not yet moved to TLS serves /health on its client port only.
        probe = f"{{ {probe} || {_health_request(address, fallback_port)}; }}"
    return f"if {probe}; then echo {endpoint} healthy; else echo {endpoint} unhealthy; fi"


class EtcdHealth(FactBase[dict[str, bool]]):
    """Returns, per ``address:port`` client endpoint, whether that member answers healthy.

    Asked from this host (etcd's ``GET /health``, plain HTTP, 3 s each) at
    each endpoint (a member's metrics port) and, failing that, at
    ``fallback_port`` (its client port, where a member not yet moved to TLS
    answers), so a member this host cannot reach counts as unhealthy.

    .. code:: python

        {"10.77.0.12:2379": True, "10.77.0.13:2379": False}
    """

    def command(self, endpoints: list[str], fallback_port: int = 0) -> str:
        probes = (_health_probe(endpoint, int(fallback_port)) for endpoint in endpoints)
        return "; ".join(probes) or "true"

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


class EtcdServesTls(FactBase[dict[str, bool]]):
    """Returns, per ``address:port`` client endpoint, whether etcd answers TLS there.

    Asked from this host with ``openssl s_client`` (3 s each): the member shows
    its certificate before it asks for the client's, so no client certificate
    is needed to tell.

    .. code:: python

        {"10.77.0.11:2379": True, "10.77.0.12:2379": False}
    """

    def command(self, endpoints: list[str]) -> str:
        probes = [
            f"if timeout 3 openssl s_client -connect {shlex.quote(endpoint)} </dev/null "
            f"2>/dev/null | grep -q 'BEGIN CERTIFICATE'; then echo {shlex.quote(endpoint)} tls; "
            f"else echo {shlex.quote(endpoint)} plain; fi"
            for endpoint in endpoints
        ]
        return "; ".join(probes) or "true"

    def requires_command(self, endpoints: list[str]) -> str:
        return "openssl"

    def process(self, output: list[str]) -> dict[str, bool]:
        served = {}
        for line in output:
            endpoint, _, verdict = line.strip().partition(" ")
            if verdict in ("tls", "plain"):
                served[endpoint] = verdict == "tls"
        return served

    @staticmethod
    def default() -> dict[str, bool]:
        return {}

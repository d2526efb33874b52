"""Facts about this etcd member and, asked from this host, the other members."""

import json
import shlex
from typing import Any

from pyinfra.api import FactBase


def _get(address: str, port: int, path: str) -> str:
    """A plain ``GET path`` with bash's /dev/tcp (no curl: a rebuilt host has none yet)."""
    return (
        f"exec 3<>/dev/tcp/{address}/{int(port)} && "
        f"printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3"
    )


def health_probe(endpoint: str, legacy_port: int | None = None) -> str:
    """Return a shell test: true when the member at ``endpoint`` (``address:port``) is healthy.

    ``endpoint`` is its plain metrics listener; ``legacy_port`` its client port,
    asked the same way (plain HTTP) only when the metrics listener gives no
    healthy answer: a member still on the configuration before TLS has no
    metrics listener and a plain client port. A client port on HTTPS never
    answers a plain request with health, so the fallback cannot pass for it.
    """
    address, _, port = endpoint.rpartition(":")
    ports = [int(port), *([int(legacy_port)] if legacy_port else [])]
    return " || ".join(
        f"{{ timeout 3 bash -c {shlex.quote(_get(address, each, '/health'))} 2>/dev/null "
        '| grep -q \'"health":"true"\'; }'
        for each in ports
    )


class EtcdHealth(FactBase[dict[str, bool]]):
    """Returns, per ``address:port`` endpoint, whether that member answers healthy.

    Asked from this host (etcd's ``GET /health`` on the member's plain metrics
    listener, then, with ``legacy_port``, on its client port over plain HTTP,
    3 s each), so a member this host cannot reach counts as unhealthy.

    .. code:: python

        {"10.77.0.12:2381": True, "10.77.0.13:2381": False}
    """

    def command(self, endpoints: list[str], legacy_port: int | None = None) -> str:
        return (
            "; ".join(
                f"if {health_probe(endpoint, legacy_port)}; then echo {endpoint} healthy; "
                f"else echo {endpoint} unhealthy; fi"
                for endpoint in endpoints
            )
            or "true"
        )

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


def tls_flags(tls_dir: str) -> str:
    """Return etcdctl's options for this host's etcd client certificate in ``tls_dir``."""
    return " ".join(
        f"--{option}={shlex.quote(f'{tls_dir}/{name}')}"
        for option, name in (("cacert", "ca.pem"), ("cert", "host.pem"), ("key", "host.key"))
    )


class EtcdMembers(FactBase[dict[str, Any] | None]):
    """Returns the cluster's membership as the first member that answers sees it, or None.

    Each ``address:port`` client endpoint is asked in turn over HTTPS with this
    host's certificate (in ``tls_dir``), then over plain HTTP (a member before
    TLS), until one answers ``etcdctl member list``. ``endpoint`` is the URL
    that answered: a membership change goes through it. Member IDs are in hex,
    as ``etcdctl member update`` takes them.

    .. code:: python

        {
            "endpoint": "https://127.0.0.1:2379",
            "members": {
                "data-1": {"id": "8e9e05c52164694d", "peer_urls": ["https://10.77.0.11:2380"]},
            },
        }
    """

    def command(self, endpoints: list[str], tls_dir: str) -> str:
        urls = " ".join(
            shlex.quote(f"{scheme}://{endpoint}")
            for endpoint in endpoints
            for scheme in ("https", "http")
        )
        return (
            "answered=; "
            f"for url in {urls}; do "
            'case "$url" in '
            f"https:*) flags={shlex.quote(tls_flags(tls_dir))} ;; *) flags= ;; esac; "
            'if out=$(ETCDCTL_API=3 etcdctl --endpoints="$url" $flags --dial-timeout=2s '
            "--command-timeout=3s member list -w json 2>/dev/null); then "
            'echo "endpoint $url"; echo "$out"; answered=yes; break; fi; '
            "done; "
            '[ -n "$answered" ] || echo none'
        )

    def requires_command(self, endpoints: list[str], tls_dir: str) -> str:
        return "etcdctl"

    def process(self, output: list[str]) -> dict[str, Any] | None:
        if not output or not output[0].startswith("endpoint "):
            return None
        try:
            listed = json.loads("\n".join(output[1:]))
        except ValueError:
            return None
        listed_members = listed.get("members") if isinstance(listed, dict) else None
        members = {}
        for member in listed_members or []:
            if isinstance(member, dict) and member.get("name") and "ID" in member:
                members[str(member["name"])] = {
                    "id": format(int(member["ID"]), "x"),
                    "peer_urls": list(member.get("peerURLs") or []),
                }
        return {"endpoint": output[0].removeprefix("endpoint ").strip(), "members": members}

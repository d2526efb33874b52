"""Facts that ask Patroni about its cluster: its REST API on this host, else ``patronictl``.

The REST API answers in milliseconds; ``patronictl`` starts a Python program
that takes about 0.3 s, which a deploy paid on each database host for each
operation that needs the leader. It still answers when this host's Patroni is
down (it reads the DCS itself).
"""

import json
import shlex
from typing import Any

from pyinfra.api import FactBase


def running_leader(members: list[dict[str, Any]]) -> str | None:
    """Return the name of the running leader among ``PatroniCluster`` members, or ``None``."""
    for member in members:
        if member.get("Role") == "Leader" and member.get("State") == "running":
            return str(member.get("Member"))
    return None


# Patroni's REST roles as patronictl lists them.
_ROLES = {"leader": "Leader", "replica": "Replica", "sync_standby": "Sync Standby"}
_REST = "source: rest"


def _rest_or_ctl(config: str, endpoint: str, ctl: str) -> str:
    """A command printing ``endpoint`` of this host's Patroni REST API (its
    ``restapi.connect_address`` in ``config``) after a marker line, else ``ctl``'s output."""
    quoted = shlex.quote(config)
    found = f"sed -n '/^restapi:/,/^[^ ]/s/^ *connect_address: *//p' {quoted} 2>/dev/null"
    address = f"$({found} | head -n 1)"
    return (
        f'{{ a={address}; [ -n "$a" ] && r=$(curl -sf --max-time 2 "http://$a/{endpoint}") '
        f'&& echo {shlex.quote(_REST)} && printf "%s\\n" "$r"; }} || {ctl}'
    )


def _source(output: list[str]) -> tuple[str, str]:
    """("rest" or "ctl", the JSON text) of a ``_rest_or_ctl`` command's output."""
    if output and output[0].strip() == _REST:
        return "rest", "\n".join(output[1:])
    return "ctl", "\n".join(output)


def _as_listed(member: dict[str, Any]) -> dict[str, Any]:
    """A ``GET /cluster`` member as ``patronictl list -f json`` shows it."""
    listed = {
        "Member": member.get("name"),
        "Host": member.get("host"),
        "Role": _ROLES.get(
            str(member.get("role")), str(member.get("role")).replace("_", " ").title()
        ),
        "State": member.get("state"),
        "TL": member.get("timeline"),
    }
    if isinstance(member.get("lag"), int):
        listed["Lag in MB"] = round(member["lag"] / 1024 / 1024)
    return listed


class PatroniCluster(FactBase[list[dict[str, Any]]]):
    """Returns the members of this host's Patroni cluster, as ``patronictl list`` sees them.

    .. code:: python

        [{"Member": "data-1", "Role": "Leader", "State": "running", "TL": 1}, ...]
    """

    default = list

    def command(self, config: str) -> str:
        return (
            _rest_or_ctl(
                config, "cluster", f"patronictl -c {shlex.quote(config)} list -f json 2>/dev/null"
            )
            + " || echo '[]'"
        )

    def requires_command(self, config: str) -> str:
        return "patronictl"

    def process(self, output: list[str]) -> list[dict[str, Any]]:
        source, text = _source(output)
        try:
            value = json.loads(text or "[]")
        except ValueError:
            return []
        if source == "rest":
            members = value.get("members") if isinstance(value, dict) else None
            return [_as_listed(member) for member in members or [] if isinstance(member, dict)]
        return value if isinstance(value, list) else []


class PatroniDynamicConfig(FactBase[dict[str, Any] | None]):
    """Returns the cluster's dynamic configuration (``patronictl show-config``), or ``None``.

    .. code:: python

        {"ttl": 20, "loop_wait": 2, "postgresql": {"parameters": {...}}}
    """

    def command(self, config: str) -> str:
        # The controller need not have PyYAML: the host's Patroni brings it.
        to_json = "import json,sys,yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"
        ctl = (
            f"patronictl -c {shlex.quote(config)} show-config 2>/dev/null "
            f"| python3 -c {shlex.quote(to_json)}"
        )
        return _rest_or_ctl(config, "config", ctl) + " || echo null"

    def requires_command(self, config: str) -> str:
        return "patronictl"

    def process(self, output: list[str]) -> dict[str, Any] | None:
        try:
            value = json.loads(_source(output)[1] or "null")
        except ValueError:
            return None
        return value if isinstance(value, dict) and value else None


def patroni_mode_probe(endpoint: str) -> str:
    """Return a shell snippet printing the mode of the Patroni whose REST API is ``endpoint``.

    ``paused`` or ``managing`` from its ``GET /patroni`` (its own view: what
    it does if its store goes away or it is stopped), ``unknown`` when it gives
    no such answer. bash's /dev/tcp: no curl needed.
    """
    address, _, port = endpoint.rpartition(":")
    request = (
        f"exec 3<>/dev/tcp/{address}/{int(port)} && "
        "printf 'GET /patroni HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3"
    )
    return (
        f"out=$(timeout 3 bash -c {shlex.quote(request)} 2>/dev/null); "
        'case "$out" in '
        "*'\"pause\": true'*) echo paused ;; "
        "*'\"patroni\": {'*) echo managing ;; "
        "*) echo unknown ;; esac"
    )


class PatroniMode(FactBase[str]):
    """Returns what this host's Patroni does now: ``paused``, ``managing``, ``stopped`` or
    ``unknown``.

    ``stopped``: its unit is not running (it manages nothing); otherwise its
    REST API at ``endpoint`` (``address:port``) says whether it is in
    maintenance mode (``patronictl pause``: stopping it, or losing its store,
    leaves Postgres as it is) or manages the cluster (stopping it stops
    Postgres; losing its store demotes a leader). ``unknown``: running, no
    answer.

    .. code:: python

        "paused"
    """

    def command(self, unit: str, endpoint: str) -> str:
        return (
            f"if systemctl is-active -q {shlex.quote(unit)}; then "
            f"{patroni_mode_probe(endpoint)}; else echo stopped; fi"
        )

    def process(self, output: list[str]) -> str:
        words = [line.strip() for line in output if line.strip()]
        modes = ("paused", "managing", "stopped")
        return words[-1] if words and words[-1] in modes else "unknown"

    @staticmethod
    def default() -> str:
        return "unknown"


class PatroniStore(FactBase[str | None]):
    """Returns the protocol of the store Patroni's file ``config`` names (``https`` or
    ``http``), or None when there is no such file.

    ``http``: the file's ``etcd3`` section has no ``protocol: https`` (before
    etcd had TLS, it named none).

    .. code:: python

        "https"
    """

    def command(self, config: str) -> str:
        quoted = shlex.quote(config)
        return (
            f"if [ -f {quoted} ]; then "
            f"if grep -q '^  protocol: https$' {quoted}; then echo https; else echo http; fi; "
            "else echo none; fi"
        )

    def process(self, output: list[str]) -> str | None:
        words = [line.strip() for line in output if line.strip()]
        return words[0] if words and words[0] in ("https", "http") else None

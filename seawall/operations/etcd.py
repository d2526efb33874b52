"""Restart or rejoin an etcd member without costing the cluster its quorum."""

import shlex

from pyinfra import host
from pyinfra.api import OperationError, operation

from seawall.facts.etcd import EtcdHealth


def _unhealthy(endpoints: list[str], client_port: int) -> list[str]:
    health = host.get_fact(EtcdHealth, endpoints=endpoints, fallback_port=client_port)
    return [endpoint for endpoint in endpoints if not health.get(endpoint)]


def _etcdctl(endpoints: list[str], tls: dict[str, str] | None) -> str:
    """A shell function ``ectl``: etcdctl over https with ``tls`` (cacert, cert, key), else http.

    A member part-way to TLS may serve either (components/etcd.py), so https
    is tried first and plain http after it.
    """
    plain = shlex.quote(",".join(f"http://{endpoint}" for endpoint in endpoints))
    base = "ETCDCTL_API=3 etcdctl --command-timeout=5s --dial-timeout=3s"
    if not tls:
        return f'ectl() {{ {base} --endpoints={plain} "$@"; }}'
    secure = shlex.quote(",".join(f"https://{endpoint}" for endpoint in endpoints))
    files = " ".join(f"--{flag}={shlex.quote(tls[flag])}" for flag in ("cacert", "cert", "key"))
    return (
        f'ectl() {{ {base} --endpoints={secure} {files} "$@" 2>/dev/null '
        f'|| {base} --endpoints={plain} "$@"; }}'
    )


@operation()
def member_restarted(
    peers: list[str],
    client_port: int = 0,
    member: str = "",
    peer_url: str = "",
    tls: dict[str, str] | None = None,
):
    """
    Restart this etcd member, only while every other member answers healthy.

    + peers: the other members' health endpoints, ``address:port`` (metrics port)
    + client_port: where a member not yet moved to TLS answers its health instead
    + member, peer_url: this member's name and peer URL; the cluster's record of
      it is updated first when it differs (``etcdctl member update``: how a
      member's peers move from http to https)
    + tls: etcdctl's cacert, cert and key on this host (the member's own)

    With a member already down, restarting this one would leave the cluster
    (and Patroni's leader lock) without a quorum: the restart is skipped and
    stays pending; the next deploy does it once the others are back.

    **Example:**

    .. code:: python

        member_restarted(
            name="Restart etcd (its configuration changed)",
            peers=["10.77.0.12:2381", "10.77.0.13:2381"],
            client_port=2379,
            member="data-1",
            peer_url="https://10.77.0.11:2380",
        )
    """
    down = _unhealthy(peers, client_port)
    if down:
        host.noop(
            f"restart skipped: {', '.join(down)} not healthy, a restart here could lose the "
            "quorum; it stays pending until a deploy finds every member healthy"
        )
        return
    if member and peer_url:
        url = shlex.quote(peer_url)
        # Through this member's loopback: it still runs its old configuration.
        yield (
            f"{_etcdctl([f'127.0.0.1:{int(client_port)}'], tls)}; "
            # A failed list fails the operation: never restart on a stale peer URL.
            "list=$(ectl member list) || exit 1; "
            f"id=$(echo \"$list\" | awk -F', ' -v name={shlex.quote(member)} "
            f"-v url={url} '$3 == name && $4 != url {{print $1}}'); "
            f'if [ -n "$id" ]; then ectl member update "$id" --peer-urls={url}; fi'
        )
    yield "systemctl restart etcd.service"


@operation()
def member_rejoined(
    member: str,
    peer_url: str,
    peers: list[str],
    client_port: int = 0,
    tls: dict[str, str] | None = None,
):
    """
    Make a rebuilt member (an empty data directory) a new member of the running cluster.

    + member: this member's name
    + peer_url: this member's peer URL
    + peers: the other members' health endpoints, ``address:port`` (metrics port)
    + client_port: their client port (etcdctl's; also where a member not yet
      moved to TLS answers its health)
    + tls: etcdctl's cacert, cert and key on this host (the member's own)

    Its old membership (by name or peer URL) is removed and a new one added
    before it starts (with ``ETCD_INITIAL_CLUSTER_STATE=existing``), so it
    never comes back under its old identity with none of its state. Refused
    unless every other member is healthy: the removal and the addition each
    need a quorum.

    **Example:**

    .. code:: python

        member_rejoined(
            name="Rejoin the cluster as a new member",
            member="data-3",
            peer_url="https://10.77.0.13:2380",
            peers=["10.77.0.11:2381", "10.77.0.12:2381"],
            client_port=2379,
        )
    """
    if not peers:
        host.noop(f"{member} is the only member: there is no cluster to rejoin")
        return
    down = _unhealthy(peers, client_port)
    if down:
        raise OperationError(
            f"{member} has no etcd data and {', '.join(down)} is not healthy: refusing to "
            "change the membership without every other member; bring them back first"
        )
    clients = [f"{peer.rpartition(':')[0]}:{int(client_port)}" for peer in peers]
    url, name = shlex.quote(peer_url), shlex.quote(member)
    yield (
        f"{_etcdctl(clients, tls)}; "
        "list=$(ectl member list) || exit 1; "
        f"old=$(echo \"$list\" | awk -F', ' -v name={name} -v url={url} "
        "'$3 == name || $4 == url {print $1}'); "
        'for id in $old; do ectl member remove "$id"; done; '
        f"ectl member add {name} --peer-urls={url}"
    )

"""Restart or rejoin an etcd member without costing the cluster its quorum."""

import shlex

from pyinfra import host
from pyinfra.api import OperationError, operation

from seawall.facts.etcd import EtcdHealth


def _unhealthy(endpoints: list[str]) -> list[str]:
    health = host.get_fact(EtcdHealth, endpoints=endpoints)
    return [endpoint for endpoint in endpoints if not health.get(endpoint)]


@operation()
def member_restarted(peers: list[str]):
    """
    Restart this etcd member, only while every other member answers healthy.

    + peers: the other members' client endpoints, ``address:port``

    With a member already down, restarting this one would leave the cluster
    (and Patroni's leader lock) without a quorum: the restart is skipped and
    stays pending; the next deploy does it once the others are back.

    **Example:**

    .. code:: python

        member_restarted(
            name="Restart etcd (its configuration changed)",
            peers=["10.77.0.12:2379", "10.77.0.13:2379"],
        )
    """
    down = _unhealthy(peers)
    if down:
        host.noop(
            f"restart skipped: {', '.join(down)} not healthy, a restart here could lose the "
            "quorum; it stays pending until a deploy finds every member healthy"
        )
        return
    yield "systemctl restart etcd.service"


@operation()
def member_rejoined(member: str, peer_url: str, peers: list[str]):
    """
    Make a rebuilt member (an empty data directory) a new member of the running cluster.

    + member: this member's name
    + peer_url: this member's peer URL
    + peers: the other members' client endpoints, ``address:port``

    Its old membership is removed and a new one added before it starts (with
    ``ETCD_INITIAL_CLUSTER_STATE=existing``), so it never comes back under its
    old identity with none of its state. Refused unless every other member is
    healthy: the removal and the addition each need a quorum.

    **Example:**

    .. code:: python

        member_rejoined(
            name="Rejoin the cluster as a new member",
            member="data-3",
            peer_url="http://10.77.0.13:2380",
            peers=["10.77.0.11:2379", "10.77.0.12:2379"],
        )
    """
    if not peers:
        host.noop(f"{member} is the only member: there is no cluster to rejoin")
        return
    down = _unhealthy(peers)
    if down:
        raise OperationError(
            f"{member} has no etcd data and {', '.join(down)} is not healthy: refusing to "
            "change the membership without every other member; bring them back first"
        )
    endpoints = shlex.quote(",".join(f"http://{peer}" for peer in peers))
    url = shlex.quote(peer_url)
    etcdctl = f"ETCDCTL_API=3 etcdctl --endpoints={endpoints} --command-timeout=5s"
    yield (
        f"old=$({etcdctl} member list | awk -F', ' -v url={url} '$4 == url {{print $1}}'); "
        f'if [ -n "$old" ]; then {etcdctl} member remove "$old"; fi; '
        f"{etcdctl} member add {shlex.quote(member)} --peer-urls={url}"
    )

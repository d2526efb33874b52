"""Restart, rejoin or move an etcd member to TLS without costing the cluster its quorum."""

import shlex

from pyinfra import host
from pyinfra.api import OperationError, operation

from seawall.facts.etcd import EtcdHealth, EtcdMembers, tls_flags
from seawall.operations.patroni import not_paused, until


def _unhealthy(endpoints: list[str], legacy_port: int | None) -> list[str]:
    health = host.get_fact(EtcdHealth, endpoints=endpoints, legacy_port=legacy_port)
    return [endpoint for endpoint in endpoints if not health.get(endpoint)]


def _skipped(down: list[str], what: str) -> None:
    host.noop(
        f"{what} skipped: {', '.join(down)} not healthy, a restart here could lose the "
        "quorum; it stays pending until a deploy finds every member healthy"
    )


def etcdctl(endpoints: str, tls_dir: str) -> str:
    """Return etcdctl (API 3) against ``endpoints`` (URLs), with this host's certificate
    when one of them is HTTPS."""
    flags = f" {tls_flags(tls_dir)}" if "https://" in endpoints else ""
    return f"ETCDCTL_API=3 etcdctl --endpoints={shlex.quote(endpoints)}{flags} --command-timeout=5s"


def _readable_by(user: str, group: str, tls_dir: str) -> str:
    """The daemon's view of its TLS files: readable as ``user`` with ``group`` (its drop-in's
    SupplementaryGroups=), and the certificate the CA's."""
    files = " ".join(
        shlex.quote(f"{tls_dir}/{name}") for name in ("host.key", "host.pem", "ca.pem")
    )
    quoted = shlex.quote
    return (
        f"setpriv --reuid={quoted(user)} --regid={quoted(user)} --groups={quoted(group)} -- "
        f"cat {files} >/dev/null && openssl verify -CAfile {quoted(tls_dir + '/ca.pem')} "
        f"{quoted(tls_dir + '/host.pem')} >/dev/null"
    )


@operation()
def member_restarted(peers: list[str], legacy_port: int | None = None):
    """
    Restart this etcd member, only while every other member answers healthy.

    + peers: the other members' plain metrics endpoints, ``address:port``
    + legacy_port: their client port, asked over plain HTTP when a metrics
      endpoint does not answer (a member still on its configuration before TLS)

    With a member already down, restarting this one would leave the cluster
    (and Patroni's leader lock) without a quorum: the restart is skipped and
    stays pending; the next deploy does it once the others are back.

    **Example:**

    .. code:: python

        member_restarted(
            name="Restart etcd (its configuration changed)",
            peers=["10.77.0.12:2381", "10.77.0.13:2381"],
            legacy_port=2379,
        )
    """
    down = _unhealthy(peers, legacy_port)
    if down:
        _skipped(down, "restart")
        return
    yield "systemctl restart etcd.service"


@operation()
def member_switched_to_tls(
    member: str,
    peer_url: str,
    peers: list[str],
    legacy_port: int,
    clients: list[str],
    client_port: int,
    tls_dir: str,
    tls_group: str,
    patroni: list[tuple[str, str, str]],
    timeout: int = 60,
):
    """
    Move this member to TLS: its peer URL in the membership, then a restart on its TLS
    configuration, only while Patroni is paused and every other member answers healthy.

    + member: this member's name
    + peer_url: its peer URL over HTTPS
    + peers: the other members' plain metrics endpoints, ``address:port``
    + legacy_port: the client port, asked over plain HTTP when a metrics endpoint
      does not answer (a member not moved yet)
    + clients: client endpoints (``address:port``, this member's own first) to
      change the membership through, over HTTPS or, before TLS, plain HTTP
    + client_port: this member's client port (its health over HTTPS is waited for)
    + tls_dir: this host's etcd TLS directory (``host.key``, ``host.pem``, ``ca.pem``)
    + tls_group: the group etcd reads its key as
    + patroni: (inventory name, unit, REST endpoint) of every Postgres host
    + timeout: seconds to wait for this member to answer healthy over HTTPS

    A member moved to TLS no longer answers Patroni's plain requests: Patroni
    must be paused (``patronictl pause``: it acts on no lost store) on every
    Postgres host, or this raises before anything changes. With another member
    down, the move is skipped and stays pending (see ``member_restarted``).
    Already in the membership with ``peer_url``, only the restart remains.

    **Example:**

    .. code:: python

        member_switched_to_tls(
            name="Move this etcd member to TLS",
            member="data-1",
            peer_url="https://10.77.0.11:2380",
            peers=["10.77.0.12:2381", "10.77.0.13:2381"],
            legacy_port=2379,
            clients=["127.0.0.1:2379", "10.77.0.12:2379", "10.77.0.13:2379"],
            client_port=2379,
            tls_dir="/etc/seawall/etcd-tls",
            tls_group="seawall-etcd-tls",
            patroni=[("data-1", "patroni@15-main.service", "10.77.0.11:8008")],
        )
    """
    loose = not_paused(patroni)
    if loose:
        raise OperationError(
            f"{member}: Patroni on {', '.join(loose)} is not paused: moving etcd to TLS would "
            "cut it from its store (a leader demotes itself); the deploy pauses it first"
        )
    down = _unhealthy(peers, legacy_port)
    if down:
        _skipped(down, "move to TLS")
        return
    membership = host.get_fact(EtcdMembers, endpoints=clients, tls_dir=tls_dir)
    if membership is None or member not in membership["members"]:
        raise OperationError(
            f"{member}: no member lists {member} (etcdctl member list through "
            f"{', '.join(clients)}): refusing to restart it onto TLS"
        )
    # etcd reads its files as its own user: check that view before it restarts on them.
    yield _readable_by("etcd", tls_group, tls_dir)
    mine = membership["members"][member]
    if mine["peer_urls"] != [peer_url]:
        # Through a member that answers, before the restart: a quorum then
        # dials this member over HTTPS, and it dials the others as they are.
        yield (
            f"{etcdctl(membership['endpoint'], tls_dir)} member update {mine['id']} "
            f"--peer-urls={shlex.quote(peer_url)}"
        )
    yield "systemctl restart etcd.service"
    health = f"{etcdctl(f'https://127.0.0.1:{int(client_port)}', tls_dir)} endpoint health"
    yield until(
        f"{health} >/dev/null 2>&1",
        timeout,
        f"etcd on {member} is not healthy over HTTPS within {int(timeout)} s",
    )


@operation()
def member_rejoined(
    member: str,
    peer_url: str,
    peers: list[str],
    clients: list[str],
    tls_dir: str,
    legacy_port: int | None = None,
):
    """
    Make a rebuilt member (an empty data directory) a new member of the running cluster.

    + member: this member's name
    + peer_url: this member's peer URL
    + peers: the other members' plain metrics endpoints, ``address:port``
    + clients: the other members' client endpoints (HTTPS), ``address:port``
    + tls_dir: this host's etcd TLS directory (its client certificate)
    + legacy_port: see ``member_restarted``

    Its old membership is removed and a new one added before it starts (with
    ``ETCD_INITIAL_CLUSTER_STATE=existing``), so it never comes back under its
    old identity with none of its state. Refused unless every other member is
    healthy: the removal and the addition each need a quorum.

    **Example:**

    .. code:: python

        member_rejoined(
            name="Rejoin the cluster as a new member",
            member="data-3",
            peer_url="https://10.77.0.13:2380",
            peers=["10.77.0.11:2381", "10.77.0.12:2381"],
            clients=["10.77.0.11:2379", "10.77.0.12:2379"],
            tls_dir="/etc/seawall/etcd-tls",
        )
    """
    if not peers:
        host.noop(f"{member} is the only member: there is no cluster to rejoin")
        return
    down = _unhealthy(peers, legacy_port)
    if down:
        raise OperationError(
            f"{member} has no etcd data and {', '.join(down)} is not healthy: refusing to "
            "change the membership without every other member; bring them back first"
        )
    url = shlex.quote(peer_url)
    ctl = etcdctl(",".join(f"https://{client}" for client in clients), tls_dir)
    yield (
        f"old=$({ctl} member list | awk -F', ' -v url={url} '$4 == url {{print $1}}'); "
        f'if [ -n "$old" ]; then {ctl} member remove "$old"; fi; '
        f"{ctl} member add {shlex.quote(member)} --peer-urls={url}"
    )

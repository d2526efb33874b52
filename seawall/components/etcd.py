"""The etcd cluster Patroni keeps its leader lock in: ``deploy_etcd()``.

What it guarantees on every host of the ``etcd`` group:

- ``etcd-server`` and ``etcd-client`` from Debian are installed, and the install
  starts nothing: Debian's stock one-member localhost cluster never exists;
- one member per host, named after the host, peer and client ports on its
  private address (client also on loopback), all members listed from the
  inventory, the data in ``etcd_data_dir``;
- TLS on both ports, and a certificate from the etcd CA asked of every client
  (``--client-cert-auth``) and every peer (``--peer-client-cert-auth``):
  whoever reaches 2379 without one can neither read nor rewrite Patroni's
  configuration. Only ``/health`` and ``/metrics`` are served without one, in
  plain HTTP on ``etcd_metrics_port``;
- etcd runs, is enabled at boot and restarts after any crash;
- a configuration change restarts one member at a time, and only while every
  other member answers healthy, so the cluster keeps its quorum (and Patroni
  its leader) through a redeploy; otherwise the restart is skipped, saying
  which member is down, and stays pending (the configuration is newer than the
  running member) until a deploy finds them all healthy;
- a rebuilt member (its data directory empty while the others run) rejoins as a
  new member: its old membership is removed and a new one added through the
  healthy members before it starts with ``ETCD_INITIAL_CLUSTER_STATE=existing``
  (docs/postgres.md, "Rebuilding an etcd member").

Certificates (``deploy_etcd_tls()``, on etcd members and Patroni hosts): the
etcd CA lives on the first etcd member, in ``etcd_ca_dir``. Its key can sign a
certificate that rewrites Patroni's store, so it stays on a host that holds
that store already: not on the ops host, whose compromise would then reach
the database's leader lock too, nor on a host that faces clients. As for the
journal (components/logging.py): every host makes its own key, the CA signs
each request with the host's inventory name and private address (members also
127.0.0.1: local tools use loopback), and only certificates move. A member's
key (``etcd_tls_dir``, group ``etcd``) is its server, peer and client
certificate: seawall's own etcdctl on a member uses it as root. A Patroni
host's key (``etcd_client_tls_dir``, group ``postgres``) is Patroni's only.

Moving a running plain-HTTP cluster to TLS keeps the quorum and Patroni's
leader at every step. The step each member's file is at is written in it
(``SEAWALL_ETCD_TLS_STAGE``); a member moves one step past the lowest of all
members, and only while no member has a restart pending, each step a rolling
restart under the gate above:

1. certificates in place; clients served https beside plain http on the same
   port, peers still plain, each member holding a peer certificate (so it can
   dial an https peer later), and the metrics port opens;
2. each member's peer URL moves to https (``etcdctl member update``, etcd's
   documented way, just before its own restart) with peer certificates
   required: every peer already holds one from step 1;
3. plain http is dropped from the client port, only once every Patroni host's
   configuration says https: Patroni moves (components/postgres.py) once every
   member serves TLS, i.e. from step 1 on.

So a plain cluster needs three deploys (1; 2 and Patroni; 3), each safe if it
stops half-way, and a fourth changes nothing; a new cluster starts at step 3.

What it never does:

- wipe a data directory or re-bootstrap an existing cluster
  (``ETCD_INITIAL_*`` are only read when the data directory is empty); a
  membership changes only for a member whose data directory is empty, and
  only while every other member is healthy;
- take a member back to an earlier step, or copy a private key;
- restart etcd when nothing changed.
"""

import shlex
from collections.abc import Mapping, Sequence
from io import StringIO
from typing import Any

from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.api.host import HostData
from pyinfra.facts.files import Directory, File, FindInFile
from pyinfra.operations import server

from seawall.components.common import group_members, install_packages, unit_dropin
from seawall.components.templates import render
from seawall.defaults import ETCD
from seawall.facts.etcd import EtcdConfigPending, EtcdHealth, EtcdServesTls
from seawall.facts.systemd import UnitState, is_running
from seawall.names import patroni_config_path, patroni_unit
from seawall.operations import files, systemd
from seawall.operations.etcd import member_rejoined, member_restarted
from seawall.operations.tls import (
    CERTIFICATE,
    REQUEST,
    tls_ca,
    tls_certificate,
    tls_key,
    tls_signed,
)
from seawall.settings import setting

CONCERN = "etcd"
DEFAULTS_FILE = "/etc/default/etcd"
UNIT_DROPIN = "/etc/systemd/system/etcd.service.d/seawall.conf"
TEMPLATES: tuple[str, ...] = (DEFAULTS_FILE, UNIT_DROPIN)
# openssl makes keys and requests (and probes TLS from Patroni hosts).
PACKAGES = ["etcd-server", "etcd-client", "openssl"]
PATRONI_PACKAGES = ["openssl", "postgresql-common"]
CA_NAME = "seawall etcd CA"
# As the journal CA's: it outlives every certificate it signs many times over.
CA_DAYS = 3650
# The group whose daemon reads a member's key (Debian's etcd runs as etcd).
MEMBER_GROUP = "etcd"
# Patroni runs as postgres: its client key is readable by that group only.
PATRONI_GROUP = "postgres"
# Patroni's certificate is certs/<host>-patroni.pem on the CA: a host that is
# a member too has its member certificate under its plain name.
PATRONI_SUFFIX = "-patroni"
# The last step of the move to TLS (see the module docstring): TLS only.
TLS_STAGE = 3
STAGE_PATTERN = "^SEAWALL_ETCD_TLS_STAGE="
PATRONI_HTTPS_PATTERN = "^ *protocol: https"


def etcd_context(
    name: str,
    data: Mapping[str, Any] | HostData,
    members: Sequence[tuple[str, str]],
    tls_stage: int = TLS_STAGE,
) -> dict[str, Any]:
    """Return what the etcd templates see for member ``name``; ``members`` is (name, address)."""
    context = {key: setting(data, key) for key in ETCD}
    peer_port = context["etcd_peer_port"]
    scheme = peer_scheme(tls_stage)
    context["name"] = name
    context["address"] = str(data.get("private_address"))
    context["tls_stage"] = tls_stage
    context["peer_scheme"] = scheme
    context["initial_cluster"] = ",".join(
        f"{member}={scheme}://{address}:{peer_port}" for member, address in members
    )
    return context


def peer_scheme(tls_stage: int) -> str:
    """Peers move to https at step 2."""
    return "https" if tls_stage >= 2 else "http"


def stage_of(lines: list[str] | None) -> int:
    """Return the step a member's file is at (0: before seawall had TLS, or no file)."""
    for line in lines or []:
        value = line.partition("=")[2].strip().strip('"')
        if value.isdigit():
            return min(int(value), TLS_STAGE)
    return 0


def tls_stage(
    own: int,
    members: Sequence[int | None],
    pending: bool,
    patroni_https: bool,
    fresh: bool,
    certificates: bool = True,
) -> int:
    """Return the step of the move to TLS this member's file should be at.

    + own: the step its file is at now
    + members: the step of every member whose file counts (None: not asked,
      e.g. out of this run), a rebuilt member's own left out
    + pending: some member runs an older file than it has (its restart is pending)
    + patroni_https: every Patroni host's configuration says https
    + fresh: no cluster runs yet: it starts at the last step
    + certificates: this member has its certificate, or gets it in this run
      (the CA's host is in it); without, it stays where it is: etcd would not
      start on a file naming certificates it lacks

    One step past the lowest member, never back, and no step while a member's
    state is unknown or a restart is pending: each step needs every member at
    the one before, running it.
    """
    if own >= TLS_STAGE:
        return TLS_STAGE
    if not certificates:
        return own
    if fresh:
        return TLS_STAGE
    if not members or any(stage is None for stage in members) or pending:
        return own
    lowest = min(stage for stage in members if stage is not None)
    step = lowest + 1 if lowest < 2 else (TLS_STAGE if patroni_https else 2)
    return max(own, min(step, TLS_STAGE))


STATE_PATTERN = "^ETCD_INITIAL_CLUSTER_STATE="


def initial_cluster_state(has_data: bool, rejoin: bool, current: list[str] | None) -> str:
    """Return ETCD_INITIAL_CLUSTER_STATE for this member.

    Only an empty data directory reads it: "existing" when the member rejoins a
    running cluster, "new" when the cluster starts; a member with data keeps
    what its file says, so a redeploy never changes the file for nothing.
    """
    if not has_data:
        return "existing" if rejoin else "new"
    return "existing" if any('"existing"' in line for line in current or []) else "new"


def _reachable() -> dict[str, Any]:
    """The hosts this run reaches, by name (asking another for a fact fails the asker)."""
    return {peer.name: peer for peer in inventory.get_active_hosts()}


def _cluster_state(members: Sequence[tuple[str, str]], rejoin: bool) -> tuple[list[Any], bool]:
    """Every member's step (None if out of this run) and whether a restart is pending on one."""
    active = _reachable()
    stages: list[int | None] = []
    pending = False
    for name, _ in members:
        if rejoin and name == host.name:
            continue
        peer = active.get(name)
        if peer is None:
            stages.append(None)
            continue
        stages.append(
            stage_of(peer.get_fact(FindInFile, path=DEFAULTS_FILE, pattern=STAGE_PATTERN))
        )
        running = is_running(peer.get_fact(UnitState, unit="etcd.service"))
        pending = pending or (
            running and bool(peer.get_fact(EtcdConfigPending, path=DEFAULTS_FILE))
        )
    return stages, pending


def _patroni_https() -> bool:
    """Whether every Patroni host's configuration says https (False if one is out of this run)."""
    active = _reachable()
    for pg in inventory.get_group("postgres", default=[]):
        peer = active.get(pg.name)
        if peer is None:
            return False
        found = peer.get_fact(
            FindInFile, path=patroni_config_path(pg.data), pattern=PATRONI_HTTPS_PATTERN
        )
        if not found:
            return False
    return True


@deploy("etcd cluster", data_defaults=ETCD)
def deploy_etcd() -> None:
    """
    Make this host a member of the etcd cluster: certificates, install, configure, activate.

    Hosts outside the ``etcd`` group are left alone, but for Patroni's
    certificate on a ``postgres`` host.

    **Example:**

    .. code:: python

        from seawall.components.etcd import deploy_etcd

        deploy_etcd()
    """
    if "etcd" in host.groups:
        install_packages("Install etcd (started by nothing until configured)", PACKAGES)
    if "postgres" in host.groups:
        # postgresql-common makes the postgres account (Patroni's key is its
        # group's); it creates no cluster and starts nothing.
        install_packages(
            "Install openssl and postgresql-common (Patroni's etcd key)", PATRONI_PACKAGES
        )
    _certificates()
    if "etcd" not in host.groups:
        return
    members = group_members("etcd")
    context = etcd_context(host.name, host.data, members)
    port, metrics_port = context["etcd_client_port"], context["etcd_metrics_port"]
    peers = [f"{address}:{metrics_port}" for name, address in members if name != host.name]
    # Asked before anything changes: was a member already running here, with its data?
    was_running = is_running(host.get_fact(UnitState, unit="etcd.service"))
    has_data = host.get_fact(Directory, path=f"{context['etcd_data_dir']}/member") is not None
    health = host.get_fact(EtcdHealth, endpoints=peers, fallback_port=port)
    rejoin = not has_data and any(health.values())
    own = stage_of(host.get_fact(FindInFile, path=DEFAULTS_FILE, pattern=STAGE_PATTERN))
    stages, pending = _cluster_state(members, rejoin)
    fresh = not was_running and not has_data and not rejoin
    ca_active = inventory.get_group("etcd")[0].name in _reachable()
    certificates = ca_active or bool(
        host.get_fact(File, path=f"{context['etcd_tls_dir']}/{CERTIFICATE}")
    )
    patroni_https = not fresh and _patroni_https()
    stage = tls_stage(own, stages, pending, patroni_https, fresh, certificates)
    context = etcd_context(host.name, host.data, members, stage)
    context["initial_cluster_state"] = initial_cluster_state(
        has_data, rejoin, host.get_fact(FindInFile, path=DEFAULTS_FILE, pattern=STATE_PATTERN)
    )
    own_pending = was_running and bool(host.get_fact(EtcdConfigPending, path=DEFAULTS_FILE))

    config = files.put(
        name="Configure this etcd member",
        src=StringIO(render(CONCERN, DEFAULTS_FILE, context)),
        dest=DEFAULTS_FILE,
        user="root",
        group="root",
        mode="644",
    )
    unit_dropin(
        "Restart etcd after any crash", render(CONCERN, UNIT_DROPIN, context), UNIT_DROPIN, "etcd"
    )
    peer_url = f"{context['peer_scheme']}://{context['address']}:{context['etcd_peer_port']}"
    # etcdctl on this host: the member's own certificate once it has one.
    client_tls = _etcdctl_tls(context) if own >= 1 or stage >= 1 else None
    if rejoin:
        member_rejoined(
            name="Rejoin the running cluster as a new member (this one has no data)",
            member=host.name,
            peer_url=peer_url,
            peers=peers,
            client_port=port,
            tls=client_tls,
        )
    # Members start together (a new cluster needs a quorum to report ready)...
    systemd.service(
        name="Start and enable etcd", service="etcd.service", running=True, enabled=True
    )
    if not was_running:
        # It just started with this configuration: nothing to restart.
        return
    # ...but restart one at a time, while the others are healthy, so the
    # cluster never loses its quorum.
    if own_pending or config.will_change:
        member_restarted(
            name="Restart etcd (its configuration changed)",
            peers=peers,
            client_port=port,
            # Step 2: the cluster's record of this member moves to https first.
            member=host.name,
            peer_url=peer_url,
            tls=_etcdctl_tls(context) if own >= 1 else None,
            _serial=True,
        )


def _etcdctl_tls(context: Mapping[str, Any]) -> dict[str, str]:
    """etcdctl's --cacert, --cert and --key on a member (its own certificate)."""
    tls_dir = context["etcd_tls_dir"]
    return {
        "cacert": f"{tls_dir}/ca.pem",
        "cert": f"{tls_dir}/host.pem",
        "key": f"{tls_dir}/host.key",
    }


def _certificates() -> None:
    """Make keys, sign requests and install certificates, on etcd members and Patroni hosts.

    Called in the same order on every host (pyinfra orders operations by where
    they are called): every request exists before the CA's host signs, and
    every certificate is signed before any host installs its own.
    """
    members = inventory.get_group("etcd", default=[])
    if not members:
        return
    ca_host = members[0]
    is_member, is_patroni = "etcd" in host.groups, "postgres" in host.groups
    if not (is_member or is_patroni):
        return
    data = host.data
    ca_dir, renew = setting(data, "etcd_ca_dir"), setting(data, "etcd_tls_renew_days")
    member_dir, patroni_dir = setting(data, "etcd_tls_dir"), setting(data, "etcd_client_tls_dir")
    is_ca = host.name == ca_host.name
    active = _reachable()
    if is_ca:
        tls_ca(
            name="Make the etcd CA (its key never leaves this host)",
            directory=ca_dir,
            common_name=CA_NAME,
            days=CA_DAYS,
        )
    if is_member:
        tls_key(
            name="Give this etcd member a TLS key of its own and a request for it",
            directory=member_dir,
            common_name=host.name,
            group=MEMBER_GROUP,
        )
    if is_patroni:
        tls_key(
            name="Give Patroni a TLS key of its own for etcd and a request for it",
            directory=patroni_dir,
            common_name=host.name,
            group=PATRONI_GROUP,
        )
    if is_ca:
        days = setting(data, "etcd_tls_days")
        tls_signed(
            name="Sign every etcd member's certificate (name, address, loopback)",
            directory=ca_dir,
            peers=[
                (m.name, f"{member_dir}/{REQUEST}", str(m.data.get("private_address")))
                for m in members
                if m.name in active
            ],
            days=days,
            renew_days=renew,
            loopback=True,
        )
        tls_signed(
            name="Sign Patroni's etcd client certificate on every Postgres host",
            directory=ca_dir,
            peers=[
                (pg.name, f"{patroni_dir}/{REQUEST}", str(pg.data.get("private_address")))
                for pg in inventory.get_group("postgres", default=[])
                if pg.name in active
            ],
            days=days,
            renew_days=renew,
            suffix=PATRONI_SUFFIX,
        )
    if ca_host.name not in active:
        host.log(f"{ca_host.name} is not in this run: etcd certificates wait for the next deploy")
        return
    if is_member:
        tls_certificate(
            name="Install this etcd member's certificate and the CA's",
            directory=member_dir,
            ca_host=ca_host.name,
            ca_directory=ca_dir,
            renew_days=renew,
        )
    if is_patroni:
        tls_certificate(
            name="Install Patroni's etcd client certificate and the CA's",
            directory=patroni_dir,
            ca_host=ca_host.name,
            ca_directory=ca_dir,
            renew_days=renew,
            suffix=PATRONI_SUFFIX,
        )


# --- Patroni's side of the move (called by components/postgres.py with its host) ---------

# Left on a Postgres host while seawall holds the cluster paused for it, so a
# deploy that stopped half-way resumes it next time (and never resumes an
# operator's own pause).
PAUSE_MARKER = "/var/lib/seawall/etcd-tls-paused"


def patroni_etcd_tls(on: Any, data: Mapping[str, Any] | HostData) -> tuple[bool, bool]:
    """Return, on Patroni host ``on``, (talk to etcd over https, move to it in this run).

    Once on https, always. A Patroni not running yet starts on https (the
    etcd deploy, earlier in the run, gives etcd TLS). A running one moves
    when every member answers TLS on its client port (asked from this host).
    """
    config = patroni_config_path(data)
    if on.get_fact(FindInFile, path=config, pattern=PATRONI_HTTPS_PATTERN):
        return True, False
    if not is_running(on.get_fact(UnitState, unit=patroni_unit(data))):
        return True, False
    port = setting(data, "etcd_client_port")
    endpoints = [f"{address}:{port}" for _, address in group_members("etcd")]
    served = on.get_fact(EtcdServesTls, endpoints=endpoints)
    every = bool(endpoints) and all(served.get(endpoint) for endpoint in endpoints)
    return every, every


def patroni_etcd_switch(data: Mapping[str, Any] | HostData, switch: bool) -> None:
    """Restart Patroni onto etcd over https, the cluster paused, where it moves in this run.

    Patroni 3.0.2 reads its etcd settings at start only (a reload changes the
    credentials, never hosts, protocol or certificates), so it restarts;
    paused, a restarted Patroni leaves Postgres running and the leader keeps
    its lock. Never unpaused: stopping Patroni would stop Postgres (on the
    leader, a failover). Members that move pause the cluster each (the second
    finds it paused).
    """
    if not switch:
        return
    config, unit = shlex.quote(patroni_config_path(data)), patroni_unit(data)
    paused = f"patronictl -c {config} list | grep -q 'Maintenance mode: on'"
    server.shell(
        name="Restart Patroni onto etcd over TLS, the cluster paused (Postgres keeps running)",
        commands=[
            f"install -d -m 755 {PAUSE_MARKER.rpartition('/')[0]} && touch {PAUSE_MARKER}",
            f"{paused} || patronictl -c {config} pause --wait",
            f"if {paused}; then systemctl restart {unit}; "
            "else echo 'the cluster is not paused: Patroni not restarted' >&2; exit 1; fi",
        ],
    )


def patroni_etcd_resume(on: Any, data: Mapping[str, Any] | HostData, switch: bool) -> None:
    """Resume the cluster seawall paused (in this run, or in one that stopped half-way)."""
    if not switch and not on.get_fact(File, path=PAUSE_MARKER):
        return
    config = shlex.quote(patroni_config_path(data))
    server.shell(
        name="Resume Patroni (it talks to etcd over TLS)",
        commands=[
            # Members resume one after another: the second finds it running.
            f"patronictl -c {config} resume --wait || true",
            f"! patronictl -c {config} list | grep -q 'Maintenance mode: on'",
            f"rm -f {PAUSE_MARKER}",
        ],
    )

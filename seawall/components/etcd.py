"""The etcd cluster Patroni keeps its leader lock in: ``deploy_etcd()``.

What it guarantees on every host of the ``etcd`` group:

- ``etcd-server`` and ``etcd-client`` from Debian are installed, and the install
  starts nothing: Debian's stock one-member localhost cluster never exists;
- one member per host, named after the host, peer and client ports on its
  private address (client also on loopback), all members listed from the
  inventory, the data in ``etcd_data_dir``;
- peer and client ports speak HTTPS only and take no peer or client without a
  certificate from the etcd CA (``ETCD_PEER_CLIENT_CERT_AUTH``,
  ``ETCD_CLIENT_CERT_AUTH``): whoever reaches 2379 can no longer read or
  rewrite Patroni's configuration. ``/metrics`` and ``/health`` alone are
  plain HTTP, on ``etcd_metrics_port`` (private address): Prometheus,
  ``seawall status``, the rolling restart and the health gate below read them;
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

And on the hosts that need a certificate (every ``etcd`` member, and every
``postgres`` host, whose Patroni is an etcd client) with the ops host (the
first of ``ops``) as the CA, in the same order on every host (pyinfra orders
operations by where they are called), so one deploy sets it all up:

- the ops host keeps the etcd CA in ``etcd_ca_dir`` (its own, not the
  journal's; its key never leaves it); each host makes its own key in
  ``etcd_tls_dir`` (root:``etcd_tls_group`` 0640, read by etcd and Patroni
  through their drop-ins' ``SupplementaryGroups=``) and a request; the ops
  host signs each request with the host's inventory name, private address and
  127.0.0.1 (for server and client use), renews it ``etcd_tls_renew_days``
  before it expires, and each host installs its certificate and the CA's;
- a host with no certificate yet while the ops host is not in the run stops
  the whole deploy before anything changes, naming the host and the file; one
  that has its files deploys as usual (its certificate waits for the next run).

A running cluster from before TLS (some member's ``/etc/default/etcd`` on
plain HTTP, or its peer URL on ``http://`` in the membership, or some
Patroni still on its plain store) is moved in the same deploy, with no lost
quorum and no Postgres leader change (docs/security.md, "etcd"): certificates
first; then Patroni is paused (``patronictl pause``: it acts on no lost store
and stops no Postgres); then each member in turn, while every other answers
healthy, has its peer URL changed to HTTPS in the membership and restarts on
TLS; the postgres deploy then restarts each Patroni onto HTTPS and resumes the
cluster (``components/postgres.py``). Each step checks the state it finds,
so a deploy cut anywhere is finished by the next one; the migration needs
every etcd and Postgres host in the run, and says so before anything changes.

What it never does:

- wipe a data directory or re-bootstrap an existing cluster
  (``ETCD_INITIAL_*`` are only read when the data directory is empty); a
  membership changes only for a member whose data directory is empty, or to
  move a member's peer URL to HTTPS, and only while every other member is
  healthy;
- move a member to TLS while a Patroni runs unpaused, or resume a pause it did
  not make;
- copy a private key (only requests and certificates move) or replace the CA;
- restart etcd when nothing changed.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from io import StringIO
from typing import Any

from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.api.host import HostData
from pyinfra.facts.files import Directory, File, FindInFile
from pyinfra.operations import server

from seawall.components.common import group_members, install_packages, unit_dropin
from seawall.components.templates import render
from seawall.defaults import ETCD
from seawall.facts import memo
from seawall.facts.etcd import EtcdConfigPending, EtcdHealth, EtcdMembers
from seawall.facts.patroni import PatroniStore
from seawall.facts.systemd import UnitState, is_running
from seawall.names import (
    PATRONI_PAUSE_MARKER,
    PATRONI_RESTART_MARKER,
    patroni_config_path,
    patroni_unit,
)
from seawall.operations import files, systemd
from seawall.operations.etcd import member_rejoined, member_restarted, member_switched_to_tls
from seawall.operations.order import barrier
from seawall.operations.patroni import patroni_paused
from seawall.operations.tls import (
    CA_CERTIFICATE,
    CERTIFICATE,
    KEY,
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
PACKAGES = ["etcd-server", "etcd-client", "openssl"]
CA_NAME = "seawall etcd CA"
# Every certificate also names loopback: tools on a member (etcdctl, the
# deploy's health wait) reach its client port at https://127.0.0.1.
LOOPBACK = "127.0.0.1"
# A defaults file from before TLS: a peer or client URL (listen or advertise)
# on plain HTTP; the metrics listener is plain on purpose. grep's basic regex,
# as FindInFile runs it.
PLAIN_PATTERN = r'^ETCD_[A-Z_]*\(PEER\|CLIENT\)_URLS="[^"]*http://'


def etcd_context(
    name: str, data: Mapping[str, Any] | HostData, members: Sequence[tuple[str, str]]
) -> dict[str, Any]:
    """Return what the etcd templates see for member ``name``; ``members`` is (name, address)."""
    context = {key: setting(data, key) for key in ETCD}
    context["name"] = name
    context["address"] = str(data.get("private_address"))
    context["initial_cluster"] = ",".join(
        f"{member}={peer_url(address, data)}" for member, address in members
    )
    return context


def peer_url(address: str, data: Mapping[str, Any] | HostData) -> str:
    """Return the peer URL of the member at ``address`` (HTTPS)."""
    return f"https://{address}:{setting(data, 'etcd_peer_port')}"


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


def plain_members(membership: Mapping[str, Any] | None) -> list[str]:
    """Return the members whose peer URL in ``membership`` (``EtcdMembers``) is plain HTTP."""
    members = (membership or {}).get("members", {})
    return [
        name
        for name, member in members.items()
        if any(url.startswith("http://") for url in member["peer_urls"])
    ]


def needs_switch(has_data: bool, plain_file: bool, plain_membership: bool) -> bool:
    """Return whether this member must move to TLS (``member_switched_to_tls``).

    A member with data whose defaults file is still on plain HTTP, or whose
    peer URL in the membership still is (a member that started on its TLS
    file without the membership change: stopped during the deploy that
    moved the others). Without data it starts on TLS, or rejoins on it.
    """
    return has_data and (plain_file or plain_membership)


def patroni_needs_restart(running: bool, store: str | None, restart_marker: bool) -> bool:
    """Return whether a Postgres host's Patroni must restart onto its TLS store.

    Running on a file that names a plain store (it is rewritten this run), or
    marked by a deploy that rewrote the file and was cut before the restart.
    A Patroni that does not run starts on the new file by itself.
    """
    return running and (store == "http" or restart_marker)


@dataclass(frozen=True)
class TlsPlan:
    """Who takes part in etcd's TLS on this run, from the inventory alone."""

    # The CA's host (the first ops host; None: the inventory has none), and
    # whether this run reaches it.
    ca: str | None
    ca_active: bool
    # Hosts that need a certificate: etcd members and Postgres hosts, in order.
    holders: list[Any]
    # Hosts this run reaches.
    active: list[Any] = field(default_factory=list)

    def absent(self) -> list[str]:
        """Return the etcd and Postgres hosts this run does not reach."""
        return [one.name for one in self.holders if one not in self.active]


def tls_plan() -> TlsPlan | None:
    """Return who takes part in etcd's TLS; None in an inventory without etcd members."""
    if not inventory.get_group("etcd", default=[]):
        return None
    cas = inventory.get_group("ops", default=[])
    # Hosts this run reaches: pyinfra fails (or --exclude leaves out) the
    # others before any operation, and asking one for a fact would fail the asker.
    active = list(inventory.get_active_hosts())
    holders: list[Any] = []
    for group in ("etcd", "postgres"):
        holders += [one for one in inventory.get_group(group, default=[]) if one not in holders]
    ca = cas[0] if cas else None
    return TlsPlan(
        ca=ca.name if ca else None, ca_active=ca in active, holders=holders, active=active
    )


def pause_host() -> str | None:
    """Return the Postgres host that pauses and resumes Patroni: the first this run reaches."""
    active = list(inventory.get_active_hosts())
    for one in inventory.get_group("postgres", default=[]):
        if one in active:
            return str(one.name)
    return None


def patroni_members() -> list[tuple[str, str, str]]:
    """Return (name, Patroni unit, REST ``address:port``) of every Postgres host."""
    return [
        (
            one.name,
            patroni_unit(one.data),
            f"{one.data.get('private_address')}:{setting(one.data, 'patroni_rest_port')}",
        )
        for one in inventory.get_group("postgres", default=[])
    ]


def _require_all(plan: TlsPlan, why: str) -> None:
    absent = plan.absent()
    if absent:
        raise DeployError(
            f"{host.name}: {why} needs every etcd and Postgres host in the run; "
            f"{', '.join(absent)} is not: nothing was changed"
        )


def _require_files(plan: TlsPlan, tls_dir: str) -> None:
    """Stop the run when this host has no etcd TLS files and the CA's host is away."""
    if plan.ca_active:
        return
    for name in (KEY, CERTIFICATE, CA_CERTIFICATE):
        path = f"{tls_dir}/{name}"
        if not host.get_fact(File, path=path):
            raise DeployError(
                f"{host.name}: {path} is missing and {plan.ca} (the etcd CA) is not in this "
                f"run: {host.name} cannot get its etcd certificate; deploy with {plan.ca}"
            )


def _migration_needed(plan: TlsPlan) -> bool:
    """Return whether any part of the move to TLS remains, asked of every host it concerns.

    Some etcd member on a plain file or with a plain peer URL, or some running
    Patroni on a plain store or marked for its restart onto the TLS one.
    """
    members = [one for one in inventory.get_group("etcd", default=[]) if one in plan.active]
    # Files only seawall changes go through the run's memo (each member asks its
    # own too); live state is asked anew, within the host's bound on sessions.
    for one in members:
        if memo.get_fact(one, FindInFile, path=DEFAULTS_FILE, pattern=PLAIN_PATTERN):
            return True
    for one in members:
        # One member that answers tells every member's peer URL.
        client = f"{LOOPBACK}:{setting(one.data, 'etcd_client_port')}"
        tls_dir = setting(one.data, "etcd_tls_dir")
        membership = memo.ask_live(one, EtcdMembers, endpoints=[client], tls_dir=tls_dir)
        if membership is not None:
            if plain_members(membership):
                return True
            break
    for one in inventory.get_group("postgres", default=[]):
        if one not in plan.active:
            continue
        running = is_running(memo.ask_live(one, UnitState, unit=patroni_unit(one.data)))
        store = memo.get_fact(one, PatroniStore, config=patroni_config_path(one.data))
        marked = bool(memo.get_fact(one, File, path=PATRONI_RESTART_MARKER))
        if patroni_needs_restart(running, store, marked):
            return True
    return False


@deploy("etcd cluster", data_defaults=ETCD)
def deploy_etcd() -> None:
    """
    Make this host a member of the etcd cluster over TLS (its certificate from the ops
    host's etcd CA): install, then certificates, then configure, then activate.

    Postgres hosts get their etcd client certificate here too (Patroni is an
    etcd client) and the first pauses Patroni when etcd moves to TLS; the ops
    host keeps the CA. Other hosts are left alone.

    **Example:**

    .. code:: python

        from seawall.components.etcd import deploy_etcd

        deploy_etcd()
    """
    plan = tls_plan()
    if plan is None:
        return
    is_member, is_client = "etcd" in host.groups, "postgres" in host.groups
    is_ca = host.name == plan.ca
    if not (is_member or is_client or is_ca):
        return
    if plan.ca is None:
        raise DeployError(
            f"{host.name}: etcd takes only peers and clients with a certificate from the "
            "etcd CA, kept on the ops host: the inventory has no ops host"
        )
    data = host.data
    tls_dir = setting(data, "etcd_tls_dir")
    if is_member or is_client:
        _require_files(plan, tls_dir)
    pausing = host.name == pause_host() and _migration_needed(plan)
    if pausing:
        _require_all(plan, "moving etcd to TLS")

    if is_member:
        member = _member_facts(data)
        if member.switch:
            _require_all(plan, f"moving {host.name}'s etcd member to TLS")
        install_packages("Install etcd and openssl (started by nothing until configured)", PACKAGES)
    else:
        member = None
        install_packages("Install openssl (this host's etcd key, or the etcd CA)", ["openssl"])

    _certificates(plan, is_ca, is_member or is_client, tls_dir)
    if pausing:
        patroni_paused(
            name="Pause Patroni: etcd moves to TLS (Postgres keeps running, nothing fails over)",
            config=patroni_config_path(data),
            members=patroni_members(),
            marker=PATRONI_PAUSE_MARKER,
        )
    if member is not None:
        _member(member)


def _certificates(plan: TlsPlan, is_ca: bool, holder: bool, tls_dir: str) -> None:
    """Make keys, sign requests and install certificates.

    Called in the same order on every host: each ``barrier`` is one operation
    of all of them, so every holder's request exists before the ops host signs,
    and every certificate is signed before any host installs its own (pyinfra
    orders hosts' operations only by each host's own sequence: without them, a
    move of a plaintext cluster signed before any request existed).
    """
    data = host.data
    group = setting(data, "etcd_tls_group")
    if holder:
        server.group(
            name=f"Create the group {group} (etcd and Patroni read the etcd TLS key)",
            group=group,
            system=True,
        )
    if is_ca:
        tls_ca(
            name="Make the etcd CA (its key never leaves this host)",
            directory=setting(data, "etcd_ca_dir"),
            common_name=CA_NAME,
            days=setting(data, "etcd_ca_days"),
        )
    if holder:
        tls_key(
            name="Give this host an etcd TLS key of its own and a request for it",
            directory=tls_dir,
            common_name=host.name,
            group=group,
        )
    barrier(
        name="Wait until every etcd key holder has its key and request (the CA signs next)",
        point="every etcd key holder of this run has its key and request",
    )
    if is_ca:
        tls_signed(
            name="Sign every etcd member's and Postgres host's etcd certificate",
            directory=setting(data, "etcd_ca_dir"),
            peers=[
                (
                    one.name,
                    f"{setting(one.data, 'etcd_tls_dir')}/{REQUEST}",
                    str(one.data.get("private_address")),
                )
                for one in plan.holders
                if one in plan.active
            ],
            days=setting(data, "etcd_tls_days"),
            renew_days=setting(data, "etcd_tls_renew_days"),
            extra_addresses=[LOOPBACK],
        )
    barrier(
        name="Wait until the etcd CA has signed every key holder's certificate",
        point="the etcd CA has signed every key holder of this run",
    )
    if not holder:
        return
    if plan.ca is None or not plan.ca_active:
        host.log(f"{plan.ca} is not in this run: this host's etcd certificate stays as it is")
        return
    tls_certificate(
        name="Install this host's etcd certificate and the CA's",
        directory=tls_dir,
        ca_host=plan.ca,
        ca_directory=setting(data, "etcd_ca_dir"),
        renew_days=setting(data, "etcd_tls_renew_days"),
    )


@dataclass(frozen=True)
class _MemberFacts:
    """What this member's host says before anything changes."""

    context: dict[str, Any]
    # The other members: (name, address).
    peers: list[tuple[str, str]]
    was_running: bool
    rejoin: bool
    pending: bool
    switch: bool


def _member_facts(data: HostData) -> _MemberFacts:
    members = group_members("etcd")
    context = etcd_context(host.name, data, members)
    peers = [(name, address) for name, address in members if name != host.name]
    metrics = [f"{address}:{context['etcd_metrics_port']}" for _, address in peers]
    # Asked before anything changes: was a member already running here, with its data?
    was_running = is_running(host.get_fact(UnitState, unit="etcd.service"))
    has_data = host.get_fact(Directory, path=f"{context['etcd_data_dir']}/member") is not None
    rejoin = not has_data and any(
        host.get_fact(
            EtcdHealth, endpoints=metrics, legacy_port=context["etcd_client_port"]
        ).values()
    )
    context["initial_cluster_state"] = initial_cluster_state(
        has_data, rejoin, host.get_fact(FindInFile, path=DEFAULTS_FILE, pattern=STATE_PATTERN)
    )
    plain_file = bool(memo.get_fact(host, FindInFile, path=DEFAULTS_FILE, pattern=PLAIN_PATTERN))
    membership = None
    if was_running:
        membership = host.get_fact(
            EtcdMembers,
            endpoints=[f"{LOOPBACK}:{context['etcd_client_port']}"],
            tls_dir=context["etcd_tls_dir"],
        )
    return _MemberFacts(
        context=context,
        peers=peers,
        was_running=was_running,
        rejoin=rejoin,
        pending=was_running and bool(host.get_fact(EtcdConfigPending, path=DEFAULTS_FILE)),
        switch=needs_switch(has_data, plain_file, host.name in plain_members(membership)),
    )


def _member(member: _MemberFacts) -> None:
    """Configure and activate this member: start it, then move it to TLS or restart it."""
    context = member.context
    client_port, metrics_port = context["etcd_client_port"], context["etcd_metrics_port"]
    metrics = [f"{address}:{metrics_port}" for _, address in member.peers]
    config = files.put(
        name="Configure this etcd member (TLS on its peer and client ports)",
        src=StringIO(render(CONCERN, DEFAULTS_FILE, context)),
        dest=DEFAULTS_FILE,
        user="root",
        group="root",
        mode="644",
    )
    dropin = unit_dropin(
        "Restart etcd after any crash, reading its TLS key",
        render(CONCERN, UNIT_DROPIN, context),
        UNIT_DROPIN,
        "etcd",
    )
    if member.rejoin:
        member_rejoined(
            name="Rejoin the running cluster as a new member (this one has no data)",
            member=host.name,
            peer_url=peer_url(context["address"], host.data),
            peers=metrics,
            clients=[f"{address}:{client_port}" for _, address in member.peers],
            tls_dir=context["etcd_tls_dir"],
            legacy_port=client_port,
        )
    # Members start together (a new cluster needs a quorum to report ready)...
    systemd.service(
        name="Start and enable etcd", service="etcd.service", running=True, enabled=True
    )
    if member.switch:
        # ...a member from before TLS moves over one at a time, Patroni paused...
        member_switched_to_tls(
            name="Move this etcd member to TLS (its peer URL, then a restart)",
            member=host.name,
            peer_url=peer_url(context["address"], host.data),
            peers=metrics,
            legacy_port=client_port,
            clients=[
                f"{LOOPBACK}:{client_port}",
                *(f"{address}:{client_port}" for _, address in member.peers),
            ],
            client_port=client_port,
            tls_dir=context["etcd_tls_dir"],
            tls_group=context["etcd_tls_group"],
            patroni=patroni_members(),
            _serial=True,
        )
        return
    if not member.was_running:
        # It just started with this configuration: nothing to restart.
        return
    # ...and restart one at a time, while the others are healthy, so the
    # cluster never loses its quorum.
    if member.pending or config.will_change or dropin.will_change:
        member_restarted(
            name="Restart etcd (its configuration changed)",
            peers=metrics,
            legacy_port=client_port,
            _serial=True,
        )

"""PostgreSQL 15 under Patroni, leader + synchronous replica: ``deploy_postgres()``.

What it guarantees on every host of the ``postgres`` group:

- ``postgresql-15`` and ``patroni`` from Debian are installed; the install creates
  no ``main`` cluster and starts no daemon (a Debian ``main`` cluster found
  anyway is dropped: Patroni's bootstrap fails on it);
- Patroni runs as ``patroni@<version>-<cluster>`` (enabled, restarted after any
  crash) with etcd3 as its store over HTTPS, with this host's client
  certificate from the etcd CA (made by the etcd deploy; read through the
  drop-in's ``SupplementaryGroups=``), REST API and Postgres on the private
  address; Debian's stock ``patroni.service`` is stopped and disabled;
- a Patroni still running on its plain store from before etcd had TLS is
  restarted onto HTTPS, one host at a time, only while the cluster is paused
  (the etcd deploy paused it: a paused Patroni stops no Postgres and fails
  nothing over), once a majority of etcd members answers this host over
  HTTPS; the first Postgres host then resumes the cluster, if the deploy
  paused it and every member runs on the new store. A host marked "restart
  pending" (``names.PATRONI_RESTART_MARKER``) by a deploy cut before its
  restart is restarted by the next one;
- the cluster's shared settings (timing, synchronous mode, Postgres parameters)
  match the inventory: they are changed through Patroni (``patronictl
  edit-config``), only when they differ, and settings that need a restart are
  reported, never restarted blindly;
- pg_rewind is on (``use_pg_rewind``, ``wal_log_hints``, a rewind user and its
  pg_hba line), so an old leader rejoins as a replica by itself;
- on the current leader only: one login role per ``postgres_service_roles``
  entry, whose password is the secret ``postgres_role_<name>_password`` (sent
  as a SCRAM verifier, never in clear), and each ``postgres_databases`` entry
  owned by its role, connectable only by its owner and its readers;
- pg_hba admits, with scram-sha-256, the Postgres peers (replication and rewind
  only) and the app hosts, each as a service role to its own databases and the
  ones it reads (``names.client_logins``): never as ``all``, never a superuser;
  over TCP loopback only Patroni's own replication connection;
- with WAL archiving on, a callback (``seawall-wal-markers``) runs whenever a
  member starts or changes role: as the primary, it marks ``.ready`` WAL
  segments that the backup repository already holds as ``.done``, so segments
  copied over by pg_rewind can't stall archiving;
- TLS, with an ``ops`` host in the inventory (below).

TLS. Every network connection to Postgres is TLS 1.2 or later:

- certificates: a Postgres CA on the ops host (``postgres_ca_dir``: its own,
  never the journal's); each member makes its own key (``postgres_tls_dir``,
  root:postgres 0640, which Postgres accepts from root) and request, and the
  ops host signs it with the member's inventory name, ``localhost`` and its
  private address (``serverAuth`` only); each member installs its certificate
  and the CA's, each app host the CA's. Keys never move: only requests and
  certificates do. A certificate is renewed ``postgres_tls_renew_days``
  before it expires, or for a new key or address, and Postgres takes it with
  a reload (Patroni's SIGHUP), never a restart;
- one run does it all, in this order on every host (pyinfra orders
  operations by where they are called: ``_certificates`` is one call, and its
  two ``barrier`` operations, called by the ops host, the members and the app
  hosts alike, tie their steps together): the CA; every member's key and
  request; barrier; the CA signs every member of this run; barrier; each
  member installs its certificate, each app host the CA's; then each
  member's Patroni file. So a member's file turns TLS on only when its files
  are there now or arrive earlier in this run (the ops host is in it), and
  ``tls_ready`` stops the member, before its file is written, if they did not
  arrive: Postgres never starts, or reloads, with ``ssl`` on and no certificate;
- a member serves TLS (``ssl`` and its files, ``ssl_min_protocol_version``
  TLSv1.2; each a reload in PostgreSQL 15) once it can. It requires TLS
  (pg_hba ``hostssl`` for every TCP line, after ``hostnossl ... reject`` for
  0.0.0.0/0 and ::/0; the socket lines stay) only when no client would be
  refused: it serves TLS already, or starts with it (a new member), and no
  app host's PgBouncer still runs without TLS (PgBouncer 1.18's default is
  ``server_tls_sslmode = disable``, so a PgBouncer the deploy configured
  before TLS is plain: ``PgbouncerServerTls``); libpq's clients (Patroni's
  replication and pg_rewind, psycopg tools) default to ``sslmode=prefer`` and
  take TLS once it is offered;
- Patroni's replication and rewind connections verify the member they dial
  (``verify-full``: replicas, clones and pg_rewind dial a member's private
  address, Patroni's own timeline check dials ``localhost``; both are in the
  certificate) only when every member serves TLS now or starts with it in
  this run; before that they stay at libpq's ``prefer``. PgBouncer follows
  the same rule (components/pgroute.py, ``verify-ca``);
- so a new cluster runs TLS, required and verified, from its first start, in
  one deploy. A running cluster without TLS takes two: the first turns TLS on
  (reloads; pg_hba still takes plain TCP) and PgBouncer to ``prefer``; the
  second, finding every member serving TLS and every PgBouncer asking for
  it, requires and verifies. No run requires TLS of a client that has not
  asked for it yet; none verifies a member that does not serve it yet;
- never a step back: a member whose Patroni file already requires or
  verifies keeps doing so when another member is out of the run. A member
  down during a run keeps its certificate (only the run's members are
  signed for).

What it never does:

- write Postgres's own configuration files: Patroni writes them;
- promote, demote, switch over or restart Postgres: a redeploy after a failover
  changes nothing and keeps the leader where it is (Patroni itself restarts
  only paused, onto its TLS store);
- resume a cluster someone else paused;
- drop a role or a database, or re-bootstrap an existing cluster;
- put a password on a command line;
- copy a private key, or replace the Postgres CA.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from io import StringIO
from typing import Any

from pyinfra import host, inventory
from pyinfra.api import HiddenValue, deploy
from pyinfra.api.host import HostData
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.files import File
from pyinfra.operations import server
from pyinfra.operations.util import any_changed

from seawall.components.common import group_members, host_secrets, install_packages, unit_dropin
from seawall.components.etcd import patroni_members, patroni_needs_restart, pause_host
from seawall.components.templates import render
from seawall.defaults import ETCD, PATRONI, PGBACKREST, POSTGRES
from seawall.facts import memo
from seawall.facts.patroni import PatroniStore
from seawall.facts.postgres import PGBOUNCER_DEFAULT_SERVER_TLS, PgbouncerServerTls, PostgresTls
from seawall.facts.systemd import UnitState, is_running
from seawall.names import (
    PATRONI_PAUSE_MARKER,
    PATRONI_RESTART_MARKER,
    PGBOUNCER_INI,
    client_logins,
    data_dir,
    patroni_config_path,
    patroni_unit,
    postgres_tls_files,
    role_secret,
)
from seawall.operations import files, systemd
from seawall.operations.files import secret_file
from seawall.operations.order import barrier
from seawall.operations.patroni import (
    patroni_dynamic_config,
    patroni_leader,
    patroni_restarted_on_store,
    patroni_resumed,
)
from seawall.operations.postgres import debian_cluster_absent, service_roles
from seawall.operations.tls import (
    tls_ca,
    tls_ca_trusted,
    tls_certificate,
    tls_key,
    tls_ready,
    tls_signed,
)
from seawall.settings import setting

CONCERN = "postgres"
CREATECLUSTER = "/etc/postgresql-common/createcluster.d/seawall.conf"
UNIT_DROPIN = "/etc/systemd/system/patroni@.service.d/seawall.conf"
# The Patroni template; it renders to /etc/patroni/<version>-<cluster>.yml.
# CLUSTER stands for <version>-<cluster>: the file is /etc/patroni/15-main.yml on PostgreSQL 15.
PATRONI_TEMPLATE = "/etc/patroni/CLUSTER.yml"
# Patroni's callback that unblocks WAL archiving after a rewind (archive on only).
WAL_MARKERS = "/usr/local/libexec/seawall-wal-markers"
TEMPLATES: tuple[str, ...] = (CREATECLUSTER, UNIT_DROPIN, PATRONI_TEMPLATE)
SECRET_NAMES = (
    "postgres_superuser_password",
    "postgres_replication_password",
    "postgres_rewind_password",
    "patroni_restapi_password",
)
# ETCD too: members find the store at etcd_client_port.
DEFAULTS: dict[str, Any] = {**ETCD, **POSTGRES, **PATRONI, **PGBACKREST}
CA_NAME = "seawall postgres CA"
# Patroni dials its own member as `localhost` with the replication credentials
# (its timeline check before a rewind): every member's certificate names it, so
# those credentials can verify the name everywhere they dial.
LOCAL_NAME = "localhost"
# A member's certificate serves; it never identifies a client.
SERVER_USAGE = "serverAuth"
# The group Postgres runs as: it reads the member's key (root:postgres 0640).
KEY_GROUP = "postgres"


# --- TLS: what a run finds, and what each member's file says ------------------------------


@dataclass(frozen=True)
class MemberTls:
    """One member's TLS as this run finds it (``PostgresTls``); ``active``: the run reaches it."""

    name: str
    active: bool = True
    files: bool = False
    # "tls", "plain", or None when no Postgres runs there (new, or stopped cleanly).
    serving: str | None = None
    requires: bool = False
    verifies: bool = False


@dataclass(frozen=True)
class TlsPlan:
    """What a member's Patroni file says: TLS served (``on``), required (pg_hba), verified
    by Patroni's replication and rewind connections."""

    on: bool = False
    required: bool = False
    verify: bool = False


def tls_possible(member: MemberTls, ca_active: bool) -> bool:
    """Whether ``member`` has its TLS files when its Patroni file is written: they are there,
    or the CA's host is in this run and signs before that (``_certificates``)."""
    return member.active and (member.files or ca_active)


def every_member_serves_tls(members: Sequence[MemberTls], ca_active: bool) -> bool:
    """Whether a client may verify every member: each is in this run and serves TLS now, or
    does not run yet and starts with TLS (its file turns it on).

    A member out of the run, or running without TLS, says no: verifying it would refuse it.
    """
    return bool(members) and all(
        member.active
        and (
            member.serving == "tls" or (member.serving is None and tls_possible(member, ca_active))
        )
        for member in members
    )


def bouncers_ask_tls(modes: Mapping[str, str | None], app_hosts: Sequence[str]) -> bool:
    """Whether pg_hba may refuse plain TCP without refusing any app host's PgBouncer.

    ``modes``: each app host of this run's ``PgbouncerServerTls`` (None: no PgBouncer
    file yet, so none routes to Postgres). An app host out of the run says no: its
    PgBouncer may still be plain.
    """
    return all(name in modes and modes[name] != PGBOUNCER_DEFAULT_SERVER_TLS for name in app_hosts)


def member_tls_plan(
    me: MemberTls,
    members: Sequence[MemberTls],
    bouncers: Mapping[str, str | None],
    app_hosts: Sequence[str],
    ca_active: bool,
) -> TlsPlan:
    """Return what member ``me``'s Patroni file says about TLS (see the module docstring)."""
    if not tls_possible(me, ca_active):
        return TlsPlan()
    serves = me.serving in ("tls", None)
    required = me.requires or (serves and bouncers_ask_tls(bouncers, app_hosts))
    verify = me.verifies or every_member_serves_tls(members, ca_active)
    return TlsPlan(on=True, required=required, verify=verify)


def pgbouncer_tls_mode(
    current: str | None, members: Sequence[MemberTls], ca_active: bool, ca_trusted: bool
) -> str:
    """Return the ``server_tls_sslmode`` for an app host's PgBouncer.

    ``verify-ca`` once every member serves TLS (or starts with it) and the host has
    the CA's certificate, or will have it earlier in this run (``ca_trusted``); a
    PgBouncer that verifies already keeps verifying. ``prefer`` otherwise: TLS
    wherever a member offers it, plain TCP where it does not yet.
    """
    verify = current == "verify-ca" or every_member_serves_tls(members, ca_active)
    return "verify-ca" if verify and ca_trusted else "prefer"


def cluster_tls() -> tuple[list[MemberTls], dict[str, str | None], bool]:
    """Read every member's ``PostgresTls`` and every app host's ``PgbouncerServerTls``.

    Returns the members (inventory order), the app hosts' PgBouncer modes (hosts
    this run reaches only) and whether the CA's host is in this run. Only hosts in
    this run are asked: pyinfra fails the asker of a host it could not reach.
    """
    active = {one.name for one in inventory.get_active_hosts()}
    members = inventory.get_group("postgres", default=[])
    apps = [app for app in inventory.get_group("app", default=[]) if app.name in active]

    def member_question(member: Any) -> dict[str, Any]:
        paths = postgres_tls_files(member.data)
        return {
            "key": paths["key"],
            "cert": paths["cert"],
            "ca": paths["ca"],
            "address": str(member.data.get("private_address")),
            "port": int(setting(member.data, "postgres_port")),
            "config": patroni_config_path(member.data),
            "data_dir": data_dir(member.data),
        }

    questions = {m.name: member_question(m) for m in members if m.name in active}
    # Every member and app host asks these of the same hosts: through the memo,
    # each is asked once per run, all at once, within each host's bound on SSH
    # sessions (21 hosts asking data-1 together passed sshd's MaxSessions).
    memo.ask_all(
        [(m, PostgresTls, questions[m.name]) for m in members if m.name in questions]
        + [(app, PgbouncerServerTls, {"path": PGBOUNCER_INI}) for app in apps]
    )
    found = [
        MemberTls(m.name, **memo.get_fact(m, PostgresTls, **questions[m.name]))
        if m.name in questions
        else MemberTls(m.name, active=False)
        for m in members
    ]
    bouncers = {
        app.name: memo.get_fact(app, PgbouncerServerTls, path=PGBOUNCER_INI) for app in apps
    }
    ca = ca_host()
    return found, bouncers, ca is not None and ca.name in active


# --- templates -----------------------------------------------------------------------------


def forbid_main_cluster() -> None:
    """Stop postgresql-common from creating Debian's main cluster when a server package
    installs (on Postgres members, and on the backup repository that only needs the binaries)."""
    files.put(
        name="Stop postgresql-common from creating a main cluster",
        src=StringIO(render(CONCERN, CREATECLUSTER, {})),
        dest=CREATECLUSTER,
        user="root",
        group="root",
        mode="644",
    )


def archive_parameters(data: Mapping[str, Any] | HostData) -> dict[str, Any]:
    """Return the WAL archiving settings that ship WAL to pgBackRest's repository."""
    stanza = setting(data, "pgbackrest_stanza")
    return {
        "archive_mode": "on",
        "archive_command": f"pgbackrest --stanza={stanza} archive-push %p",
        "archive_timeout": setting(data, "pgbackrest_archive_timeout"),
    }


def postgres_parameters(data: Mapping[str, Any] | HostData, archive: bool) -> dict[str, Any]:
    """Return every Postgres parameter Patroni applies: inventory's, plus archiving if on."""
    parameters = dict(setting(data, "postgres_parameters") or {})
    if archive:
        parameters.update(archive_parameters(data))
    return parameters


def dynamic_config(data: Mapping[str, Any] | HostData, archive: bool = True) -> dict[str, Any]:
    """Return the cluster-wide settings the deploy keeps in Patroni's dynamic configuration."""
    return {
        "ttl": setting(data, "patroni_ttl"),
        "loop_wait": setting(data, "patroni_loop_wait"),
        "retry_timeout": setting(data, "patroni_retry_timeout"),
        "maximum_lag_on_failover": setting(data, "patroni_maximum_lag_on_failover"),
        "synchronous_mode": setting(data, "patroni_synchronous_mode"),
        "synchronous_mode_strict": setting(data, "patroni_synchronous_mode_strict"),
        "postgresql": {
            "use_pg_rewind": True,
            "use_slots": True,
            "parameters": postgres_parameters(data, archive),
        },
    }


def patroni_context(
    name: str,
    data: Mapping[str, Any] | HostData,
    etcd_members: Sequence[str],
    postgres_peers: Sequence[str],
    clients: Sequence[str],
    passwords: Mapping[str, str],
    archive: bool = True,
    tls: TlsPlan | None = None,
) -> dict[str, Any]:
    """Return what the Patroni template sees for member ``name``; ``tls``: its TLS plan
    (none: no TLS)."""
    tls = tls or TlsPlan()
    context = {key: setting(data, key) for key in DEFAULTS}
    context["postgres_parameters"] = postgres_parameters(data, archive)
    version, cluster = context["postgres_version"], context["postgres_cluster"]
    context.update(passwords)
    paths = postgres_tls_files(data)
    context.update(
        name=name,
        address=str(data.get("private_address")),
        config_path=patroni_config_path(data),
        etcd_hosts=[f"{member}:{setting(data, 'etcd_client_port')}" for member in etcd_members],
        postgres_peers=list(postgres_peers),
        client_addresses=list(clients),
        # Each app host may log in as (database, role) for these pairs only.
        client_logins=client_logins(data),
        data_dir=data_dir(context),
        bin_dir=f"/usr/lib/postgresql/{version}/bin",
        pgpass=f"/var/lib/postgresql/{version}-{cluster}.pgpass",
        archive=archive,
        wal_markers=WAL_MARKERS,
        tls_on=tls.on,
        tls_required=tls.on and tls.required,
        tls_verify=tls.on and tls.verify,
        hba_type="hostssl" if tls.on and tls.required else "host",
        tls_key_file=paths["key"],
        tls_cert_file=paths["cert"],
        tls_ca_file=paths["ca"],
    )
    return context


def _addresses(group: str) -> list[str]:
    return [address for _, address in group_members(group)]


def ca_host() -> Any:
    """The host that keeps the Postgres CA: the first ``ops`` host, or None without one."""
    hosts = inventory.get_group("ops", default=[])
    return hosts[0] if hosts else None


# --- the deploy ----------------------------------------------------------------------------


@deploy("PostgreSQL under Patroni", data_defaults=DEFAULTS)
def deploy_postgres() -> None:
    """
    Make this host a Patroni-managed PostgreSQL member: install, configure, activate.

    With an ``ops`` host, that host (the Postgres CA) and the ``app`` hosts (they
    install the CA's certificate, which PgBouncer checks servers with) take part in
    the certificates; every other host is left alone.

    **Example:**

    .. code:: python

        from seawall.components.postgres import deploy_postgres

        deploy_postgres()
    """
    ca = ca_host()
    is_member = "postgres" in host.groups
    in_tls = ca is not None and (host.name == ca.name or "app" in host.groups)
    if not (is_member or in_tls):
        return
    data = host.data
    if is_member:
        _install(data)
    # One call, on the CA's host, the members and the app hosts alike: pyinfra
    # orders operations by the line they are called from (see _certificates).
    certificate = _certificates(data, ca, is_member) if ca is not None else []
    if not is_member:
        return
    roles = list(setting(data, "postgres_service_roles"))
    passwords = host_secrets([*SECRET_NAMES, *(role_secret(role) for role in roles)])
    # WAL goes to pgBackRest's repository when the inventory has an ops host for it.
    archive = bool(_addresses("ops"))
    tls = _tls_plan()
    context = patroni_context(
        host.name,
        data,
        etcd_members=_addresses("etcd"),
        postgres_peers=_addresses("postgres"),
        clients=_addresses("app"),
        passwords={name: passwords[name] for name in SECRET_NAMES},
        archive=archive,
        tls=tls,
    )
    was_running = is_running(host.get_fact(UnitState, unit=patroni_unit(data)))
    # Asked before the file is rewritten: does this Patroni run on a plain store?
    restart = patroni_needs_restart(
        was_running,
        memo.get_fact(host, PatroniStore, config=patroni_config_path(data)),
        bool(memo.get_fact(host, File, path=PATRONI_RESTART_MARKER)),
    )

    patroni_yml = _configure(context, archive, tls, restart)
    _activate(
        data,
        archive,
        was_running,
        [patroni_yml, *certificate],
        {r: passwords[role_secret(r)] for r in roles},
        tls,
        restart,
    )


def _tls_plan() -> TlsPlan:
    """This member's TLS plan, from what the run finds on every member and app host."""
    if ca_host() is None:
        return TlsPlan()
    members, bouncers, ca_active = cluster_tls()
    me = next(member for member in members if member.name == host.name)
    apps = [app.name for app in inventory.get_group("app", default=[])]
    plan = member_tls_plan(me, members, bouncers, apps, ca_active)
    if not plan.on:
        host.log(
            "this member has no Postgres certificate and the CA's host is not in this run: "
            "TLS waits for a deploy with it"
        )
    elif not plan.required:
        host.log(
            "TLS is served; it is required once this member serves it and every app "
            "host's PgBouncer asks for it (the next deploy)"
        )
    elif not plan.verify:
        host.log("Patroni verifies members once every member serves TLS (the next deploy)")
    return plan


def _install(data: HostData) -> None:
    """Install Postgres and Patroni: no Debian cluster, no daemon on stock configuration."""
    version, cluster = setting(data, "postgres_version"), setting(data, "postgres_cluster")
    forbid_main_cluster()
    # openssl makes the member's TLS key and request.
    install_packages(
        "Install PostgreSQL and Patroni",
        [f"postgresql-{version}", "patroni", "python3-psycopg2", "openssl"],
    )
    debian_cluster_absent(
        name=f"Drop Debian's {version}/{cluster} cluster if one exists",
        version=version,
        cluster=cluster,
    )


def _certificates(data: HostData, ca: Any, is_member: bool) -> list[OperationMeta]:
    """Make the CA, keys and certificates; return the operations that change this host's.

    Called in the same order on the CA's host, the members and the app hosts:
    each ``barrier`` is one operation of all of them, so every member's request
    exists before the CA signs, and every certificate is signed before any host
    installs its own or the CA's.
    """
    is_ca = host.name == ca.name
    active = {one.name for one in inventory.get_active_hosts()}
    ca_dir, tls_dir = setting(ca.data, "postgres_ca_dir"), setting(data, "postgres_tls_dir")
    if is_ca:
        install_packages("Install OpenSSL (the Postgres CA signs with it)", ["openssl"])
        tls_ca(
            name="Make the Postgres CA (its key never leaves this host)",
            directory=ca_dir,
            common_name=CA_NAME,
            days=setting(data, "postgres_ca_days"),
        )
    if is_member:
        tls_key(
            name="Give this member a Postgres TLS key of its own and a request for it",
            directory=tls_dir,
            common_name=host.name,
            group=KEY_GROUP,
        )
    barrier(
        name="Wait until every Postgres member has its key and request (the CA signs next)",
        point="every Postgres member of this run has its key and request",
    )
    if is_ca:
        members = [m for m in inventory.get_group("postgres", default=[]) if m.name in active]
        tls_signed(
            name="Sign every Postgres member's certificate (name and address from the inventory)",
            directory=ca_dir,
            peers=[
                (
                    member.name,
                    postgres_tls_files(member.data)["request"],
                    str(member.data.get("private_address")),
                )
                for member in members
            ],
            days=setting(data, "postgres_tls_days"),
            renew_days=setting(data, "postgres_tls_renew_days"),
            names=[LOCAL_NAME],
            extended_key_usage=SERVER_USAGE,
        )
    barrier(
        name="Wait until the Postgres CA has signed every member's certificate",
        point="the Postgres CA has signed every member of this run",
    )
    if ca.name not in active:
        host.log(f"{ca.name} is not in this run: Postgres certificates wait for the next deploy")
        return []
    if is_member:
        return [
            tls_certificate(
                name="Install this member's Postgres certificate and the CA's",
                directory=tls_dir,
                ca_host=ca.name,
                ca_directory=ca_dir,
                renew_days=setting(data, "postgres_tls_renew_days"),
            )
        ]
    if "app" in host.groups:
        return [
            tls_ca_trusted(
                name="Trust the Postgres CA (PgBouncer checks servers with it)",
                directory=tls_dir,
                ca_host=ca.name,
                ca_directory=ca_dir,
            )
        ]
    return []


def _configure(context: Mapping[str, Any], archive: bool, tls: TlsPlan, restart: bool) -> Any:
    """Write the WAL callback, the Patroni file and its drop-in; return the file's operation.

    With ``restart`` (Patroni runs on its plain store), this host is first
    marked "restart pending", so a deploy cut after the file's rewrite still
    restarts Patroni onto it before the cluster is resumed.
    """
    if restart:
        files.put(
            name="Mark Patroni's restart onto its TLS store as pending",
            src=StringIO("Patroni restarts onto etcd over TLS, paused (seawall etcd deploy)\n"),
            dest=PATRONI_RESTART_MARKER,
            user="root",
            group="root",
            mode="644",
        )
    if archive:
        files.put(
            name="Install the callback that unblocks WAL archiving after a rewind",
            src=StringIO(render(CONCERN, WAL_MARKERS, context)),
            dest=WAL_MARKERS,
            user="root",
            group="root",
            mode="755",
        )
    if tls.on:
        # Postgres refuses to start (and keeps its old TLS on a reload) without them.
        tls_ready(
            name="Check this member's key and certificate before Patroni turns TLS on",
            directory=setting(host.data, "postgres_tls_dir"),
            key_group=KEY_GROUP,
        )
    # It holds the superuser, replication, rewind and REST passwords: the secret write path.
    patroni_yml = secret_file(
        name="Configure this Patroni member",
        src=render(CONCERN, PATRONI_TEMPLATE, context),
        dest=context["config_path"],
        user="postgres",
        group="postgres",
        private_dir=False,
    )
    unit_dropin(
        "Restart Patroni after any crash",
        render(CONCERN, UNIT_DROPIN, context),
        UNIT_DROPIN,
        "Patroni",
    )
    return patroni_yml


def tls_wait(address: str, port: int, ca: str) -> str:
    """The shell loop that waits (30 s at most) until Postgres serves TLS the CA verifies."""
    target = f"{address}:{int(port)}"
    return (
        "for i in $(seq 60); do "
        f"timeout 10 openssl s_client -starttls postgres -connect {target} -CAfile {ca} "
        "-verify_return_error </dev/null >/dev/null 2>&1 && exit 0; sleep 0.5; done; "
        f"echo 'Postgres on {target} does not serve TLS 30 s after its reload' >&2; exit 1"
    )


def _activate(
    data: HostData,
    archive: bool,
    was_running: bool,
    reload_on: Sequence[Any],
    role_passwords: Mapping[str, str],
    tls: TlsPlan,
    restart: bool,
) -> None:
    """Run Patroni (reloaded when its file or certificate changed, restarted paused onto a
    new store), wait for a leader, keep the shared settings and roles, resume a cluster the
    deploy paused."""
    config_path, unit = patroni_config_path(data), patroni_unit(data)
    systemd.service(
        name="Stop and disable Debian's stock patroni.service (it reads another file)",
        service="patroni.service",
        running=False,
        enabled=False,
    )
    systemd.service(name="Start and enable Patroni", service=unit, running=True, enabled=True)
    # Whether Postgres is to reread its files: after Patroni's restart onto its TLS
    # store (a Patroni joining a running replica may leave postgresql.conf as it
    # was), else when its file or certificate changed.
    reread: Any = any_changed(*reload_on)
    if restart:
        # Its store's protocol and certificates are read at start only.
        etcd = inventory.get_group("etcd", default=[])
        reread = patroni_restarted_on_store(
            name="Restart Patroni onto etcd over TLS (paused: Postgres keeps running)",
            unit=unit,
            endpoint=f"{data.get('private_address')}:{setting(data, 'patroni_rest_port')}",
            members=patroni_members(),
            etcd=[
                (
                    one.name,
                    f"https://{one.data.get('private_address')}:"
                    f"{setting(one.data, 'etcd_client_port')}",
                    f"{one.data.get('private_address')}:{setting(one.data, 'etcd_metrics_port')}",
                )
                for one in etcd
            ],
            tls_dir=setting(data, "etcd_tls_dir"),
            tls_group=setting(data, "etcd_tls_group"),
            marker=PATRONI_RESTART_MARKER,
            _serial=True,
        ).did_change
    if was_running:
        # SIGHUP: Patroni rereads its file (pg_hba, REST API, TLS) and always reloads
        # Postgres, which rereads its certificate: never a restart.
        systemd.service(
            name="Reload Patroni (its configuration or certificate changed)",
            service=unit,
            running=True,
            reloaded=True,
            _if=reread,
        )
        if tls.on:
            # A certificate Postgres could not load leaves TLS as it was: say so here,
            # not at the next deploy.
            server.shell(
                name="Wait until Postgres serves TLS after its reload",
                commands=[
                    tls_wait(
                        str(data.get("private_address")),
                        int(setting(data, "postgres_port")),
                        postgres_tls_files(data)["ca"],
                    )
                ],
                _if=reread,
            )
    patroni_leader(name="Wait for the cluster to have a running leader", config=config_path)
    if host.name == inventory.get_group("postgres")[0].name:
        # Any member can write the shared settings; one does, so the run is deterministic.
        patroni_dynamic_config(
            name="Keep the cluster's shared settings (through Patroni)",
            config=config_path,
            desired=dynamic_config(data, archive),
        )
    service_roles(
        name="Create the service roles and databases (on the leader)",
        config=config_path,
        passwords={role: HiddenValue(password) for role, password in role_passwords.items()},
        databases=dict(setting(data, "postgres_databases")),
        readers={k: list(v) for k, v in dict(setting(data, "postgres_database_readers")).items()},
    )
    if host.name == pause_host():
        # Last: only once every member runs on its TLS store (the operation checks).
        patroni_resumed(
            name="Resume Patroni if the deploy paused it (every member on its TLS store)",
            config=config_path,
            members=patroni_members(),
            marker=PATRONI_PAUSE_MARKER,
            restart_marker=PATRONI_RESTART_MARKER,
        )

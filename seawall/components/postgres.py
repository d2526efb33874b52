"""PostgreSQL 15 under Patroni, leader + synchronous replica: ``deploy_postgres()``.

What it guarantees on every host of the ``postgres`` group:

- ``postgresql-15`` and ``patroni`` from Debian are installed; the install creates
  no ``main`` cluster and starts no daemon (a Debian ``main`` cluster found
  anyway is dropped: Patroni's bootstrap fails on it);
- Patroni runs as ``patroni@<version>-<cluster>`` (enabled, restarted after any
  crash) with etcd3 as its store, REST API and Postgres on the private address;
  Debian's stock ``patroni.service`` is stopped and disabled;
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
- TLS, with an ops host in the inventory: a Postgres CA on the ops host
  (``postgres_ca_dir``, its own, not the journal's: see below); each member
  makes its own key (``postgres_tls_dir``/host.key, root:postgres 0640, the
  mode Postgres accepts for a root-owned key) and the ops host signs it with
  the member's inventory name and private address (SAN), so a client with
  the CA can use ``sslmode=verify-full``; a certificate is renewed
  ``postgres_tls_renew_days`` before it expires, and a new one is taken by a
  reload (Patroni's SIGHUP reloads Postgres), never a restart;
- Postgres serves TLS 1.2 or later (``ssl``, ``ssl_*_file``,
  ``ssl_min_protocol_version``); Patroni's replication connections check
  the CA (``verify-ca``: Patroni makes the same connection to ``localhost``,
  which no certificate names) and pg_rewind's the name too (``verify-full``);
- pg_hba takes every network line as ``hostssl``, after ``hostnossl ...
  reject`` lines, so a plain TCP connection from the network is refused; the
  socket and the 127.0.0.1 replication line stay as they were;
- a redeploy onto a running cluster without TLS never breaks replication:
  the run that brings TLS turns it on (ssl on, replication ``sslmode=prefer``,
  pg_hba still ``host``) and waits until this member serves it; TLS is
  enforced (``verify-*`` and the ``hostnossl`` rejects) only by a deploy that
  found every member serving TLS already, so no replica is refused by a
  leader, or refuses a leader, that still speaks plain TCP. A live cluster
  thus takes two deploys (the second enforces); a new cluster, where no
  member runs yet, is enforced from its first start; and once any member
  enforces, every later deploy does (never a step back, even with a member
  down). Certificates, keys and ``ssl`` are in place before the first
  Patroni start, since Postgres won't start with ``ssl=on`` and no
  certificate;
- with WAL archiving on, a callback (``seawall-wal-markers``) runs whenever a
  member starts or changes role: as the primary, it marks ``.ready`` WAL
  segments that the backup repository already holds as ``.done``, so segments
  copied over by pg_rewind can't stall archiving.

What it never does:

- write Postgres's own configuration files: Patroni writes them;
- promote, demote, switch over or restart Postgres: a redeploy after a failover
  changes nothing and keeps the leader where it is;
- drop a role or a database, or re-bootstrap an existing cluster;
- put a password on a command line;
- trust the journal's CA for Postgres: every host holds a journal
  certificate (app and gateway hosts included), and with the journal CA a
  client checking only the CA (``verify-ca``, as PgBouncer must through
  HAProxy) would take any of them for a Postgres server. The Postgres CA
  signs Postgres members only.
"""

from collections.abc import Mapping, Sequence
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
from seawall.components.templates import render
from seawall.defaults import ETCD, PATRONI, PGBACKREST, POSTGRES
from seawall.facts.postgres import PostgresTls
from seawall.facts.systemd import UnitState, is_running
from seawall.names import client_logins, data_dir, patroni_config_path, patroni_unit, role_secret
from seawall.operations import files, systemd
from seawall.operations.files import secret_file
from seawall.operations.patroni import patroni_dynamic_config, patroni_leader
from seawall.operations.postgres import debian_cluster_absent, service_roles
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
# As the journal's CA: it outlives every certificate it signs many times over.
CA_DAYS = 3650
# How long a member may take to serve TLS after its reload (Patroni acts on
# SIGHUP in its next loop, then Postgres reloads): 60 tries, 0.5 s apart.
TLS_WAIT = (
    "for i in $(seq 60); do "
    "[ \"$(cd / && runuser -u postgres -- psql -XAtq -c 'show ssl' 2>/dev/null)\" = on ] "
    "&& exit 0; sleep 0.5; done; "
    "echo 'Postgres does not serve TLS 30 s after its reload' >&2; exit 1"
)


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
    tls: bool = False,
    enforced: bool = False,
) -> dict[str, Any]:
    """Return what the Patroni template sees for member ``name``.

    ``tls`` turns TLS on; ``enforced`` (only with it) requires it (``tls_enforced``).
    """
    context = {key: setting(data, key) for key in DEFAULTS}
    context["postgres_parameters"] = postgres_parameters(data, archive)
    version, cluster = context["postgres_version"], context["postgres_cluster"]
    context.update(passwords)
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
        tls=tls,
        tls_enforced=tls and enforced,
        hba_type="hostssl" if tls and enforced else "host",
        **tls_files(data),
    )
    return context


def tls_files(data: Mapping[str, Any] | HostData) -> dict[str, str]:
    """Return where a host keeps its Postgres TLS key, certificate and the CA's certificate."""
    directory = setting(data, "postgres_tls_dir")
    return {
        "tls_key_file": f"{directory}/{KEY}",
        "tls_cert_file": f"{directory}/{CERTIFICATE}",
        "tls_ca_file": f"{directory}/{CA_CERTIFICATE}",
    }


def tls_enforced(states: Mapping[str, dict[str, bool] | None], every_member: bool) -> bool:
    """Whether TLS may be required, from each member's ``PostgresTls`` (None: not running).

    Yes once any member requires it (never a step back); otherwise only with
    every member in this run (``every_member``) and either none running yet
    (a new cluster) or all of them serving TLS already.
    """
    if any(state and state["enforced"] for state in states.values()):
        return True
    if not every_member:
        return False
    running = [state for state in states.values() if state is not None]
    return all(state["ssl"] for state in running)


def _addresses(group: str) -> list[str]:
    return [address for _, address in group_members(group)]


# --- the deploy ----------------------------------------------------------------------------


@deploy("PostgreSQL under Patroni", data_defaults=DEFAULTS)
def deploy_postgres() -> None:
    """
    Make this host a Patroni-managed PostgreSQL member: install, configure, activate.

    Hosts outside the ``postgres`` group are left alone, but for the ops host,
    which keeps the Postgres CA and signs the members' certificates.

    **Example:**

    .. code:: python

        from seawall.components.postgres import deploy_postgres

        deploy_postgres()
    """
    ca = _ca_host()
    is_member = "postgres" in host.groups
    is_ca = ca is not None and host.name == ca.name
    if not (is_member or is_ca):
        return
    data = host.data
    if is_member:
        _install(data)
    # One call, on the CA's host and the members alike: pyinfra orders
    # operations by the line they are called from (see _certificates).
    certificate = _certificates(data, ca.name, is_member, is_ca) if ca is not None else []
    if not is_member:
        return
    roles = list(setting(data, "postgres_service_roles"))
    passwords = host_secrets([*SECRET_NAMES, *(role_secret(role) for role in roles)])
    # WAL goes to pgBackRest's repository when the inventory has an ops host for it.
    archive = bool(_addresses("ops"))
    tls, enforced = _tls_state(data, ca)
    context = patroni_context(
        host.name,
        data,
        etcd_members=_addresses("etcd"),
        postgres_peers=_addresses("postgres"),
        clients=_addresses("app"),
        passwords={name: passwords[name] for name in SECRET_NAMES},
        archive=archive,
        tls=tls,
        enforced=enforced,
    )
    was_running = is_running(host.get_fact(UnitState, unit=patroni_unit(data)))

    patroni_yml = _configure(context, archive)
    _activate(
        data,
        archive,
        was_running,
        [patroni_yml, *certificate],
        {r: passwords[role_secret(r)] for r in roles},
        tls,
    )


def _active() -> set[str]:
    """Names of the hosts this run reaches: asking another host for a fact needs it."""
    return {member.name for member in inventory.get_active_hosts()}


def _ca_host() -> Any:
    """The host that keeps the Postgres CA: the first ``ops`` host, or None without one."""
    hosts = inventory.get_group("ops", default=[])
    return hosts[0] if hosts else None


def _tls_state(data: HostData, ca: Any) -> tuple[bool, bool]:
    """Return (TLS on, TLS required) for this member's Patroni file (see the module docstring).

    On only if this member will hold a certificate when Patroni reads the
    file: Postgres won't start (and won't reload TLS) without one.
    """
    if ca is None:
        return False, False
    active = _active()
    cert = tls_files(data)["tls_cert_file"]
    if ca.name not in active and not host.get_fact(File, path=cert):
        host.log(f"{ca.name} is not in this run and no certificate is here: TLS waits")
        return False, False
    members = inventory.get_group("postgres")
    states = {m.name: m.get_fact(PostgresTls) for m in members if m.name in active}
    enforced = tls_enforced(states, every_member=len(states) == len(members))
    if not enforced:
        host.log("TLS is turned on, and required at a deploy that finds every member serving it")
    return True, enforced


def _certificates(data: HostData, ca: str, is_member: bool, is_ca: bool) -> list[OperationMeta]:
    """Make the CA, keys and certificates; return the operations that change this member's.

    Called in the same order on the CA's host and the members (pyinfra orders
    operations by where they are called): every member's request exists before
    the CA signs, and every certificate is signed before a member installs its own.
    """
    tls_dir, ca_dir = setting(data, "postgres_tls_dir"), setting(data, "postgres_ca_dir")
    days, renew = setting(data, "postgres_tls_days"), setting(data, "postgres_tls_renew_days")
    active = _active()
    if is_ca:
        tls_ca(
            name="Make the Postgres CA (its key never leaves this host)",
            directory=ca_dir,
            common_name=CA_NAME,
            days=CA_DAYS,
        )
    if is_member:
        tls_key(
            name="Give this Postgres member a TLS key of its own and a request for it",
            directory=tls_dir,
            common_name=host.name,
            group="postgres",
        )
    if is_ca:
        tls_signed(
            name="Sign every Postgres member's certificate (name and address from the inventory)",
            directory=ca_dir,
            peers=[
                (member.name, f"{tls_dir}/{REQUEST}", str(member.data.get("private_address")))
                for member in inventory.get_group("postgres")
                if member.name in active
            ],
            days=days,
            renew_days=renew,
        )
    if not is_member:
        return []
    if ca not in active:
        host.log(f"{ca} is not in this run: this member's certificate waits for the next deploy")
        return []
    return [
        tls_certificate(
            name="Install this member's Postgres certificate and the CA's",
            directory=tls_dir,
            ca_host=ca,
            ca_directory=ca_dir,
            renew_days=renew,
        )
    ]


def _install(data: HostData) -> None:
    """Install Postgres and Patroni: no Debian cluster, no daemon on stock configuration."""
    version, cluster = setting(data, "postgres_version"), setting(data, "postgres_cluster")
    forbid_main_cluster()
    install_packages(
        "Install PostgreSQL and Patroni",
        [f"postgresql-{version}", "patroni", "python3-psycopg2", "openssl"],
    )
    debian_cluster_absent(
        name=f"Drop Debian's {version}/{cluster} cluster if one exists",
        version=version,
        cluster=cluster,
    )


def _configure(context: Mapping[str, Any], archive: bool) -> Any:
    """Write the WAL callback, the Patroni file and its drop-in; return the file's operation."""
    if archive:
        files.put(
            name="Install the callback that unblocks WAL archiving after a rewind",
            src=StringIO(render(CONCERN, WAL_MARKERS, context)),
            dest=WAL_MARKERS,
            user="root",
            group="root",
            mode="755",
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


def _activate(
    data: HostData,
    archive: bool,
    was_running: bool,
    reload_on: Sequence[Any],
    role_passwords: Mapping[str, str],
    tls: bool,
) -> None:
    """Run Patroni (reloaded when its file or certificate changed), wait for a leader, keep the
    shared settings and roles."""
    config_path, unit = patroni_config_path(data), patroni_unit(data)
    systemd.service(
        name="Stop and disable Debian's stock patroni.service (it reads another file)",
        service="patroni.service",
        running=False,
        enabled=False,
    )
    systemd.service(name="Start and enable Patroni", service=unit, running=True, enabled=True)
    if was_running:
        # SIGHUP: Patroni rereads its file (pg_hba, REST API, TLS) and always
        # reloads Postgres, which rereads its certificate: no restart.
        systemd.service(
            name="Reload Patroni (its configuration or certificate changed)",
            service=unit,
            running=True,
            reloaded=True,
            _if=any_changed(*reload_on),
        )
        if tls:
            # Nothing that requires TLS of this member (PgBouncer, a later
            # enforcing deploy) runs before it serves TLS.
            server.shell(
                name="Wait until Postgres serves TLS (after its reload)",
                commands=[TLS_WAIT],
                _if=any_changed(*reload_on),
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

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
  copied over by pg_rewind can't stall archiving.

What it never does:

- write Postgres's own configuration files: Patroni writes them;
- promote, demote, switch over or restart Postgres: a redeploy after a failover
  changes nothing and keeps the leader where it is (Patroni itself restarts
  only paused, onto its TLS store);
- resume a cluster someone else paused;
- drop a role or a database, or re-bootstrap an existing cluster;
- put a password on a command line.
"""

from collections.abc import Mapping, Sequence
from io import StringIO
from typing import Any

from pyinfra import host, inventory
from pyinfra.api import HiddenValue, deploy
from pyinfra.api.host import HostData
from pyinfra.facts.files import File

from seawall.components.common import group_members, host_secrets, install_packages, unit_dropin
from seawall.components.etcd import patroni_members, patroni_needs_restart, pause_host
from seawall.components.templates import render
from seawall.defaults import ETCD, PATRONI, PGBACKREST, POSTGRES
from seawall.facts import memo
from seawall.facts.patroni import PatroniStore
from seawall.facts.systemd import UnitState, is_running
from seawall.names import (
    PATRONI_PAUSE_MARKER,
    PATRONI_RESTART_MARKER,
    client_logins,
    data_dir,
    patroni_config_path,
    patroni_unit,
    role_secret,
)
from seawall.operations import files, systemd
from seawall.operations.files import secret_file
from seawall.operations.patroni import (
    patroni_dynamic_config,
    patroni_leader,
    patroni_restarted_on_store,
    patroni_resumed,
)
from seawall.operations.postgres import debian_cluster_absent, service_roles
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
) -> dict[str, Any]:
    """Return what the Patroni template sees for member ``name``."""
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
    )
    return context


def _addresses(group: str) -> list[str]:
    return [address for _, address in group_members(group)]


# --- the deploy ----------------------------------------------------------------------------


@deploy("PostgreSQL under Patroni", data_defaults=DEFAULTS)
def deploy_postgres() -> None:
    """
    Make this host a Patroni-managed PostgreSQL member: install, configure, activate.

    Hosts outside the ``postgres`` group are left alone.

    **Example:**

    .. code:: python

        from seawall.components.postgres import deploy_postgres

        deploy_postgres()
    """
    if "postgres" not in host.groups:
        return
    data = host.data
    roles = list(setting(data, "postgres_service_roles"))
    passwords = host_secrets([*SECRET_NAMES, *(role_secret(role) for role in roles)])
    # WAL goes to pgBackRest's repository when the inventory has an ops host for it.
    archive = bool(_addresses("ops"))
    context = patroni_context(
        host.name,
        data,
        etcd_members=_addresses("etcd"),
        postgres_peers=_addresses("postgres"),
        clients=_addresses("app"),
        passwords={name: passwords[name] for name in SECRET_NAMES},
        archive=archive,
    )
    was_running = is_running(host.get_fact(UnitState, unit=patroni_unit(data)))
    # Asked before the file is rewritten: does this Patroni run on a plain store?
    restart = patroni_needs_restart(
        was_running,
        memo.get_fact(host, PatroniStore, config=patroni_config_path(data)),
        bool(memo.get_fact(host, File, path=PATRONI_RESTART_MARKER)),
    )

    _install(data)
    patroni_yml = _configure(context, archive, restart)
    _activate(
        data,
        archive,
        was_running,
        patroni_yml,
        {r: passwords[role_secret(r)] for r in roles},
        restart,
    )


def _install(data: HostData) -> None:
    """Install Postgres and Patroni: no Debian cluster, no daemon on stock configuration."""
    version, cluster = setting(data, "postgres_version"), setting(data, "postgres_cluster")
    forbid_main_cluster()
    install_packages(
        "Install PostgreSQL and Patroni", [f"postgresql-{version}", "patroni", "python3-psycopg2"]
    )
    debian_cluster_absent(
        name=f"Drop Debian's {version}/{cluster} cluster if one exists",
        version=version,
        cluster=cluster,
    )


def _configure(context: Mapping[str, Any], archive: bool, restart: bool) -> Any:
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
    patroni_yml: Any,
    role_passwords: Mapping[str, str],
    restart: bool,
) -> None:
    """Run Patroni (reloaded on change, restarted paused onto a new store), wait for a leader,
    keep the shared settings and roles, resume a cluster the deploy paused."""
    config_path, unit = patroni_config_path(data), patroni_unit(data)
    systemd.service(
        name="Stop and disable Debian's stock patroni.service (it reads another file)",
        service="patroni.service",
        running=False,
        enabled=False,
    )
    systemd.service(name="Start and enable Patroni", service=unit, running=True, enabled=True)
    if restart:
        # Its store's protocol and certificates are read at start only.
        etcd = inventory.get_group("etcd", default=[])
        patroni_restarted_on_store(
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
        )
    elif was_running:
        # SIGHUP: Patroni rereads its file (pg_hba, REST API) without restarting Postgres.
        systemd.service(
            name="Reload Patroni (its configuration changed)",
            service=unit,
            running=True,
            reloaded=True,
            _if=patroni_yml.did_change,
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

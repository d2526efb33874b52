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
- pg_hba admits the app hosts and the Postgres peers only, with scram-sha-256;
- with WAL archiving on, a callback (``seawall-wal-markers``) runs whenever a
  member starts or changes role: as the primary, it marks ``.ready`` WAL
  segments that the backup repository already holds as ``.done``, so segments
  copied over by pg_rewind can't stall archiving.

What it never does:

- write Postgres's own configuration files: Patroni writes them;
- promote, demote, switch over or restart Postgres: a redeploy after a failover
  changes nothing and keeps the leader where it is;
- drop a role or a database, or re-bootstrap an existing cluster;
- put a password on a command line.
"""

import json
import shlex
from collections.abc import Mapping, Sequence
from io import StringIO
from typing import Any

from pyinfra import host, inventory
from pyinfra.api import FactBase, HiddenValue, StringCommand, deploy, operation
from pyinfra.api.command import FileUploadCommand
from pyinfra.api.exceptions import DeployError
from pyinfra.api.host import HostData
from pyinfra.facts.files import File
from pyinfra.facts.systemd import SystemdStatus
from pyinfra.operations import files, systemd

from seawall.components.common import group_members, host_secrets, install_packages, unit_dropin
from seawall.components.templates import render
from seawall.defaults import ETCD, PATRONI, PGBACKREST, POSTGRES
from seawall.postgres import scram

CONCERN = "postgres"
CREATECLUSTER = "/etc/postgresql-common/createcluster.d/seawall.conf"
UNIT_DROPIN = "/etc/systemd/system/patroni@.service.d/seawall.conf"
# The Patroni template; it renders to /etc/patroni/<version>-<cluster>.yml.
PATRONI_TEMPLATE = "/etc/patroni/15-main.yml"
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


def role_secret(role: str) -> str:
    """Return the secret name holding ``role``'s password."""
    return f"postgres_role_{role}_password"


def patroni_config_path(data: Mapping[str, Any] | HostData) -> str:
    return f"/etc/patroni/{data.get('postgres_version')}-{data.get('postgres_cluster')}.yml"


def data_dir(data: Mapping[str, Any] | HostData) -> str:
    return f"/var/lib/postgresql/{data.get('postgres_version')}/{data.get('postgres_cluster')}"


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


def patroni_unit(data: Mapping[str, Any] | HostData) -> str:
    return f"patroni@{data.get('postgres_version')}-{data.get('postgres_cluster')}.service"


def archive_parameters(data: Mapping[str, Any] | HostData) -> dict[str, Any]:
    """Return the WAL archiving settings that ship WAL to pgBackRest's repository."""
    return {
        "archive_mode": "on",
        "archive_command": f"pgbackrest --stanza={data.get('pgbackrest_stanza')} archive-push %p",
        "archive_timeout": data.get("pgbackrest_archive_timeout"),
    }


def postgres_parameters(data: Mapping[str, Any] | HostData, archive: bool) -> dict[str, Any]:
    """Return every Postgres parameter Patroni applies: inventory's, plus archiving if on."""
    parameters = dict(data.get("postgres_parameters") or {})
    if archive:
        parameters.update(archive_parameters(data))
    return parameters


def dynamic_config(data: Mapping[str, Any] | HostData, archive: bool = True) -> dict[str, Any]:
    """Return the cluster-wide settings the deploy keeps in Patroni's dynamic configuration."""
    return {
        "ttl": data.get("patroni_ttl"),
        "loop_wait": data.get("patroni_loop_wait"),
        "retry_timeout": data.get("patroni_retry_timeout"),
        "maximum_lag_on_failover": data.get("patroni_maximum_lag_on_failover"),
        "synchronous_mode": data.get("patroni_synchronous_mode"),
        "synchronous_mode_strict": data.get("patroni_synchronous_mode_strict"),
        "postgresql": {
            "use_pg_rewind": True,
            "use_slots": True,
            "parameters": postgres_parameters(data, archive),
        },
    }


def config_differences(current: Any, desired: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Return the dotted keys of ``desired`` whose value ``current`` lacks or differs in.

    Scalars compare as lower-case text: Patroni stores what YAML gave it
    (``on``, ``true``, ``5s``), and ``True`` and ``"true"`` mean the same to it.
    """
    found: list[str] = []
    current = current if isinstance(current, Mapping) else {}
    for key, want in desired.items():
        have = current.get(key)
        if isinstance(want, Mapping):
            found += config_differences(have, want, f"{prefix}{key}.")
        elif have is None or str(have).lower() != str(want).lower():
            found.append(f"{prefix}{key}")
    return found


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
    context = {key: data.get(key, default) for key, default in DEFAULTS.items()}
    context["postgres_parameters"] = postgres_parameters(data, archive)
    version, cluster = context["postgres_version"], context["postgres_cluster"]
    context.update(passwords)
    context.update(
        name=name,
        address=str(data.get("private_address")),
        config_path=patroni_config_path(data),
        etcd_hosts=[f"{member}:{data.get('etcd_client_port')}" for member in etcd_members],
        postgres_peers=list(postgres_peers),
        client_addresses=list(clients),
        data_dir=data_dir(context),
        bin_dir=f"/usr/lib/postgresql/{version}/bin",
        pgpass=f"/var/lib/postgresql/{version}-{cluster}.pgpass",
        archive=archive,
        wal_markers=WAL_MARKERS,
    )
    return context


def _addresses(group: str) -> list[str]:
    return [address for _, address in group_members(group)]


# --- facts ---------------------------------------------------------------------------------


class PatroniCluster(FactBase[list[dict[str, Any]]]):
    """Returns the members of this host's Patroni cluster, as ``patronictl list`` sees them.

    .. code:: python

        [{"Member": "data-1", "Role": "Leader", "State": "running", "TL": 1}, ...]
    """

    default = list

    def command(self, config: str) -> str:
        return f"patronictl -c {shlex.quote(config)} list -f json 2>/dev/null || echo '[]'"

    def requires_command(self, config: str) -> str:
        return "patronictl"

    def process(self, output: list[str]) -> list[dict[str, Any]]:
        try:
            members = json.loads("\n".join(output) or "[]")
        except ValueError:
            return []
        return members if isinstance(members, list) else []


class PatroniDynamicConfig(FactBase[dict[str, Any] | None]):
    """Returns the cluster's dynamic configuration (``patronictl show-config``), or ``None``.

    .. code:: python

        {"ttl": 20, "loop_wait": 2, "postgresql": {"parameters": {...}}}
    """

    def command(self, config: str) -> str:
        # The controller need not have PyYAML: the host's Patroni brings it.
        to_json = "import json,sys,yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"
        return (
            f"patronictl -c {shlex.quote(config)} show-config 2>/dev/null "
            f"| python3 -c {shlex.quote(to_json)} || echo null"
        )

    def requires_command(self, config: str) -> str:
        return "patronictl"

    def process(self, output: list[str]) -> dict[str, Any] | None:
        try:
            value = json.loads("\n".join(output) or "null")
        except ValueError:
            return None
        return value if isinstance(value, dict) and value else None


class PostgresRolesAndDatabases(FactBase[dict[str, dict[str, str]]]):
    """Returns login roles' stored passwords and every database's owner and ACL (leader only).

    .. code:: python

        {"roles": {"execution": "SCRAM-SHA-256$4096:..."},
         "databases": {"trading": "execution|=Tc/execution execution=CTc/execution"}}
    """

    default = dict

    def command(self) -> str:
        sql = (
            "select 'role', rolname, coalesce(rolpassword, '') from pg_authid "
            "union all select 'db', datname, pg_get_userbyid(datdba) || '|' || "
            "coalesce(array_to_string(datacl, ' '), '') from pg_database"
        )
        return f"cd / && runuser -u postgres -- psql -XAtq -F '\t' -c {shlex.quote(sql)}"

    def requires_command(self) -> str:
        return "psql"

    def process(self, output: list[str]) -> dict[str, dict[str, str]]:
        found: dict[str, dict[str, str]] = {"roles": {}, "databases": {}}
        for line in output:
            kind, _, rest = line.partition("\t")
            name, _, value = rest.partition("\t")
            found["roles" if kind == "role" else "databases"][name] = value
        return found


# --- operations ----------------------------------------------------------------------------


def _leader(members: list[dict[str, Any]]) -> str | None:
    for member in members:
        if member.get("Role") == "Leader" and member.get("State") == "running":
            return str(member.get("Member"))
    return None


@operation()
def debian_cluster_absent(version: int, cluster: str):
    """
    Drop the Debian cluster ``version``/``cluster`` if postgresql-common created one.

    + version: PostgreSQL major version
    + cluster: cluster name

    Patroni's clusters keep their configuration in the data directory, so a
    ``postgresql.conf`` under ``/etc/postgresql`` is always Debian's.

    **Example:**

    .. code:: python

        debian_cluster_absent(name="Drop Debian's main cluster", version=15, cluster="main")
    """
    conf = f"/etc/postgresql/{version}/{cluster}/postgresql.conf"
    if not host.get_fact(File, path=conf):
        host.noop(f"no Debian cluster {version}/{cluster}")
        return
    yield f"pg_dropcluster --stop {version} {shlex.quote(cluster)}"


@operation()
def patroni_leader(config: str, timeout: int = 120):
    """
    Wait until the Patroni cluster has a running leader.

    + config: Patroni configuration file
    + timeout: seconds to wait before failing

    **Example:**

    .. code:: python

        patroni_leader(name="Wait for a leader", config="/etc/patroni/15-main.yml")
    """
    if _leader(host.get_fact(PatroniCluster, config=config)):
        host.noop("the cluster has a running leader")
        return
    check = (
        "import json,subprocess,sys,time\n"
        f"end = time.monotonic() + {int(timeout)}\n"
        "while time.monotonic() < end:\n"
        f"    out = subprocess.run(['patronictl', '-c', {config!r}, 'list', '-f', 'json'],"
        " capture_output=True, text=True).stdout\n"
        "    try:\n"
        "        members = json.loads(out or '[]')\n"
        "    except ValueError:\n"
        "        members = []\n"
        "    if any(m.get('Role') == 'Leader' and m.get('State') == 'running'"
        " for m in members):\n"
        "        sys.exit(0)\n"
        "    time.sleep(1)\n"
        f"sys.exit('no running Patroni leader within {int(timeout)} s')\n"
    )
    yield f"python3 -c {shlex.quote(check)}"


@operation()
def patroni_dynamic_config(config: str, desired: dict[str, Any]):
    """
    Make Patroni's dynamic configuration hold ``desired``, through ``patronictl edit-config``.

    + config: Patroni configuration file
    + desired: the settings to hold (nested as in ``patronictl show-config``); others stay

    Settings Postgres applies only at a restart are reported by Patroni as
    pending; this operation never restarts anything.

    **Example:**

    .. code:: python

        patroni_dynamic_config(
            name="Keep the cluster's settings",
            config="/etc/patroni/15-main.yml",
            desired={"loop_wait": 2},
        )
    """
    current = host.get_fact(PatroniDynamicConfig, config=config)
    if current is None:
        raise DeployError(f"{host.name}: Patroni has no dynamic configuration (is etcd up?)")
    differences = config_differences(current, desired)
    if not differences:
        host.noop("Patroni's dynamic configuration already matches")
        return
    host.log(f"changing Patroni settings: {', '.join(differences)}")
    patch = host.get_temp_filename("patroni-patch")
    yield FileUploadCommand(StringIO(json.dumps(desired)), patch, remote_temp_filename=patch)
    yield (
        f"patronictl -c {shlex.quote(config)} edit-config --force --quiet "
        f"--apply {shlex.quote(patch)}; status=$?; rm -f {shlex.quote(patch)}; exit $status"
    )


def _psql(sql: str, database: str = "postgres") -> StringCommand:
    return StringCommand(
        "cd / && runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d",
        shlex.quote(database),
        "-c",
        HiddenValue(shlex.quote(sql)),
    )


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _connect_holders(acl: str) -> set[str]:
    """Return who may connect, from a ``datacl`` text (``PUBLIC`` for the empty grantee)."""
    holders = set()
    for item in acl.split():
        grantee, _, rest = item.partition("=")
        privileges = rest.split("/", 1)[0]
        if "c" in privileges:
            holders.add(grantee.strip('"') or "PUBLIC")
    return holders


@operation()
def service_roles(
    config: str,
    passwords: dict[str, HiddenValue],
    databases: dict[str, str],
    readers: dict[str, list[str]],
):
    """
    On the Patroni leader, give each role its password and each database its owner and readers.

    + config: Patroni configuration file (to find the leader)
    + passwords: role name -> password; it reaches Postgres as a SCRAM verifier
    + databases: database name -> owning role
    + readers: database name -> other roles that may connect to it

    Replicas skip it: they get everything through replication.

    **Example:**

    .. code:: python

        service_roles(
            name="Create the service roles and databases",
            config="/etc/patroni/15-main.yml",
            passwords={"execution": HiddenValue("...")},
            databases={"trading": "execution"},
            readers={},
        )
    """
    leader = _leader(host.get_fact(PatroniCluster, config=config))
    if leader != host.name:
        host.noop(f"not the leader ({leader} is)")
        return
    state = host.get_fact(PostgresRolesAndDatabases)
    roles, present = state.get("roles", {}), state.get("databases", {})
    changed = False
    for role, password in sorted(passwords.items()):
        if role not in roles:
            yield _psql(
                f"CREATE ROLE {_ident(role)} LOGIN PASSWORD '{scram.verifier(password.unmask())}'"
            )
            changed = True
        elif not scram.matches(roles[role], password.unmask()):
            yield _psql(
                f"ALTER ROLE {_ident(role)} LOGIN PASSWORD '{scram.verifier(password.unmask())}'"
            )
            changed = True
    for database, owner in sorted(databases.items()):
        wanted = {owner, *readers.get(database, [])}
        if database not in present:
            yield StringCommand(
                "cd / && runuser -u postgres -- createdb -O",
                shlex.quote(owner),
                shlex.quote(database),
            )
            acl = ""
        else:
            current_owner, _, acl = present[database].partition("|")
            if current_owner != owner:
                yield _psql(f"ALTER DATABASE {_ident(database)} OWNER TO {_ident(owner)}")
        holders = _connect_holders(acl) - {"postgres"}
        if database not in present or holders != wanted:
            grantees = ", ".join(_ident(role) for role in sorted(wanted))
            yield _psql(
                f"REVOKE CONNECT ON DATABASE {_ident(database)} FROM PUBLIC; "
                f"GRANT CONNECT ON DATABASE {_ident(database)} TO {grantees}"
            )
            changed = True
    if not changed:
        host.noop("roles and databases are as the inventory says")


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
    version, cluster = data.get("postgres_version"), data.get("postgres_cluster")
    config_path = patroni_config_path(data)
    unit = patroni_unit(data)
    roles = list(data.get("postgres_service_roles"))
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
    was_running = bool(host.get_fact(SystemdStatus).get(unit))

    # Install: no Debian cluster, no daemon started with stock configuration.
    forbid_main_cluster()
    install_packages(
        "Install PostgreSQL and Patroni", [f"postgresql-{version}", "patroni", "python3-psycopg2"]
    )
    debian_cluster_absent(
        name=f"Drop Debian's {version}/{cluster} cluster if one exists",
        version=version,
        cluster=cluster,
    )

    # Configure.
    if archive:
        files.put(
            name="Install the callback that unblocks WAL archiving after a rewind",
            src=StringIO(render(CONCERN, WAL_MARKERS, context)),
            dest=WAL_MARKERS,
            user="root",
            group="root",
            mode="755",
        )
    patroni_yml = files.put(
        name="Configure this Patroni member",
        src=StringIO(render(CONCERN, PATRONI_TEMPLATE, context)),
        dest=config_path,
        user="postgres",
        group="postgres",
        mode="600",
    )
    unit_dropin(
        "Restart Patroni after any crash",
        render(CONCERN, UNIT_DROPIN, context),
        UNIT_DROPIN,
        "Patroni",
    )

    # Activate.
    systemd.service(
        name="Stop and disable Debian's stock patroni.service (it reads another file)",
        service="patroni.service",
        running=False,
        enabled=False,
    )
    systemd.service(name="Start and enable Patroni", service=unit, running=True, enabled=True)
    if was_running:
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
        passwords={role: HiddenValue(passwords[role_secret(role)]) for role in roles},
        databases=dict(data.get("postgres_databases")),
        readers={k: list(v) for k, v in dict(data.get("postgres_database_readers")).items()},
    )

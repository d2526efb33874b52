"""Shape a PostgreSQL cluster: no stray Debian cluster; service roles, databases, monitoring."""

import base64
import hashlib
import hmac
import shlex
from typing import Any

from pyinfra import host
from pyinfra.api import HiddenValue, StringCommand, operation
from pyinfra.facts.files import File, FindInFile

from seawall.facts.patroni import PatroniCluster, running_leader
from seawall.facts.postgres import PostgresRole, PostgresRolesAndDatabases
from seawall.postgres import scram


def _configured_dir(lines: list[str] | None, key: str) -> str | None:
    """Return the value of ``key`` (``key = 'x'`` or ``key: x``) from grep'ed config lines."""
    for line in lines or []:
        name, _, value = line.replace("=", ":", 1).partition(":")
        if name.strip() == key:
            return value.split("#", 1)[0].strip().strip("'\"").rstrip("/")
    return None


@operation()
def debian_cluster_absent(version: int, cluster: str, patroni_config: str | None = None):
    """
    Drop the Debian cluster ``version``/``cluster`` if postgresql-common created one.

    + version: PostgreSQL major version
    + cluster: cluster name
    + patroni_config: Patroni's configuration file (``/etc/patroni/<version>-<cluster>.yml``)

    Patroni's clusters keep their configuration in the data directory, so a
    ``postgresql.conf`` under ``/etc/postgresql`` is always Debian's. Its data
    directory may still be the one Patroni runs (both default to
    ``/var/lib/postgresql/<version>/<cluster>``): then nothing is dropped and the
    operation fails, naming the directory.

    **Example:**

    .. code:: python

        debian_cluster_absent(name="Drop Debian's main cluster", version=15, cluster="main")
    """
    conf = f"/etc/postgresql/{version}/{cluster}/postgresql.conf"
    if not host.get_fact(File, path=conf):
        host.noop(f"no Debian cluster {version}/{cluster}")
        return
    data = (
        _configured_dir(
            host.get_fact(FindInFile, path=conf, pattern="^data_directory"), "data_directory"
        )
        or f"/var/lib/postgresql/{version}/{cluster}"
    )
    patroni_config = patroni_config or f"/etc/patroni/{version}-{cluster}.yml"
    patroni_dir = _configured_dir(
        host.get_fact(FindInFile, path=patroni_config, pattern="data_dir:"), "data_dir"
    )
    if patroni_dir == data or host.get_fact(File, path=f"{data}/patroni.dynamic.json"):
        # Fail this host's operation through its command, with the reason on stderr: an
        # exception here would abort the whole run, every other host with it.
        refusal = (
            f"refusing to drop the Debian cluster {version}/{cluster}: its data directory "
            f"{data} belongs to Patroni ({patroni_config} or patroni.dynamic.json); "
            f"remove only {conf} by hand if it is stale"
        )
        yield f"echo {shlex.quote(refusal)} >&2; exit 1"
        return
    yield f"pg_dropcluster --stop {version} {shlex.quote(cluster)}"


def _psql_stdin(sql: str, database: str = "postgres") -> StringCommand:
    """psql reading ``sql`` on its standard input: a verifier there is in no process's argv."""
    return StringCommand(
        "cd / && runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d",
        shlex.quote(database),
        _stdin=sql,
    )


def _psql(sql: str, database: str = "postgres") -> StringCommand:
    return StringCommand(
        "cd / && runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d",
        shlex.quote(database),
        "-c",
        HiddenValue(shlex.quote(sql)),
    )


def verifier_matches(digest: str | None, password: str) -> bool:
    """Whether ``digest`` (a PostgresRolesAndDatabases role value: a SCRAM verifier's salt and
    iterations, then the SHA-256 of the verifier) is that of ``password``'s verifier."""
    if not digest or not digest.startswith("SCRAM-SHA-256$"):
        return False
    head, _, want = digest.rpartition("$")
    try:
        iterations_text, salt_text = head.removeprefix("SCRAM-SHA-256$").split(":", 1)
        salt, iterations = base64.b64decode(salt_text, validate=True), int(iterations_text)
    except ValueError:
        return False
    got = hashlib.sha256(scram.verifier(password, salt, iterations).encode()).hexdigest()
    return hmac.compare_digest(got, want)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def connect_holders(acl: str) -> set[str]:
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
    leader = running_leader(host.get_fact(PatroniCluster, config=config))
    if leader != host.name:
        host.noop(f"not the leader ({leader} is)")
        return
    state = host.get_fact(PostgresRolesAndDatabases)
    roles, present = state.get("roles", {}), state.get("databases", {})
    changed = False
    for role, password in sorted(passwords.items()):
        if role not in roles:
            yield _psql_stdin(
                f"CREATE ROLE {_ident(role)} LOGIN PASSWORD '{scram.verifier(password.unmask())}'"
            )
            changed = True
        elif not verifier_matches(roles[role], password.unmask()):
            yield _psql_stdin(
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
        holders = connect_holders(acl) - {"postgres"}
        if database not in present or holders != wanted:
            grantees = ", ".join(_ident(role) for role in sorted(wanted))
            yield _psql(
                f"REVOKE CONNECT ON DATABASE {_ident(database)} FROM PUBLIC; "
                f"GRANT CONNECT ON DATABASE {_ident(database)} TO {grantees}"
            )
            changed = True
    if not changed:
        host.noop("roles and databases are as the inventory says")


def monitoring_role_sql(role: str, group: str, state: dict[str, Any] | None) -> list[str]:
    """Return the statements that make ``role`` a login member of ``group`` (none if it is one)."""
    if state is None:
        # No password: the role logs in through the socket with peer authentication only.
        return [f"CREATE ROLE {_ident(role)} LOGIN IN ROLE {_ident(group)}"]
    sql = []
    if not state["login"]:
        sql.append(f"ALTER ROLE {_ident(role)} LOGIN")
    if group not in state["member_of"]:
        sql.append(f"GRANT {_ident(group)} TO {_ident(role)}")
    return sql


@operation()
def monitoring_role(config: str, role: str, group: str = "pg_monitor"):
    """
    On the Patroni leader, make ``role`` a passwordless login role in ``group``.

    + config: Patroni configuration file (to find the leader)
    + role: the role, named after the OS user that logs in with it over the socket (peer)
    + group: the predefined role it needs (``pg_monitor``: read every statistics view)

    Replicas skip it: they get the role through replication.

    **Example:**

    .. code:: python

        monitoring_role(
            name="Let the postgres exporter read the statistics",
            config="/etc/patroni/15-main.yml",
            role="prometheus",
        )
    """
    leader = running_leader(host.get_fact(PatroniCluster, config=config))
    if leader != host.name:
        host.noop(f"not the leader ({leader} is)")
        return
    statements = monitoring_role_sql(role, group, host.get_fact(PostgresRole, role=role))
    if not statements:
        host.noop(f"{role} is a login member of {group}")
        return
    for sql in statements:
        yield _psql(sql)

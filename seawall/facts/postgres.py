"""Facts that ask a running PostgreSQL (through ``psql``) what it holds, and how its clients
and servers use TLS."""

import shlex
from typing import Any

from pyinfra.api import FactBase


class PostgresRolesAndDatabases(FactBase[dict[str, dict[str, str]]]):
    """Returns a digest of each role's stored password and every database's owner and ACL.

    A SCRAM verifier comes back as its salt and iterations with the SHA-256 of
    the whole verifier (``verifier_matches`` in seawall.operations.postgres
    compares a password with it): the verifier itself, which with one sniffed
    login lets anyone log in as the role, never leaves the host, so no output
    (-vvv, --debug) can show it. Any other stored password comes back empty.

    .. code:: python

        {"roles": {"execution": "SCRAM-SHA-256$4096:<salt>$<sha256 hex>"},
         "databases": {"trading": "execution|=Tc/execution execution=CTc/execution"}}
    """

    @staticmethod
    def default() -> dict[str, dict[str, str]]:
        # Also what pyinfra returns when psql fails or prints nothing.
        return {"roles": {}, "databases": {}}

    def command(self) -> str:
        sql = (
            "select 'role', rolname, case when rolpassword like 'SCRAM-SHA-256$%' then "
            "split_part(rolpassword, '$', 1) || '$' || split_part(rolpassword, '$', 2) || '$' "
            "|| encode(sha256(convert_to(rolpassword, 'UTF8')), 'hex') else '' end from pg_authid "
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


def role_query(role: str) -> str:
    """Return the SQL ``PostgresRole`` runs: one row (can log in, member of) or none."""
    literal = "'" + role.replace("'", "''") + "'"
    return (
        "select r.rolcanlogin, coalesce((select string_agg(g.rolname, ',' order by g.rolname) "
        "from pg_auth_members m join pg_roles g on g.oid = m.roleid "
        f"where m.member = r.oid), '') from pg_roles r where r.rolname = {literal}"
    )


class PostgresRole(FactBase[dict[str, Any] | None]):
    """Returns whether role ``role`` may log in and the roles it is a member of, or None if absent.

    .. code:: python

        {"login": True, "member_of": ["pg_monitor"]}
    """

    @staticmethod
    def default() -> None:
        # No such role (psql printed nothing).
        return None

    def command(self, role: str) -> str:
        sql = shlex.quote(role_query(role))
        return f"cd / && runuser -u postgres -- psql -XAtq -F '\t' -c {sql}"

    def requires_command(self, role: str) -> str:
        return "psql"

    def process(self, output: list[str]) -> dict[str, Any]:
        login, _, members = output[0].partition("\t")
        return {"login": login == "t", "member_of": [m for m in members.split(",") if m]}


class PostgresTls(FactBase[dict[str, Any]]):
    """Returns this member's TLS as a deploy finds it.

    ``files``: its key, certificate and the CA's are there. ``serving``: what its
    Postgres answers on its own address, ``tls`` for a handshake the CA's certificate
    verifies, ``plain``, or None when nothing answers and no postmaster runs in
    ``data_dir`` (one that runs, or crashed, but does not answer counts as ``plain``,
    never as new). ``requires``: its Patroni file has pg_hba refuse plain TCP (the
    ``hostnossl`` rejects). ``verifies``: Patroni's connections verify the servers
    (``sslmode: verify-full``).

    .. code:: python

        {"files": True, "serving": "tls", "requires": True, "verifies": True}
    """

    @staticmethod
    def default() -> dict[str, Any]:
        return {"files": False, "serving": None, "requires": False, "verifies": False}

    def command(
        self, key: str, cert: str, ca: str, address: str, port: int, config: str, data_dir: str
    ) -> str:
        files = " && ".join(f"[ -s {shlex.quote(path)} ]" for path in (key, cert, ca))
        pid = shlex.quote(f"{data_dir}/postmaster.pid")
        target = shlex.quote(f"{address}:{int(port)}")
        config = shlex.quote(config)
        # pg_isready: 0 accepting, 1 rejecting (starting up), 2 no answer, 127 not installed.
        # s_client sends Postgres's SSLRequest itself (-starttls postgres); a server
        # without TLS answers it with "N" and the handshake never starts.
        return (
            f"if {files}; then echo files=yes; else echo files=no; fi; "
            f"pg_isready -q -h {shlex.quote(address)} -p {int(port)} -t 3 >/dev/null 2>&1; "
            "if [ $? -gt 1 ]; then "
            f"if [ -e {pid} ]; then echo serving=plain; else echo serving=none; fi; "
            f"elif timeout 10 openssl s_client -starttls postgres -connect {target} "
            f"-CAfile {shlex.quote(ca)} -verify_return_error </dev/null >/dev/null 2>&1; "
            "then echo serving=tls; else echo serving=plain; fi; "
            f"if grep -qs '^  - hostnossl ' {config}; then echo requires=yes; "
            "else echo requires=no; fi; "
            f"if grep -qs 'sslmode: verify-full' {config}; then echo verifies=yes; "
            "else echo verifies=no; fi"
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        values = dict(line.strip().partition("=")[::2] for line in output if "=" in line)
        serving = values.get("serving")
        return {
            "files": values.get("files") == "yes",
            "serving": serving if serving in ("tls", "plain") else None,
            "requires": values.get("requires") == "yes",
            "verifies": values.get("verifies") == "yes",
        }


# PgBouncer 1.18's own default (Debian 12): plain TCP to the servers, no TLS asked.
PGBOUNCER_DEFAULT_SERVER_TLS = "disable"


class PgbouncerServerTls(FactBase[str | None]):
    """Returns the ``server_tls_sslmode`` PgBouncer's file ``path`` sets (``disable``, its
    default, when it sets none), or None without the file.

    .. code:: python

        "prefer"
    """

    @staticmethod
    def default() -> None:
        return None

    def command(self, path: str) -> str:
        quoted = shlex.quote(path)
        pattern = r"s/^[[:space:]]*server_tls_sslmode[[:space:]]*=[[:space:]]*\([a-z-]*\).*/\1/p"
        return f"if [ -f {quoted} ]; then sed -n {shlex.quote(pattern)} {quoted}; echo end; fi"

    def process(self, output: list[str]) -> str:
        modes = [line.strip() for line in output if line.strip() and line.strip() != "end"]
        # PgBouncer takes the last setting of a key.
        return modes[-1] if modes else PGBOUNCER_DEFAULT_SERVER_TLS

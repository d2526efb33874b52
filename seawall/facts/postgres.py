"""Facts that ask a running PostgreSQL (through ``psql``) what it holds."""

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

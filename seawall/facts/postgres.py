"""Facts that ask a running PostgreSQL (through ``psql``) what it holds."""

import shlex

from pyinfra.api import FactBase


class PostgresRolesAndDatabases(FactBase[dict[str, dict[str, str]]]):
    """Returns login roles' stored passwords and every database's owner and ACL (leader only).

    .. code:: python

        {"roles": {"execution": "SCRAM-SHA-256$4096:..."},
         "databases": {"trading": "execution|=Tc/execution execution=CTc/execution"}}
    """

    @staticmethod
    def default() -> dict[str, dict[str, str]]:
        # Also what pyinfra returns when psql fails or prints nothing.
        return {"roles": {}, "databases": {}}

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

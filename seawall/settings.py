"""One way to read a setting: ``setting(data, key)``.

Every deploy, validation and check reads "this host's (or another host's) value
of ``key``, else its default in ``seawall.defaults``" through it, whatever
``data`` is: pyinfra's ``HostData`` (its own host's, with the deploy's
``data_defaults``, or another host's, without them), or a plain mapping in the
inventory model, the CLI and tests. A key set to None counts as unset.

A few settings are derived, never stated: the Postgres roles, the databases'
owners and readers come from the service catalogue (``defaults.postgres_logins``),
and each role's secret is added to ``required_secrets`` (``defaults.role_secrets``),
as are the Redis ACL users' (``redis_acl.required_secrets``), so adding a service
to the catalogue is one edit.
"""

from functools import cache
from typing import Any, Protocol

from seawall import defaults, redis_acl


class Data(Protocol):
    """Host data: pyinfra's ``HostData`` in a deploy, a plain mapping in tests and the CLI."""

    def get(self, key: str, /) -> Any: ...


# Derived from the catalogue (``services``) and the drill's role and database.
DERIVED: tuple[str, ...] = (
    "postgres_service_roles",
    "postgres_databases",
    "postgres_database_readers",
)


@cache
def _defaults() -> dict[str, Any]:
    return defaults.all_defaults()


def default(key: str) -> Any:
    """Return ``key``'s default in ``seawall.defaults``.

    Raises:
        KeyError: seawall has no such setting.
    """
    return _defaults()[key]


def setting(data: Data, key: str) -> Any:
    """Return ``key`` from host data, else its default; derived keys from the host's catalogue.

    Raises:
        KeyError: ``key`` is unset and seawall has no default for it.
    """
    if key in DERIVED:
        logins = defaults.postgres_logins(
            list(setting(data, "services")),
            str(setting(data, "postgres_drill_role")),
            str(setting(data, "postgres_drill_database")),
        )
        return logins[key]
    value = data.get(key)
    if value is None:
        value = default(key)
    if key == "required_secrets":
        required = defaults.role_secrets(dict(value), setting(data, "postgres_service_roles"))
        return redis_acl.required_secrets(required, [s["name"] for s in setting(data, "services")])
    return value

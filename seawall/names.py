"""The names and paths the deploys give things on a host, from host data alone (no pyinfra).

The deploys (``seawall/components``) and the code that checks or drills what
they made (``seawall/verify``, ``seawall/postgres``) both import these, so a
drill or ``seawall verify`` loads no deploy module, and a changed version,
cluster or unit prefix changes what they expect with it.
"""

from collections.abc import Mapping
from typing import Any, Protocol

from seawall import defaults


class Data(Protocol):
    """Host data: pyinfra's ``HostData`` in a deploy, a plain mapping in tests and the CLI."""

    def get(self, key: str, /) -> Any: ...


def setting(data: Data, key: str) -> Any:
    """Return ``key`` from host data, else its default from ``seawall.defaults``."""
    value = data.get(key)
    return defaults.all_defaults()[key] if value is None else value


# --- Postgres and Patroni (components/postgres.py) ----------------------------


def role_secret(role: str) -> str:
    """Return the secret name holding ``role``'s password."""
    return f"postgres_role_{role}_password"


def patroni_config_path(data: Data) -> str:
    return f"/etc/patroni/{data.get('postgres_version')}-{data.get('postgres_cluster')}.yml"


def data_dir(data: Data) -> str:
    return f"/var/lib/postgresql/{data.get('postgres_version')}/{data.get('postgres_cluster')}"


def patroni_unit(data: Data) -> str:
    return f"patroni@{data.get('postgres_version')}-{data.get('postgres_cluster')}.service"


# --- pgBackRest's full backup (components/backup.py) --------------------------

BACKUP_SERVICE = "/etc/systemd/system/seawall-pgbackrest-full.service"
BACKUP_TIMER = "/etc/systemd/system/seawall-pgbackrest-full.timer"


# --- the service catalogue (components/services.py) ---------------------------

# The hang checker every app host runs beside the services.
HEALTHWATCH_UNIT = "/etc/systemd/system/seawall-healthwatch.service"


def catalogue(data: Data) -> list[dict[str, Any]]:
    """Return the service catalogue from host data (SERVICES ``services`` by default)."""
    return list(setting(data, "services"))


def unit_name(data: Data, service: Mapping[str, Any]) -> str:
    return f"{setting(data, 'services_unit_prefix')}{service['name']}.service"


def user_name(data: Data, service: Mapping[str, Any]) -> str:
    return f"{setting(data, 'services_unit_prefix')}{service['name']}"

"""The names and paths the deploys give things on a host, from host data alone (no pyinfra).

The deploys (``seawall/components``) and the code that checks or drills what
they made (``seawall/verify``, ``seawall/postgres``) both import these, so a
drill or ``seawall verify`` loads no deploy module, and a changed version,
cluster or unit prefix changes what they expect with it.
"""

from collections.abc import Mapping
from typing import Any

# role_secret is defined beside the catalogue it derives from; deploys and drills import it here.
from seawall.defaults import role_secret as role_secret
from seawall.settings import Data, setting

# --- Postgres and Patroni (components/postgres.py) ----------------------------


def _version_cluster(data: Data) -> tuple[Any, Any]:
    return setting(data, "postgres_version"), setting(data, "postgres_cluster")


def patroni_config_path(data: Data) -> str:
    return "/etc/patroni/{}-{}.yml".format(*_version_cluster(data))


def data_dir(data: Data) -> str:
    return "/var/lib/postgresql/{}/{}".format(*_version_cluster(data))


def patroni_unit(data: Data) -> str:
    return "patroni@{}-{}.service".format(*_version_cluster(data))


# --- pgBackRest's full backup (components/pgbackrest.py) --------------------------

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


# --- The central journal (components/logging.py) ---------------------------------

# Where systemd-journal-remote writes on the ops host (Debian's unit:
# LogsDirectory=journal/remote); `seawall logs` reads it with `journalctl -D`.
CENTRAL_JOURNAL = "/var/log/journal/remote"

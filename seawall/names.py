"""The names and paths the deploys give things on a host, from host data alone (no pyinfra).

Also who logs in to Postgres from the app hosts (``client_logins``): pg_hba's
lines, the lab's access tests and any audit read the same list.

The deploys (``seawall/components``) and the code that checks or drills what
they made (``seawall/verify``, ``seawall/postgres``) both import these, so a
drill or ``seawall verify`` needs no deploy module for them, and a changed version,
cluster or unit prefix changes what they expect with it.
"""

from collections.abc import Mapping
from typing import Any

# role_secret is defined beside the catalogue it derives from; deploys and drills import it here.
from seawall.defaults import role_secret as role_secret
from seawall.errors import SeawallError
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


# The roles Patroni's file names (superuser, replication, rewind: CLUSTER.yml.j2's
# `authentication`); Postgres peers use them, never an app host.
PATRONI_ROLES = ("postgres", "replicator", "rewind_user")
# Words pg_hba.conf reads as keywords in its database and user fields; a quoted
# name loses that meaning (a role called `all` must not admit everyone).
_HBA_KEYWORDS = frozenset({"all", "sameuser", "samerole", "samegroup", "replication"})


def _hba_name(name: str) -> str:
    return f'"{name}"' if name in _HBA_KEYWORDS else name


def client_logins(data: Data) -> list[tuple[str, str]]:
    """Return the (database, role) pairs app hosts log in as, pg_hba's fields for each.

    Each database's owner (``postgres_databases``) and its readers
    (``postgres_database_readers``): what PgBouncer passes on for the services,
    the drills' writer and ``seawall verify`` (all through HAProxy, from the app
    hosts' addresses). Sorted by database, owner first, each pair once.

    Raises:
        SeawallError: the catalogue gives one of Patroni's own roles a login.
    """
    owners = dict(setting(data, "postgres_databases"))
    readers = dict(setting(data, "postgres_database_readers"))
    pairs: list[tuple[str, str]] = []
    for database in sorted(set(owners) | set(readers)):
        owner = [owners[database]] if database in owners else []
        for role in [*owner, *readers.get(database, [])]:
            if role in PATRONI_ROLES:
                raise SeawallError(
                    f"postgres role {role!r} is Patroni's own: no service may log in as it"
                )
            pair = (_hba_name(str(database)), _hba_name(str(role)))
            if pair not in pairs:
                pairs.append(pair)
    return pairs


# Left by the deploy while it has Patroni in maintenance mode to move etcd to
# TLS (on the Postgres host that paused it), and on each Postgres host whose
# Patroni still waits for its restart onto the TLS store: the next deploy
# finishes what a cut one began, and resumes only its own pause.
PATRONI_PAUSE_MARKER = "/var/lib/seawall/patroni-paused-by-seawall"
PATRONI_RESTART_MARKER = "/var/lib/seawall/patroni-store-restart-pending"


# --- Postgres TLS (components/postgres.py, operations/tls.py) ---------------------


def postgres_tls_files(data: Data) -> dict[str, str]:
    """Return where a host keeps its Postgres TLS files (``postgres_tls_dir``).

    ``key``, ``request`` and ``cert`` on members only; ``ca`` (the Postgres CA's
    certificate, which clients check servers with) on members and app hosts.
    The names are those ``operations.tls`` gives them.
    """
    directory = setting(data, "postgres_tls_dir")
    return {
        "key": f"{directory}/host.key",
        "request": f"{directory}/host.csr",
        "cert": f"{directory}/host.pem",
        "ca": f"{directory}/ca.pem",
    }


# --- PgBouncer on the app hosts (components/pgroute.py) ------------------------------

PGBOUNCER_INI = "/etc/pgbouncer/pgbouncer.ini"


# --- etcd (components/etcd.py) ------------------------------------------------------


def etcd_tls_files(data: Data) -> tuple[str, str, str]:
    """Return this host's etcd CA certificate, certificate and key (``etcd_tls_dir``)."""
    directory = setting(data, "etcd_tls_dir")
    return f"{directory}/ca.pem", f"{directory}/host.pem", f"{directory}/host.key"


def etcdctl(data: Data, endpoints: str | None = None) -> str:
    """Return ``etcdctl`` (API 3) with this host's etcd client certificate, against
    ``endpoints`` (URLs), else the member on this host (``https://127.0.0.1``).

    etcd takes no client without a certificate from its CA: on a member, run
    what follows as root (the key is root: ``etcd_tls_group`` 0640).
    """
    cacert, cert, key = etcd_tls_files(data)
    target = endpoints or f"https://127.0.0.1:{setting(data, 'etcd_client_port')}"
    return f"ETCDCTL_API=3 etcdctl --endpoints={target} --cacert={cacert} --cert={cert} --key={key}"


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

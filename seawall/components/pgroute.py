"""PgBouncer and HAProxy on app hosts, routing to the Patroni leader: ``deploy_pgroute()``.

What it guarantees on every host of the ``app`` group:

- ``pgbouncer`` and ``haproxy`` from Debian are installed, and the install starts
  neither with stock configuration;
- HAProxy listens on loopback only: ``haproxy_rw_port`` reaches whichever
  ``postgres`` member Patroni's REST API calls the leader (``GET /primary``),
  ``haproxy_ro_port`` a replica (``GET /replica``); when a member stops being
  the leader its sessions are cut, so no client keeps writing to it;
- PgBouncer listens on loopback only (``pgbouncer_port``), pools in
  ``pgbouncer_pool_mode`` (transaction by default), knows each
  ``postgres_databases`` entry as ``<db>`` (leader) and ``<db>_ro`` (replica),
  and logs each service role in with its secret (``userlist.txt``, 0640);
- both run, are enabled at boot, and reload (never restart) when their
  configuration changes; a HAProxy configuration ``haproxy -c`` rejects is never
  installed;
- a HAProxy reload keeps every server's state: it is saved through the admin
  socket just before the reload and loaded by the new process, so new sessions
  never reach a replica while the new process's first checks run.

What it never does:

- hard-code which host is the leader: routing follows Patroni, so a failover or
  a switchover needs no redeploy, and a redeploy after one changes nothing;
- listen on a non-loopback address: services on the host are the only clients.
"""

from collections.abc import Mapping, Sequence
from io import StringIO
from typing import Any

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.host import HostData
from pyinfra.operations.util import any_changed

from seawall.components.common import group_members, host_secrets, install_packages, unit_dropin
from seawall.components.templates import render
from seawall.defaults import HAPROXY, PGBOUNCER, POSTGRES
from seawall.names import role_secret
from seawall.operations import files, systemd
from seawall.operations.files import secret_file, validated_file
from seawall.settings import setting

HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"
HAPROXY_DROPIN = "/etc/systemd/system/haproxy.service.d/seawall.conf"
HAPROXY_STATE = "/var/lib/haproxy/server-state"
PGBOUNCER_INI = "/etc/pgbouncer/pgbouncer.ini"
PGBOUNCER_USERS = "/etc/pgbouncer/userlist.txt"
CONCERN = "pgroute"
TEMPLATES: tuple[str, ...] = (HAPROXY_CFG, HAPROXY_DROPIN, PGBOUNCER_INI, PGBOUNCER_USERS)
DEFAULTS: dict[str, Any] = {**POSTGRES, **PGBOUNCER, **HAPROXY}


def pgroute_context(
    data: Mapping[str, Any] | HostData,
    members: Sequence[tuple[str, str]],
    passwords: Mapping[str, str],
) -> dict[str, Any]:
    """Return what the HAProxy and PgBouncer templates see; ``members`` is (name, address)."""
    context = {key: setting(data, key) for key in DEFAULTS}
    context["members"] = [{"name": name, "address": address} for name, address in members]
    context["databases"] = sorted(dict(context["postgres_databases"]))
    context["passwords"] = dict(passwords)
    context["haproxy_state_file"] = HAPROXY_STATE
    return context


@deploy("Postgres routing on app hosts", data_defaults=DEFAULTS)
def deploy_pgroute() -> None:
    """
    Route this app host's Postgres clients to the leader: install, configure, activate.

    Hosts outside the ``app`` group are left alone.

    **Example:**

    .. code:: python

        from seawall.components.pgroute import deploy_pgroute

        deploy_pgroute()
    """
    if "app" not in host.groups:
        return
    roles = list(setting(host.data, "postgres_service_roles"))
    names = [role_secret(role) for role in roles]
    values = host_secrets(names)
    members = group_members("postgres")
    context = pgroute_context(
        host.data, members, {role: values[role_secret(role)] for role in roles}
    )

    # python3-psycopg: the client the reference service, drills and checks use here;
    # socat: HAProxy's reload saves the servers' state through its admin socket.
    install_packages(
        "Install PgBouncer, HAProxy and psycopg",
        ["pgbouncer", "haproxy", "python3-psycopg", "socat"],
    )
    unit_dropin(
        "Keep HAProxy's server states across reloads",
        render(CONCERN, HAPROXY_DROPIN, context),
        HAPROXY_DROPIN,
        "HAProxy",
    )

    haproxy_cfg = validated_file(
        name="Route loopback ports to the Patroni leader and replica",
        src=render(CONCERN, HAPROXY_CFG, context),
        dest=HAPROXY_CFG,
        validate="haproxy -c -q -f {path}",
        mode=644,
    )
    ini = files.put(
        name="Configure PgBouncer (loopback, transaction pooling)",
        src=StringIO(render(CONCERN, PGBOUNCER_INI, context)),
        dest=PGBOUNCER_INI,
        user="root",
        group="postgres",
        mode="640",
    )
    # The roles' passwords in clear: the secret write path, never files.put.
    users = secret_file(
        name="Give PgBouncer the service roles' logins",
        src=render(CONCERN, PGBOUNCER_USERS, context),
        dest=PGBOUNCER_USERS,
        group="postgres",
        mode=640,
        private_dir=False,
    )

    systemd.service(
        name="Start and enable HAProxy", service="haproxy.service", running=True, enabled=True
    )
    systemd.service(
        name="Reload HAProxy (its configuration changed)",
        service="haproxy.service",
        running=True,
        reloaded=True,
        _if=haproxy_cfg.did_change,
    )
    systemd.service(
        name="Start and enable PgBouncer", service="pgbouncer.service", running=True, enabled=True
    )

    # SIGHUP: PgBouncer rereads both files and keeps its client connections.
    systemd.service(
        name="Reload PgBouncer (its configuration changed)",
        service="pgbouncer.service",
        running=True,
        reloaded=True,
        _if=any_changed(ini, users),
    )

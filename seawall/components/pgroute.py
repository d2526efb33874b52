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
- PgBouncer's connections to Postgres are TLS (TLS 1.2 and 1.3): it asks for
  TLS always (``server_tls_sslmode``: PgBouncer 1.18's default, ``disable``,
  never asks), at ``prefer`` until every member serves TLS, then at
  ``verify-ca`` with the Postgres CA's certificate (``postgres_tls_dir``,
  installed by the postgres deploy), the rule ``components/postgres.py``
  gives Patroni's own connections, and never a step back from it.
  ``verify-ca``, not ``verify-full``: PgBouncer dials HAProxy on 127.0.0.1,
  which passes TCP through to whichever member leads, so no name it dials is
  a member's; the Postgres CA signs Postgres members only, so a server that
  passes is one. A PgBouncer is never told to verify without that
  certificate on its host (``tls_ready``). The services reach PgBouncer on
  loopback, where TLS would add nothing;
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
from pyinfra.facts.files import File
from pyinfra.operations.util import any_changed

from seawall.components.common import group_members, host_secrets, install_packages, unit_dropin
from seawall.components.postgres import ca_host, cluster_tls, pgbouncer_tls_mode
from seawall.components.templates import render
from seawall.defaults import HAPROXY, PGBOUNCER, POSTGRES
from seawall.facts.postgres import PgbouncerServerTls
from seawall.names import PGBOUNCER_INI, postgres_tls_files, role_secret
from seawall.operations import files, systemd
from seawall.operations.files import secret_file, validated_file
from seawall.operations.tls import tls_ready
from seawall.settings import setting

HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"
HAPROXY_DROPIN = "/etc/systemd/system/haproxy.service.d/seawall.conf"
HAPROXY_STATE = "/var/lib/haproxy/server-state"
PGBOUNCER_USERS = "/etc/pgbouncer/userlist.txt"
CONCERN = "pgroute"
TEMPLATES: tuple[str, ...] = (HAPROXY_CFG, HAPROXY_DROPIN, PGBOUNCER_INI, PGBOUNCER_USERS)
DEFAULTS: dict[str, Any] = {**POSTGRES, **PGBOUNCER, **HAPROXY}


def pgroute_context(
    data: Mapping[str, Any] | HostData,
    members: Sequence[tuple[str, str]],
    passwords: Mapping[str, str],
    tls_mode: str = "prefer",
) -> dict[str, Any]:
    """Return what the HAProxy and PgBouncer templates see; ``members`` is (name, address),
    ``tls_mode`` PgBouncer's ``server_tls_sslmode`` (``pgbouncer_tls_mode``)."""
    context = {key: setting(data, key) for key in DEFAULTS}
    context["tls_mode"] = tls_mode
    context["tls_ca_file"] = postgres_tls_files(data)["ca"]
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
    tls_mode = _tls_mode()
    context = pgroute_context(
        host.data, members, {role: values[role_secret(role)] for role in roles}, tls_mode
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
    if tls_mode == "verify-ca":
        tls_ready(
            name="Check the Postgres CA's certificate is here before PgBouncer checks with it",
            directory=setting(host.data, "postgres_tls_dir"),
        )
    ini = files.put(
        name="Configure PgBouncer (loopback, transaction pooling, TLS to Postgres)",
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

    # SIGHUP: PgBouncer rereads both files, TLS settings included (1.16 and later),
    # and keeps its client connections; new server connections take the new TLS.
    systemd.service(
        name="Reload PgBouncer (its configuration changed)",
        service="pgbouncer.service",
        running=True,
        reloaded=True,
        _if=any_changed(ini, users),
    )


def _tls_mode() -> str:
    """This app host's PgBouncer ``server_tls_sslmode``, from what the run finds (see
    ``components/postgres.py``: the same rule as Patroni's connections)."""
    if ca_host() is None:
        return "prefer"
    members, _, ca_active = cluster_tls()
    current = host.get_fact(PgbouncerServerTls, path=PGBOUNCER_INI)
    # The postgres deploy, earlier in a site run, installs it when the CA's host is in the run.
    trusted = ca_active or bool(host.get_fact(File, path=postgres_tls_files(host.data)["ca"]))
    mode = pgbouncer_tls_mode(current, members, ca_active, trusted)
    if mode != "verify-ca":
        host.log("PgBouncer verifies servers once every Postgres member serves TLS")
    return mode

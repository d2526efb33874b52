"""The NGINX gateway in front of the app hosts: ``deploy_gateway()``.

What it guarantees on every host of the ``gateway`` group:

- NGINX from Debian serves HTTPS on ``gateway_https_port`` and only redirects on
  ``gateway_http_port``, to ``gateway_server_name`` (default: the host's inventory
  name), never to the client's Host header; TLS is Mozilla intermediate (1.2 and
  1.3, ``gateway_tls_ciphers``, no session tickets) with ``gateway_tls_certificate``/
  ``_key``, or, when they are unset (the lab), a self-signed pair generated once;
- the public listener answers 404 for ``gateway_private_paths`` under every route
  (per-service /health, /openapi.json, /slow...), marks what it proxies
  ``X-Seawall-Edge: public`` (so a service refuses its drill knobs), and sends
  ``/api/health`` to the status-only ``gateway_public_upstream_paths``;
- one route per service of the ``services`` catalogue, to an upstream over every
  app host, or ``gateway_upstream_addresses`` when set (least_conn, keepalive,
  max_fails/fail_timeout), with its own timeouts;
- rate limits per client (``gateway_rate_zones``: every route in ``general``,
  execution routes in ``execution`` too, every service's ``gateway_order_paths`` and
  ``gateway_trading_paths`` in ``trading`` too) answering
  429 with a JSON body; a cap on concurrent connections per client;
- ``X-Request-ID`` from the client (if well-formed) or generated, sent upstream,
  returned and logged; a JSON access log with upstream timings, to a file (buffered)
  that ``seawall-gateway-journal.service`` copies into the journal, tagged
  ``gateway_journal_tag`` (none when it is empty), up to
  ``gateway_journal_batch_lines`` lines per entry; JSON bodies for the errors NGINX
  itself answers; security headers; a body size limit;
- the same routes and limits over plain HTTP on the private address only, at
  ``gateway_internal_http_port`` (unless None), for callers inside the private network;
- the copier (``files/gateway/seawall-gateway-journal``, python3-systemd) sends a
  batch as one entry after ``gateway_journal_batch_wait`` s at most, with one
  ``REQUEST_ID`` field per request in it (``seawall logs`` queries that index); its own journald
  rate limit (``gateway_journal_rate_limit_*``) holds the gateway's load; a busy
  journald slows the copy and drops nothing (NGINX never waits);
- stub_status on 127.0.0.1:``gateway_status_port`` only;
- the app hosts named in ``gateway_drained_hosts`` are ``down`` in every upstream
  (the rolling restart's drain; a normal deploy names none, so one left drained
  is drift).

What it never does:

- install a configuration ``nginx -t`` rejects (the previous one stays);
- restart NGINX: a changed configuration is reloaded, so no connection drops;
- send a POST to a second app host once the first one received it;
- regenerate an existing certificate;
- log a query string (it may carry a token): the access log has the path only.
"""

from collections.abc import Mapping
from io import StringIO
from typing import Any

from pyinfra import host
from pyinfra.api.deploy import deploy
from pyinfra.api.host import HostData
from pyinfra.facts.files import File
from pyinfra.operations import server
from pyinfra.operations.util import any_changed

from seawall.components import templates
from seawall.components.common import group_members, install_packages
from seawall.defaults import GATEWAY
from seawall.errors import SeawallError
from seawall.operations import files, systemd
from seawall.operations.files import validated_file
from seawall.settings import setting

NGINX_CONF = "/etc/nginx/nginx.conf"
JOURNAL_UNIT = "/etc/systemd/system/seawall-gateway-journal.service"
# The copier the unit runs (a static file: files/gateway/).
JOURNAL_COPIER = "/usr/local/libexec/seawall-gateway-journal"
COPIER_SOURCE = templates.static_path("gateway", "seawall-gateway-journal")
# Where NGINX's journal rate limit was, when NGINX sent its lines as syslog datagrams.
OLD_JOURNAL_DROPIN = "/etc/systemd/system/nginx.service.d/seawall-journal.conf"
TEMPLATES: tuple[str, ...] = (NGINX_CONF, JOURNAL_UNIT)
# Where the lab's self-signed pair goes when no certificate path is set.
SELF_SIGNED_DIR = "/etc/nginx/tls"

Data = Mapping[str, Any] | HostData

# Errors NGINX answers itself, with the message of their JSON body.
ERRORS: tuple[tuple[int, str], ...] = (
    (400, "bad request"),
    (403, "forbidden"),
    (404, "not found"),
    (405, "method not allowed"),
    (408, "request timeout"),
    (413, "request body too large"),
    (414, "uri too long"),
    (429, "too many requests"),
    (500, "internal error"),
    (502, "bad gateway: no app host answered"),
    (503, "service unavailable"),
    (504, "gateway timeout: the app host did not answer in time"),
)


def render(target: str, context: Mapping[str, Any]) -> str:
    """Render the template of ``target`` (a path on the host) with ``context``."""
    return templates.render("gateway", target, context)


def tls_paths(data: Data) -> tuple[str, str, bool]:
    """Return (certificate, key, self_signed)."""
    cert, key = (
        setting(data, "gateway_tls_certificate"),
        setting(data, "gateway_tls_certificate_key"),
    )
    if cert and key:
        return str(cert), str(key), False
    return f"{SELF_SIGNED_DIR}/gateway.crt", f"{SELF_SIGNED_DIR}/gateway.key", True


def trading_paths(data: Data) -> list[str]:
    """Return every public path prefix in the ``trading`` zone.

    ``gateway_trading_paths`` plus, for each prefix route, each of
    ``gateway_order_paths`` under it (``/api/ai/orders``, ``/orders`` on ``/``).
    """
    out = list(setting(data, "gateway_trading_paths"))
    for service in setting(data, "services"):
        route = service["route"]
        if route.endswith("/"):
            out += [route + p.lstrip("/") for p in setting(data, "gateway_order_paths")]
    return list(dict.fromkeys(out))


def private_paths(data: Data) -> list[str]:
    """Return the public path prefixes the public listener answers 404 (``gateway_private_paths``
    under every prefix route)."""
    out: list[str] = []
    for service in setting(data, "services"):
        route = service["route"]
        if route.endswith("/"):
            out += [route + p.lstrip("/") for p in setting(data, "gateway_private_paths")]
    return list(dict.fromkeys(out))


def routes(data: Data) -> list[dict[str, Any]]:
    """Return every service's route: upstream name, locations and their zones, timeouts.

    A location's ``public_upstream_path`` is where the public listener sends it
    (``gateway_public_upstream_paths``); the internal listener uses ``upstream_path``.
    """
    zones = setting(data, "gateway_rate_zones")
    route_zones = setting(data, "gateway_route_zones")
    trading = trading_paths(data)
    public_paths = setting(data, "gateway_public_upstream_paths")
    base_timeouts = setting(data, "gateway_timeouts")
    route_timeouts = setting(data, "gateway_route_timeouts")

    def zone(name: str) -> dict[str, Any]:
        return {"name": name, "burst": zones[name]["burst"]}

    services = setting(data, "services")
    prefixes = [s["route"] for s in services if s["route"].endswith("/")]

    def owner(path: str) -> str:
        # The longest prefix route holds a trading path (/api/execution/, not /).
        return max((p for p in prefixes if path.startswith(p) and path != p), key=len)

    out = []
    for service in services:
        name, path = service["name"], service["route"]
        route_zone_names = ["general", *route_zones.get(name, [])]
        locations = []
        if path.endswith("/"):
            # Prefix route: /api/execution/x -> /x on the service.
            for order_path in trading:
                if owner(order_path) == path:
                    upstream = "/" + order_path[len(path) :]
                    locations.append(
                        {
                            "match": f"^~ {order_path}",
                            "upstream_path": upstream,
                            "public_upstream_path": upstream,
                            "zones": [zone(z) for z in [*route_zone_names, "trading"]],
                        }
                    )
            locations.append(
                {
                    "match": path,
                    "upstream_path": "/",
                    "public_upstream_path": "/",
                    "zones": [zone(z) for z in route_zone_names],
                }
            )
        else:
            upstream = service.get("upstream_path", path)
            locations.append(
                {
                    "match": f"= {path}",
                    "upstream_path": upstream,
                    "public_upstream_path": public_paths.get(path, upstream),
                    "zones": [zone(z) for z in route_zone_names],
                }
            )
        out.append(
            {
                "name": name,
                "upstream": "svc_" + name.replace("-", "_"),
                "port": service["port"],
                "locations": locations,
                "timeouts": {**base_timeouts, **route_timeouts.get(name, {})},
            }
        )
    return out


def journal_copy(data: Data, values: Mapping[str, Any]) -> None:
    """Copy the access log into the journal with ``seawall-gateway-journal.service``,
    or, when ``gateway_journal_tag`` is empty, have no copier."""
    name = JOURNAL_UNIT.rsplit("/", 1)[1]
    old = files.file(
        name="Remove NGINX's syslog rate limit (its lines now reach the journal from the file)",
        path=OLD_JOURNAL_DROPIN,
        present=False,
    )
    if not setting(data, "gateway_journal_tag"):
        systemd.service(
            name="Stop copying the access log into the journal (no journal tag)",
            service=name,
            running=False,
            enabled=False,
        )
        gone = files.file(name="Remove the journal copier's unit", path=JOURNAL_UNIT, present=False)
        files.file(name="Remove the journal copier", path=JOURNAL_COPIER, present=False)
        systemd.daemon_reload(
            name="Reload systemd (the journal copier's unit went)",
            _if=any_changed(old, gone),
        )
        return
    install_packages("Install python3-systemd (the copier's journal client)", ["python3-systemd"])
    copier = files.put(
        name="Install the copier of the access log into the journal",
        src=str(COPIER_SOURCE),
        dest=JOURNAL_COPIER,
        mode="755",
    )
    unit = files.put(
        name="Install the unit that copies the access log into the journal",
        src=StringIO(render(JOURNAL_UNIT, values)),
        dest=JOURNAL_UNIT,
        mode="644",
    )
    systemd.daemon_reload(
        name="Reload systemd (the journal copier's unit changed)", _if=any_changed(old, unit)
    )
    systemd.service(
        name="Restart the journal copier (its unit changed)",
        service=name,
        running=True,
        restarted=True,
        _if=any_changed(unit, copier),
    )
    systemd.service(
        name="Copy the access log into the journal, now and at boot",
        service=name,
        running=True,
        enabled=True,
    )


def drained_addresses(data: Data, members: list[tuple[str, str]]) -> list[str]:
    """Return the addresses of the app hosts ``gateway_drained_hosts`` names.

    ``members`` are the app group's (name, address), as ``group_members("app")`` gives them.
    """
    drained = set(setting(data, "gateway_drained_hosts"))
    return [address for name, address in members if name in drained]


def server_name(data: Data, host_name: str | None = None) -> str:
    """Return the name plain HTTP redirects to.

    ``gateway_server_name``, else the gateway host's inventory name (``host_name``,
    or pyinfra's host for its data), else (a rendering outside a deploy without
    either) its private address.

    Raises:
        SeawallError: none of these is known.
    """
    name = setting(data, "gateway_server_name") or host_name
    if not name and isinstance(data, HostData):
        name = data.host.name
    name = name or data.get("private_address")
    if not name:
        raise SeawallError("gateway_server_name: not set, and the gateway host has no name")
    return str(name)


def context(
    data: Data,
    app_addresses: list[str],
    drained: list[str] | None = None,
    host_name: str | None = None,
) -> dict[str, Any]:
    """Return what nginx.conf.j2 sees; ``drained`` addresses are marked ``down``."""
    cert, key, _ = tls_paths(data)
    zones = setting(data, "gateway_rate_zones")
    return {
        "client_max_body_size": setting(data, "gateway_client_max_body_size"),
        "worker_processes": setting(data, "gateway_worker_processes"),
        "worker_connections": setting(data, "gateway_worker_connections"),
        "worker_rlimit_nofile": setting(data, "gateway_worker_rlimit_nofile"),
        "access_log": setting(data, "gateway_access_log"),
        "journal_tag": setting(data, "gateway_journal_tag"),
        "journal_copier": JOURNAL_COPIER,
        "journal_batch_lines": setting(data, "gateway_journal_batch_lines"),
        "journal_batch_bytes": setting(data, "gateway_journal_batch_bytes"),
        "journal_batch_wait": setting(data, "gateway_journal_batch_wait"),
        "journal_rate_limit_burst": setting(data, "gateway_journal_rate_limit_burst"),
        "journal_rate_limit_interval": setting(data, "gateway_journal_rate_limit_interval"),
        "rate_limit_exempt": list(setting(data, "gateway_rate_limit_exempt")),
        "zones": [{"name": n, "rate": z["rate"]} for n, z in zones.items()],
        "limit_conn": setting(data, "gateway_limit_conn"),
        "routes": routes(data),
        "app_addresses": app_addresses,
        "drained_addresses": list(drained or []),
        "max_fails": setting(data, "gateway_max_fails"),
        "fail_timeout": setting(data, "gateway_fail_timeout"),
        "upstream_keepalive": setting(data, "gateway_upstream_keepalive"),
        "next_upstream_timeout": setting(data, "gateway_next_upstream_timeout"),
        "http_port": setting(data, "gateway_http_port"),
        "https_port": setting(data, "gateway_https_port"),
        "status_port": setting(data, "gateway_status_port"),
        "internal_http_port": setting(data, "gateway_internal_http_port"),
        "private_address": data.get("private_address"),
        "tls_certificate": cert,
        "tls_certificate_key": key,
        "tls_protocols": setting(data, "gateway_tls_protocols"),
        "tls_ciphers": setting(data, "gateway_tls_ciphers"),
        "tls_ecdh_curves": setting(data, "gateway_tls_ecdh_curves"),
        "server_name": server_name(data, host_name),
        "private_paths": private_paths(data),
        "hsts_max_age": setting(data, "gateway_hsts_max_age"),
        "errors": ERRORS,
    }


@deploy("NGINX gateway", data_defaults=GATEWAY)
def deploy_gateway() -> None:
    """
    Install, configure and activate the gateway on a host of the ``gateway`` group.

    Other hosts are left alone.

    **Example:**

    .. code:: python

        from seawall.components.gateway import deploy_gateway

        deploy_gateway()
    """
    if "gateway" not in host.groups:
        return
    data = host.data
    members = group_members("app")
    apps = list(setting(data, "gateway_upstream_addresses") or []) or [
        address for _, address in members
    ]
    drained = drained_addresses(data, members)

    install_packages("Install NGINX", ["nginx", "openssl"])

    cert, key, self_signed = tls_paths(data)
    if self_signed and not host.get_fact(File, path=cert):
        address = data.get("private_address")
        server.shell(
            name="Generate the gateway's self-signed certificate (no certificate path is set)",
            commands=[
                f"install -d -m 755 {SELF_SIGNED_DIR}",
                f"umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
                f"-nodes -days 825 -subj /CN={host.name} "
                f"-addext subjectAltName=IP:{address},DNS:{host.name} "
                f"-keyout {key} -out {cert} 2>/dev/null",
                f"chmod 644 {cert}",
            ],
        )
    conf = validated_file(
        name="Configure NGINX as the gateway (checked with nginx -t first)",
        src=render(NGINX_CONF, context(data, apps, drained, host.name)),
        dest=NGINX_CONF,
        validate="nginx -t -q -c {path}",
        check_installed="nginx -t -q",
        mode=644,
    )
    journal_copy(data, context(data, apps, drained, host.name))
    systemd.service(
        name="Reload NGINX (its configuration changed)",
        service="nginx.service",
        running=True,
        reloaded=True,
        _if=conf.did_change,
    )
    systemd.service(
        name="Run NGINX now and at boot", service="nginx.service", running=True, enabled=True
    )

"""What each role promises on a host (units, timers, listeners), judged from one probe session.

The expectations come from the same inventory data and defaults the components
read (``seawall/components/*.py``), through the helpers they share in
``seawall/names.py`` (the service catalogue's unit names, Patroni's unit, the
backup timer), so a changed port, service or version changes what verify expects
with it. These checks load no deploy module (only the firewall's checks do, for
the ruleset that component alone renders: ``seawall/verify/firewall.py``).
"""

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from seawall import names
from seawall.inventory import Host, Topology
from seawall.verify.common import parse_sshd_t
from seawall.verify.probe import Probe
from seawall.verify.report import Check

LOOPBACK = "127.0.0.1"
# How nginx's `listen PORT` and `listen [::]:PORT` show up in `ss`.
ANY_V4, ANY_V6 = "0.0.0.0", "[::]"

# Units whose name is Debian's, fixed by the package the component installs
# (seawall/components/redis.py, etcd.py, pgroute.py, gateway.py): no data key names them.
_PACKAGE_UNITS: dict[str, tuple[str, ...]] = {
    "redis": ("redis-server.service",),
    "sentinel": ("redis-sentinel.service",),
    "etcd": ("etcd.service",),
    "app": ("haproxy.service", "pgbouncer.service"),
    "gateway": ("nginx.service",),
}
# The exporters (and Prometheus) components/metrics.py installs, Debian's units
# too; None: every host. Each listens on its host's private address only, at
# the port key beside it.
_METRICS: dict[str | None, tuple[tuple[str, str], ...]] = {
    None: (("prometheus-node-exporter.service", "node_exporter_port"),),
    "redis": (("prometheus-redis-exporter.service", "redis_exporter_port"),),
    "postgres": (("prometheus-postgres-exporter.service", "postgres_exporter_port"),),
    "gateway": (
        ("prometheus-nginx-exporter.service", "nginx_exporter_port"),
        ("mtail.service", "mtail_port"),
    ),
    "ops": (
        ("prometheus-blackbox-exporter.service", "blackbox_exporter_port"),
        ("prometheus.service", "prometheus_port"),
    ),
}
# The hang checker every app host runs beside the services (components/services.py).
HEALTHWATCH = PurePosixPath(names.HEALTHWATCH_UNIT).name
# The rolling restart's timer on the first ops host (components/ops.py).
RESTART_TIMER = "seawall-restart.timer"
# Debian's stock Patroni unit reads another file; the postgres deploy stops and disables it.
STOCK_PATRONI = "patroni.service"


@dataclass(frozen=True)
class Listener:
    """One listening socket: protocol, local address (as `ss` prints it) and port."""

    proto: str
    address: str
    port: int

    def __str__(self) -> str:
        return f"{self.proto} {self.address}:{self.port}"


@dataclass(frozen=True)
class Expected:
    """What a host's roles promise: units running and enabled, units off, timers, listeners."""

    units: tuple[str, ...]
    stopped_units: tuple[str, ...]
    timers: tuple[str, ...]
    listeners: frozenset[Listener]


def _tcp(*pairs: tuple[str, Any]) -> set[Listener]:
    return {Listener("tcp", address, int(port)) for address, port in pairs}


def service_units(data: Mapping[str, Any]) -> list[str]:
    """Return the unit of every service in the host's catalogue (as deploy_services names it)."""
    return [names.unit_name(data, service) for service in names.catalogue(data)]


def service_files(data: Mapping[str, Any], name: str) -> tuple[str, str]:
    """Return (settings file, secrets file) deploy_services writes for service ``name``."""
    config, secrets = data["services_config_dir"], data["services_secrets_dir"]
    return f"{config}/{name}.json", f"{secrets}/{name}.env"


def postgres_client_service(data: Mapping[str, Any]) -> str | None:
    """Return the first service of the catalogue that logs in to Postgres, if any."""
    for service in names.catalogue(data):
        if service.get("postgres_role") and "postgres" in service.get("needs", []):
            return str(service["name"])
    return None


def expected(topology: Topology, host: Host) -> Expected:
    """Return what ``host``'s roles promise, from its data (the keys the deploys read)."""
    data, roles, address = host.data, set(host.roles), host.address
    units: list[str] = ["ssh.service"]
    stopped: list[str] = []
    timers: list[str] = []
    listeners: set[Listener] = set()
    for role in host.roles:
        units += _PACKAGE_UNITS.get(role, ())
    if "redis" in roles:
        listeners |= _tcp((address, data["redis_port"]), (LOOPBACK, data["redis_port"]))
    if "sentinel" in roles:
        listeners |= _tcp((address, data["sentinel_port"]), (LOOPBACK, data["sentinel_port"]))
    if "etcd" in roles:
        client, peer = data["etcd_client_port"], data["etcd_peer_port"]
        metrics = data["etcd_metrics_port"]
        listeners |= _tcp(
            (address, client), (LOOPBACK, client), (address, peer), (address, metrics)
        )
    if "postgres" in roles:
        units.append(names.patroni_unit(data))
        stopped.append(STOCK_PATRONI)
        pg = data["postgres_port"]
        listeners |= _tcp((address, data["patroni_rest_port"]), (address, pg), (LOOPBACK, pg))
    if "app" in roles:
        units += [*service_units(data), HEALTHWATCH]
        listeners |= _tcp(
            (LOOPBACK, data["haproxy_rw_port"]),
            (LOOPBACK, data["haproxy_ro_port"]),
            (LOOPBACK, data["pgbouncer_port"]),
            *((address, s["port"]) for s in names.catalogue(data)),
        )
    if "gateway" in roles:
        # The edge: HTTP (redirect) and HTTPS on every address, v4 and v6, as
        # nginx.conf's `listen PORT` / `listen [::]:PORT` say; the rest private.
        for port in (data["gateway_http_port"], data["gateway_https_port"]):
            listeners |= _tcp((ANY_V4, port), (ANY_V6, port))
        listeners |= _tcp((LOOPBACK, data["gateway_status_port"]))
        if data.get("gateway_internal_http_port") is not None:
            listeners |= _tcp((address, data["gateway_internal_http_port"]))
    for serving, daemons in _METRICS.items():
        if serving is None or serving in roles:
            units += [unit for unit, _ in daemons]
            listeners |= _tcp(*((address, data[port_key]) for _, port_key in daemons))
    repos = topology.group("ops")
    if repos and repos[0].name == host.name:
        # deploy_pgbackrest puts the nightly full backup's timer on the first ops host.
        timers.append(PurePosixPath(names.BACKUP_TIMER).name)
        # deploy_ops puts the nightly rolling restart's timer there too; with
        # restart_enabled false it must be stopped and disabled.
        if data["restart_enabled"]:
            timers.append(RESTART_TIMER)
        else:
            stopped.append(RESTART_TIMER)
    # deploy_logging: every host uploads its journal; the first ops host keeps
    # the central journal (its socket on the private address) and vacuums it.
    units.append("systemd-journal-upload.service")
    if repos and repos[0].name == host.name:
        units.append("systemd-journal-remote.socket")
        timers.append("seawall-journal-vacuum.timer")
        listeners |= _tcp((address, data["journal_remote_port"]))
    elif repos:
        stopped.append("systemd-journal-remote.socket")
    return Expected(tuple(units), tuple(stopped), tuple(timers), frozenset(listeners))


# `systemctl show` properties the unit and timer checks read.
_PROPERTIES = ("Id", "LoadState", "ActiveState", "SubState", "UnitFileState")


def probe_commands(topology: Topology, host: Host) -> dict[str, str]:
    """Return the shell command of each role probe run on ``host``."""
    want = expected(topology, host)
    names = [*want.units, *want.stopped_units, *want.timers]
    props = " ".join(f"-p {p}" for p in _PROPERTIES)
    commands = {
        "units": f"systemctl show {props} -p NextElapseUSecRealtime "
        + " ".join(shlex.quote(n) for n in names),
        # -p names the process behind an unexpected listener.
        "listeners": "ss -Hltnup",
    }
    if "app" in host.roles:
        route = pg_route_probe(host.data)
        if route:
            commands["pg_route"] = route
    return commands


# Run on an app host as root: log in as a service does (its settings file, its
# secrets file; the password never leaves the host nor reaches a command line),
# once through PgBouncer and once through HAProxy's read-write port, and say
# which server answered and whether it is a primary. Through HAProxy the login
# crosses the network to a member: TLS, checked against the Postgres CA where the
# host has its certificate (verify-ca: HAProxy's address is no member's name),
# as PgBouncer checks it; PgBouncer itself is on loopback.
_PG_ROUTE = """
import json, os, sys
config, secrets, env, haproxy, ca = sys.argv[1:6]
pg = json.load(open(config))["postgres"]
password = None
for line in open(secrets):
    key, _, value = line.rstrip("\\n").partition("=")
    if key == env:
        password = value
import psycopg
tls = {"sslmode": "verify-ca", "sslrootcert": ca} if os.path.isfile(ca) else {}
for label, port, extra in (("pgbouncer", pg["port"], {}), ("haproxy", int(haproxy), tls)):
    try:
        with psycopg.connect(host=pg["host"], port=port, dbname=pg["dbname"], user=pg["user"],
                             password=password, connect_timeout=3, prepare_threshold=None,
                             **extra) as c:
            row = c.execute("select host(inet_server_addr()), pg_is_in_recovery()").fetchone()
        print(label, "ok", row[0], "replica" if row[1] else "primary")
    except Exception as error:
        print(label, "error", type(error).__name__, " ".join(str(error).split())[:160])
"""


def pg_route_probe(data: Mapping[str, Any]) -> str | None:
    """Return the command that logs in through PgBouncer and HAProxy on an app host."""
    from seawall.refservice.config import ENV_POSTGRES_PASSWORD

    name = postgres_client_service(data)
    if name is None:
        return None
    config, secrets = service_files(data, name)
    args = [
        config,
        secrets,
        ENV_POSTGRES_PASSWORD,
        str(data["haproxy_rw_port"]),
        names.postgres_tls_files(data)["ca"],
    ]
    return "python3 -c " + " ".join(shlex.quote(a) for a in [_PG_ROUTE, *args])


def parse_show(output: str) -> dict[str, dict[str, str]]:
    """Return ``systemctl show`` output (units separated by blank lines) by unit Id."""
    units: dict[str, dict[str, str]] = {}
    for block in output.split("\n\n"):
        props = dict(line.partition("=")[::2] for line in block.splitlines() if "=" in line)
        if props.get("Id"):
            units[props["Id"]] = props
    return units


def parse_ss(output: str) -> dict[Listener, str]:
    """Return every listening socket of ``ss -Hltnup`` output, with the process behind it."""
    found: dict[Listener, str] = {}
    for line in output.splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[0] not in ("tcp", "udp"):
            continue
        address, _, port = fields[4].rpartition(":")
        if not port.isdigit():
            continue
        # `127.0.0.53%lo` names the interface; the address is what matters.
        address = address.split("%", 1)[0]
        process = fields[6].split('"')[1] if len(fields) > 6 and '"' in fields[6] else "?"
        found[Listener(fields[0], address, int(port))] = process
    return found


def sshd_listeners(sshd_t: str) -> set[Listener]:
    """Return what sshd is configured to listen on (``sshd -T`` ListenAddress lines)."""
    out = set()
    for line in sshd_t.splitlines():
        key, _, value = line.partition(" ")
        if key.lower() == "listenaddress":
            address, _, port = value.strip().rpartition(":")
            if port.isdigit():
                out.add(Listener("tcp", address, int(port)))
    if not out:
        port = parse_sshd_t(sshd_t).get("port", "22")
        out = {Listener("tcp", ANY_V4, int(port)), Listener("tcp", ANY_V6, int(port))}
    return out


def judge_units(want: Expected, show: Probe) -> list[Check]:
    """One check per unit and timer: running and enabled (or, for stopped units, neither)."""
    seen = parse_show(show.output)
    checks = []
    for unit in want.units:
        state = seen.get(unit, {})
        words = _state(state)
        ok = state.get("ActiveState") == "active" and state.get("UnitFileState") == "enabled"
        checks.append(Check(f"unit {unit}", ok, words))
    for unit in want.stopped_units:
        state = seen.get(unit, {})
        ok = state.get("ActiveState") != "active" and state.get("UnitFileState") != "enabled"
        checks.append(Check(f"unit {unit} off", ok, _state(state)))
    for timer in want.timers:
        state = seen.get(timer, {})
        ok = (
            state.get("ActiveState") == "active"
            and state.get("UnitFileState") == "enabled"
            and bool(state.get("NextElapseUSecRealtime"))
        )
        detail = _state(state) + f", next {state.get('NextElapseUSecRealtime') or 'never'}"
        checks.append(Check(f"timer {timer}", ok, detail))
    return checks


def _state(props: Mapping[str, str]) -> str:
    if not props:
        return "not reported by systemctl"
    if props.get("LoadState") != "loaded":
        return f"{props.get('LoadState')}"
    return f"{props.get('ActiveState')} ({props.get('SubState')}), {props.get('UnitFileState')}"


def judge_listeners(want: Expected, ss: Probe, sshd_t: Probe) -> Check:
    """Listening sockets exactly as configured: none missing, none more."""
    if ss.code != 0:
        return Check("listeners", False, ss.output or f"ss exited {ss.code}")
    seen = parse_ss(ss.output)
    wanted = set(want.listeners) | sshd_listeners(sshd_t.output)
    missing = sorted(wanted - set(seen), key=str)
    extra = sorted(set(seen) - wanted, key=str)
    problems = [f"unexpected {item} ({seen[item]})" for item in extra]
    problems += [f"missing {item}" for item in missing]
    detail = "; ".join(problems) or f"exactly the {len(wanted)} configured"
    return Check("listeners", not problems, detail)


@dataclass(frozen=True)
class Route:
    """Where a login through PgBouncer or HAProxy on an app host landed."""

    ok: bool
    server: str | None
    primary: bool
    error: str


def parse_pg_route(output: str) -> dict[str, Route]:
    """Return the pg_route probe's answer per way in (``pgbouncer``, ``haproxy``)."""
    routes: dict[str, Route] = {}
    for line in output.splitlines():
        fields = line.split(" ", 2)
        if len(fields) < 3 or fields[0] not in ("pgbouncer", "haproxy"):
            continue
        if fields[1] == "ok":
            server, _, kind = fields[2].partition(" ")
            routes[fields[0]] = Route(True, server, kind == "primary", "")
        else:
            routes[fields[0]] = Route(False, None, False, fields[2])
    return routes


def judge_pg_route(probe: Probe, leader: tuple[str, str] | None) -> list[Check]:
    """PgBouncer and HAProxy on an app host reach the leader (``leader``: name, address)."""
    routes = parse_pg_route(probe.output)
    checks = []
    for way in ("pgbouncer", "haproxy"):
        name = f"{way} reaches leader"
        route = routes.get(way)
        if route is None:
            checks.append(Check(name, False, probe.output[-200:] or "probe gave no answer"))
        elif not route.ok:
            checks.append(Check(name, False, route.error))
        elif leader is None:
            checks.append(Check(name, False, f"{route.server} answered; Patroni names no leader"))
        else:
            ok = route.primary and route.server == leader[1]
            kind = "primary" if route.primary else "in recovery"
            detail = f"{route.server} ({kind}) answered; leader {leader[0]} ({leader[1]})"
            checks.append(Check(name, ok, detail))
    return checks

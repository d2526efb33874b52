"""Exporters on every host, Prometheus and the /health probes on the ops host: ``deploy_metrics()``.

What it guarantees (each daemon is Debian's package, run by Debian's own unit,
enabled at boot, listening on the host's private address only):

- every host: ``prometheus-node-exporter`` on ``node_exporter_port``, its textfile
  directory ``services_textfile_dir``, so the failure recorder's
  ``seawall_unit_failures_total`` is scraped, and its systemd collector on (unit states);
- ``redis`` hosts: ``prometheus-redis-exporter`` on ``redis_exporter_port`` over the
  local Redis, and over the local Sentinel through its ``/scrape`` endpoint (job
  ``sentinel``); it logs in to both as its own ACL user ``exporter``
  (``seawall/redis_acl.py``: reads of their state, no key, nothing it could
  change) once :func:`seawall.components.redis.acl_ready` says every Redis has
  the users, the gate the services' move takes (the redis deploy, before this
  one in ``deploys/site.py``, gives every Redis and Sentinel that user); until
  then (a Redis started before its ACL file) as ``default`` with the admin
  passwords, so it keeps working. The passwords reach it in a password file (a redis URI -> password
  map) kept 0600 root-only and copied at each start into the unit's own runtime
  directory, never through ``ARGS`` (Debian's unit puts ``ARGS`` on the command
  line, which every user can read) nor the environment, which holds only the
  user name (``REDIS_USER``, in the unit's drop-in);
- ``postgres`` hosts: ``prometheus-postgres-exporter`` on ``postgres_exporter_port``
  over the Unix socket, peer-authenticated as the role ``prometheus`` (the user
  Debian's unit runs as), a passwordless login member of ``pg_monitor`` created on
  the Patroni leader; no password exists for it anywhere;
- ``gateway`` hosts: ``prometheus-nginx-exporter`` on ``nginx_exporter_port`` over
  stub_status (127.0.0.1:``gateway_status_port``), and ``mtail`` on ``mtail_port``
  running ``files/metrics/gateway.mtail`` over the JSON access log
  (``gateway_access_log``), for the status counts stub_status has not;
- ``ops`` hosts: ``prometheus-blackbox-exporter`` on ``blackbox_exporter_port``
  probing every service's /health on every app host and
  ``metrics_gateway_probe_paths`` through each gateway's internal listener; and
  ``prometheus`` on ``prometheus_port``, its targets taken from the inventory's
  groups (``scrape_jobs``), its rules ``files/metrics/alerts.yml``;
- the exporters whose Debian 12 release takes exporter-toolkit's
  ``--web.config.file`` (node_exporter 1.5, postgres_exporter 0.11,
  blackbox_exporter 0.23) admit only ``metrics_scrape_user`` with the
  ``metrics_scrape_password`` secret (basic auth): their web configuration,
  0640 root:prometheus (the units' user), holds its bcrypt hash, made on the
  controller and kept while it still verifies the secret (a new salt on every
  deploy would change the file each time). Prometheus sends it from a 0640
  root:prometheus password file. redis_exporter 1.45 (TLS flags only), the
  NGINX exporter 0.11 (TLS flags only) and mtail rc50 (no web flag at all) take
  no basic auth in bookworm (their ``--help``, run from the packages): like
  every exporter they listen on the private address only, and the firewall
  admits the ops host alone;
- Prometheus's own API, UI and ``/metrics`` admit only ``prometheus_api_user``
  with the ``prometheus_api_password`` secret (its own ``--web.config.file``,
  ``PROMETHEUS_WEB_CONFIG``, a bcrypt hash as above); its self-scrape sends it
  from a 0640 root:prometheus password file (``API_PASSWORD_FILE``), and every
  client (the lab tests, Grafana's datasource) sends it too;
- a daemon restarts only when its ``/etc/default`` file (or drop-in, secret, or
  mtail's program) changed, and only if it ran before (one that did not starts
  once, with everything in place); Prometheus and the blackbox exporter reload (SIGHUP, their units'
  ExecReload) when only their configuration or rules changed.

What it never does:

- install a Prometheus configuration or rule file ``promtool`` rejects, a blackbox
  configuration the exporter rejects or an mtail program mtail cannot compile:
  the running one stays;
- put a password in ``ARGS``, on a command line or in pyinfra's output, nor a
  password in an exporter's web configuration (a bcrypt hash only);
- restart or reload anything when nothing changed.
"""

import importlib
import json
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from io import StringIO
from typing import Any, Protocol

from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.api.host import HostData
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.systemd import SystemdStatus
from pyinfra.operations.util import any_changed

from seawall import redis_acl
from seawall.components import templates
from seawall.components.common import host_secrets, install_packages, unit_dropin
from seawall.components.postgres import patroni_config_path
from seawall.components.redis import acl_ready
from seawall.defaults import METRICS
from seawall.facts.metrics import BasicAuthHash
from seawall.operations import files, systemd
from seawall.operations.files import secret_file, validated_file
from seawall.operations.postgres import monitoring_role
from seawall.settings import setting

CONCERN = "metrics"
Data = Mapping[str, Any] | HostData

# The static files another part of seawall writes (package data, like the templates).
ALERTS_SOURCE = "alerts.yml"
MTAIL_SOURCE = "gateway.mtail"

NODE = "prometheus-node-exporter"
REDIS = "prometheus-redis-exporter"
POSTGRES = "prometheus-postgres-exporter"
NGINX = "prometheus-nginx-exporter"
MTAIL = "mtail"
BLACKBOX = "prometheus-blackbox-exporter"
PROMETHEUS = "prometheus"

# The packages of each group; every host gets node_exporter.
PACKAGES: dict[str | None, tuple[str, ...]] = {
    None: (NODE,),
    "redis": (REDIS,),
    "postgres": (POSTGRES,),
    "gateway": (NGINX, MTAIL),
    "ops": (BLACKBOX, PROMETHEUS),
}


def defaults_file(package: str) -> str:
    """Return the file Debian's unit of ``package`` reads its settings from."""
    return f"/etc/default/{package}"


REDIS_DROPIN = f"/etc/systemd/system/{REDIS}.service.d/seawall.conf"
# Where the drop-in's root ExecStartPre copies the password map for the exporter.
# Why a file: redis_exporter 1.45 (bookworm) takes one password from
# REDIS_PASSWORD (each flag's default comes from the environment) for its own
# target only; its /scrape endpoint, which reaches Sentinel, finds a password
# only in --redis.password-file (REDIS_PASSWORD_FILE), a JSON map from redis URI
# to password, which it also uses for its own target when REDIS_PASSWORD is
# unset. Checked by running the bookworm binary (apt-get download, dpkg -x)
# against a local redis-server and Sentinel with requirepass.
REDIS_RUNTIME_DIR = f"/run/{REDIS}"
REDIS_PASSWORD_FILE = f"{REDIS_RUNTIME_DIR}/passwords.json"
PROMETHEUS_YML = "/etc/prometheus/prometheus.yml"
# The path alerts.yml names in its first line.
ALERTS_DIR = "/etc/prometheus/rules"
ALERTS_YML = f"{ALERTS_DIR}/seawall.yml"
# Debian's own default path (its /etc/default file names it).
BLACKBOX_YML = "/etc/prometheus/blackbox.yml"
# Debian's unit runs mtail with --progs /etc/mtail.
MTAIL_PROGRAM = "/etc/mtail/gateway.mtail"
# Where Patroni puts the socket (unix_socket_directories in its template).
POSTGRES_SOCKET_DIR = "/var/run/postgresql"
# Debian's postgres exporter unit runs as User=prometheus; the socket's peer
# authentication (Patroni's `local all all peer`) maps that OS user to the role
# of the same name. A setting could only break that match, so it is not one.
EXPORTER_ROLE = "prometheus"
MONITOR_GROUP = "pg_monitor"
# The blackbox module every /health probe uses.
PROBE_MODULE = "http_health"

# The exporters that take exporter-toolkit's --web.config.file (basic auth), and
# the scrape job of each (blackbox: the probe job, below).
WEB_CONFIG_JOBS: dict[str, str] = {NODE: "node", POSTGRES: "postgres", BLACKBOX: "blackbox"}
WEB_CONFIG_DIR = "/etc/prometheus/web"
# Debian's units run every exporter and Prometheus as this user and group.
DAEMON_GROUP = "prometheus"
# The password Prometheus sends them; Prometheus reads it at each scrape.
SCRAPE_PASSWORD_FILE = "/etc/prometheus/scrape-password"
SCRAPE_SECRET = "metrics_scrape_password"
# Prometheus's own login (its API, UI and /metrics): a web configuration of its
# own, outside WEB_CONFIG_DIR (the exporters' logins), and the password its
# self-scrape sends, read at each scrape.
PROMETHEUS_WEB_CONFIG = "/etc/prometheus/api-auth.yml"
API_PASSWORD_FILE = "/etc/prometheus/api-password"
API_SECRET = "prometheus_api_password"


def web_config_file(package: str) -> str:
    """Return the web configuration (basic auth) of exporter ``package``."""
    return f"{WEB_CONFIG_DIR}/{package}.yml"


TEMPLATES: tuple[str, ...] = (
    *(defaults_file(p) for p in (NODE, REDIS, POSTGRES, NGINX, MTAIL, BLACKBOX, PROMETHEUS)),
    *(web_config_file(p) for p in WEB_CONFIG_JOBS),
    PROMETHEUS_WEB_CONFIG,
    REDIS_DROPIN,
    BLACKBOX_YML,
    PROMETHEUS_YML,
)


def _crypt() -> Any:
    # crypt is deprecated (PEP 594, gone in 3.13) but is libxcrypt's bcrypt
    # ($2b$), with no new package on the controller; only its import warns.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "'crypt' is deprecated", DeprecationWarning)
        return importlib.import_module("crypt")


# bcrypt cost 8 (256 rounds), not crypt's default 12: every deploy and drift check
# verifies each host's hash on the controller, ~190 ms apiece at 12 (3 s of a no-op
# run, with nothing else running meanwhile), and each exporter verifies it on a scrape.
# The passwords are machine-made (``secrets.py``: 192 random bits), which no cost
# factor makes harder or easier to guess; the cost only slows guessing weak ones.
BCRYPT_LOG_ROUNDS = 8


def hash_verifies(hashed: str | None, password: str) -> bool:
    """Return whether bcrypt hash ``hashed`` is the hash of ``password``."""
    return bool(hashed) and _crypt().crypt(password, hashed) == hashed


def scrape_hash(password: str, current: str | None) -> str:
    """Return ``current`` if it has our cost and still verifies ``password``, else a new
    bcrypt hash (new salt). A hash of another cost is made again once."""
    prefix = f"$2b${BCRYPT_LOG_ROUNDS:02d}$"
    if current is not None and current.startswith(prefix) and hash_verifies(current, password):
        return current
    module = _crypt()
    salt = module.mksalt(module.METHOD_BLOWFISH, rounds=2**BCRYPT_LOG_ROUNDS)
    return str(module.crypt(password, salt))


# mtail compiles only files named *.mtail, so the candidate is checked as a copy
# under that name in a scratch directory (a subshell, so `exit` ends only it).
MTAIL_CHECK = (
    '(d=$(mktemp -d) && cp {path} "$d/gateway.mtail" && mtail --compile_only --progs "$d"; '
    'rc=$?; rm -rf "$d"; exit $rc)'
)


class InventoryHost(Protocol):
    """A host as pyinfra's inventory and ``seawall.inventory.Topology`` both give it."""

    @property
    def name(self) -> str: ...

    @property
    def groups(self) -> Any: ...

    @property
    def data(self) -> Any: ...


def redis_uri(address: str, port: int) -> str:
    """Return the URI the redis exporter is given for a server (its password map's key)."""
    return f"redis://{address}:{port}"


def redis_secrets(groups: Sequence[str], exporter_user: bool) -> list[str]:
    """Return the secrets in the redis exporter's password map: its own user's, or (before the
    ACL users, logging in as ``default``) the Redis and, on a Sentinel host, Sentinel admin's."""
    if exporter_user:
        return [redis_acl.EXPORTER_SECRET]
    return ["redis_password", *(["sentinel_password"] if "sentinel" in groups else [])]


def redis_passwords(
    data: Data, groups: Sequence[str], values: Mapping[str, str], exporter_user: bool = False
) -> str:
    """Return the redis exporter's password map (JSON): its local Redis and, on a Sentinel host,
    its Sentinel; ``values`` holds :func:`redis_secrets`. redis_exporter 1.45 logs in to
    every target as one user (``REDIS_USER``), so as ``exporter`` both take its secret."""
    names = redis_secrets(groups, exporter_user)
    passwords = {redis_uri("127.0.0.1", setting(data, "redis_port")): values[names[0]]}
    if "sentinel" in groups:
        uri = redis_uri(str(data.get("private_address")), setting(data, "sentinel_port"))
        passwords[uri] = values[names[-1]]
    return json.dumps(passwords, indent=2, sort_keys=True) + "\n"


# Each scrape job: its name, the group whose hosts it scrapes (None: every
# host), the port key (read from each target host's own data) and the path.
SCRAPE_JOBS: tuple[tuple[str, str | None, str, str], ...] = (
    ("node", None, "node_exporter_port", "/metrics"),
    ("redis", "redis", "redis_exporter_port", "/metrics"),
    ("postgres", "postgres", "postgres_exporter_port", "/metrics"),
    # Patroni's own metrics on its REST port; etcd's on its plain metrics
    # listener (its client port wants a client certificate).
    ("patroni", "postgres", "patroni_rest_port", "/metrics"),
    ("etcd", "etcd", "etcd_metrics_port", "/metrics"),
    ("nginx", "gateway", "nginx_exporter_port", "/metrics"),
    ("mtail", "gateway", "mtail_port", "/metrics"),
    ("prometheus", "ops", "prometheus_port", "/metrics"),
)


def _address(member: InventoryHost) -> str:
    return str(member.data.get("private_address"))


def scrape_jobs(hosts: Iterable[InventoryHost]) -> list[dict[str, Any]]:
    """Return Prometheus's jobs: name, path and targets (``address:port`` and host name)."""
    members = list(hosts)
    jobs: list[dict[str, Any]] = []
    for job, group, port_key, path in SCRAPE_JOBS:
        targets = [
            {"address": f"{_address(m)}:{setting(m.data, port_key)}", "host": m.name}
            for m in members
            if group is None or group in m.groups
        ]
        if targets:
            # "scrape": an exporter's login; "api": Prometheus's own (its self-scrape).
            basic_auth = (
                "scrape"
                if job in WEB_CONFIG_JOBS.values()
                else "api"
                if job == "prometheus"
                else None
            )
            jobs.append(
                {"name": job, "metrics_path": path, "targets": targets, "basic_auth": basic_auth}
            )
    # Each Sentinel through the redis exporter on its own host: a job of its own,
    # so Sentinels never count as Redis servers (redis_up, roles).
    sentinels = [
        {
            "address": f"{_address(m)}:{setting(m.data, 'redis_exporter_port')}",
            "host": m.name,
            "target": redis_uri(_address(m), setting(m.data, "sentinel_port")),
            "instance": f"{_address(m)}:{setting(m.data, 'sentinel_port')}",
        }
        for m in members
        if "redis" in m.groups and "sentinel" in m.groups
    ]
    if sentinels:
        sentinel_job = {"name": "sentinel", "metrics_path": "/scrape", "targets": sentinels}
        jobs.append(sentinel_job | {"basic_auth": None})
    return jobs


def probe_targets(hosts: Iterable[InventoryHost]) -> list[dict[str, str]]:
    """Return the blackbox probes: every service's /health on every app host, and the gateways'."""
    probes = []
    members = list(hosts)
    for member in members:
        if "app" not in member.groups:
            continue
        health_path = setting(member.data, "services_health_path")
        for service in setting(member.data, "services"):
            url = f"http://{_address(member)}:{service['port']}{health_path}"
            probes.append({"url": url, "host": member.name, "service": service["name"]})
    for member in members:
        port = setting(member.data, "gateway_internal_http_port")
        if "gateway" not in member.groups or port is None:
            # No plain-HTTP listener on the private address: nothing to probe there.
            continue
        for path in setting(member.data, "metrics_gateway_probe_paths"):
            url = f"http://{_address(member)}:{port}{path}"
            probes.append({"url": url, "host": member.name, "service": "gateway"})
    return probes


def context(
    data: Data, hosts: Iterable[InventoryHost] = (), exporter_user: bool = False
) -> dict[str, Any]:
    """Return what the metrics templates see for a host; ``hosts`` is the inventory (ops only);
    ``exporter_user``: the redis exporter logs in as its ACL user (else as ``default``)."""
    out = {key: setting(data, key) for key in METRICS}
    members = list(hosts)
    out |= {
        "address": str(data.get("private_address")),
        "textfile_dir": setting(data, "services_textfile_dir"),
        "redis_addr": redis_uri("127.0.0.1", setting(data, "redis_port")),
        "redis_secret_file": redis_secret_file(data),
        "redis_runtime_dir": REDIS_RUNTIME_DIR,
        "redis_password_file": REDIS_PASSWORD_FILE,
        "redis_user": redis_acl.EXPORTER_USER if exporter_user else None,
        "postgres_port": setting(data, "postgres_port"),
        "postgres_socket_dir": POSTGRES_SOCKET_DIR,
        "exporter_role": EXPORTER_ROLE,
        "status_port": setting(data, "gateway_status_port"),
        "access_log": setting(data, "gateway_access_log"),
        "blackbox_config": BLACKBOX_YML,
        "probe_module": PROBE_MODULE,
        "prometheus_config": PROMETHEUS_YML,
        "alerts_file": ALERTS_YML,
        "jobs": scrape_jobs(members),
        "web_configs": {p: web_config_file(p) for p in WEB_CONFIG_JOBS},
        "scrape_password_file": SCRAPE_PASSWORD_FILE,
        "prometheus_web_config": PROMETHEUS_WEB_CONFIG,
        "api_password_file": API_PASSWORD_FILE,
        "probes": probe_targets(members),
    }
    return out


def redis_secret_file(data: Data) -> str:
    """Return where the redis exporter's environment file (its password) goes."""
    return f"{setting(data, 'services_secrets_dir')}/{REDIS}.json"


def render(target: str, values: Mapping[str, Any]) -> str:
    """Render the template of ``target`` (a path on the host) with ``values``."""
    return templates.render(CONCERN, target, values)


def _root_directory(name: str, path: str) -> None:
    files.directory(name=name, path=path, present=True, user="root", group="root", mode="755")


def static_file(name: str) -> str:
    """Return the content of ``files/metrics/<name>``.

    Raises:
        DeployError: the package carries no such file.
    """
    path = templates.static_path(CONCERN, name)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DeployError(f"{path} is missing: the metrics deploy installs it") from None


def host_packages(groups: Sequence[str]) -> list[str]:
    """Return the metrics packages a host of ``groups`` runs."""
    return [
        p for group, names in PACKAGES.items() if group is None or group in groups for p in names
    ]


@deploy("Metrics", data_defaults=METRICS)
def deploy_metrics() -> None:
    """
    Install, configure and activate this host's exporters (and, on ops hosts, Prometheus).

    **Example:**

    .. code:: python

        from seawall.components.metrics import deploy_metrics

        deploy_metrics()
    """
    groups = list(host.groups)
    data = host.data
    # The services' gate: only once every Redis has the ACL users (else one that
    # started before its ACL file would refuse the exporter's login).
    exporter_user = "redis" in groups and _acl_ready()
    values = context(data, list(inventory) if "ops" in groups else (), exporter_user)
    # Asked before anything changes: which daemons ran before this deploy.
    # Only this host's exporters' units: without them SystemdStatus lists every unit.
    units = tuple(f"{package}.service" for package in host_packages(groups))
    running = host.get_fact(SystemdStatus, services=units)
    install_packages(
        "Install the exporters (started by nothing until configured)", host_packages(groups)
    )
    changed = _configure(data, groups, values)
    _activate(changed, running)


def _acl_ready() -> bool:
    """Whether every Redis runs with seawall's ACL users (asked of the ``redis`` hosts)."""
    return acl_ready(inventory.get_group("redis", default=[]))


def _defaults(package: str, values: Mapping[str, Any]) -> OperationMeta:
    return files.put(
        name=f"Configure {package}",
        src=StringIO(render(defaults_file(package), values)),
        dest=defaults_file(package),
        user="root",
        group="root",
        mode="644",
    )


def _configure(
    data: Data, groups: Sequence[str], values: Mapping[str, Any]
) -> list[tuple[str, list[OperationMeta], list[OperationMeta]]]:
    """Write every file; return (unit, what restarts it, what reloads it) per daemon."""
    files.directory(
        name="Keep node_exporter's textfile directory (the failure recorder writes there)",
        path=str(values["textfile_dir"]),
        present=True,
    )
    password = host_secrets([SCRAPE_SECRET], " (the exporters' basic auth)")[SCRAPE_SECRET]
    _root_directory("Make the exporters' web configuration directory", WEB_CONFIG_DIR)
    changed: list[tuple[str, list[OperationMeta], list[OperationMeta]]] = [
        (NODE, [_defaults(NODE, values), _web_config(NODE, values, password)], [])
    ]
    if "redis" in groups:
        exporter_user = values["redis_user"] is not None
        names = redis_secrets(groups, exporter_user)
        secret = secret_file(
            name="Install the redis exporter's passwords (root-only)",
            src=redis_passwords(
                data, groups, host_secrets(names, " (for the redis exporter)"), exporter_user
            ),
            dest=str(values["redis_secret_file"]),
        )
        dropin = unit_dropin(
            "Give the redis exporter its passwords from the root-only file",
            render(REDIS_DROPIN, values),
            REDIS_DROPIN,
            REDIS,
        )
        changed.append((REDIS, [_defaults(REDIS, values), secret, dropin], []))
    if "postgres" in groups:
        monitoring_role(
            name=f"Let the postgres exporter read the statistics ({MONITOR_GROUP}, on the leader)",
            config=patroni_config_path(data),
            role=EXPORTER_ROLE,
            group=MONITOR_GROUP,
        )
        web = _web_config(POSTGRES, values, password)
        changed.append((POSTGRES, [_defaults(POSTGRES, values), web], []))
    if "gateway" in groups:
        changed.append((NGINX, [_defaults(NGINX, values)], []))
        program = validated_file(
            name="Install the gateway's mtail program (compiled by mtail first)",
            src=static_file(MTAIL_SOURCE),
            dest=MTAIL_PROGRAM,
            validate=MTAIL_CHECK,
            mode=644,
        )
        # A restart, not a reload: mtail rereads its programs on SIGHUP only in
        # some releases, and it starts at the end of the log, counting nothing twice.
        changed.append((MTAIL, [_defaults(MTAIL, values), program], []))
    if "ops" in groups:
        blackbox = validated_file(
            name="Configure the /health probes (checked by the blackbox exporter first)",
            src=render(BLACKBOX_YML, values),
            dest=BLACKBOX_YML,
            validate=f"{BLACKBOX} --config.check --config.file={{path}}",
            mode=644,
        )
        web = _web_config(BLACKBOX, values, password)
        changed.append((BLACKBOX, [_defaults(BLACKBOX, values), web], [blackbox]))
        # Before the configuration that names it (promtool 2.42 does not check
        # that it exists, but a first scrape would fail without it).
        scrape_password = secret_file(
            name="Install the exporters' scrape password (for Prometheus only)",
            src=password,
            dest=SCRAPE_PASSWORD_FILE,
            group=DAEMON_GROUP,
            mode=640,
            private_dir=False,
        )
        api_password = host_secrets([API_SECRET], " (Prometheus's own API)")[API_SECRET]
        # Before the configuration whose self-scrape job names it, likewise.
        api_password_file = secret_file(
            name="Install Prometheus's own API password (its self-scrape sends it)",
            src=api_password,
            dest=API_PASSWORD_FILE,
            group=DAEMON_GROUP,
            mode=640,
            private_dir=False,
        )
        # The rules first: promtool's check of the configuration reads them.
        _root_directory("Make the alert rules' directory", ALERTS_DIR)
        rules = validated_file(
            name="Install the alert rules (checked by promtool first)",
            src=static_file(ALERTS_SOURCE),
            dest=ALERTS_YML,
            validate="promtool check rules {path}",
            mode=644,
        )
        config = validated_file(
            name="Configure Prometheus's targets (checked by promtool first)",
            src=render(PROMETHEUS_YML, values),
            dest=PROMETHEUS_YML,
            validate="promtool check config {path}",
            mode=644,
        )
        api_web = _web_config(
            PROMETHEUS, values, api_password, PROMETHEUS_WEB_CONFIG, "prometheus_api_user"
        )
        changed.append(
            (
                PROMETHEUS,
                [_defaults(PROMETHEUS, values), api_web],
                [rules, config, scrape_password, api_password_file],
            )
        )
    return changed


def web_config(
    package: str,
    values: Mapping[str, Any],
    password: str,
    current: str | None,
    path: str | None = None,
) -> str:
    """Return ``package``'s web configuration (at ``path``, default its exporter's): its
    user and a bcrypt hash of ``password``, ``current`` (the host's) while it still
    verifies (no new salt, no change)."""
    return render(
        path or web_config_file(package), {**values, "scrape_hash": scrape_hash(password, current)}
    )


def _web_config(
    package: str,
    values: Mapping[str, Any],
    password: str,
    path: str | None = None,
    user_key: str = "metrics_scrape_user",
) -> OperationMeta:
    path = path or web_config_file(package)
    user = values[user_key]
    current = host.get_fact(BasicAuthHash, path=path, user=user)
    return secret_file(
        name=(
            f"Admit only Prometheus to {package} (basic auth, a bcrypt hash)"
            if user_key == "metrics_scrape_user"
            else f"Admit only {user} to Prometheus's own API (basic auth, a bcrypt hash)"
        ),
        src=web_config(package, values, password, current, path),
        dest=path,
        group=DAEMON_GROUP,
        mode=640,
        private_dir=False,
    )


def _unchanged(*operations: OperationMeta) -> Callable[[], bool]:
    """Return a check that none of ``operations`` changed anything (for ``_if``)."""
    return lambda: not any(op.did_change() for op in operations)


def _activate(
    changed: list[tuple[str, list[OperationMeta], list[OperationMeta]]], running: Mapping[str, bool]
) -> None:
    """Restart a daemon whose settings changed, else reload one whose configuration did; run all.

    Only a daemon that ran before this deploy is restarted or reloaded: one that
    did not starts once, with everything in place. A SIGHUP right after a start
    could reach the daemon before it handles the signal, and kill it for good
    (systemd counts a SIGHUP death as clean, so Restart=on-failure would not act).
    """
    for package, restart_on, reload_on in changed:
        unit = f"{package}.service"
        if running.get(unit):
            systemd.service(
                name=f"Restart {package} (its settings changed)",
                service=unit,
                running=True,
                restarted=True,
                _if=any_changed(*restart_on),
            )
            if reload_on:
                systemd.service(
                    name=f"Reload {package} (its configuration changed)",
                    service=unit,
                    running=True,
                    reloaded=True,
                    _if=[any_changed(*reload_on), _unchanged(*restart_on)],
                )
        systemd.service(
            name=f"Run {package} now and at boot", service=unit, running=True, enabled=True
        )

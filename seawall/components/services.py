"""The platform's services on the app hosts, healing themselves: ``deploy_services()``.

What it guarantees on every host of the ``app`` group, for each service of the
``services`` catalogue (SERVICES in seawall/defaults.py):

- a unit ``<services_unit_prefix><name>.service``, enabled and running, as its own
  system user, sandboxed (read-only system, no home, own /tmp, no new privileges,
  no capabilities), with memory, task and file limits;
- a crash is restarted after ``services_restart_sec``; more than
  ``services_start_limit_burst`` failed starts in ``services_start_limit_interval_sec``
  stop the restarts and trigger the OnFailure= hook; every unclean stop is recorded
  (``services_failure_log``, the journal, node_exporter's textfile metric);
- a stop is graceful: SIGTERM, in-flight requests finish, SIGKILL only after
  ``services_timeout_stop_sec``;
- a hung service (running but not answering /health ``services_healthcheck_failures``
  times in a row) is killed by ``seawall-healthwatch`` and so restarted;
- the unit starts after the services, PgBouncer and HAProxy it depends on;
- secrets reach the service only through a 0600 root-only EnvironmentFile.

What it never does:

- put a secret on a command line, in an Environment= line or in pyinfra's output;
- restart a service whose unit, settings, secrets and code did not change, nor
  restart one service on two app hosts at once or before the gateway counts the
  first host's instance as up again;
- install anything from PyPI on a host: the code is this package's
  ``seawall/runtime`` and ``seawall/refservice``, run on Debian's Python packages.
"""

import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from io import StringIO
from pathlib import Path, PurePosixPath
from typing import Any

from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.api.host import HostData
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import server
from pyinfra.operations.util import any_changed

from seawall.components import templates
from seawall.components.common import host_secrets, install_packages
from seawall.defaults import SERVICES
from seawall.facts.server import PasswdEntries
from seawall.names import HEALTHWATCH_UNIT, catalogue, unit_name, user_name
from seawall.operations import files, systemd
from seawall.operations.files import secret_file
from seawall.settings import setting

PACKAGE_ROOT = Path(__file__).resolve().parents[1]

UNIT_TEMPLATE = "/etc/systemd/system/SERVICE.service"
FAILED_UNIT = "/etc/systemd/system/seawall-unit-failed@.service"
RECORD_FAILURE = "/usr/local/libexec/seawall-record-failure"
TEMPLATES: tuple[str, ...] = (UNIT_TEMPLATE, FAILED_UNIT, HEALTHWATCH_UNIT, RECORD_FAILURE)

# The Python the hosts run: the runtime library and the reference service, with
# the package's __init__ (and the error type it imports).
CODE_PACKAGES = ("runtime", "refservice")
CODE_ROOT_FILES = ("__init__.py", "errors.py")

# Host data as pyinfra gives it, or a plain mapping (tests, the CLI).
Data = Mapping[str, Any] | HostData

REFSERVICE_COMMAND = "/usr/bin/python3 -m seawall.refservice --config {config}"


def render(target: str, context: Mapping[str, Any]) -> str:
    """Render the template of ``target`` (a path on the host) with ``context``."""
    return templates.render("services", target, context)


def code_files() -> list[tuple[Path, str]]:
    """Return (local file, path under services_code_dir) for every file the hosts run."""
    out = [(PACKAGE_ROOT / name, f"seawall/{name}") for name in CODE_ROOT_FILES]
    for package in CODE_PACKAGES:
        for path in sorted((PACKAGE_ROOT / package).glob("*.py")):
            out.append((path, f"seawall/{package}/{path.name}"))
    return out


def health_url(address: str, service: Mapping[str, Any], health_path: str) -> str:
    return f"http://{address}:{service['port']}{health_path}"


def postgres_database(data: Data, role: str) -> str:
    """Return the database ``role`` owns (POSTGRES postgres_databases), else one named after it."""
    for database, owner in setting(data, "postgres_databases").items():
        if owner == role:
            return str(database)
    return role


def service_config(
    data: Data,
    service: Mapping[str, Any],
    address: str,
    sentinels: list[tuple[str, int]],
    acl: bool = False,
) -> dict[str, Any]:
    """Return the non-secret settings file of one service (JSON, read by the service).

    ``acl``: every Redis has the ACL users (``redis.acl_ready``): the service logs
    in to Redis as its own user and to the Sentinels as their client user.
    """
    from seawall import redis_acl

    by_name = {s["name"]: s for s in catalogue(data)}
    health_path = setting(data, "services_health_path")
    deps: list[dict[str, Any]] = []
    wanted = [(name, True) for name in service.get("needs", [])]
    wanted += [(name, False) for name in service.get("optional", [])]
    for name, critical in wanted:
        if name == "redis":
            deps.append({"name": "redis", "kind": "redis", "critical": critical})
        elif name == "postgres" and service.get("postgres_role"):
            deps.append({"name": "postgres", "kind": "postgres", "critical": critical})
        elif name == "exchange":
            url = setting(data, "services_exchange_health_url")
            if url:
                deps.append({"name": name, "kind": "http", "critical": critical, "url": url})
        elif name in by_name:
            url = health_url(address, by_name[name], health_path)
            deps.append({"name": name, "kind": "http", "critical": critical, "url": url})
        else:
            raise DeployError(f"{service['name']}: unknown dependency {name!r} in `services`")
    config: dict[str, Any] = {
        "service": service["name"],
        "port": service["port"],
        "bind": address,
        "version": str(service.get("version") or _version()),
        "dependencies": deps,
        "redis": {
            "sentinels": [list(s) for s in sentinels],
            "master_name": setting(data, "sentinel_master_name"),
            "key_prefix": redis_acl.key_prefix(service["name"]),
        }
        | (
            {
                "username": redis_acl.service_user(
                    setting(data, "services_unit_prefix"), service["name"]
                ),
                "sentinel_username": redis_acl.SENTINEL_CLIENT_USER,
            }
            if acl
            else {}
        ),
        "stream_maxlen": setting(data, "services_stream_maxlen"),
        "spool_dir": f"/var/lib/{user_name(data, service)}/spool",
    }
    role = service.get("postgres_role")
    if role:
        config["postgres"] = {
            "host": "127.0.0.1",
            "port": setting(data, "pgbouncer_port"),
            "dbname": postgres_database(data, role),
            "user": role,
        }
    return config


def secret_names(data: Data, service: Mapping[str, Any], acl: bool = False) -> dict[str, str]:
    """Return {environment variable: secret name} for one service.

    ``acl`` (see :func:`service_config`): its own Redis user's and the Sentinels'
    client user's; else the shared ones every Redis and Sentinel still takes.
    """
    from seawall import redis_acl
    from seawall.refservice import config as refconfig

    if acl:
        names = {
            refconfig.ENV_REDIS_PASSWORD: redis_acl.service_secret(service["name"]),
            refconfig.ENV_SENTINEL_PASSWORD: redis_acl.SENTINEL_CLIENT_SECRET,
        }
    else:
        names = {
            refconfig.ENV_REDIS_PASSWORD: setting(data, "services_redis_password_secret"),
            refconfig.ENV_SENTINEL_PASSWORD: setting(data, "services_sentinel_password_secret"),
        }
    role = service.get("postgres_role")
    if role:
        names[refconfig.ENV_POSTGRES_PASSWORD] = f"postgres_role_{role}_password"
    return names


def unit_context(
    data: Data, service: Mapping[str, Any], config_path: str, secrets_path: str
) -> dict[str, Any]:
    """Return what the unit template sees for one service."""
    by_name = {s["name"]: s for s in catalogue(data)}
    deps = [*service.get("needs", []), *service.get("optional", [])]
    siblings = [unit_name(data, by_name[d]) for d in deps if d in by_name]
    after = list(siblings)
    if "postgres" in deps:
        # The local pooler and router; After= on a unit that is absent is harmless.
        after += ["pgbouncer.service", "haproxy.service"]
    own_command = service.get("command")
    environment = {
        "PYTHONPATH": setting(data, "services_code_dir"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "SEAWALL_SERVICE_CONFIG": config_path,
        **{str(k): str(v) for k, v in (service.get("environment") or {}).items()},
    }
    return {
        "unit": unit_name(data, service),
        "name": service["name"],
        "port": service["port"],
        "user": user_name(data, service),
        "command": own_command or REFSERVICE_COMMAND.format(config=config_path),
        # The reference service tells systemd when it listens; others may not.
        "type": service.get("type") or ("simple" if own_command else "notify"),
        "environment": sorted(environment.items()),
        "secrets_file": secrets_path,
        "wants": siblings,
        "after": after,
        "restart_sec": setting(data, "services_restart_sec"),
        "start_limit_burst": setting(data, "services_start_limit_burst"),
        "start_limit_interval_sec": setting(data, "services_start_limit_interval_sec"),
        "timeout_stop_sec": service.get("timeout_stop_sec")
        or setting(data, "services_timeout_stop_sec"),
        "memory_max": setting(data, "services_memory_max"),
        "tasks_max": setting(data, "services_tasks_max"),
        "limit_nofile": setting(data, "services_limit_nofile"),
    }


def healthwatch_config(data: Data, address: str) -> dict[str, Any]:
    health_path = setting(data, "services_health_path")
    return {
        "interval": setting(data, "services_healthcheck_interval_sec"),
        "timeout": setting(data, "services_healthcheck_timeout_sec"),
        "failures": setting(data, "services_healthcheck_failures"),
        "services": [
            {"unit": unit_name(data, s), "url": health_url(address, s, health_path)}
            for s in catalogue(data)
        ],
    }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("seawall")
    except PackageNotFoundError:
        return "0.0.0"


def _sentinels() -> list[tuple[str, int]]:
    return [
        (str(h.data.get("private_address")), int(setting(h.data, "sentinel_port")))
        for h in inventory.get_group("sentinel")
    ]


def _acl_ready() -> bool:
    """Whether every Redis runs with seawall's ACL users (asked of the ``redis`` hosts)."""
    from seawall.components.redis import acl_ready

    return acl_ready(inventory.get_group("redis", default=[]))


def _secrets(service: Mapping[str, Any], acl: bool) -> str:
    wanted = secret_names(host.data, service, acl)
    values = host_secrets(sorted(set(wanted.values())), f" (for service {service['name']})")
    return "".join(f"{env}={values[name]}\n" for env, name in sorted(wanted.items()))


@deploy("Platform services", data_defaults=SERVICES)
def deploy_services() -> None:
    """
    Install every service of the catalogue on an app host: install, configure, activate.

    Hosts outside the ``app`` group are left alone.

    **Example:**

    .. code:: python

        from seawall.components.services import deploy_services

        deploy_services()
    """
    if "app" not in host.groups:
        return
    data = host.data
    code = _install(data)
    configured = _configure(data)
    _activate(data, code, configured)


@dataclass(frozen=True)
class _Configured:
    """The configure phase's operations whose changes the activate phase acts on."""

    shared: list[Any]
    # (service, unit, settings, secrets) for each service of the catalogue.
    per_service: Sequence[tuple[Mapping[str, Any], Any, Any, Any]]
    watch: Any
    watch_unit: Any


def _install(data: HostData) -> list[Any]:
    """Install the Python runtime and the code every service runs; return the code's operations."""
    code_dir = setting(data, "services_code_dir")
    install_packages("Install the services' Python runtime", setting(data, "services_packages"))
    return [
        files.put(
            name=f"Install {relative}",
            src=str(local),
            dest=f"{code_dir}/{relative}",
            user="root",
            group="root",
            mode="644",
        )
        for local, relative in code_files()
    ]


def _configure(data: HostData) -> _Configured:
    """Write the failure hook, then each service's user, settings, secrets and unit, then the
    hang checker's list and unit."""
    address = str(data.get("private_address"))
    config_dir = setting(data, "services_config_dir")
    secrets_dir = setting(data, "services_secrets_dir")
    shared = failure_hook(data)
    sentinels = _sentinels()
    # Before every Redis has the services' users, they keep the shared passwords.
    acl = _acl_ready()
    per_service = []
    services = catalogue(data)
    # One getent for all users: server.user's own fact costs ~1 s per user.
    existing = host.get_fact(PasswdEntries, users=tuple(user_name(data, s) for s in services))
    for service in services:
        user = user_name(data, service)
        config_path = f"{config_dir}/{service['name']}.json"
        secrets_path = f"{secrets_dir}/{service['name']}.env"
        account = {"home": f"/var/lib/{user}", "shell": "/usr/sbin/nologin"}
        if existing.get(user) != account:
            server.user(
                name=f"Create the system user {user}",
                user=user,
                system=True,
                shell=account["shell"],
                home=account["home"],
                create_home=False,
            )
        config = files.put(
            name=f"Write the settings of {service['name']}",
            src=StringIO(
                json.dumps(service_config(data, service, address, sentinels, acl), indent=2) + "\n"
            ),
            dest=config_path,
            mode="644",
        )
        secret = secret_file(
            name=f"Install the secrets of {service['name']}",
            src=_secrets(service, acl),
            dest=secrets_path,
        )
        unit = files.put(
            name=f"Install the unit of {service['name']}",
            src=StringIO(
                render(UNIT_TEMPLATE, unit_context(data, service, config_path, secrets_path))
            ),
            dest=f"/etc/systemd/system/{unit_name(data, service)}",
            mode="644",
        )
        per_service.append((service, unit, config, secret))
    watch = files.put(
        name="Write the hang checker's list of services",
        src=StringIO(json.dumps(healthwatch_config(data, address), indent=2) + "\n"),
        dest=f"{config_dir}/healthwatch.json",
        mode="644",
    )
    watch_unit = files.put(
        name="Install the hang checker unit",
        src=StringIO(render(HEALTHWATCH_UNIT, healthwatch_unit_context(data))),
        dest=HEALTHWATCH_UNIT,
        mode="644",
    )
    return _Configured(shared, per_service, watch, watch_unit)


def _activate(data: HostData, code: list[Any], configured: _Configured) -> None:
    """Reload systemd, restart what changed (one app host at a time) and run every unit."""
    pause = restart_pause(data)
    units = [unit for _, unit, _, _ in configured.per_service]
    systemd.daemon_reload(
        name="Reload systemd (service units changed)",
        _if=any_changed(*units, configured.watch_unit, *configured.shared),
    )
    for service, unit, config, secret in configured.per_service:
        name = unit_name(data, service)
        # One app host at a time, and a running instance's restart is followed by
        # the gateway's fail_timeout: the restart's refused connections mark the
        # instance down there for that long, so the other host's instance must
        # not restart before it counts again (nginx answers 502 with no live host).
        quoted = shlex.quote(name)
        systemd_restart = f"systemctl restart {quoted}"
        server.shell(
            name=f"Restart {service['name']} (its unit, settings, secrets or code changed)",
            commands=[
                f"if systemctl is-active -q {quoted}; then {systemd_restart} && sleep {pause}; "
                f"else {systemd_restart}; fi"
            ],
            _if=any_changed(unit, config, secret, *code),
            _serial=True,
        )
        systemd.service(
            name=f"Run {service['name']} now and at boot",
            service=name,
            running=True,
            enabled=True,
        )
    systemd.service(
        name="Restart the hang checker (its unit, list or code changed)",
        service="seawall-healthwatch.service",
        restarted=True,
        _if=any_changed(configured.watch, configured.watch_unit, *code),
    )
    systemd.service(
        name="Run the hang checker now and at boot",
        service="seawall-healthwatch.service",
        running=True,
        enabled=True,
    )


def restart_pause(data: Data) -> int:
    """Seconds to wait after restarting a running instance: the gateway's fail_timeout + 1."""
    raw = str(setting(data, "gateway_fail_timeout")).strip()
    seconds = int(raw[:-1]) if raw.endswith("s") else int(raw)
    return seconds + 1


def healthwatch_unit_context(data: Data) -> dict[str, Any]:
    """Return what the hang checker's unit sees."""
    return {
        "config": f"{setting(data, 'services_config_dir')}/healthwatch.json",
        "code_dir": setting(data, "services_code_dir"),
        "failures": setting(data, "services_healthcheck_failures"),
    }


def failure_hook(data: Data) -> list[OperationMeta]:
    """Install the OnFailure hook: its recorder, the log's directory and its unit.

    Every host whose units name ``OnFailure=seawall-unit-failed@%n.service``
    (app hosts, and the ops host's restart) runs this one copy.
    """
    return [
        files.put(
            name="Install the failure recorder",
            src=StringIO(render(RECORD_FAILURE, _record_context(data))),
            dest=RECORD_FAILURE,
            mode="755",
        ),
        # The hook's sandbox may write only here: the directory must be there first.
        files.directory(
            name="Keep the failure log's directory",
            path=str(PurePosixPath(setting(data, "services_failure_log")).parent),
            present=True,
            mode="755",
        ),
        files.put(
            name="Install the OnFailure hook unit",
            src=StringIO(render(FAILED_UNIT, failed_unit_context(data))),
            dest=FAILED_UNIT,
            mode="644",
        ),
    ]


def failed_unit_context(data: Data) -> dict[str, Any]:
    """Return what the OnFailure hook's unit sees: the recorder and the two places it writes."""
    return {
        "record_failure": RECORD_FAILURE,
        "failure_log_dir": str(PurePosixPath(setting(data, "services_failure_log")).parent),
        "textfile_dir": setting(data, "services_textfile_dir"),
    }


def _record_context(data: Data) -> dict[str, Any]:
    return {
        "failure_log": setting(data, "services_failure_log"),
        "textfile_dir": setting(data, "services_textfile_dir"),
    }

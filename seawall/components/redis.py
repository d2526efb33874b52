"""Redis (a master, its replicas) and Sentinel on the redis and sentinel hosts: ``deploy_redis()``.

What it guarantees:

- redis-server and redis-sentinel from Debian, started only once configured
  (nothing starts with stock config at install);
- Redis binds to the host's private address and localhost, requires a
  password (replicas and Sentinels use it too), keeps an AOF synced every
  second, caps memory with ``noeviction``, and refuses writes when no replica
  has acknowledged for ``redis_min_replicas_max_lag`` seconds;
- the settings seawall manages live in /etc/redis/seawall.conf, included last
  from redis.conf; when they change on a running Redis they are applied with
  CONFIG SET (no restart, so no failover), settings that need a restart are
  named in the output instead;
- Sentinel monitors the master under ``sentinel_master_name`` with quorum
  ``sentinel_quorum``, password-protected; its timing is changed through
  SENTINEL SET when it differs;
- systemd restarts both after a crash.

What it never does:

- undo a failover: before touching anything it asks the live Sentinels who
  the master is. Replication is set only when a host's Redis is installed for
  the first time, pointing at the master a majority of Sentinels name (or, on
  a brand-new cluster, the first ``redis`` host);
- rewrite sentinel.conf or the replication lines of redis.conf after the first
  start: Redis and Sentinel own those files, and their state is not drift;
- put a password on a command line: redis-cli reads it from 0600 files.
"""

import shlex
from collections import Counter
from io import StringIO
from typing import Any

from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.api.host import Host
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.files import FindInFile
from pyinfra.operations import files, server, systemd

from seawall.components.common import host_secrets, install_packages, unit_dropin
from seawall.components.templates import render
from seawall.defaults import REDIS, SENTINEL
from seawall.facts.redis import (
    REDIS_CLI_AUTH,
    SENTINEL_CLI_AUTH,
    RedisRole,
    SentinelMaster,
    SentinelMasterSettings,
    cli,
)

REDIS_CONF = "/etc/redis/redis.conf"
MANAGED_CONF = "/etc/redis/seawall.conf"
SENTINEL_CONF = "/etc/redis/sentinel.conf"
REDIS_DROPIN = "/etc/systemd/system/redis-server.service.d/seawall.conf"
SENTINEL_DROPIN = "/etc/systemd/system/redis-sentinel.service.d/seawall.conf"
SENTINEL_MARKER = "initial only, written once by seawall"

# Settings of seawall.conf that a running Redis takes through CONFIG SET.
# Passwords are left out: changing them live needs a rotation procedure.
RUNTIME_SETTINGS = (
    "bind",
    "protected-mode",
    "appendonly",
    "appendfsync",
    "maxmemory",
    "maxmemory-policy",
    "min-replicas-to-write",
    "min-replicas-max-lag",
    "repl-diskless-sync",
    "repl-diskless-sync-delay",
)

# Sentinel settings the deploy keeps in line through SENTINEL SET.
SENTINEL_SETTINGS = {
    "quorum": "sentinel_quorum",
    "down-after-milliseconds": "sentinel_down_after_ms",
    "failover-timeout": "sentinel_failover_timeout_ms",
    "parallel-syncs": "sentinel_parallel_syncs",
}

DEFAULTS = {**REDIS, **SENTINEL}


def _value(other: Host, key: str) -> Any:
    value = other.data.get(key)
    return DEFAULTS[key] if value is None else value


def majority_master(
    answers: list[tuple[str, int] | None], sentinels: int
) -> tuple[str, int] | None:
    """Return the master a strict majority of ``sentinels`` names, or None if none does."""
    votes = Counter(answer for answer in answers if answer is not None)
    if votes:
        address, count = votes.most_common(1)[0]
        if count >= sentinels // 2 + 1:
            return address
    return None


def live_master() -> tuple[str, int] | None:
    """Ask every Sentinel host's Sentinel who the master is; return the majority's answer.

    Raises:
        DeployError: the Sentinels that answer disagree with no majority.
    """
    group = inventory.get_group("sentinel")
    answers = [
        other.get_fact(
            SentinelMaster,
            port=_value(other, "sentinel_port"),
            master=_value(other, "sentinel_master_name"),
        )
        for other in group
    ]
    master = majority_master(answers, len(group))
    if master is None and any(answers):
        raise DeployError(
            f"{host.name}: the Sentinels disagree on the master ({answers}) with no majority: "
            "refusing to touch replication; heal the partition and deploy again"
        )
    return master


def _initial_master() -> tuple[str, int]:
    first = inventory.get_group("redis")[0]
    return (str(first.data.private_address), int(_value(first, "redis_port")))


def _context() -> dict[str, Any]:
    values = host_secrets(["redis_password", "sentinel_password"])
    context = {key: host.data.get(key) for key in DEFAULTS}
    context.update(values)
    context["private_address"] = host.data.private_address
    return context


def _auth_file(path: str, secret: str, name: str) -> None:
    files.put(
        name=name,
        src=StringIO(secret),
        dest=path,
        user="root",
        group="root",
        mode="600",
    )


@deploy("Redis with Sentinel", data_defaults=DEFAULTS)
def deploy_redis() -> None:
    """
    Install and configure Redis and Sentinel on a host of the ``redis``/``sentinel`` groups.

    **Example:**

    .. code:: python

        from seawall.components.redis import deploy_redis

        deploy_redis()
    """
    is_redis = "redis" in host.groups
    is_sentinel = "sentinel" in host.groups
    if not (is_redis or is_sentinel):
        return
    context = _context()
    installed = host.get_fact(DebPackages)
    # Asked before anything changes: the live topology wins over the inventory.
    master = live_master()
    packages = ["redis-tools"]
    packages += ["redis-server"] if is_redis else []
    packages += ["redis-sentinel"] if is_sentinel else []
    install_packages("Install Redis and Sentinel", packages)
    if is_redis:
        _redis(context, fresh="redis-server" not in installed, master=master)
    if is_sentinel:
        _sentinel(context, master=master)


def _redis(context: dict[str, Any], fresh: bool, master: tuple[str, int] | None) -> None:
    port = context["redis_port"]
    _auth_file(REDIS_CLI_AUTH, context["redis_password"], "Store the Redis password for redis-cli")
    managed = files.put(
        name="Write the settings seawall manages for Redis",
        src=StringIO(render("redis", MANAGED_CONF, context)),
        dest=MANAGED_CONF,
        user="root",
        group="redis",
        mode="640",
    )
    files.line(
        name="Include the managed settings last in redis.conf",
        path=REDIS_CONF,
        line=f"include {MANAGED_CONF}",
    )
    if fresh:
        target = master or _initial_master()
        if target != (context["private_address"], port):
            # Only now, before Redis first starts: afterwards Sentinel owns replication.
            files.line(
                name=f"Start as a replica of {target[0]}:{target[1]}",
                path=REDIS_CONF,
                line=f"replicaof {target[0]} {target[1]}",
            )
    unit_dropin(
        "Restart Redis after a crash", render("redis", REDIS_DROPIN, context), REDIS_DROPIN, "Redis"
    )
    running = host.get_fact(RedisRole, port=port) is not None
    if running:
        apply = " ".join(shlex.quote(setting) for setting in RUNTIME_SETTINGS)
        script = (
            f"for key in {apply}; do "
            f'value=$(sed -n "s/^$key //p" {MANAGED_CONF}); '
            f'printf %s "$value" | {cli(REDIS_CLI_AUTH, port, "-x CONFIG SET $key")} '
            '| grep -qx OK || { echo "CONFIG SET $key failed"; exit 1; }; done; '
            + cli(REDIS_CLI_AUTH, port, "CONFIG REWRITE")
        )
        server.shell(
            name="Apply the changed settings to the running Redis (no restart)",
            commands=[script],
            _if=managed.did_change,
        )
    systemd.service(
        name="Start and enable Redis",
        service="redis-server.service",
        running=True,
        enabled=True,
    )


def _sentinel(context: dict[str, Any], master: tuple[str, int] | None) -> None:
    port = context["sentinel_port"]
    name = context["sentinel_master_name"]
    _auth_file(
        SENTINEL_CLI_AUTH, context["sentinel_password"], "Store the Sentinel password for redis-cli"
    )
    initialised = host.get_fact(FindInFile, path=SENTINEL_CONF, pattern=SENTINEL_MARKER)
    if not initialised:
        master_host, master_port = master or _initial_master()
        files.put(
            name="Write Sentinel's initial configuration (Sentinel owns it from now on)",
            src=StringIO(
                render(
                    "redis",
                    SENTINEL_CONF,
                    {**context, "master_host": master_host, "master_port": master_port},
                )
            ),
            dest=SENTINEL_CONF,
            user="redis",
            group="redis",
            mode="640",
        )
    unit_dropin(
        "Restart Sentinel after a crash",
        render("redis", SENTINEL_DROPIN, context),
        SENTINEL_DROPIN,
        "Sentinel",
    )
    systemd.service(
        name="Start and enable Sentinel",
        service="redis-sentinel.service",
        running=True,
        enabled=True,
    )
    live = host.get_fact(SentinelMasterSettings, port=port, master=name)
    for setting, key in SENTINEL_SETTINGS.items():
        wanted = str(context[key])
        if live is not None and live.get(setting) != wanted:
            server.shell(
                name=f"Set Sentinel's {setting} to {wanted} (through Sentinel itself)",
                commands=[cli(SENTINEL_CLI_AUTH, port, f"SENTINEL SET {name} {setting} {wanted}")],
            )

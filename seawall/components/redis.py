"""Redis (a master, its replicas) and Sentinel on the redis and sentinel hosts: ``deploy_redis()``.

What it guarantees:

- redis-server and redis-sentinel from Debian, started only once configured
  (nothing starts with stock config at install);
- Redis binds to the host's private address and localhost, requires a
  password (replicas and Sentinels use it too), keeps an AOF synced every
  second, caps memory with ``noeviction``, and refuses writes when no replica
  has acknowledged for ``redis_min_replicas_max_lag`` seconds;
- the settings seawall manages live in /etc/redis/seawall.conf, included from
  redis.conf; when they change on a running Redis they are applied with
  CONFIG SET (no restart, so no failover), settings that need a restart are
  named in the output instead;
- seawall.conf wins at the next start: when a ``CONFIG REWRITE`` (Sentinel's at a
  failover, or the deploy's own) left a line after the include that sets one of
  its settings to another value (an old password), the include moves last;
  lines it does not set (``replicaof``) stay where Redis put them;
- Sentinel monitors the master under ``sentinel_master_name`` with quorum
  ``sentinel_quorum``, password-protected; its timing is changed through
  SENTINEL SET when it differs;
- systemd restarts both after a crash;
- Sentinel admits services as ``client``, who may only ask where the master
  is, and the redis exporter as ``exporter``, who may only read its state;
  Sentinel's admin password stays with seawall's tools;
- Redis's users are seawall's (``seawall/redis_acl.py``): /etc/redis/users.acl
  (password hashes only) is Redis's ``aclfile``; a changed file reaches a
  running Redis user by user (ACL SETUSER, which keeps every connection; ACL
  LOAD would drop the replicas' links), never through a restart.

Moving a running cluster to ACL users, in this order (each step is safe on a
cluster that stopped half way, and every deploy finds out where it stands):

1. A deploy writes users.acl and names it in seawall.conf. ``aclfile`` is read
   at start only, so nothing changes live: the deploy says so. The ACL file's
   ``default`` user is seawall's admin, with the password Redis has today, so
   every tool, replica, Sentinel and service logs in as before at every step.
2. The rolling restart (``seawall restart``, or the 04:00 timer) restarts each
   Redis: replicas first, then a failover, then the old master. Each comes back
   with every user; the others keep replicating (they log in as ``default``).
3. The next deploy finds every ``redis`` host's Redis with the ACL file
   (:func:`acl_ready`; one running without the file means "not yet"; one down
   reads the file when it starts, and a new cluster starts with it). Then,
   and only then, since every possible master has the users: replicas get
   ``masteruser replica`` (CONFIG SET; the live link stays, the next one logs in
   as ``replica``), each Sentinel logs in as ``sentinel`` (SENTINEL SET), the
   services' deploy gives each service its own user, and the metrics deploy
   (after this one in ``deploys/site.py``) moves the redis exporter to ``exporter``.

What it never does:

- undo a failover: before touching anything it asks the live Sentinels who
  the master is. An unreachable host's Sentinel is a missing vote: two of three
  still name the master, and the deploy goes on. Replication is set only on a
  host where Redis was never set up (no marker, AOF or RDB in /var/lib/redis,
  whatever packages are installed), pointing at the master a majority of
  Sentinels name;
- start an empty master beside the data: with no Sentinel naming a master, a
  fresh host starts (as the first ``redis`` host's replica, or as that master)
  only with ``redis_bootstrap`` on and every ``redis`` host reachable and
  holding no Redis data; otherwise the deploy stops and says why;
- rewrite sentinel.conf or the replication lines of redis.conf after the first
  start: Redis and Sentinel own those files, and their state is not drift;
- put a password on a command line: redis-cli reads it from 0600 files;
- give a replica, a Sentinel or a service a user that some Redis does not have yet.
"""

import shlex
from collections import Counter
from dataclasses import dataclass
from io import StringIO
from typing import Any, TypeVar

from pyinfra import host, inventory
from pyinfra.api import FactBase, deploy
from pyinfra.api.exceptions import ConnectError, DeployError
from pyinfra.facts.files import FindInFile
from pyinfra.operations import server

from seawall import redis_acl
from seawall.components.common import host_secrets, install_packages, unit_dropin
from seawall.components.templates import render
from seawall.defaults import REDIS, SENTINEL
from seawall.facts import memo
from seawall.facts.redis import (
    INITIALISED_MARKER,
    REDIS_CLI_AUTH,
    SENTINEL_CLI_AUTH,
    RedisAclFile,
    RedisHasData,
    RedisRole,
    SentinelMaster,
    SentinelMasterSettings,
    cli,
)
from seawall.operations import files, systemd
from seawall.operations.files import secret_file
from seawall.operations.redis import include_last_if_shadowed, managed_include_last
from seawall.settings import setting

REDIS_CONF = "/etc/redis/redis.conf"
MANAGED_CONF = "/etc/redis/seawall.conf"
USERS_ACL = "/etc/redis/users.acl"
# Sentinel's password as redis_acl.SENTINEL_USER, for SENTINEL SET through stdin.
SENTINEL_REDIS_AUTH = "/etc/redis/seawall-sentinel-user.auth"
# The ACL SETUSER of Sentinel's client user, fed to redis-cli's stdin.
SENTINEL_USERS = "/etc/redis/seawall-sentinel-users.acl"
SENTINEL_CONF = "/etc/redis/sentinel.conf"
REDIS_DROPIN = "/etc/systemd/system/redis-server.service.d/seawall.conf"
SENTINEL_DROPIN = "/etc/systemd/system/redis-sentinel.service.d/seawall.conf"
SENTINEL_MARKER = "initial only, written once by seawall"
REDIS_DIR = "/var/lib/redis"
T = TypeVar("T")

# Settings of seawall.conf that a running Redis takes through CONFIG SET.
# requirepass is left out: the ACL file holds the users. masteruser before
# masterauth; the replica's link keeps its login, the next reconnect uses both
# (changed only once every master has the replica user: see acl_ready).
RUNTIME_SETTINGS = (
    "masteruser",
    "masterauth",
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


def ask(other: Any, fact: type[FactBase[T]], once: bool = False, **kwargs: Any) -> T | None:
    """Return ``fact`` of another inventory host, or None when that host cannot be reached.

    pyinfra drops a host it could not connect to at the start from
    ``state.active_hosts`` into ``state.failed_hosts``; asking it again would
    wait for another connect timeout. A host outside ``--limit``/``--exclude``
    is not connected yet: ``get_fact`` connects, and raises ``ConnectError``
    when it cannot. ``once``: a fact seawall's own operations change, asked once
    per run (``seawall.facts.memo``).
    """
    state = getattr(other, "state", None)
    if not getattr(other, "connected", False) and state is not None and other in state.failed_hosts:
        return None
    try:
        return (
            memo.get_fact(other, fact, **kwargs) if once else memo.ask_live(other, fact, **kwargs)
        )
    except ConnectError:
        return None


def live_master(name: str, answers: dict[str, tuple[str, int] | None]) -> tuple[str, int] | None:
    """Return the master a majority of the Sentinels (by host) names; None if none answers.

    An unreachable Sentinel, or one that knows no master, is a missing vote:
    two of three still make a majority.

    Raises:
        DeployError: Sentinels answer, but no majority of all of them names one master.
    """
    master = majority_master(list(answers.values()), len(answers))
    if master is None and any(answers.values()):
        raise DeployError(
            f"{name}: no majority of the {len(answers)} Sentinels names one master ({answers}): "
            "refusing to touch replication; heal the partition or bring the Sentinels back "
            "and deploy again"
        )
    return master


def bootstrap_master(
    name: str, bootstrap: bool, initial: tuple[str, int], has_data: dict[str, bool | None]
) -> tuple[str, int]:
    """Return the master a brand-new cluster starts with: the first ``redis`` host.

    ``has_data`` says, per ``redis`` host, whether Redis was ever set up there
    (None: unreachable).

    Raises:
        DeployError: ``redis_bootstrap`` is off, or a host has (or may have) data, so
            an empty master could stand beside the real one.
    """
    if not bootstrap:
        raise DeployError(
            f"{name}: no Sentinel names a master and redis_bootstrap is off: refusing to start "
            "an empty Redis as a master beside one that may hold the data; bring a Sentinel "
            "back, or set redis_bootstrap: True for the first deploy of a new cluster"
        )
    unknown = sorted(host for host, data in has_data.items() if data is None)
    holding = sorted(host for host, data in has_data.items() if data)
    if unknown or holding:
        raise DeployError(
            f"{name}: redis_bootstrap is on but no Sentinel names a master and "
            + (f"{', '.join(holding)} already hold Redis data" if holding else "")
            + (" and " if holding and unknown else "")
            + (f"{', '.join(unknown)} cannot be reached" if unknown else "")
            + ": refusing to start a second, empty master; bring the Sentinels back first"
        )
    return initial


@dataclass(frozen=True)
class RedisPlan:
    """What the deploy decided for one host, before anything changed."""

    # The master a majority of Sentinels names (None on a cluster not started yet).
    master: tuple[str, int] | None
    # Whether Redis was ever set up on this host (its marker or its data).
    initialised: bool
    # The `replicaof` to write before Redis first starts here; None: leave replication alone.
    replicaof: tuple[str, int] | None
    # The master to write into sentinel.conf the first time; None: Sentinel owns the file.
    sentinel_master: tuple[str, int] | None


def plan_redis(this: Any, sentinels: list[Any], redis_hosts: list[Any]) -> RedisPlan:
    """Decide, from facts alone, what the deploy does about replication on host ``this``.

    Raises:
        DeployError: the Sentinels disagree, or a new master would need a bootstrap
            that is not allowed (see :func:`bootstrap_master`).
    """
    is_redis = any(other.name == this.name for other in redis_hosts)
    is_sentinel = any(other.name == this.name for other in sentinels)
    answers = {
        other.name: ask(
            other,
            SentinelMaster,
            port=setting(other.data, "sentinel_port"),
            master=setting(other.data, "sentinel_master_name"),
        )
        for other in sentinels
    }
    master = live_master(this.name, answers)
    initialised = bool(is_redis and this.get_fact(RedisHasData, dir=REDIS_DIR))
    written = bool(
        is_sentinel and this.get_fact(FindInFile, path=SENTINEL_CONF, pattern=SENTINEL_MARKER)
    )
    needs_master = (is_redis and not initialised) or (is_sentinel and not written)
    target = master
    if target is None and needs_master:
        target = bootstrap_master(
            this.name,
            bool(setting(this.data, "redis_bootstrap")),
            _initial_master(redis_hosts),
            {other.name: ask(other, RedisHasData, dir=REDIS_DIR) for other in redis_hosts},
        )
    own = (str(this.data.get("private_address")), int(setting(this.data, "redis_port")))
    if is_redis and not initialised and master == own:
        raise DeployError(
            f"{this.name}: the Sentinels still name this host the master, but its Redis holds "
            "no data: starting it would hand its replicas an empty data set; wait for the "
            "failover and deploy again"
        )
    replicaof = None
    if is_redis and not initialised and target is not None and target != own:
        replicaof = target
    return RedisPlan(
        master=master,
        initialised=initialised,
        replicaof=replicaof,
        sentinel_master=target if is_sentinel and not written else None,
    )


def acl_ready(redis_hosts: list[Any]) -> bool:
    """Return whether no running ``redis`` host's Redis lacks seawall's ACL file.

    Only then does every possible master know the replica's, Sentinel's and the
    services' users: replicas, Sentinels and services move to them then. A Redis
    that runs without the file (started before seawall wrote it) means not ready.
    An unreachable host, or a Redis not running, does not hold the move back: it
    reads the file named in its configuration when it starts. So a new cluster
    starts with the users (none runs yet), and a redeploy while a data host is
    down keeps every user as it is instead of moving the services back to the
    shared password and forward again once the host returns.
    """
    return all(
        ask(other, RedisAclFile, once=True, port=setting(other.data, "redis_port"))
        in (USERS_ACL, None)
        for other in redis_hosts
    )


def sentinel_updates(live: dict[str, str] | None, context: dict[str, Any]) -> list[tuple[str, str]]:
    """Return the (setting, value) pairs to SENTINEL SET: those a live Sentinel holds otherwise."""
    if live is None:
        return []
    wanted = [(setting, str(context[key])) for setting, key in SENTINEL_SETTINGS.items()]
    return [(setting, value) for setting, value in wanted if live.get(setting) != value]


def _initial_master(redis_hosts: list[Any]) -> tuple[str, int]:
    first = redis_hosts[0]
    return (str(first.data.get("private_address")), int(setting(first.data, "redis_port")))


def _service_names() -> list[str]:
    return [str(service["name"]) for service in setting(host.data, "services")]


def _context(ready: bool) -> dict[str, Any]:
    names = ["sentinel_password", redis_acl.ADMIN_SECRET]
    if "redis" in host.groups:
        names += redis_acl.all_secrets(_service_names())
    if "sentinel" in host.groups:
        names += [
            redis_acl.SENTINEL_SECRET,
            redis_acl.SENTINEL_CLIENT_SECRET,
            redis_acl.EXPORTER_SECRET,
        ]
    values = host_secrets(sorted(set(names)))
    context = {key: setting(host.data, key) for key in DEFAULTS}
    context.update(values)
    context["private_address"] = host.data.private_address
    context["users_acl"] = USERS_ACL
    context["redis_conf"] = REDIS_CONF
    context["acl_ready"] = ready
    context["replica_user"] = redis_acl.REPLICA_USER
    context["sentinel_user"] = redis_acl.SENTINEL_USER
    context["replica_password"] = values.get(redis_acl.REPLICA_SECRET)
    return context


def _auth_file(path: str, secret: str, name: str) -> None:
    secret_file(name=name, src=secret, dest=path, private_dir=False)


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
    redis_hosts = inventory.get_group("redis", default=[])
    context = _context(acl_ready(redis_hosts))
    # Decided before anything changes: the live topology wins over the inventory.
    plan = plan_redis(host, inventory.get_group("sentinel", default=[]), redis_hosts)
    packages = ["redis-tools"]
    packages += ["redis-server"] if is_redis else []
    packages += ["redis-sentinel"] if is_sentinel else []
    install_packages("Install Redis and Sentinel", packages)
    if is_redis:
        _redis(context, plan)
    if is_sentinel:
        _sentinel(context, plan)


def _redis(context: dict[str, Any], plan: RedisPlan) -> None:
    port = context["redis_port"]
    _auth_file(REDIS_CLI_AUTH, context["redis_password"], "Store the Redis password for redis-cli")
    # Hashes only, but who may log in as whom is nobody else's business.
    users = secret_file(
        name="Write Redis's ACL users",
        src=redis_acl.acl_file(
            setting(host.data, "services_unit_prefix"),
            _service_names(),
            {name: context[name] for name in redis_acl.all_secrets(_service_names())},
        ),
        dest=USERS_ACL,
        group="redis",
        mode=640,
        private_dir=False,
    )
    # It holds requirepass and masterauth: the secret write path, never files.put.
    managed = secret_file(
        name="Write the settings seawall manages for Redis",
        src=render("redis", MANAGED_CONF, context),
        dest=MANAGED_CONF,
        group="redis",
        mode=640,
        private_dir=False,
    )
    managed_include_last(
        name="Include the managed settings last in redis.conf",
        config=REDIS_CONF,
        managed=MANAGED_CONF,
    )
    if plan.replicaof is not None:
        target = plan.replicaof
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
    if running and memo.get_fact(host, RedisAclFile, port=port) == USERS_ACL:
        # User by user: ACL LOAD would drop every connection of an ACL user
        # (replicas' links included); ACL SETUSER keeps them. From stdin: no
        # hash on a command line. A user taken out of the file stays until a restart.
        server.shell(
            name="Apply the changed ACL users to the running Redis (connections stay)",
            commands=[
                f"sed 's/^user /ACL SETUSER /' {USERS_ACL} | {cli(REDIS_CLI_AUTH, port, '')} "
                '| grep -v -x OK && { echo "ACL SETUSER failed"; exit 1; } || true'
            ],
            _if=users.did_change,
        )
    elif running:
        host.log(
            f"Redis on {host.name} runs without {USERS_ACL}: aclfile is read at start only; "
            "the rolling restart loads it (replicas, then a failover, then the old master)"
        )
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
    # Compared with the new managed file (the include's check above saw the old one),
    # after the CONFIG REWRITE above, which appends after the include too.
    server.shell(
        name="Keep the managed settings in force after the include (they changed)",
        commands=[include_last_if_shadowed(REDIS_CONF, MANAGED_CONF)],
        _if=managed.did_change,
    )
    systemd.service(
        name="Start and enable Redis",
        service="redis-server.service",
        running=True,
        enabled=True,
    )
    if not plan.initialised:
        files.put(
            name="Mark Redis as set up here (replication is Redis's and Sentinel's from now on)",
            src=StringIO("Redis was first configured here by seawall; see components/redis.py\n"),
            dest=f"{REDIS_DIR}/{INITIALISED_MARKER}",
            user="redis",
            group="redis",
            mode="640",
        )


def _sentinel(context: dict[str, Any], plan: RedisPlan) -> None:
    port = context["sentinel_port"]
    name = context["sentinel_master_name"]
    _auth_file(
        SENTINEL_CLI_AUTH, context["sentinel_password"], "Store the Sentinel password for redis-cli"
    )
    if plan.sentinel_master is not None:
        master_host, master_port = plan.sentinel_master
        secret_file(
            name="Write Sentinel's initial configuration (Sentinel owns it from now on)",
            src=render(
                "redis",
                SENTINEL_CONF,
                {**context, "master_host": master_host, "master_port": master_port},
            ),
            dest=SENTINEL_CONF,
            user="redis",
            group="redis",
            mode=640,
            private_dir=False,
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
    # Services ask for the master as this user: it can do nothing else; the redis
    # exporter reads Sentinel's state as its own. Set live (ACL SETUSER, from
    # stdin; one OK a line, anything else fails), whatever acl_ready says: Sentinel
    # has no ACL file to wait for. Then Sentinel writes them into its own file.
    users = secret_file(
        name="Store the ACL users of Sentinel's clients and the redis exporter",
        src=redis_acl.sentinel_setuser(context[redis_acl.SENTINEL_CLIENT_SECRET])
        + redis_acl.sentinel_exporter_setuser(context[redis_acl.EXPORTER_SECRET]),
        dest=SENTINEL_USERS,
        private_dir=False,
    )
    server.shell(
        name=(
            f"Let clients ask Sentinel for the master as user {redis_acl.SENTINEL_CLIENT_USER}, "
            f"the redis exporter read it as {redis_acl.EXPORTER_USER}"
        ),
        commands=[
            f"out=$({cli(SENTINEL_CLI_AUTH, port, '')} < {SENTINEL_USERS}) && "
            f'[ "$(printf %s "$out" | grep -c -x OK)" = "$(grep -c . {SENTINEL_USERS})" ] && '
            + cli(SENTINEL_CLI_AUTH, port, "SENTINEL FLUSHCONFIG")
            + ' | grep -qx OK || { echo "ACL SETUSER on Sentinel failed"; exit 1; }'
        ],
        _if=users.did_change,
    )
    if context["acl_ready"]:
        # Sentinel logs in to Redis as its own user once every Redis has it; both
        # in one SENTINEL SET, the password from stdin (no secret on a command line).
        auth = secret_file(
            name="Store Sentinel's Redis user password",
            src=context[redis_acl.SENTINEL_SECRET],
            dest=SENTINEL_REDIS_AUTH,
            private_dir=False,
        )
        server.shell(
            name=f"Log Sentinel in to Redis as user {redis_acl.SENTINEL_USER}",
            commands=[
                f'printf %s "$(cat {SENTINEL_REDIS_AUTH})" | '
                + cli(
                    SENTINEL_CLI_AUTH,
                    port,
                    f"-x SENTINEL SET {name} auth-user {redis_acl.SENTINEL_USER} auth-pass",
                )
                + ' | grep -qx OK || { echo "SENTINEL SET auth-user failed"; exit 1; }'
            ],
            _if=auth.did_change,
        )
    live = host.get_fact(SentinelMasterSettings, port=port, master=name)
    for option, wanted in sentinel_updates(live, context):
        server.shell(
            name=f"Set Sentinel's {option} to {wanted} (through Sentinel itself)",
            commands=[cli(SENTINEL_CLI_AUTH, port, f"SENTINEL SET {name} {option} {wanted}")],
        )

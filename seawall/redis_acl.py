"""Redis's ACL users and their secrets, from the service catalogue alone (no pyinfra, no I/O).

Who logs in to Redis, and with which rights:

- ``default``: seawall's own tools (deploy, verify, status, drills, restart
  gates) with the ``redis_password`` secret, all rights. Never
  without a password. Being ``default`` keeps every tool's password-only
  login working on a Redis that has not loaded the ACL file yet (migration,
  see ``seawall/components/redis.py``);
- one user per service, named as its unit's system user (``quantum-execution``),
  with its own secret (:func:`service_secret`): its own keys (``svc:<name>:*``,
  :func:`key_prefix`), the platform's shared streams and consumer groups
  (:data:`SHARED_KEYS`), no Pub/Sub channel, and :data:`SERVICE_COMMANDS`;
- ``replica``: what a replica sends its master (PSYNC, REPLCONF, PING);
- ``sentinel``: what Sentinel sends a Redis it monitors and fails over;
- ``exporter``: what ``prometheus-redis-exporter`` sends its Redis and its
  Sentinel (:data:`EXPORTER_COMMANDS`, :data:`EXPORTER_SENTINEL_COMMANDS`):
  reads of the server's state, no key, no channel, nothing it could change.

Passwords go into the file as SHA-256 hashes (``#<hex>``): the ACL file holds
no password a reader could use.
"""

import hashlib
from collections.abc import Iterable, Mapping

# The user seawall's tools log in as (password-only logins land here).
ADMIN_USER = "default"
ADMIN_SECRET = "redis_password"
# Replicas log in to their master as this user (masteruser/masterauth).
REPLICA_USER = "replica"
REPLICA_SECRET = "redis_replica_password"
# Sentinel logs in to every Redis it monitors as this user (sentinel auth-user/auth-pass).
SENTINEL_USER = "sentinel"
SENTINEL_SECRET = "redis_sentinel_user_password"
# The redis exporter logs in to its Redis, and to its host's Sentinel, as this user.
EXPORTER_USER = "exporter"
EXPORTER_SECRET = "redis_exporter_password"

# Services ask the Sentinels for the master as this user (Sentinel's own ACL).
SENTINEL_CLIENT_USER = "client"
SENTINEL_CLIENT_SECRET = "sentinel_client_password"
# The master's address, and what redis-py's Sentinel client reads to find it
# (SENTINEL MASTERS / MASTER: names, addresses, flags; no secret), plus logging
# in. Never SET, FAILOVER, REMOVE, MONITOR, RESET, CONFIG, ACL, DEBUG.
SENTINEL_CLIENT_COMMANDS = (
    "+sentinel|get-master-addr-by-name +sentinel|masters +sentinel|master +ping +auth +hello"
)

# Keys every service reaches beside its own: the platform's streams and consumer
# groups (DESIGN.md: services talk over quantum:stream:<event>), and the runtime
# publisher's high-water marks (one field per producer): moving them under each
# service's prefix would forget every mark, and exactly-once with them.
SHARED_KEYS = ("quantum:stream:*", "quantum:group:*", "seawall:producers")
# Reads and writes of data, streams, transactions and scripts (the runtime
# publisher is one Lua script), minus every @dangerous command (CONFIG,
# FLUSHALL, DEBUG, KEYS, CLIENT KILL, SHUTDOWN, REPLICAOF...), then back:
# ROLE (read-only; the publisher checks the master it landed on is one).
# SCRIPT FLUSH/KILL and FUNCTION's writes would reach other services' scripts.
SERVICE_COMMANDS = (
    "+@read +@write +@stream +@hash +@string +@list +@set +@sortedset +@transaction "
    "+@scripting +@connection -@dangerous +role "
    "-script|flush -script|kill -function|flush -function|delete -function|restore "
    "-function|load -function|kill"
)
# What a replica sends its master.
REPLICA_COMMANDS = "+psync +replconf +ping"
# What Sentinel sends a monitored Redis (redis.io "Redis Sentinel: ACL"):
# INFO and ROLE to watch, SLAVEOF/CONFIG REWRITE/CLIENT KILL/EXEC to fail over,
# PUBLISH/SUBSCRIBE on __sentinel__:hello to find the other Sentinels.
SENTINEL_COMMANDS = (
    "+multi +slaveof +replicaof +ping +exec +subscribe +config|rewrite +role +publish "
    "+info +client|setname +client|kill +script|kill"
)

# What redis_exporter 1.45 (bookworm's prometheus-redis-exporter) sends a Redis
# with the flags seawall gives it (exporter/exporter.go scrapeRedisHost at
# v1.45.0; the bookworm binary's calls, counted by INFO commandstats of a
# loopback Redis 7.0, are these and AUTH, which needs no rule):
# - CLIENT SETNAME redis_exporter (--set-client-name, on by default);
# - CONFIG GET * (databases, maxmemory...): CONFIG is @dangerous, so GET alone,
#   never SET, REWRITE or RESETSTAT;
# - INFO ALL (nearly every metric; INFO is @dangerous as it names clients' addresses);
# - LATENCY LATEST, SLOWLOG LEN and SLOWLOG GET 1 (their @admin subcommands alone,
#   never LATENCY RESET or SLOWLOG RESET).
# No key rights: the flags that read keys (--check-keys, --check-single-keys,
# --check-streams, --count-keys, --check-key-groups, --script) are not given,
# and SELECT comes only with them. PING only with --ping-on-connect (not
# given), CLUSTER INFO only on a cluster, CLIENT LIST only with --export-client-list.
EXPORTER_COMMANDS = "+client|setname +config|get +info +latency|latest +slowlog|len +slowlog|get"
# What it sends its host's Sentinel (the /scrape job): INFO and CLIENT SETNAME as
# above (CONFIG, LATENCY and SLOWLOG are unknown to Sentinel, an error the exporter
# ignores), then, since INFO names a Sentinel, SENTINEL MASTERS and, per master,
# CKQUORUM, SENTINELS and SLAVES (exporter/sentinels.go). Never SET, FAILOVER,
# RESET, REMOVE, MONITOR, CONFIG or ACL.
EXPORTER_SENTINEL_COMMANDS = (
    "+client|setname +info +sentinel|masters +sentinel|ckquorum +sentinel|sentinels "
    "+sentinel|slaves"
)


def service_user(unit_prefix: str, service: str) -> str:
    """Return the ACL user of ``service``: its unit's system user (``quantum-execution``)."""
    return f"{unit_prefix}{service}"


def service_secret(service: str) -> str:
    """Return the secret holding ``service``'s Redis password."""
    return f"redis_service_{service.replace('-', '_')}_password"


def key_prefix(service: str) -> str:
    """Return the prefix of the keys only ``service`` reaches (the runtime names its keys so)."""
    return f"svc:{service}:"


def all_secrets(services: Iterable[str]) -> list[str]:
    """Return every secret the ACL file is made from: the admin's, replica's, Sentinel's,
    the exporter's and each service's (Redis hosts write the file; app hosts need the
    services' ones)."""
    return [
        ADMIN_SECRET,
        REPLICA_SECRET,
        SENTINEL_SECRET,
        EXPORTER_SECRET,
        *map(service_secret, services),
    ]


# The groups whose hosts need each ACL user's secret: Redis hosts write the ACL
# file; each Sentinel logs in to Redis as SENTINEL_USER and admits services as
# SENTINEL_CLIENT_USER and the exporter as EXPORTER_USER; app hosts give each
# service its own passwords.
def required_secrets(
    required: Mapping[str, list[str]], services: list[str]
) -> dict[str, list[str]]:
    """Return ``required`` (SECRETS required_secrets) plus the ACL users' secrets where needed."""
    wanted = {
        "redis": all_secrets(services),
        "sentinel": [SENTINEL_SECRET, SENTINEL_CLIENT_SECRET, EXPORTER_SECRET],
        "app": [SENTINEL_CLIENT_SECRET, *(service_secret(name) for name in services)],
    }
    out = {group: list(names) for group, names in required.items()}
    for group, names in wanted.items():
        have = out.setdefault(group, [])
        have += [name for name in names if name not in have]
    return out


def _hashed(password: str) -> str:
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def user_line(user: str, password: str, rules: str) -> str:
    """Return one ACL file line: ``reset`` first, so the line alone says what the user has."""
    return f"user {user} reset on {_hashed(password)} {rules}"


def service_rules(service: str) -> str:
    """Return the keys, channels and commands of ``service``'s user."""
    keys = " ".join(f"~{pattern}" for pattern in (f"{key_prefix(service)}*", *SHARED_KEYS))
    return f"{keys} resetchannels -@all {SERVICE_COMMANDS}"


def acl_file(unit_prefix: str, services: Iterable[str], passwords: Mapping[str, str]) -> str:
    """Return Redis's ACL file: every user above, ``passwords`` holding each one's secret.

    Raises:
        KeyError: a secret is missing from ``passwords``.
    """
    services = list(services)
    # No header line: Redis refuses any line of an ACL file that is not a user.
    lines = [
        user_line(ADMIN_USER, passwords[ADMIN_SECRET], "~* &* +@all"),
        user_line(
            REPLICA_USER, passwords[REPLICA_SECRET], f"resetchannels -@all {REPLICA_COMMANDS}"
        ),
        user_line(SENTINEL_USER, passwords[SENTINEL_SECRET], f"&* -@all {SENTINEL_COMMANDS}"),
        user_line(
            EXPORTER_USER, passwords[EXPORTER_SECRET], f"resetchannels -@all {EXPORTER_COMMANDS}"
        ),
    ]
    lines += [
        user_line(
            service_user(unit_prefix, name), passwords[service_secret(name)], service_rules(name)
        )
        for name in services
    ]
    return "\n".join(lines) + "\n"


def sentinel_setuser(password: str) -> str:
    """Return the ACL SETUSER command (for redis-cli's stdin) of Sentinel's client user.

    Sentinel's configuration is its own (it rewrites sentinel.conf), so its users
    are set live and Sentinel writes them there itself (SENTINEL FLUSHCONFIG).
    """
    return f"ACL SETUSER {SENTINEL_CLIENT_USER} reset on {_hashed(password)} -@all " + (
        SENTINEL_CLIENT_COMMANDS + "\n"
    )


def sentinel_exporter_setuser(password: str) -> str:
    """Return the ACL SETUSER command (for redis-cli's stdin) of Sentinel's exporter user
    (redis_exporter logs in to every target as one user: its Redis's and its Sentinel's)."""
    return (
        f"ACL SETUSER {EXPORTER_USER} reset on {_hashed(password)} resetchannels -@all "
        f"{EXPORTER_SENTINEL_COMMANDS}\n"
    )

"""Every default seawall uses, one dict per concern, each key commented.

Inventory and group data override any of these per host or group. Deploys pass
their dict as ``data_defaults`` and validation reads the same dicts, so a value
is decided in one place. Addresses and host names are never defaults: they live
in inventory data only.
"""

from typing import Any

# Roles are pyinfra inventory groups. The minimum host count of each role is
# what the target topology in DESIGN.md needs; validation enforces it.
ROLES: dict[str, int] = {
    # Redis master + 2 replicas, so a failover always has a replica to promote.
    "redis": 3,
    # Three Sentinels: a quorum of 2 still forms with one host lost.
    "sentinel": 3,
    # etcd (Patroni's store) needs 3 members to survive one loss.
    "etcd": 3,
    # PostgreSQL leader + synchronous replica.
    "postgres": 2,
    # Platform services run on at least one app host (two for failover).
    "app": 1,
    # NGINX gateway in front of the app hosts.
    "gateway": 1,
    # Prometheus, central journal, backups, drift cron, restart orchestrator.
    "ops": 1,
}

COMMON: dict[str, Any] = {
    # Every host runs in UTC: logs, backups and the 04:00 restart timer assume it.
    "timezone": "UTC",
    # NTP servers for systemd-timesyncd. Containers share the kernel clock, so
    # timesyncd skips itself there (ConditionVirtualization=!container).
    "ntp_servers": ["0.debian.pool.ntp.org", "1.debian.pool.ntp.org"],
    # HTTP apt proxy (apt-cacher-ng) or None for direct access. The lab sets it
    # to the proxy on its bridge, since lab hosts reach nothing else.
    "apt_proxy": None,
    # Packages every host gets. Small on purpose: each role installs its own.
    "common_packages": [
        "ca-certificates",
        "curl",
        "less",
        "lsof",
        "procps",
        "python3",
        "rsync",
        "sudo",
        "systemd-timesyncd",
        "tzdata",
    ],
    # The admin account for humans: key-only SSH, passwordless sudo.
    "admin_user": "seawall",
    # Path (on the controller) of the admin's SSH public key. Required.
    "admin_ssh_public_key_file": None,
    # Root may log in with a key only (pyinfra and the lab use it); never with a password.
    "sshd_permit_root_login": "prohibit-password",
    # Give up on a half-open SSH login quickly; bound retries against guessing.
    "sshd_login_grace_time": 30,
    "sshd_max_auth_tries": 3,
    # journald keeps logs on disk across reboots, within these bounds, so a
    # crash leaves its evidence but logs never fill the disk.
    "journald_system_max_use": "1G",
    "journald_system_keep_free": "2G",
    "journald_max_retention": "1month",
    "journald_rate_limit_burst": 10000,
    # Kernel settings Redis and Postgres want (overcommit for Redis's fork-based
    # saves, a deep accept backlog that matches Redis's tcp-backlog 511).
    # Containers share the host kernel and cannot set them: the deploy skips
    # them there and says so.
    "sysctl": {
        "vm.overcommit_memory": 1,
        "net.core.somaxconn": 1024,
        "vm.swappiness": 1,
    },
    # Transparent huge pages off: they cause latency spikes and copy-on-write
    # blowups in Redis's fork.
    "transparent_hugepages": "never",
    # Where the role marker is written; later deploys and `seawall verify` read it.
    "role_marker_path": "/etc/seawall/roles",
}

SECRETS: dict[str, Any] = {
    # Secrets each role needs. Their values never live in inventory data or git:
    # they come from the file named by `secrets_file` (0600, `name=value` lines)
    # or from SEAWALL_SECRET_<NAME> environment variables, the latter winning.
    "required_secrets": {
        "redis": ["redis_password", "redis_replication_password"],
        "sentinel": ["sentinel_password"],
        "postgres": [
            "postgres_superuser_password",
            "postgres_replication_password",
            "postgres_rewind_password",
        ],
        "etcd": [],
        "app": [],
        "gateway": [],
        "ops": [],
    },
    # Path of the secrets file on the controller, or None to use the environment only.
    "secrets_file": None,
}

REDIS: dict[str, Any] = {
    # Port Redis listens on, on the host's private address and localhost.
    "redis_port": 6379,
}

SENTINEL: dict[str, Any] = {
    # Port Sentinel listens on.
    "sentinel_port": 26379,
    # Sentinels that must agree the master is down before a failover: a
    # majority of 3, so one partitioned Sentinel can never start one alone.
    "sentinel_quorum": 2,
}

ETCD: dict[str, Any] = {
    # etcd client and peer ports (Patroni talks to the client port).
    "etcd_client_port": 2379,
    "etcd_peer_port": 2380,
}

POSTGRES: dict[str, Any] = {
    # PostgreSQL and Patroni REST API ports.
    "postgres_port": 5432,
    "patroni_rest_port": 8008,
}

LAB: dict[str, Any] = {
    # Container names are the host name with this prefix, so the lab never
    # touches an LXC container it did not create.
    "lab_container_prefix": "seawall-",
    # Debian mirror the base root filesystem and the apt proxy fetch from.
    "lab_debian_mirror": "http://deb.debian.org/debian",
    # The base root filesystem: deliberately minimal, like a fresh cloud host.
    # The deploys install every service.
    "lab_base_packages": [
        "systemd",
        "systemd-sysv",
        "dbus",
        "libpam-systemd",
        "openssh-server",
        "python3",
        "sudo",
        "iproute2",
        "ca-certificates",
        "procps",
        "netbase",
    ],
}


def all_defaults() -> dict[str, Any]:
    """Return every default in one flat dict (keys are unique across concerns)."""
    merged: dict[str, Any] = {}
    for concern in (COMMON, SECRETS, REDIS, SENTINEL, ETCD, POSTGRES, LAB):
        merged.update(concern)
    return merged


# Every key naming a TCP port: validation checks no two on one host collide.
PORT_KEYS: tuple[str, ...] = tuple(
    key for key in sorted(all_defaults()) if key.endswith("_port") and not key.startswith("lab_")
)

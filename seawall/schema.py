"""The type, range and relations of every inventory key, one model per dict of defaults.py.

Each model below mirrors one dict of ``seawall/defaults.py`` field for field (a
unit test holds them equal), so a key gains its type where it gains its default.
pydantic checks the values; ``relation_problems`` checks what one value says
about another on the same host. Checks across hosts live in ``seawall.inventory``.
"""

import difflib
import functools
import ipaddress
import re
import subprocess
from collections.abc import Callable, Iterator, Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from seawall import defaults, settings


def _matching(regex: str, what: str) -> Callable[[str], str]:
    """Return a check that ``value`` matches ``regex`` in full, failing with ``what`` it must be."""
    compiled = re.compile(regex)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise PydanticCustomError("pattern", "must be {what}", {"what": what})
        return value

    return check


# Names that reach shell commands, unit files and config files are limited to
# characters none of those formats gives a meaning to: no space, quote, `$`,
# `%` (a systemd specifier), `;` or newline.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
SafeName = Annotated[
    str,
    AfterValidator(_matching(SAFE_NAME.pattern, "a name of letters, digits, '.', '_', '-'")),
]
# useradd's own rule, shorter: systemd refuses user names over 32 characters.
UnixName = Annotated[
    str,
    AfterValidator(_matching(r"[a-z_][a-z0-9_-]{0,31}", "a Unix user name ([a-z_][a-z0-9_-]*)")),
]
# Unquoted identifiers in SQL and pg_hba.conf.
PgName = Annotated[
    str,
    AfterValidator(_matching(r"[a-z_][a-z0-9_]{0,62}", "a Postgres identifier ([a-z_][a-z0-9_]*)")),
]
# Unit names, user names and NGINX upstream names are built from it.
ServiceName = Annotated[
    str, AfterValidator(_matching(r"[a-z][a-z0-9-]{0,39}", "a service name ([a-z][a-z0-9-]*)"))
]
SecretName = Annotated[
    str, AfterValidator(_matching(r"[a-z][a-z0-9_]{0,62}", "a secret name ([a-z][a-z0-9_]*)"))
]
# A DNS name or an address; never starting with '-', which ssh would read as an option.
Hostname = Annotated[
    str,
    AfterValidator(_matching(r"[A-Za-z0-9][A-Za-z0-9.:-]{0,252}", "a host name or address")),
]
# A path on a host, written into unit and config files.
HostPath = Annotated[
    str,
    AfterValidator(_matching(r"/[A-Za-z0-9_.@+/-]*", "an absolute path of safe characters")),
]
# A path on the controller: read by seawall only, never written into a host's files.
LocalPath = Annotated[
    str, AfterValidator(_matching(r"[^\x00-\x1f\x7f]+", "a path without control characters"))
]
Package = Annotated[
    str, AfterValidator(_matching(r"[a-z0-9][a-z0-9+.-]+", "a Debian package name"))
]
UrlPath = Annotated[
    str, AfterValidator(_matching(r"/[A-Za-z0-9/_.~-]*", "a URL path starting with '/'"))
]
Url = Annotated[
    str,
    AfterValidator(
        _matching(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9/_.~-]*)?", "an http(s) URL")
    ),
]
# ExecStart= splits on spaces itself; quotes, `$`, `%` and `\` would be read by systemd.
Command = Annotated[
    str,
    AfterValidator(
        _matching(
            r"/[A-Za-z0-9_./+-]+( [A-Za-z0-9_./:=,@+-]+)*",
            "an absolute program path and arguments of safe characters",
        )
    ),
]
EnvName = Annotated[
    str, AfterValidator(_matching(r"[A-Za-z_][A-Za-z0-9_]*", "an environment variable name"))
]
# `Environment=KEY=VALUE` is written unquoted: a space would start a second assignment.
EnvValue = Annotated[
    str,
    AfterValidator(_matching(r"[A-Za-z0-9_./:=,@+-]*", "a value without spaces or quotes")),
]
# NGINX time: 10s, 500ms, 1m30s.
NginxTime = Annotated[
    str, AfterValidator(_matching(r"([0-9]+(ms|s|m|h|d))+", "an NGINX time like 10s or 500ms"))
]
# systemd time span: 30, 1month, 2weeks.
TimeSpan = Annotated[
    str,
    AfterValidator(
        _matching(
            r"[0-9]+ ?(us|ms|s|sec|min|m|h|hr|d|day|days|w|week|weeks|month|months|y|year|years)?",
            "a systemd time span like 30s or 1month",
        )
    ),
]
# systemd OnCalendar=: a time expression, nothing a unit file would read otherwise.
Calendar = Annotated[
    str, AfterValidator(_matching(r"[A-Za-z0-9*:,./~ -]+", "a systemd calendar expression"))
]


@functools.cache
def _calendar_problem(value: str) -> str | None:
    """Return why systemd's own parser rejects ``value`` as OnCalendar=, or None."""
    try:
        # The controller's systemd (controller-packages.txt), as the hosts' Debian 12.
        result = subprocess.run(
            ["systemd-analyze", "calendar", "--", value],
            capture_output=True,
            text=True,
            timeout=10,
            env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"},
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"systemd-analyze could not check it ({error})"
    if result.returncode == 0:
        return None
    return " ".join(result.stderr.split()) or f"systemd-analyze exited {result.returncode}"


def _systemd_accepts(value: str) -> str:
    problem = _calendar_problem(value)
    if problem:
        raise PydanticCustomError(
            "calendar", "systemd-analyze calendar rejects it: {problem}", {"problem": problem}
        )
    return value


# A calendar systemd itself must accept: checked with `systemd-analyze calendar`
# on the controller, so a typo is an inventory error, not a timer that never fires.
CheckedCalendar = Annotated[Calendar, AfterValidator(_systemd_accepts)]
# A crontab schedule: five fields (minute hour day-of-month month day-of-week).
CronSchedule = Annotated[
    str,
    AfterValidator(
        _matching(
            r"[0-9*,/-]+( [0-9*,/-]+){4}",
            "five cron fields like '7,22,37,52 * * * *' (numbers, *, ',', '/', '-')",
        )
    ),
]
Size = Annotated[str, AfterValidator(_matching(r"[0-9]+[KMGTkmgt]?", "a size like 512K or 1G"))]
RedisSize = Annotated[
    str,
    AfterValidator(_matching(r"(?i)[0-9]+(b|k|kb|m|mb|g|gb)?", "a Redis size like 512mb")),
]
MemoryMax = Annotated[
    str,
    AfterValidator(_matching(r"[0-9]+[KMGT]?|[0-9]{1,2}%|infinity", "a size like 512M or 50%")),
]
Count = Annotated[int, Field(ge=1)]
NonNegative = Annotated[int, Field(ge=0)]
Port = Annotated[int, Field(ge=1, le=65535)]
Seconds = Annotated[float, Field(gt=0)]


def _scalar(value: Any) -> Any:
    """A setting written as `key = value` into a config file (sysctl.d, Patroni's YAML)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PydanticCustomError("scalar", "must be a number or a string")
    if isinstance(value, str) and not re.fullmatch(r"[A-Za-z0-9_.:,/-]+", value):
        raise PydanticCustomError("scalar", "must be a value of letters, digits, '.', ':', '-'")
    return value


Scalar = Annotated[Any, PlainValidator(_scalar)]
SettingName = Annotated[
    str, AfterValidator(_matching(r"[a-z0-9_]+([.][a-z0-9_-]+)*", "a setting name"))
]


def _workers(value: Any) -> Any:
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise PydanticCustomError("workers", "must be 'auto' or a count of at least 1")


def _cidr(value: Any) -> Any:
    try:
        ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        raise PydanticCustomError("cidr", "must be an address or network (CIDR)") from None
    if not isinstance(value, str):
        raise PydanticCustomError("cidr", "must be a string")
    return value


def _address(value: Any) -> Any:
    if not isinstance(value, str):
        raise PydanticCustomError("address", "must be a string")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise PydanticCustomError("address", "must be an IP address") from None
    return value


Cidr = Annotated[Any, PlainValidator(_cidr)]
Address = Annotated[Any, PlainValidator(_address)]


class _Model(BaseModel):
    # strict: "800" is not 800 and True is not 1; the hosts would not convert them either.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class _Nested(_Model):
    """A dict inside a setting: an unknown key names the known one it is closest to."""

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for key in value:
                if key not in cls.model_fields:
                    raise PydanticCustomError(
                        "unknown_key",
                        "{hint}",
                        {"hint": unknown_key_hint(str(key), cls.model_fields)},
                    )
        return value


# --- one model per dict of defaults.py, in its order -------------------------------


class Common(_Model):
    timezone: Annotated[
        str, AfterValidator(_matching(r"[A-Za-z0-9_+/-]+", "a time zone like UTC or Europe/Paris"))
    ]
    ntp_servers: list[Hostname]
    apt_proxy: Url | None
    common_packages: list[Package]
    admin_user: UnixName
    admin_ssh_public_key_file: LocalPath | None
    sshd_permit_root_login: Literal["yes", "prohibit-password", "forced-commands-only", "no"]
    sshd_login_grace_time: Annotated[int, Field(ge=1, le=600)]
    sshd_max_auth_tries: Annotated[int, Field(ge=1, le=10)]
    sshd_allow_users: list[UnixName] | None
    sshd_allow_users_extra: list[UnixName]
    sshd_allow_tcp_forwarding: Literal["no", "local"]
    journald_system_max_use: Size
    journald_system_keep_free: Size
    journald_max_retention: TimeSpan
    journald_rate_limit_burst: NonNegative
    journald_rate_limit_interval: TimeSpan
    sysctl: dict[SettingName, Scalar]
    transparent_hugepages: Literal["always", "madvise", "never"]
    role_marker_path: HostPath


Role = Literal["redis", "sentinel", "etcd", "postgres", "app", "gateway", "ops"]


class Secrets(_Model):
    required_secrets: dict[Role, list[SecretName]]
    secrets_file: LocalPath | None


class Redis(_Model):
    redis_port: Port
    redis_maxmemory: RedisSize
    redis_maxmemory_policy: Literal[
        "noeviction",
        "allkeys-lru",
        "allkeys-lfu",
        "allkeys-random",
        "volatile-lru",
        "volatile-lfu",
        "volatile-random",
        "volatile-ttl",
    ]
    redis_appendonly: bool
    redis_appendfsync: Literal["always", "everysec", "no"]
    redis_min_replicas_to_write: NonNegative
    redis_min_replicas_max_lag: Count
    redis_repl_diskless_sync_delay: NonNegative
    redis_tcp_backlog: Annotated[int, Field(ge=1, le=65535)]
    redis_limit_nofile: Annotated[int, Field(ge=1024)]
    redis_restart_sec: NonNegative
    redis_bootstrap: bool


RedisDrillScenario = Literal[
    "master-process-kill",
    "master-host-crash",
    "master-isolated",
    "master-partitioned-from-peers",
    "sentinel-down",
    "replica-down",
    "switchover",
    "lagging-replica-then-cut",
    "cut-heals-5s",
    "cut-heals-9s",
    "cut-heals-20s",
    "long-outage",
    "disk-full",
    "writer-killed-mid-replay",
    "flapping-partition",
    "second-fault-during-failover",
]


class Sentinel(_Model):
    sentinel_port: Port
    sentinel_master_name: SafeName
    sentinel_quorum: Count
    sentinel_down_after_ms: Annotated[int, Field(ge=100)]
    sentinel_failover_timeout_ms: Annotated[int, Field(ge=1000)]
    sentinel_drill_outage_limits_s: dict[RedisDrillScenario, Seconds]
    sentinel_parallel_syncs: Count


class Etcd(_Model):
    etcd_client_port: Port
    etcd_peer_port: Port
    etcd_metrics_port: Port
    etcd_cluster_token: SafeName
    etcd_data_dir: HostPath
    etcd_heartbeat_interval: Annotated[int, Field(ge=10)]
    etcd_election_timeout: Annotated[int, Field(ge=50, le=50000)]
    etcd_ca_dir: HostPath
    etcd_tls_dir: HostPath
    etcd_tls_group: UnixName
    # The ranges keep the renewal window shorter than any lifetime, and the CA
    # longer than any certificate it signs.
    etcd_ca_days: Annotated[int, Field(ge=3650, le=36500)]
    etcd_tls_days: Annotated[int, Field(ge=366, le=3650)]
    etcd_tls_renew_days: Annotated[int, Field(ge=1, le=365)]


class Postgres(_Model):
    postgres_port: Port
    patroni_rest_port: Port
    postgres_version: Annotated[int, Field(ge=13, le=17)]
    postgres_cluster: SafeName
    postgres_tls_dir: HostPath
    postgres_ca_dir: HostPath
    # The ranges keep the renewal window shorter than a certificate's lifetime,
    # and that shorter than the CA's.
    postgres_ca_days: Annotated[int, Field(ge=1826, le=36500)]
    postgres_tls_days: Annotated[int, Field(ge=366, le=1825)]
    postgres_tls_renew_days: Annotated[int, Field(ge=1, le=365)]
    postgres_service_roles: list[PgName]
    postgres_databases: dict[PgName, PgName]
    postgres_database_readers: dict[PgName, list[PgName]]


DrillScenario = Literal[
    "switchover",
    "leader-process-kill",
    "leader-host-crash",
    "leader-partitioned",
    "replica-down",
    "etcd-member-down",
]


class Patroni(_Model):
    patroni_scope: SafeName
    # Patroni refuses a ttl under 20 and a retry_timeout under 3.
    patroni_ttl: Annotated[int, Field(ge=20)]
    patroni_loop_wait: Count
    patroni_retry_timeout: Annotated[int, Field(ge=3)]
    patroni_synchronous_mode: bool
    patroni_synchronous_mode_strict: bool
    patroni_maximum_lag_on_failover: NonNegative
    postgres_parameters: dict[SettingName, Scalar]
    postgres_drill_role: PgName
    postgres_drill_database: PgName
    postgres_drill_outage_limits: dict[DrillScenario, Seconds]


class Pgbouncer(_Model):
    pgbouncer_port: Port
    pgbouncer_pool_mode: Literal["session", "transaction", "statement"]
    pgbouncer_default_pool_size: Count
    pgbouncer_max_client_conn: Count
    pgbouncer_server_login_retry: Seconds
    pgbouncer_server_connect_timeout: Seconds


class Haproxy(_Model):
    haproxy_rw_port: Port
    haproxy_ro_port: Port
    haproxy_check_inter: Annotated[int, Field(ge=10)]
    haproxy_check_fastinter: Annotated[int, Field(ge=10)]
    haproxy_check_downinter: Annotated[int, Field(ge=10)]
    haproxy_check_fall: Count
    haproxy_check_rise: Count
    haproxy_retries: NonNegative


class Service(_Nested):
    """One entry of the ``services`` catalogue (see defaults.py above SERVICES)."""

    name: ServiceName
    port: Port
    route: UrlPath
    upstream_path: UrlPath | None = None
    needs: list[ServiceName] = []
    optional: list[ServiceName] = []
    postgres_role: PgName | None = None
    postgres_database: PgName | None = None
    postgres_reads: list[PgName] = []
    command: Command | None = None
    environment: dict[EnvName, EnvValue] = {}
    type: Literal["simple", "exec", "notify", "forking", "oneshot"] | None = None
    timeout_stop_sec: Count | None = None


class Services(_Model):
    services: list[Service]
    services_unit_prefix: Annotated[
        str, AfterValidator(_matching(r"[a-z][a-z0-9-]{0,15}", "a prefix like quantum-"))
    ]
    services_health_path: UrlPath
    services_code_dir: HostPath
    services_config_dir: HostPath
    services_secrets_dir: HostPath
    services_packages: list[Package]
    services_restart_sec: NonNegative
    services_start_limit_burst: Count
    services_start_limit_interval_sec: Count
    services_timeout_stop_sec: Count
    services_memory_max: MemoryMax
    services_tasks_max: Count
    services_limit_nofile: Annotated[int, Field(ge=1024)]
    services_healthcheck_interval_sec: Count
    services_healthcheck_timeout_sec: Count
    services_healthcheck_failures: Count
    services_failure_log: HostPath
    services_textfile_dir: HostPath
    services_redis_password_secret: SecretName
    services_sentinel_password_secret: SecretName
    services_exchange_health_url: Url | None
    services_stream_maxlen: Count


class RateZone(_Nested):
    rate: Count
    burst: NonNegative


class Timeouts(_Nested):
    connect: NginxTime
    send: NginxTime
    read: NginxTime


class RouteTimeouts(_Nested):
    connect: NginxTime | None = None
    send: NginxTime | None = None
    read: NginxTime | None = None


class Gateway(_Model):
    gateway_http_port: Port
    gateway_https_port: Port
    gateway_internal_http_port: Port | None
    gateway_status_port: Port
    gateway_tls_certificate: HostPath | None
    gateway_tls_certificate_key: HostPath | None
    gateway_tls_protocols: Annotated[
        str,
        AfterValidator(
            _matching(r"TLSv1\.[23]( TLSv1\.[23])*", "'TLSv1.2 TLSv1.3' or one of them")
        ),
    ]
    gateway_tls_ciphers: Annotated[
        str, AfterValidator(_matching(r"[A-Za-z0-9_+!-]+(:[A-Za-z0-9_+!-]+)*", "an OpenSSL list"))
    ]
    gateway_tls_ecdh_curves: Annotated[
        str, AfterValidator(_matching(r"[A-Za-z0-9_-]+(:[A-Za-z0-9_-]+)*", "curves like X25519"))
    ]
    gateway_server_name: Hostname | None
    gateway_upstream_addresses: list[Address] | None
    gateway_rate_zones: dict[SafeName, RateZone]
    gateway_route_zones: dict[ServiceName, list[SafeName]]
    gateway_trading_paths: list[UrlPath]
    gateway_order_paths: list[UrlPath]
    gateway_private_paths: list[UrlPath]
    gateway_public_upstream_paths: dict[UrlPath, UrlPath]
    gateway_limit_conn: Count
    gateway_rate_limit_exempt: list[Cidr]
    gateway_timeouts: Timeouts
    gateway_route_timeouts: dict[ServiceName, RouteTimeouts]
    gateway_worker_processes: Annotated[Any, PlainValidator(_workers)]
    gateway_worker_connections: Count
    gateway_worker_rlimit_nofile: Count
    gateway_client_max_body_size: Annotated[
        str, AfterValidator(_matching(r"[0-9]+[kKmMgG]?", "a size like 1m"))
    ]
    gateway_max_fails: NonNegative
    # The rolling restart reads it as whole seconds (services.restart_pause).
    gateway_fail_timeout: Annotated[
        str, AfterValidator(_matching(r"[0-9]+s?", "whole seconds like 5s"))
    ]
    gateway_next_upstream_timeout: NginxTime
    gateway_upstream_keepalive: NonNegative
    gateway_access_log: HostPath
    gateway_journal_tag: Annotated[
        str, AfterValidator(_matching(r"[A-Za-z0-9_]{0,32}", "an NGINX syslog tag, or empty"))
    ]
    gateway_journal_rate_limit_burst: NonNegative
    gateway_journal_rate_limit_interval: TimeSpan
    gateway_journal_batch_lines: Annotated[int, Field(ge=1, le=10000)]
    gateway_journal_batch_bytes: Annotated[int, Field(ge=1024, le=131072)]
    gateway_journal_batch_wait: Annotated[float, Field(gt=0, le=5)]
    gateway_hsts_max_age: NonNegative
    # Each must be an app host (seawall.inventory checks, with the whole topology).
    gateway_drained_hosts: list[SafeName]


# Prometheus durations: 15s, 1m30s, 500ms (the intervals and timeouts compare as seconds).
PromDuration = Annotated[
    str, AfterValidator(_matching(r"([0-9]+(ms|s|m|h))+", "a duration like 15s or 1m30s"))
]
# Retention: 15d, 2w, 1y.
PromRetention = Annotated[
    str, AfterValidator(_matching(r"([0-9]+(s|m|h|d|w|y))+", "a duration like 15d or 2w"))
]


class Metrics(_Model):
    node_exporter_port: Port
    redis_exporter_port: Port
    postgres_exporter_port: Port
    nginx_exporter_port: Port
    mtail_port: Port
    blackbox_exporter_port: Port
    prometheus_port: Port
    node_exporter_fs_types_exclude: str | None
    prometheus_scrape_interval: PromDuration
    prometheus_evaluation_interval: PromDuration
    prometheus_scrape_timeout: PromDuration
    prometheus_retention_time: PromRetention
    blackbox_probe_timeout: PromDuration
    metrics_gateway_probe_paths: list[UrlPath]
    metrics_scrape_user: UnixName
    prometheus_api_user: UnixName


class Lab(_Model):
    lab_container_prefix: SafeName
    lab_debian_mirror: Url
    lab_base_packages: list[Package]


class Pgbackrest(_Model):
    pgbackrest_stanza: SafeName
    pgbackrest_user: UnixName
    pgbackrest_repo_path: HostPath
    pgbackrest_cipher_type: Literal["aes-256-cbc"]
    pgbackrest_cipher_repo_path: HostPath
    pgbackrest_retention_days: Count
    pgbackrest_full_backup_calendar: Calendar
    pgbackrest_compress_type: Literal["none", "gz", "bz2", "lz4", "zst"]
    pgbackrest_process_max: Count
    pgbackrest_archive_timeout: Count
    pgbackrest_restore_drill_path: HostPath
    pgbackrest_restore_drill_port: Port
    pgbackrest_restore_drill_limit_s: Count


class Logging(_Model):
    journal_remote_port: Port
    journal_remote_max_use: Size
    journal_remote_max_retention: TimeSpan
    journal_remote_vacuum_calendar: Calendar
    # The ranges keep the renewal window shorter than any lifetime, so a
    # certificate is renewed while it still works.
    journal_tls_days: Annotated[int, Field(ge=366, le=3650)]
    journal_tls_renew_days: Annotated[int, Field(ge=1, le=365)]


class Restart(_Model):
    restart_lock_file: HostPath
    restart_gate_timeout_sec: Annotated[int, Field(ge=5, le=600)]
    restart_drain_timeout_sec: Annotated[int, Field(ge=1, le=3600)]
    restart_data_timeout_sec: Annotated[int, Field(ge=10, le=1800)]


class Ops(_Model):
    ops_venv_dir: HostPath
    ops_wheelhouse_dir: HostPath
    ops_site_dir: HostPath
    ops_state_dir: HostPath
    ops_wheelhouse_cache_dir: LocalPath
    drift_cron: CronSchedule
    restart_calendar: CheckedCalendar
    # systemd seconds; a spread over an hour would defeat a fixed restart hour.
    restart_randomized_delay_sec: Annotated[int, Field(ge=0, le=3600)]
    restart_enabled: bool
    # At least the longest single gate (the drain, 150 s by default) twice; at most a night.
    restart_timeout_sec: Annotated[int, Field(ge=300, le=6 * 3600)]


class Firewall(_Model):
    # Keys and roles are checked against the port keys and ROLES in relation_problems.
    firewall_rules: dict[str, list[str]]
    firewall_admin_sources: list[Cidr]
    # Under 30 s the deploy may not reach the cancelling step in time; over an
    # hour a lockout lasts too long.
    firewall_rollback_seconds: Annotated[int, Field(ge=30, le=3600)]


class InventoryOnly(_Model):
    """Keys with no default: addresses and the lab's bridge live in inventory data only."""

    # Checked with every host at once (seawall.inventory: private, unique).
    private_address: Any = None
    lab_bridge: (
        Annotated[str, AfterValidator(_matching(r"[a-z][a-z0-9]{0,14}", "an interface name"))]
        | None
    ) = None
    lab_bridge_address: Address | None = None
    lab_prefix_length: Annotated[int, Field(ge=8, le=30)] | None = None
    lab_state_dir: HostPath | None = None
    lab_apt_proxy_port: Port | None = None


class Pyinfra(_Model):
    """pyinfra's own keys that also reach a shell or ssh: typed here, the rest left to pyinfra."""

    ssh_hostname: Hostname | None = None
    ssh_port: Port | None = None
    ssh_user: UnixName | None = None


# The model of each dict of defaults.py (a unit test holds their keys equal).
CONCERNS: dict[str, type[_Model]] = {
    "COMMON": Common,
    "SECRETS": Secrets,
    "REDIS": Redis,
    "SENTINEL": Sentinel,
    "ETCD": Etcd,
    "POSTGRES": Postgres,
    "PATRONI": Patroni,
    "PGBOUNCER": Pgbouncer,
    "HAPROXY": Haproxy,
    "SERVICES": Services,
    "GATEWAY": Gateway,
    "METRICS": Metrics,
    "LAB": Lab,
    "PGBACKREST": Pgbackrest,
    "LOGGING": Logging,
    "RESTART": Restart,
    "OPS": Ops,
    "FIREWALL": Firewall,
}


class HostData(
    Common,
    Secrets,
    Redis,
    Sentinel,
    Etcd,
    Postgres,
    Patroni,
    Pgbouncer,
    Haproxy,
    Services,
    Gateway,
    Metrics,
    Lab,
    Pgbackrest,
    Logging,
    Restart,
    Ops,
    Firewall,
    InventoryOnly,
    Pyinfra,
):
    """Every key seawall reads from a host's data."""


def _pyinfra_keys() -> set[str]:
    # pyinfra's connector settings (ssh_*) and the global arguments a group may
    # set for every operation (_sudo, _env...); pyinfra checks their values itself.
    from pyinfra.api.arguments import all_global_arguments
    from pyinfra.api.connectors import get_all_connectors

    keys = {key for key, _ in all_global_arguments() if key.startswith("_")}
    for connector in get_all_connectors().values():
        keys.update(getattr(connector, "data_meta", None) or {})
    return keys


# Passwords pyinfra could take from data: seawall's secrets never live in data.
FORBIDDEN_KEYS = frozenset({"ssh_password", "ssh_key_password", "_sudo_password", "_su_password"})
PYINFRA_KEYS = frozenset(_pyinfra_keys() - FORBIDDEN_KEYS)
KNOWN_KEYS = frozenset(HostData.model_fields) | PYINFRA_KEYS

# Keys whose value must be the same on every host: the hosts find each other,
# and the clients their servers, through them.
SHARED_KEYS: tuple[str, ...] = (
    "sentinel_master_name",
    "sentinel_port",
    "sentinel_quorum",
    "redis_port",
    "etcd_client_port",
    "etcd_peer_port",
    "etcd_metrics_port",
    "etcd_cluster_token",
    "etcd_ca_dir",
    "postgres_port",
    "patroni_rest_port",
    "patroni_scope",
    "postgres_version",
    "postgres_cluster",
    "postgres_service_roles",
    "postgres_databases",
    "pgbouncer_port",
    "pgbackrest_stanza",
    "pgbackrest_user",
    "services",
    "services_unit_prefix",
)


def unknown_key_hint(key: str, known: Any) -> str:
    """Say that ``key`` is unknown, naming the known key it is closest to, if any."""
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
    if close:
        return f"unknown key {key!r}: did you mean {close[0]!r}?"
    return f"unknown key {key!r}: seawall reads no such setting"


def _path(loc: tuple[int | str, ...], data: Mapping[str, Any]) -> str:
    """``('services', 2, 'port')`` -> ``services[execution].port``."""
    out = ""
    for index, part in enumerate(loc):
        if isinstance(part, int):
            name = None
            if index == 1 and loc[0] == "services":
                try:
                    name = data["services"][part].get("name")
                except (AttributeError, IndexError, KeyError, TypeError):
                    name = None
            out += f"[{name if isinstance(name, str) else part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def key_problems(data: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """Yield (key, problem) for every unknown, forbidden or badly typed key of one host's data."""
    known = {}
    for key, value in data.items():
        if key in FORBIDDEN_KEYS:
            # Never the value: it is a password.
            yield key, "a password never lives in inventory data: use the secrets file"
        elif key not in KNOWN_KEYS:
            yield key, unknown_key_hint(key, KNOWN_KEYS)
        elif key in HostData.model_fields:
            known[key] = value
    try:
        HostData.model_validate(known)
    except ValidationError as error:
        for item in error.errors(include_url=False):
            loc = tuple(item["loc"])
            message = item["msg"].removeprefix("Value error, ")
            if item["type"] not in ("unknown_key", "missing", "extra_forbidden"):
                message = f"{message} (got {_shown(item['input'])})"
            yield _path(loc, data), message


def seconds(value: str) -> float:
    """Return an NGINX time (``10s``, ``1m30s``, ``500ms``) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(int(n) * units[u] for n, u in re.findall(r"([0-9]+)(ms|s|m|h|d)", value))


# The keys each relation reads besides the one it reports: a contradiction is
# reported on one key, but the file to edit may be the one that set another.
RELATED: dict[str, tuple[str, ...]] = {
    "services": ("services_unit_prefix",),
    "services_timeout_stop_sec": ("gateway_route_timeouts", "gateway_timeouts", "services"),
    "gateway_route_timeouts": ("services",),
    "restart_drain_timeout_sec": ("gateway_route_timeouts", "gateway_timeouts"),
    "gateway_route_zones": ("gateway_rate_zones", "services"),
    "gateway_trading_paths": ("services",),
    "gateway_public_upstream_paths": ("services",),
    "gateway_tls_certificate_key": ("gateway_tls_certificate",),
    "postgres_service_roles": ("services", "postgres_drill_role"),
    "postgres_databases": ("services", "postgres_drill_database"),
    "postgres_database_readers": ("services",),
    "services_redis_password_secret": ("required_secrets",),
    "services_sentinel_password_secret": ("required_secrets",),
    "patroni_ttl": ("patroni_loop_wait", "patroni_retry_timeout"),
    "etcd_election_timeout": ("etcd_heartbeat_interval",),
    "prometheus_scrape_timeout": ("prometheus_scrape_interval",),
    "blackbox_probe_timeout": ("prometheus_scrape_timeout",),
    "firewall_rules": (),
}


def relation_problems(data: Mapping[str, Any]) -> Iterator[tuple[str, str, tuple[str, ...]]]:
    """Yield (key, problem, related keys) for values that contradict each other on one host.

    Assumes ``key_problems`` found nothing: every value has its type.
    """
    for key, message in _relations(data):
        root = key.split("[")[0].split(".")[0]
        yield key, message, RELATED.get(root, ())


def _relations(data: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    services = data["services"]
    names = [s["name"] for s in services]
    by_name = {s["name"]: s for s in services}
    # Derived from the catalogue (seawall.settings): stated nowhere else.
    databases = settings.setting(data, "postgres_databases")
    wanted = settings.setting(data, "required_secrets")
    for derived in settings.DERIVED:
        if derived in data and data[derived] != settings.setting(data, derived):
            yield derived, "is derived from the services catalogue: set postgres_role there"
    for field in ("name", "port", "route"):
        seen: dict[Any, str] = {}
        for service in services:
            value = service[field]
            if value in seen:
                yield (
                    f"services[{service['name']}].{field}",
                    f"{value!r} is also the {field} of {seen[value]}",
                )
            seen.setdefault(value, service["name"])
    base_read = seconds(data["gateway_timeouts"]["read"])
    route_timeouts = data["gateway_route_timeouts"]
    for service in services:
        name = service["name"]
        where = f"services[{name}]"
        for field in ("needs", "optional"):
            for dependency in service.get(field, []):
                if dependency == name:
                    yield f"{where}.{field}", "a service cannot depend on itself"
                elif dependency not in ("redis", "postgres", "exchange", *names):
                    yield (
                        f"{where}.{field}",
                        f"{dependency!r} is neither redis, postgres, exchange nor a service",
                    )
        role = service.get("postgres_role")
        if role is None and (service.get("postgres_database") or service.get("postgres_reads")):
            yield f"{where}.postgres_role", "unset, but the service names Postgres databases"
        owned = service.get("postgres_database") or role
        if role is not None and databases.get(owned) != role:
            yield (
                f"{where}.postgres_database",
                f"{owned!r} is already owned by {databases.get(owned)!r}",
            )
        for database in service.get("postgres_reads", []):
            if database not in databases:
                yield f"{where}.postgres_reads", f"{database!r} is no service's database"
        user = data["services_unit_prefix"] + name
        if len(user) > 32:
            yield f"{where}.name", f"the unit's user {user} is over 32 characters"
        # SIGTERM drains in-flight requests: the slowest one the gateway still
        # waits for must finish before systemd's SIGKILL.
        read = seconds((route_timeouts.get(name) or {}).get("read") or "") or base_read
        stop = service.get("timeout_stop_sec") or data["services_timeout_stop_sec"]
        if stop < read:
            key = "timeout_stop_sec" if service.get("timeout_stop_sec") else None
            yield (
                f"{where}.{key}" if key else "services_timeout_stop_sec",
                f"{stop} s stops {name} before its gateway read timeout ({read:g} s) ends",
            )
    for name in route_timeouts:
        if name not in by_name:
            yield f"gateway_route_timeouts.{name}", "no service of that name"
    # The rolling restart restarts a drained host once the old NGINX workers
    # are gone: they must have time to finish the slowest request in flight.
    slowest = max([base_read, *(seconds(t.get("read") or "") for t in route_timeouts.values())])
    if data["restart_drain_timeout_sec"] < slowest:
        yield (
            "restart_drain_timeout_sec",
            f"{data['restart_drain_timeout_sec']} s is under the slowest gateway read "
            f"timeout ({slowest:g} s): old workers may still be proxying to the drained host",
        )
    zones = data["gateway_rate_zones"]
    for needed in ("general", "trading"):
        if needed not in zones:
            yield "gateway_rate_zones", f"has no {needed!r} zone (every route is in general)"
    for name, route_zone_names in data["gateway_route_zones"].items():
        if name not in by_name:
            yield f"gateway_route_zones.{name}", "no service of that name"
        for zone in route_zone_names:
            if zone not in zones:
                yield f"gateway_route_zones.{name}", f"zone {zone!r} is not in gateway_rate_zones"
    prefixes = [s["route"] for s in services if s["route"].endswith("/")]
    for path in data["gateway_trading_paths"]:
        if not any(path.startswith(p) and path != p for p in prefixes):
            yield "gateway_trading_paths", f"{path} is under no service's prefix route"
    exact = [s["route"] for s in services if not s["route"].endswith("/")]
    for route in data["gateway_public_upstream_paths"]:
        if route not in exact:
            yield f"gateway_public_upstream_paths.{route}", "no service has this exact route"
    if (data["gateway_tls_certificate"] is None) != (data["gateway_tls_certificate_key"] is None):
        yield "gateway_tls_certificate_key", "set both the certificate and its key, or neither"
    drill_role, drill_database = data["postgres_drill_role"], data["postgres_drill_database"]
    if databases.get(drill_database) != drill_role:
        owner = databases.get(drill_database)
        yield "postgres_drill_database", f"{drill_database!r} is owned by {owner!r}"
    for key in ("services_redis_password_secret", "services_sentinel_password_secret"):
        if data[key] not in wanted.get("app", []):
            yield key, f"{data[key]} is not in required_secrets.app"
    loop, retry, ttl = (data[f"patroni_{k}"] for k in ("loop_wait", "retry_timeout", "ttl"))
    if loop + 2 * retry > ttl:
        # Patroni's own rule: a leader must demote itself before its lock can expire.
        yield "patroni_ttl", f"loop_wait + 2 x retry_timeout ({loop + 2 * retry}) exceeds ttl {ttl}"
    if data["etcd_election_timeout"] < 5 * data["etcd_heartbeat_interval"]:
        # etcd refuses to start otherwise.
        yield "etcd_election_timeout", "must be at least 5 x etcd_heartbeat_interval"
    interval, timeout = data["prometheus_scrape_interval"], data["prometheus_scrape_timeout"]
    if seconds(timeout) > seconds(interval):
        # Prometheus refuses the configuration otherwise.
        yield "prometheus_scrape_timeout", f"{timeout} is longer than the scrape interval"
    if seconds(data["blackbox_probe_timeout"]) >= seconds(timeout):
        # The exporter must answer a failed probe before Prometheus gives up on it.
        yield "blackbox_probe_timeout", f"must be shorter than the scrape timeout {timeout}"
    yield from _firewall_relations(data["firewall_rules"])


def _firewall_relations(rules: Mapping[str, list[str]]) -> Iterator[tuple[str, str]]:
    """A port with no rule would be closed, or open, by accident: every one is stated."""
    keys = firewall_keys()
    sources = (*defaults.ROLES, *defaults.FIREWALL_SOURCES)
    for key in keys:
        if key not in rules:
            yield f"firewall_rules.{key}", "no rule: list the roles that may reach it ([] for none)"
        elif key not in defaults.FIREWALL_SERVED_BY:
            # A new port key: the firewall must know whose hosts listen on it.
            yield f"firewall_rules.{key}", "no serving roles in defaults.FIREWALL_SERVED_BY"
    for key, names in rules.items():
        if key not in keys:
            yield f"firewall_rules.{key}", unknown_key_hint(key, keys).replace("setting", "port")
        for name in names:
            if name not in sources:
                close = difflib.get_close_matches(name, sources, n=1)
                hint = f": did you mean {close[0]!r}?" if close else ""
                yield (
                    f"firewall_rules.{key}",
                    f"{name!r} is neither a role ({', '.join(defaults.ROLES)}) "
                    f"nor {' nor '.join(defaults.FIREWALL_SOURCES)}{hint}",
                )


def firewall_keys() -> tuple[str, ...]:
    """Return every key a firewall rule must exist for: the port keys, read now, and the rest."""
    # The rest (ssh, services...) are not `*_port` settings; a `*_port` key in
    # FIREWALL_SERVED_BY that PORT_KEYS lacks is a port no concern has any more.
    others = (key for key in defaults.FIREWALL_SERVED_BY if not key.endswith("_port"))
    return (*defaults.PORT_KEYS, *others)


def defaults_keys() -> dict[str, set[str]]:
    """Return {concern: keys} of defaults.py, for the test that holds the models to it."""
    return {name: set(getattr(defaults, name)) for name in CONCERNS}

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
    # Root may log in with a key only, never with a password: every deploy path
    # logs in as root (ssh_user in the lab, Vagrant and production group data;
    # seawall's own SSH for drills, status and benchmarks). A site that deploys
    # as the admin user with --sudo sets "no".
    "sshd_permit_root_login": "prohibit-password",
    # Give up on a half-open SSH login quickly; bound retries against guessing.
    "sshd_login_grace_time": 30,
    "sshd_max_auth_tries": 3,
    # Accounts sshd lets in (AllowUsers). None: the deploy user (ssh_user), the
    # admin user, and the accounts a role logs in as (postgres on postgres hosts,
    # pgbackrest_user on ops hosts: pgBackRest's SSH). A list: exactly those.
    "sshd_allow_users": None,
    # Added to either (the Vagrant machines: `vagrant`, which `vagrant ssh` uses).
    "sshd_allow_users_extra": [],
    # TCP forwarding: "local" (-L only, and PermitOpen keeps it to the host's own
    # loopback) because seawall's SSH tunnel reaches loopback-only PgBouncer and
    # HAProxy that way (drills, lab tests, the trade-store migration); "no" where
    # nothing needs it. Agent, X11, socket and tun forwarding are always off.
    "sshd_allow_tcp_forwarding": "local",
    # journald keeps logs on disk across reboots, within these bounds, so a
    # crash leaves its evidence but logs never fill the disk.
    "journald_system_max_use": "1G",
    "journald_system_keep_free": "2G",
    "journald_max_retention": "1month",
    "journald_rate_limit_burst": 10000,
    # ... per this interval (journald's own default, stated so the pair is read
    # together): a service may log 10000 lines in 30 s before journald drops
    # its lines; a burst of request logs fits, a logging loop does not.
    "journald_rate_limit_interval": "30s",
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
    # metrics_scrape_password is every role's: every host runs node_exporter,
    # which admits Prometheus with it (its bcrypt hash only), and the ops host logs in with it.
    "required_secrets": {
        "redis": ["redis_password", "metrics_scrape_password"],
        "sentinel": ["sentinel_password", "metrics_scrape_password"],
        "postgres": [
            "postgres_superuser_password",
            "postgres_replication_password",
            "postgres_rewind_password",
            # Patroni's REST API asks for it on every write (switchover, restart, config).
            "patroni_restapi_password",
            "metrics_scrape_password",
            # Plus one login per service role, postgres_role_<role>_password,
            # derived from the catalogue (see role_secrets below); the leader
            # gets their SCRAM verifiers, never the passwords.
        ],
        "etcd": ["metrics_scrape_password"],
        # The services reach Redis and the Sentinels (services_*_secret); PgBouncer
        # on every app host logs in to Postgres as each service role (derived too).
        "app": ["redis_password", "sentinel_password", "metrics_scrape_password"],
        "gateway": ["metrics_scrape_password"],
        # pgbackrest_cipher_pass encrypts the backup repository (repo1-cipher-pass):
        # only the repository host holds it; Postgres hosts get it from there over
        # pgBackRest's own protocol when they push WAL.
        # prometheus_api_password: the one login Prometheus's own API and UI take
        # (prometheus_api_user); the controller's tests and Grafana send it too.
        "ops": ["metrics_scrape_password", "pgbackrest_cipher_pass", "prometheus_api_password"],
    },
    # Path of the secrets file on the controller, or None to use the environment only.
    "secrets_file": None,
}

REDIS: dict[str, Any] = {
    # Port Redis listens on, on the host's private address and localhost.
    "redis_port": 6379,
    # Memory cap. Streams and trade state must never be silently evicted, so
    # the policy is noeviction: a full Redis refuses writes, loudly.
    "redis_maxmemory": "512mb",
    "redis_maxmemory_policy": "noeviction",
    # AOF with fsync every second: at most ~1 s of writes lost on a power cut
    # of the master; replication (WAIT 1 in the client) covers the rest.
    "redis_appendonly": True,
    "redis_appendfsync": "everysec",
    # An isolated master stops taking writes once no replica has acknowledged
    # for this many seconds, so a partitioned old master cannot keep accepting
    # writes that the failover will discard.
    "redis_min_replicas_to_write": 1,
    "redis_min_replicas_max_lag": 5,
    # A replica that needs a full resync gets it at once (the default waits 5 s
    # for more replicas to share one transfer). While no replica is in sync the
    # master refuses writes (min-replicas-to-write), so that wait is an outage.
    "redis_repl_diskless_sync_delay": 0,
    # Matches net.core.somaxconn (COMMON sysctl) so the kernel does not clip it.
    "redis_tcp_backlog": 511,
    # Open files for client connections.
    "redis_limit_nofile": 65536,
    # systemd restarts a crashed Redis after this delay: long enough that a
    # Sentinel failover (down-after + election, ~3 s) completes first, so the
    # old master returns as a replica instead of racing the new one.
    "redis_restart_sec": 5,
    # Whether a deploy may start a new cluster when no Sentinel names a master:
    # the first `redis` host as the master, the others as its replicas. Even on,
    # it does so only while every `redis` host answers and none holds Redis data
    # (seawall's marker, an AOF or an RDB), so a fresh host never becomes an
    # empty second master beside the data. Off: set it for the first deploy of a
    # new cluster (the lab's group data sets it, its clusters start empty).
    "redis_bootstrap": False,
}

SENTINEL: dict[str, Any] = {
    # Port Sentinel listens on.
    "sentinel_port": 26379,
    # The name the Sentinels monitor the master under; clients ask for it.
    "sentinel_master_name": "platform",
    # Sentinels that must agree the master is down before a failover: a
    # majority of 3, so one partitioned Sentinel can never start one alone.
    "sentinel_quorum": 2,
    # Fast failover without storms. Sentinel's default 30 s gives a ~31 s write
    # outage. Shorter values storm: a Sentinel declares the master it has just
    # promoted down before its new link has a PING reply, and fails over again
    # (bench/redis_failover.py, master-process-kill: 800 ms stormed in 2 of 10
    # runs, 1000 ms in 1 of 10, 1500 ms in none; docs/benchmarks.md). The cost:
    # the kill outage median rises from 2.3 s to 3.1 s, over the 3 s limit in 7 of 10.
    "sentinel_down_after_ms": 1500,
    "sentinel_failover_timeout_ms": 5000,
    # Longest client write outage (s) each Redis drill scenario may cause
    # before it counts as failed. A kill, crash or isolation costs down-after
    # + Sentinel's random start delay (up to 1 s) + election and promotion; a
    # master cut from its peers only also waits for min-replicas-max-lag to
    # stop it taking writes. Scenarios not named here have no outage limit
    # (a cut of every data host is an outage as long as the cut). 5 s, not 3:
    # at the storm-free 1500 ms down-after the outage is down-after + up to 1 s
    # to the next PING + Sentinel's random failover start (up to 1 s) +
    # promotion + the client's next probe (up to 0.25 s): measured in 5 runs
    # each, a kill took 2.91-3.11 s, a crash 2.94-3.13 s, an isolation
    # 3.80-4.00 s (docs/benchmarks.md). 3 s holds only with a down-after that storms.
    # flapping-partition: each of its three cuts is a peers partition. A
    # second fault during the failover (master host crashed, then a replica's
    # Redis killed) leaves one Redis with no replica, so WAIT 1 cannot be met
    # and events spool until a replica is back: the killed one restarts after
    # redis_restart_sec (5 s) still pointing at the dead master, and Sentinel
    # re-points a replica only at its next INFO of it (every 10 s), then a full
    # sync and the spool's replay; or the crashed master, healed after 8 s,
    # boots and resyncs. If the replica Sentinel picked was the killed one,
    # the failover itself waits 2 x failover-timeout (10 s). Measured: 12.5-20.0 s
    # (5 runs, docs/benchmarks.md).
    "sentinel_drill_outage_limits_s": {
        "master-process-kill": 5.0,
        "master-host-crash": 5.0,
        "master-isolated": 5.0,
        "master-partitioned-from-peers": 5.0,
        "flapping-partition": 5.0,
        "second-fault-during-failover": 25.0,
    },
    # Replicas resyncing with the new master at once: one, so the other keeps serving.
    "sentinel_parallel_syncs": 1,
}

ETCD: dict[str, Any] = {
    # etcd client and peer ports (Patroni talks to the client port), both
    # HTTPS with client certificates: whoever reaches 2379 without one can
    # neither read nor rewrite Patroni's configuration (a command Postgres runs).
    "etcd_client_port": 2379,
    "etcd_peer_port": 2380,
    # Plain HTTP, /metrics and /health only (ETCD_LISTEN_METRICS_URLS): what
    # Prometheus scrapes, `seawall status` and the rolling restart ask, and the
    # members' health gate uses; etcd's own registered metrics port. No key is
    # read or written there.
    "etcd_metrics_port": 2381,
    # Token of the initial cluster: members of another cluster with the same
    # addresses (an old lab) can never join this one by mistake.
    "etcd_cluster_token": "seawall-etcd",
    # Not Debian's /var/lib/etcd/default: a lone member that Debian's stock
    # configuration might have bootstrapped there is never mistaken for ours.
    "etcd_data_dir": "/var/lib/etcd/seawall",
    # Raft timing in ms (half etcd's defaults; the members share a LAN). A new
    # etcd leader extends every lease by the election timeout plus its TTL, so
    # when the Postgres leader's host was also etcd's leader, its Patroni lock
    # outlives it by that much more: a short election keeps a crash or a
    # partition near Patroni's ttl. Still well inside Patroni's retry_timeout.
    "etcd_heartbeat_interval": 50,
    "etcd_election_timeout": 500,
    # The etcd CA, on the ops host (the first of the group), root-only: its own,
    # not the journal's, so a journal certificate never opens etcd.
    "etcd_ca_dir": "/etc/seawall/etcd-ca",
    # Each etcd member's and Patroni host's key (made there, never copied),
    # request, certificate and the CA's certificate. The key is root:
    # etcd_tls_group 0640; etcd (user etcd) and Patroni (user postgres) read it
    # through SupplementaryGroups= in their unit drop-ins.
    "etcd_tls_dir": "/etc/seawall/etcd-tls",
    "etcd_tls_group": "seawall-etcd-tls",
    # The CA outlives every certificate it signs many times over; replacing it
    # means every member and client trusting a new one at once.
    "etcd_ca_days": 3650,
    # Certificates live this many days; a deploy renews one with fewer than
    # etcd_tls_renew_days left (a deploy at least monthly never lets one expire).
    "etcd_tls_days": 397,
    "etcd_tls_renew_days": 30,
}

POSTGRES: dict[str, Any] = {
    # PostgreSQL and Patroni REST API ports.
    "postgres_port": 5432,
    "patroni_rest_port": 8008,
    # Debian's major version and cluster name: Patroni's config is
    # /etc/patroni/<version>-<cluster>.yml, its unit patroni@<version>-<cluster>.
    "postgres_version": 15,
    "postgres_cluster": "main",
    # TLS for every network connection to Postgres (components/postgres.py).
    # The Postgres CA lives on the ops host in its own directory, apart from
    # the journal's: every host holds a journal certificate, and PgBouncer can
    # check only the CA (verify-ca, through HAProxy), so a CA that signs
    # anything but Postgres members would let any host pass for one. Members
    # keep their key (root:postgres 0640), certificate and the CA's in
    # postgres_tls_dir; app hosts keep the CA's certificate there.
    "postgres_tls_dir": "/etc/seawall/postgres-tls",
    "postgres_ca_dir": "/etc/seawall/postgres-ca",
    # The CA outlives every certificate it signs many times over: replacing it
    # means every member and app host trusting a new one (the deploy never does).
    "postgres_ca_days": 3650,
    # A member's certificate lives 397 days; a deploy renews one with fewer
    # than postgres_tls_renew_days left (so a deploy at least monthly never
    # lets one expire), and Postgres takes it with a reload, never a restart.
    "postgres_tls_days": 397,
    "postgres_tls_renew_days": 30,
    # postgres_service_roles, postgres_databases and postgres_database_readers
    # are added below SERVICES: they are derived from the service catalogue
    # (postgres_logins), never stated. Read them with seawall.settings.setting.
}

PATRONI: dict[str, Any] = {
    # Cluster name in etcd (keys under /service/<scope>/).
    "patroni_scope": "seawall",
    # Leader lock timing (s). A host crash fails over when the lock expires:
    # ttl + at most loop_wait. 20 is the smallest ttl Patroni accepts. Safe
    # because Patroni requires loop_wait + 2 * retry_timeout <= ttl (2 + 10 <= 20):
    # a leader that cannot renew the lock for retry_timeout demotes itself
    # ~8 s before the lock can expire, so two leaders never take writes at once;
    # and with synchronous_mode nothing commits without the standby that will
    # be promoted. loop_wait 2 (not 1) keeps etcd and the REST API lightly loaded.
    "patroni_ttl": 20,
    "patroni_loop_wait": 2,
    "patroni_retry_timeout": 5,
    # A commit returns only once the synchronous standby has it: no committed
    # transaction is lost on failover. Trade-off: commits wait one network round
    # trip, and while the standby is gone the leader runs alone (Patroni drops
    # the standby). Set patroni_synchronous_mode_strict to refuse commits then
    # instead (no loss ever, but no writes with one Postgres host down).
    "patroni_synchronous_mode": True,
    "patroni_synchronous_mode_strict": False,
    # A replica further behind than this (bytes) is never promoted.
    "patroni_maximum_lag_on_failover": 1048576,
    # PostgreSQL settings Patroni applies to every member (through its dynamic
    # configuration, changed by the deploy with `patronictl edit-config`).
    "postgres_parameters": {
        "max_connections": 200,
        "password_encryption": "scram-sha-256",
        # pg_rewind needs it (data checksums are off by default): an old leader
        # rejoins by itself after a failover.
        "wal_log_hints": "on",
        "wal_keep_size": "512MB",
        # A vanished synchronous standby stalls commits until its walsender
        # times out: 5 s, not 60 s (keepalives go at half of it).
        "wal_sender_timeout": "5s",
        "hot_standby": "on",
        "log_min_duration_statement": 1000,
    },
    # `seawall drill postgres` writes numbered rows as this role into this
    # database, through an app host's PgBouncer (the services' own path).
    "postgres_drill_role": "probe",
    "postgres_drill_database": "probe",
    # Longest write outage (s) each drill scenario may cause before it counts
    # as failed: the module B targets. A crash or partition cannot beat the
    # leader lock's ttl (20 s) plus a loop; a replica loss stalls commits
    # until wal_sender_timeout and a Patroni loop drop the synchronous standby.
    "postgres_drill_outage_limits": {
        "switchover": 3,
        "leader-process-kill": 5,
        "leader-host-crash": 25,
        "leader-partitioned": 25,
        "replica-down": 10,
        "etcd-member-down": 3,
    },
}

PGBOUNCER: dict[str, Any] = {
    # PgBouncer on every app host, on localhost only: services connect here.
    "pgbouncer_port": 6432,
    # Transaction pooling: a server connection is held only for a transaction.
    # Clients must not use session state or server-side prepared statements:
    # psycopg 3 needs prepare_threshold=None (PgBouncer 1.18 has no prepared
    # statement support in this mode).
    "pgbouncer_pool_mode": "transaction",
    "pgbouncer_default_pool_size": 20,
    "pgbouncer_max_client_conn": 500,
    # After a failed login (no leader yet) retry in 0.1 s, not 15: the write
    # outage of a failover is not stretched by the pooler (the login goes to
    # the local HAProxy, so retrying often costs nothing).
    "pgbouncer_server_login_retry": 0.1,
    "pgbouncer_server_connect_timeout": 3,
}

HAPROXY: dict[str, Any] = {
    # Local HAProxy ports on app hosts: read-write to the Patroni leader, and
    # read-only to a replica (the leader if no replica is up). Localhost only.
    "haproxy_rw_port": 5000,
    "haproxy_ro_port": 5001,
    # Health checks against Patroni's REST API (/primary, /replica), in ms: a
    # member that stops leading is marked down within inter + fastinter
    # (0.6 s), a new leader up within downinter; two failures in a row, not
    # one, so a single slow answer never cuts the leader's sessions.
    "haproxy_check_inter": 500,
    "haproxy_check_fastinter": 100,
    "haproxy_check_downinter": 100,
    "haproxy_check_fall": 2,
    "haproxy_check_rise": 1,
    # Connection attempts to a member that refuses (a leader shutting down for
    # a switchover, before its check fails): none. HAProxy waits 1 s before each
    # retry; PgBouncer already retries a failed server login every
    # pgbouncer_server_login_retry, by then against the new leader.
    "haproxy_retries": 0,
}

# The platform's services, as DESIGN.md lists them. Each runs on every app host
# as unit `<services_unit_prefix><name>`; the gateway routes `route` to it.
# - port: stated here once; the unit, /health checks and the gateway read it.
# - needs: critical dependencies (DOWN makes the service DOWN): "redis",
#   "postgres", "exchange" or another service's name.
# - optional: dependencies whose loss only DEGRADES the service.
# - postgres_role: the service's Postgres login role; it connects through the
#   local PgBouncer to the database that role owns. The roles, the databases'
#   owners and the role secrets are all derived from these fields
#   (postgres_logins, role_secrets), so adding a service is this one entry.
# - postgres_database (optional): the database its role owns, if not named
#   after the role (execution owns the trade store, `trading`).
# - postgres_reads (optional): other databases its role may connect to.
# - route: the gateway path; ending in "/" it is a prefix stripped before
#   proxying, otherwise one exact path proxied to `upstream_path`.
# - command / environment (optional): how to run a real service; without them
#   the reference service runs (the lab deploys it under every name).
# - timeout_stop_sec (optional): this service's drain time, where its gateway
#   read timeout is longer than services_timeout_stop_sec.
# Postgres access beyond a database named after the role (postgres_database, postgres_reads).
_POSTGRES_ACCESS: dict[str, dict[str, Any]] = {
    "backend": {"postgres_reads": ["trading"]},
    "execution": {"postgres_database": "trading"},
    "risk-safety": {"postgres_reads": ["trading"]},
    "portfolio-intelligence": {"postgres_reads": ["trading"]},
    "rl-training": {"postgres_reads": ["trading"]},
}

_PLATFORM = [
    ("backend", 8000, "/", ["redis", "postgres"], "backend"),
    ("ai-engine", 8001, "/api/ai/", ["redis", "risk-safety"], None),
    (
        "execution",
        8002,
        "/api/execution/",
        ["redis", "postgres", "risk-safety", "exchange"],
        "execution",
    ),
    ("risk-safety", 8003, "/api/risk/", ["redis", "postgres"], "risk"),
    ("portfolio-intelligence", 8004, "/api/portfolio/", ["redis", "postgres"], "portfolio"),
    ("rl-training", 8005, "/api/rl/", ["redis", "postgres"], "rl"),
    ("marketdata", 8006, "/api/marketdata/", ["redis", "exchange"], None),
]

# Drain time of the services whose gateway read timeout (GATEWAY
# gateway_route_timeouts) is above services_timeout_stop_sec: their slowest
# request still finishes after SIGTERM. Validation holds the two together.
_STOP_TIMEOUTS = {"ai-engine": 65, "rl-training": 125}

SERVICES: dict[str, Any] = {
    "services": [
        {"name": name, "port": port, "route": route, "needs": needs, "postgres_role": role}
        | _POSTGRES_ACCESS.get(name, {})
        | ({"timeout_stop_sec": _STOP_TIMEOUTS[name]} if name in _STOP_TIMEOUTS else {})
        for name, port, route, needs, role in _PLATFORM
    ]
    + [
        # monitoring-health checks every other service: one of them down only degrades it.
        {
            "name": "monitoring-health",
            "port": 8080,
            "route": "/api/health",
            "upstream_path": "/health",
            "needs": ["redis"],
            "optional": [name for name, *_ in _PLATFORM],
        }
    ],
    # Unit and system user name prefix: `quantum-execution.service` runs as `quantum-execution`.
    "services_unit_prefix": "quantum-",
    # The path every service answers the /health contract on.
    "services_health_path": "/health",
    # Where the deploy puts the runtime library and the reference service (PYTHONPATH).
    "services_code_dir": "/opt/seawall/python",
    # Non-secret settings (JSON, world-readable) and secrets (0600, root-only dir).
    "services_config_dir": "/etc/seawall/services",
    "services_secrets_dir": "/etc/seawall/secrets",
    # Debian packages the reference service runs on (no pip on hosts).
    "services_packages": [
        "python3-fastapi",
        "python3-uvicorn",
        "python3-uvloop",
        "python3-redis",
        "python3-psycopg",
        "python3-systemd",
        "curl",
    ],
    # Restart a crashed service after 1 s, but give up (and alert through
    # OnFailure=) after 5 failed starts in 60 s: a crash loop is not healing.
    "services_restart_sec": 1,
    "services_start_limit_burst": 5,
    "services_start_limit_interval_sec": 60,
    # SIGTERM, then this long to drain in-flight requests before SIGKILL; above
    # the gateway's read timeout (10 s) so a drained request is never cut. A
    # service with a longer route timeout sets its own timeout_stop_sec.
    "services_timeout_stop_sec": 30,
    # Resource limits per service: a leak or fork bomb hits its own unit only.
    "services_memory_max": "512M",
    "services_tasks_max": 256,
    "services_limit_nofile": 65536,
    # Hang detection: /health is asked every interval; a service that gives no
    # answer at all (any HTTP status counts as an answer: DOWN because Redis is
    # away is not a hang) this many times in a row is killed and restarted.
    # 3 x 3 s + timeout keeps a hang under the 30 s target.
    "services_healthcheck_interval_sec": 3,
    "services_healthcheck_timeout_sec": 4,
    "services_healthcheck_failures": 3,
    # Every failure (crash, kill, hang) is appended here as a JSON line and
    # logged to the journal under SYSLOG_IDENTIFIER=seawall-unit-failed.
    "services_failure_log": "/var/log/seawall/unit-failures.jsonl",
    # node_exporter's textfile directory: failures become
    # seawall_unit_failures_total{unit=...} when it exists.
    "services_textfile_dir": "/var/lib/prometheus/node-exporter",
    # Services reach Redis with these secrets (requirepass / Sentinel's requirepass).
    "services_redis_password_secret": "redis_password",
    "services_sentinel_password_secret": "sentinel_password",
    # The exchange API's health URL; None (the lab) leaves "exchange" unchecked.
    "services_exchange_health_url": None,
    # XADD MAXLEN for stream events (DESIGN.md).
    "services_stream_maxlen": 10000,
}

GATEWAY: dict[str, Any] = {
    # Listening ports of the gateway; plain HTTP only redirects to HTTPS.
    "gateway_http_port": 80,
    "gateway_https_port": 443,
    # Plain-HTTP listener on the gateway's private address with the same routes
    # and limits, for callers inside the private network (ops probes, drills,
    # benchmarks); TLS is for the edge. None: no such listener.
    "gateway_internal_http_port": 8088,
    # stub_status for the nginx exporter, on 127.0.0.1 only.
    "gateway_status_port": 8081,
    # Certificate and key on the gateway host. None (the lab) makes the deploy
    # generate a self-signed pair on the host; production sets real paths.
    "gateway_tls_certificate": None,
    "gateway_tls_certificate_key": None,
    "gateway_tls_protocols": "TLSv1.2 TLSv1.3",
    # TLS 1.2 suites: Mozilla's "intermediate" profile (guidelines 5.7), forward
    # secret AEAD only (no RSA key exchange, no CBC/SHA-1). TLS 1.3 suites are
    # OpenSSL's, all fine. The DHE ones are unused (no ssl_dhparam): ECDHE serves.
    "gateway_tls_ciphers": (
        "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
        "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
        "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
        "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
    ),
    # Key exchange groups, in Mozilla intermediate's order.
    "gateway_tls_ecdh_curves": "X25519:prime256v1:secp384r1",
    # The name plain HTTP redirects to (https://<name>/...), never the client's
    # Host header (an open redirect and a cache-poisoning vector). None: the
    # gateway host's inventory name; production sets its public DNS name.
    "gateway_server_name": None,
    # Addresses of the hosts behind every route; None: the app group's private
    # addresses (the normal case). Set to put something else in between, or (the
    # gateway benchmark) a static stand-in backend.
    "gateway_upstream_addresses": None,
    # Rate-limit zones per client address: requests per second and burst
    # (served at once, beyond them 429). Every route is in `general`.
    "gateway_rate_zones": {
        "general": {"rate": 100, "burst": 200},
        "execution": {"rate": 20, "burst": 40},
        "trading": {"rate": 10, "burst": 20},
    },
    # Extra zones per service route, and public path prefixes that place orders.
    "gateway_route_zones": {"execution": ["execution"]},
    "gateway_trading_paths": ["/api/execution/orders"],
    # Paths on every service that place or change orders (the reference
    # service's POST /orders, and /orders/...): each prefix route's
    # <route>orders is in `trading` too, so no service's orders escape it.
    "gateway_order_paths": ["/orders"],
    # Paths on every service that the public listener (80/443) answers 404:
    # per-service health (internal addresses, versions), the API schema, and the
    # reference service's drill knob. Prefixes, so /health/ and /health/x go too.
    # The internal listener (private, firewalled to ops and admins) keeps them.
    "gateway_private_paths": ["/health", "/openapi.json", "/docs", "/redoc", "/slow"],
    # Exact routes the public listener sends to another path of their service:
    # /api/health answers monitoring-health's status only there (no versions,
    # dependency names or errors); the internal listener keeps the full report.
    "gateway_public_upstream_paths": {"/api/health": "/health/public"},
    # Concurrent connections per client address.
    "gateway_limit_conn": 100,
    # Client addresses (CIDR) not rate limited: internal monitoring, say. Empty by default.
    "gateway_rate_limit_exempt": [],
    # Upstream timeouts, with per-service overrides (model training answers slowly,
    # market data must answer fast or not at all). The read timeout is also how
    # long a request waits on an app host that died under it (no RST comes from a
    # crashed host) before an idempotent one is retried on the other host.
    "gateway_timeouts": {"connect": "2s", "send": "10s", "read": "10s"},
    "gateway_route_timeouts": {
        "marketdata": {"read": "5s"},
        "ai-engine": {"read": "60s"},
        "rl-training": {"read": "120s"},
    },
    # NGINX worker processes: "auto" is one per core.
    "gateway_worker_processes": "auto",
    # Connections per NGINX worker, and its open-file limit (two per proxied connection).
    "gateway_worker_connections": 4096,
    "gateway_worker_rlimit_nofile": 16384,
    # Requests above this size are refused with 413.
    "gateway_client_max_body_size": "1m",
    # Passive health of each app host: after max_fails errors within
    # fail_timeout it gets no traffic for fail_timeout.
    "gateway_max_fails": 2,
    "gateway_fail_timeout": "5s",
    # Total time an idempotent request may spend trying app hosts (tries: 2).
    "gateway_next_upstream_timeout": "30s",
    # Idle connections kept open to each upstream (per worker).
    "gateway_upstream_keepalive": 32,
    # A .log name so Debian's logrotate rule for /var/log/nginx/*.log rotates it.
    "gateway_access_log": "/var/log/nginx/access-json.log",
    # The same JSON access line also goes to the journal (through /dev/log) with
    # this SYSLOG_IDENTIFIER, so the central journal holds a request's gateway
    # line beside its services' lines. NGINX takes letters, digits and _ only.
    # "" (None means the default): the file only.
    "gateway_journal_tag": "nginx_access",
    # journald's per-unit rate limit for NGINX (a unit drop-in): one journal
    # line per request would pass the site-wide journald_rate_limit_burst at
    # 333 requests/s and journald would drop the rest. Sized for 10000 req/s;
    # journald_system_max_use still bounds the disk.
    "gateway_journal_rate_limit_burst": 300000,
    "gateway_journal_rate_limit_interval": "30s",
    # Access lines per journal entry, at most, and how long the first line of a
    # batch may wait for the rest (seconds): journald and journal-upload spend
    # ~50 µs per entry whatever its size (bench/gateway.py), NGINX ~50 µs per
    # proxied request. Under load a batch fills long before the wait; the wait
    # bounds how late a quiet gateway's line is: NGINX's own buffer already
    # holds it up to 1 s (flush=1s), and `seawall logs` must find a request
    # within 5 s (bench/logs.py).
    "gateway_journal_batch_lines": 200,
    "gateway_journal_batch_bytes": 49152,
    "gateway_journal_batch_wait": 0.25,
    # HSTS lifetime in seconds (one year).
    "gateway_hsts_max_age": 31536000,
    # App hosts (names) the gateway sends no new request to (`down` in every
    # upstream): the rolling restart drains a host this way, through
    # `--data`, for one deploy of the gateway. Empty: a normal deploy serves
    # from every app host, so a host left drained shows as drift.
    "gateway_drained_hosts": [],
}

METRICS: dict[str, Any] = {
    # Exporter ports, each on its host's private address only: the upstream
    # projects' registered defaults (and Debian's), so runbooks and habits carry over.
    # node_exporter runs on every host.
    "node_exporter_port": 9100,
    # redis_exporter on each redis host (its local Redis).
    "redis_exporter_port": 9121,
    # postgres_exporter on each postgres host (its local Postgres, over the socket).
    "postgres_exporter_port": 9187,
    # The NGINX exporter (stub_status) and mtail (the JSON access log) on each gateway host.
    "nginx_exporter_port": 9113,
    "mtail_port": 3903,
    # The blackbox exporter (the /health probes) and Prometheus on the ops host.
    "blackbox_exporter_port": 9115,
    "prometheus_port": 9090,
    # File system types node_exporter leaves out (a regex); None keeps its own
    # default, which leaves out overlay: right on real hosts, but a host whose
    # root is an overlay (the lab's containers) would then report no disk at all.
    "node_exporter_fs_types_exclude": None,
    # How often Prometheus scrapes every target and evaluates the alert rules.
    # 15 s: an alert's `for: 1m` sees four samples, a dead target shows within
    # half a minute, and seven hosts' series cost the ops host little.
    "prometheus_scrape_interval": "15s",
    "prometheus_evaluation_interval": "15s",
    # A scrape that takes longer fails (the target reads down); below the interval,
    # as Prometheus requires.
    "prometheus_scrape_timeout": "10s",
    # How long samples are kept: Prometheus's own default, two weeks to look
    # back on an incident, on a small ops disk beside the backups.
    "prometheus_retention_time": "15d",
    # One /health probe fails after this long: a service answers DEGRADED when a
    # dependency is slow (500 ms at most), so 5 s means hung. Below the scrape timeout.
    "blackbox_probe_timeout": "5s",
    # Paths the blackbox exporter probes on each gateway host, through its
    # internal plain-HTTP listener (gateway_internal_http_port; none when that is
    # None): monitoring-health's view of every service, the way clients reach it.
    "metrics_gateway_probe_paths": ["/api/health"],
    # The one basic-auth user the exporters that take a web config (node, postgres,
    # blackbox) admit; Prometheus logs in as it with the metrics_scrape_password
    # secret. Named after the scraper, so an exporter's log says who asked.
    "metrics_scrape_user": "prometheus",
    # The one basic-auth user Prometheus's own API, UI and /metrics admit (its
    # --web.config.file), with the prometheus_api_password secret: whoever
    # reaches the port could otherwise read every metric and the alert rules.
    # Its self-scrape, the lab tests and Grafana log in as it.
    "prometheus_api_user": "seawall",
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


PGBACKREST: dict[str, Any] = {
    # pgBackRest's name for the cluster (one stanza per Patroni cluster).
    "pgbackrest_stanza": "seawall",
    # The repository on the ops host, owned by this system user. Postgres hosts
    # push WAL to it and the ops host pulls backups, both over SSH with keys
    # only these two accounts hold.
    "pgbackrest_user": "pgbackrest",
    "pgbackrest_repo_path": "/var/lib/pgbackrest",
    # The repository proper, encrypted (AES-256, the one cipher pgBackRest has)
    # with the pgbackrest_cipher_pass secret. A repository cannot be encrypted in
    # place: one made unencrypted at pgbackrest_repo_path is retired only once
    # this one holds a full backup (components/pgbackrest.py says how).
    "pgbackrest_cipher_type": "aes-256-cbc",
    "pgbackrest_cipher_repo_path": "/var/lib/pgbackrest/aes-256-cbc",
    # Full backups are kept this many days (older ones and their WAL expire).
    "pgbackrest_retention_days": 7,
    # When the nightly full backup runs (systemd OnCalendar, UTC): before the
    # 04:00 rolling restart, in the quietest hours.
    "pgbackrest_full_backup_calendar": "*-*-* 01:00:00 UTC",
    # Compression (zstd: small and fast) and parallel processes for backups.
    "pgbackrest_compress_type": "zst",
    "pgbackrest_process_max": 2,
    # Force a WAL segment switch at least this often (s), so the archive, and
    # any restore from it, is never more than this far behind.
    "pgbackrest_archive_timeout": 60,
    # `seawall drill pg-restore` restores into this scratch directory on the
    # ops host and starts Postgres there on this port (socket only).
    "pgbackrest_restore_drill_path": "/var/lib/pgbackrest/restore-drill",
    "pgbackrest_restore_drill_port": 5499,
    # The restore drill fails if backup + restore + recovery take longer (s).
    "pgbackrest_restore_drill_limit_s": 300,
}


LOGGING: dict[str, Any] = {
    # systemd-journal-remote's HTTPS port on the ops host (Debian's socket unit's
    # own port): every host's systemd-journal-upload sends its journal there.
    "journal_remote_port": 19532,
    # The central journal (journal-remote writes one file per sending host) is
    # vacuumed to this size: systemd 252's journal-remote has no size limit of
    # its own. 8G is the ops disk's share for logs, beside the backups (each
    # host's own journal keeps 1G, journald_system_max_use). Active files (one
    # per host, rotated by journal-remote at its file size limit) come on top.
    "journal_remote_max_use": "8G",
    # ... and archived files older than this go, whatever the size: the same
    # month each host's own journal keeps (journald_max_retention).
    "journal_remote_max_retention": "1month",
    # How often the vacuum runs (systemd OnCalendar): hourly bounds the
    # overshoot to one hour of logs.
    "journal_remote_vacuum_calendar": "hourly",
    # Certificates from the ops host's CA live this many days; a deploy renews
    # one with fewer than journal_tls_renew_days left (so a deploy at least
    # monthly never lets one expire).
    "journal_tls_days": 397,
    "journal_tls_renew_days": 30,
}


RESTART: dict[str, Any] = {
    # One flock on the machine running seawall (the ops host), held by
    # `seawall restart --rolling` for its whole run and by `seawall drift`:
    # a dry run during a restart would report the drained host as drift.
    # /run/lock is a tmpfs: a lock never outlives a reboot.
    "restart_lock_file": "/run/lock/seawall-operations.lock",
    # The health gate after an app host's units restart: every unit active
    # and every /health 200 within this many seconds (the health contract).
    "restart_gate_timeout_sec": 60,
    # How long old NGINX workers may finish the drained host's requests after
    # the reload: above the longest route read timeout (rl-training, 120 s).
    "restart_drain_timeout_sec": 150,
    # The bound of each data-tier gate (a Redis replica back in sync, a
    # Sentinel seeing the master, etcd healthy, a Patroni member streaming,
    # a switchover done): a restart plus a full resync on the lab's sizes.
    "restart_data_timeout_sec": 120,
}

OPS: dict[str, Any] = {
    # The ops host runs seawall itself (drift cron, restart timer): a venv of
    # the wheelhouse the controller builds (pyinfra is not in Debian 12, and lab
    # hosts reach no package index), the wheels it was built from, and copies of
    # deploys/ and the inventory in use, which the cron and the timer run.
    "ops_venv_dir": "/opt/seawall/venv",
    "ops_wheelhouse_dir": "/opt/seawall/wheelhouse",
    "ops_site_dir": "/opt/seawall/site",
    # Where the drift cron keeps its last JSON report (root-only: it names hosts
    # and operations, nothing secret, but nobody else needs it).
    "ops_state_dir": "/var/lib/seawall/ops",
    # On the controller: the wheelhouse cache, keyed by the hash of the source,
    # so a no-op redeploy builds nothing.
    "ops_wheelhouse_cache_dir": "/var/lib/seawall/wheelhouse",
    # The drift check's schedule (cron: minute hour day-of-month month
    # day-of-week, UTC). Every 15 min, at minutes off the quarter hours: never
    # at 04:00, when the rolling restart starts (the operations lock would make
    # that run report an error, not drift), nor at 01:00 with the backup.
    "drift_cron": "7,22,37,52 * * * *",
    # When the rolling restart runs (systemd OnCalendar): 04:00 UTC, the quiet
    # hour the desk is told about.
    "restart_calendar": "*-*-* 04:00:00 UTC",
    # One timer on one host has nothing to spread, and the desk is told 04:00:
    # no random delay.
    "restart_randomized_delay_sec": 0,
    # False: the timer is stopped and disabled (the restart still runs by hand).
    "restart_enabled": True,
    # A rolling restart that has not ended by then is killed (and fails, loudly):
    # every gate is bounded (60-150 s), so the lab's run takes minutes and a
    # large site well under this; a hung run must never reach trading hours.
    "restart_timeout_sec": 3600,
}


# The roles (inventory groups) whose hosts serve each firewall rule's port: a
# rule is opened only on those hosts (None: every host). Not a setting: it says
# what the deploys run where. Keys: every `*_port` key (PORT_KEYS) plus
# - ssh: sshd (port SSH_PORT) on every host;
# - pgbackrest_ssh: sshd on the ops host, as the pgBackRest repository;
# - services: every port of the `services` catalogue, on the app hosts.
FIREWALL_SERVED_BY: dict[str, tuple[str, ...] | None] = {
    "ssh": None,
    "pgbackrest_ssh": ("ops",),
    "services": ("app",),
    "redis_port": ("redis",),
    "sentinel_port": ("sentinel",),
    "etcd_client_port": ("etcd",),
    "etcd_peer_port": ("etcd",),
    "etcd_metrics_port": ("etcd",),
    "postgres_port": ("postgres",),
    "patroni_rest_port": ("postgres",),
    "pgbouncer_port": ("app",),
    "haproxy_rw_port": ("app",),
    "haproxy_ro_port": ("app",),
    "gateway_http_port": ("gateway",),
    "gateway_https_port": ("gateway",),
    "gateway_internal_http_port": ("gateway",),
    "gateway_status_port": ("gateway",),
    "node_exporter_port": None,
    "redis_exporter_port": ("redis",),
    "postgres_exporter_port": ("postgres",),
    "nginx_exporter_port": ("gateway",),
    "mtail_port": ("gateway",),
    "blackbox_exporter_port": ("ops",),
    "prometheus_port": ("ops",),
    "journal_remote_port": ("ops",),
    "pgbackrest_restore_drill_port": ("ops",),
}

# sshd's port: Debian's, which the common deploy keeps (it sets no Port=).
SSH_PORT = 22

# Sources a firewall rule may name besides the roles: "admin" is
# firewall_admin_sources, "any" every address (the public edge).
FIREWALL_SOURCES: tuple[str, ...] = ("admin", "any")

FIREWALL: dict[str, Any] = {
    # Who may open a connection to each port: source roles (their hosts'
    # private addresses), "admin" or "any". Every key of FIREWALL_SERVED_BY
    # needs a rule, [] for a port that listens on loopback only (loopback is
    # always accepted). Validation refuses a missing rule, an unknown key or role.
    "firewall_rules": {
        # Admins deploy and run seawall's checks; the ops host runs the drift
        # cron, the rolling restart and pulls backups, all over SSH.
        "ssh": ["ops", "admin"],
        # archive_command on the Postgres hosts pushes WAL into the repository.
        "pgbackrest_ssh": ["postgres"],
        # The gateway routes to them; the ops host's blackbox exporter probes
        # each /health; admins' benchmarks call one directly. App hosts call
        # their siblings on their own address (loopback), never another host's.
        "services": ["gateway", "ops", "admin"],
        # Replicas sync from the master, Sentinels watch every Redis, services
        # use it; admins' status and drills, and the ops host's rolling restart
        # (its preflight status and replication gates), read each Redis's role.
        "redis_port": ["redis", "sentinel", "app", "ops", "admin"],
        # Sentinels talk to each other; the redis deploy asks every Sentinel
        # for the master; services find the master; admins' drills and status,
        # and the ops host's rolling restart (its switchover and Sentinel gates).
        "sentinel_port": ["sentinel", "redis", "app", "ops", "admin"],
        # HTTPS with a client certificate from the etcd CA: Patroni keeps its
        # lock there, members change the membership through each other (etcd deploy).
        "etcd_client_port": ["etcd", "postgres"],
        # Raft between members only (HTTPS, a member certificate both ways).
        "etcd_peer_port": ["etcd"],
        # Plain /metrics and /health: Prometheus and the rolling restart (ops),
        # `seawall status` (admin), and the members' health gate before a
        # restart (etcd deploy: a rebuilt member has no certificate yet).
        "etcd_metrics_port": ["etcd", "ops", "admin"],
        # Streaming replication and pg_rewind from the other member; HAProxy on
        # the app hosts carries PgBouncer's logins. Backups go over SSH.
        "postgres_port": ["postgres", "app"],
        # Members ask each other before promoting; HAProxy checks /primary and
        # /replica; Prometheus scrapes /metrics; admins' status, switchovers, drills.
        "patroni_rest_port": ["postgres", "app", "ops", "admin"],
        # Loopback only: the services' pooler and router on each app host.
        "pgbouncer_port": [],
        "haproxy_rw_port": [],
        "haproxy_ro_port": [],
        # The public edge.
        "gateway_http_port": ["any"],
        "gateway_https_port": ["any"],
        # Plain HTTP inside: the blackbox probes, admins' drills, verify and benchmarks.
        "gateway_internal_http_port": ["ops", "admin"],
        # stub_status listens on 127.0.0.1 only.
        "gateway_status_port": [],
        # Exporters: scraped by Prometheus on the ops host, nobody else.
        "node_exporter_port": ["ops"],
        "redis_exporter_port": ["ops"],
        "postgres_exporter_port": ["ops"],
        "nginx_exporter_port": ["ops"],
        "mtail_port": ["ops"],
        "blackbox_exporter_port": ["ops"],
        # Admins query Prometheus (dashboards, the lab's tests).
        "prometheus_port": ["ops", "admin"],
        # Every host ships its journal to the ops host.
        "journal_remote_port": ["redis", "sentinel", "etcd", "postgres", "app", "gateway", "ops"],
        # The restore drill's Postgres listens on its socket only.
        "pgbackrest_restore_drill_port": [],
    },
    # Addresses or networks (CIDR) the admins deploy and run seawall from: the
    # "admin" source. Empty by default: only the ops host reaches SSH. The lab
    # sets its bridge address (the controller).
    "firewall_admin_sources": [],
    # A changed ruleset is loaded with a rollback to the previous one due this
    # many seconds later, cancelled once a new SSH connection from the deploy
    # still reaches the host: a ruleset that locks the deploy out undoes
    # itself. Long enough for the two operations that cancel it on every host.
    "firewall_rollback_seconds": 90,
}


def role_secret(role: str) -> str:
    """Return the secret name holding Postgres role ``role``'s password."""
    return f"postgres_role_{role}_password"


def postgres_logins(
    services: list[dict[str, Any]], drill_role: str, drill_database: str
) -> dict[str, Any]:
    """Return the Postgres roles, databases (with their owners) and readers a catalogue implies.

    Each service's ``postgres_role`` is a login role owning ``postgres_database``
    (else a database named after the role) and reaching ``postgres_reads`` too;
    the drill role owns the drill database. Roles keep the catalogue's order.
    """
    roles: list[str] = []
    databases: dict[str, str] = {}
    readers: dict[str, list[str]] = {}
    for service in services:
        role = service.get("postgres_role")
        if role is None:
            continue
        if role not in roles:
            roles.append(role)
        databases.setdefault(service.get("postgres_database") or role, role)
        for database in service.get("postgres_reads") or []:
            readers.setdefault(database, []).append(role)
    if drill_role not in roles:
        roles.append(drill_role)
    databases.setdefault(drill_database, drill_role)
    return {
        "postgres_service_roles": roles,
        "postgres_databases": databases,
        "postgres_database_readers": readers,
    }


# The groups whose hosts log in as every service role: Patroni's leader sets
# their passwords, PgBouncer on each app host logs in with them.
ROLE_SECRET_GROUPS: tuple[str, ...] = ("postgres", "app")


def role_secrets(required: dict[str, list[str]], roles: list[str]) -> dict[str, list[str]]:
    """Return ``required`` (SECRETS required_secrets) plus each role's secret where needed."""
    out = {group: list(names) for group, names in required.items()}
    for group in ROLE_SECRET_GROUPS:
        names = out.setdefault(group, [])
        names += [role_secret(role) for role in roles if role_secret(role) not in names]
    return out


# Derived from the catalogue above, for pyinfra's data_defaults: a deploy that
# reads them as host data sees what seawall.settings.setting derives.
POSTGRES.update(
    postgres_logins(
        SERVICES["services"], PATRONI["postgres_drill_role"], PATRONI["postgres_drill_database"]
    )
)


def all_defaults() -> dict[str, Any]:
    """Return every default in one flat dict (keys are unique across concerns)."""
    merged: dict[str, Any] = {}
    for concern in (
        COMMON,
        SECRETS,
        REDIS,
        SENTINEL,
        ETCD,
        POSTGRES,
        PATRONI,
        PGBOUNCER,
        HAPROXY,
        PGBACKREST,
        SERVICES,
        GATEWAY,
        METRICS,
        LAB,
        LOGGING,
        RESTART,
        OPS,
        FIREWALL,
    ):
        merged.update(concern)
    return merged


# Every key naming a TCP port: validation checks no two on one host collide.
PORT_KEYS: tuple[str, ...] = tuple(
    key for key in sorted(all_defaults()) if key.endswith("_port") and not key.startswith("lab_")
)

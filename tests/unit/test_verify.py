"""seawall.verify's judgement of what hosts and services answer (no host needed)."""

import json
import subprocess
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# pyinfra's CLI package monkey-patches threads (gevent) on import: do it before any
# test server thread exists, as the real `seawall verify` does.
import pyinfra_cli.inventory  # noqa: F401
import pytest

from seawall import defaults
from seawall.errors import SeawallError
from seawall.health_report import UNREACHABLE, HealthSummary, ServiceHealth
from seawall.inventory import Topology
from seawall.postgres.status import EtcdMember, Member, PostgresStatus
from seawall.redis.topology import NodeState, RedisStatus, SentinelView
from seawall.settings import setting
from seawall.verify import (
    CHECKS,
    Check,
    HostReport,
    Probe,
    VerifyReport,
    cluster,
    judge,
    parse_probes,
    parse_sshd_t,
    probe_script,
    roles,
    verify,
)

DATA: dict[str, Any] = defaults.all_defaults() | {"apt_proxy": "http://10.77.0.1:3142"}
ROLES = ["redis", "sentinel"]

SSHD_T = """\
port 22
logingracetime 30
maxauthtries 3
permitrootlogin without-password
passwordauthentication no
kbdinteractiveauthentication no
permitemptypasswords no
x11forwarding no
"""


def healthy(container: str = "lxc", **changes: Probe) -> dict[str, Probe]:
    probes = {
        "container": Probe(0, container),
        "timezone": Probe(0, "UTC"),
        "timesyncd": Probe(0, "active\nyes"),
        "apt": Probe(0, f'Acquire::http::Proxy "{DATA["apt_proxy"]}";'),
        "sshd": Probe(0, SSHD_T),
        "journald": Probe(0, "[Journal]\n#Storage=auto\n[Journal]\nStorage=persistent"),
        "journal_file": Probe(0, ""),
        "roles": Probe(0, "# /etc/seawall/roles - managed by seawall\nredis\nsentinel"),
        "sysctl": Probe(
            0, "net.core.somaxconn = 1024\nvm.overcommit_memory = 1\nvm.swappiness = 1"
        ),
        "thp": Probe(0, "always madvise [never]"),
    }
    return probes | changes


ADMIN_OK = Probe(0, "seawall")


def failed(checks: tuple[Check, ...]) -> list[str]:
    return [check.name for check in checks if not check.ok]


def test_probe_script_output_splits_back_per_probe() -> None:
    script = probe_script({"one": "echo a; echo b", "two": "echo oops >&2; false", "three": ":"})
    output = subprocess.run(["sh", "-c", script], capture_output=True, text=True).stdout
    assert parse_probes(output) == {
        "one": Probe(0, "a\nb"),
        "two": Probe(1, "oops"),
        "three": Probe(0, ""),
    }


def test_a_healthy_container_passes_every_check_in_order() -> None:
    checks = judge(DATA, ROLES, healthy(), ADMIN_OK)
    assert [check.name for check in checks] == list(CHECKS)
    assert failed(checks) == []
    assert "skipped: container (lxc)" in checks[CHECKS.index("kernel tuning")].detail


def test_a_real_host_is_held_to_its_kernel_settings() -> None:
    probes = healthy("none", sysctl=Probe(0, "vm.overcommit_memory = 0"))
    checks = judge(DATA, ROLES, probes, ADMIN_OK)
    assert failed(checks) == ["kernel tuning"]
    assert "vm.overcommit_memory=0 (want 1)" in checks[-1].detail


def test_a_real_host_needs_timesyncd_running() -> None:
    checks = judge(DATA, ROLES, healthy("none", timesyncd=Probe(3, "inactive\nno")), ADMIN_OK)
    assert failed(checks) == ["time sync"]


def test_sshd_with_passwords_fails() -> None:
    sshd = Probe(0, SSHD_T.replace("passwordauthentication no", "passwordauthentication yes"))
    checks = judge(DATA, ROLES, healthy(sshd=sshd), ADMIN_OK)
    assert failed(checks) == ["sshd keys only"]
    assert "passwordauthentication yes (want no)" in checks[CHECKS.index("sshd keys only")].detail


def test_sshd_t_keeps_the_first_value() -> None:
    assert parse_sshd_t("PermitRootLogin no\npermitrootlogin yes")["permitrootlogin"] == "no"


def test_journal_in_memory_fails() -> None:
    probes = healthy(
        journald=Probe(0, "[Journal]\nStorage=persistent\n[Journal]\nStorage=volatile"),
        journal_file=Probe(1, ""),
    )
    assert failed(judge(DATA, ROLES, probes, ADMIN_OK)) == ["journal persistent"]


def test_wrong_roles_proxy_timezone_and_admin_fail() -> None:
    probes = healthy(
        roles=Probe(0, "redis"),
        apt=Probe(0, ""),
        timezone=Probe(0, "Etc/UTC"),
    )
    admin = Probe(255, "seawall@10.77.0.11: Permission denied (publickey).")
    checks = judge(DATA, ROLES, probes, admin)
    assert failed(checks) == ["timezone", "apt proxy", "admin login", "role marker"]


def test_report_renders_rows_json_and_text() -> None:
    report = VerifyReport(
        (
            HostReport("data-1", (Check("timezone", True, "UTC"),)),
            HostReport("app-1", (Check("timezone", False, "Etc/UTC"),)),
        )
    )
    assert not report.ok
    assert report.rows() == [
        ("data-1", "timezone", "ok", "UTC"),
        ("app-1", "timezone", "FAIL", "Etc/UTC"),
    ]
    assert report.to_json()["hosts"]["app-1"] == {
        "ok": False,
        "checks": [{"name": "timezone", "ok": False, "detail": "Etc/UTC"}],
    }
    assert report.failures() == [("app-1", "timezone")]
    assert report.to_json()["failures"] == [{"host": "app-1", "check": "timezone"}]
    summary = "1/2 checks hold on 2 hosts; failing: app-1 timezone (Etc/UTC)"
    assert report.summary() == summary and report.to_text().endswith(summary)


# --- Role promises: what each host's roles expect, from inventory data --------------------

SS_DATA_1 = """\
tcp LISTEN 0 511 127.0.0.1:26379 0.0.0.0:* users:(("redis-sentinel",pid=1,fd=6))
tcp LISTEN 0 511 10.77.0.11:26379 0.0.0.0:* users:(("redis-sentinel",pid=1,fd=7))
tcp LISTEN 0 4096 10.77.0.11:2379 0.0.0.0:* users:(("etcd",pid=2,fd=8))
tcp LISTEN 0 4096 10.77.0.11:2380 0.0.0.0:* users:(("etcd",pid=2,fd=7))
tcp LISTEN 0 4096 127.0.0.1:2379 0.0.0.0:* users:(("etcd",pid=2,fd=9))
tcp LISTEN 0 4096 10.77.0.11:2381 0.0.0.0:* users:(("etcd",pid=2,fd=10))
tcp LISTEN 0 511 10.77.0.11:6379 0.0.0.0:* users:(("redis-server",pid=3,fd=6))
tcp LISTEN 0 511 127.0.0.1:6379 0.0.0.0:* users:(("redis-server",pid=3,fd=7))
tcp LISTEN 0 5 10.77.0.11:8008 0.0.0.0:* users:(("patroni",pid=4,fd=5))
tcp LISTEN 0 444 127.0.0.1:5432 0.0.0.0:* users:(("postgres",pid=5,fd=6))
tcp LISTEN 0 128 0.0.0.0:22 0.0.0.0:* users:(("sshd",pid=6,fd=3))
tcp LISTEN 0 444 10.77.0.11:5432 0.0.0.0:* users:(("postgres",pid=5,fd=5))
tcp LISTEN 0 128 [::]:22 [::]:* users:(("sshd",pid=6,fd=4))
tcp LISTEN 0 4096 10.77.0.11:9100 0.0.0.0:* users:(("prometheus-node",pid=7,fd=3))
tcp LISTEN 0 4096 10.77.0.11:9121 0.0.0.0:* users:(("prometheus-redi",pid=8,fd=3))
tcp LISTEN 0 4096 10.77.0.11:9187 0.0.0.0:* users:(("prometheus-post",pid=9,fd=3))
"""
SSHD_LISTEN = SSHD_T + "listenaddress [::]:22\nlistenaddress 0.0.0.0:22\n"


def with_data(topology: Topology, name: str, **changes: Any) -> Topology:
    hosts = tuple(
        replace(h, data={**h.data, **changes}) if h.name == name else h for h in topology.hosts
    )
    return replace(topology, hosts=hosts)


def show(units: dict[str, tuple[str, str]], next_elapse: str = "") -> Probe:
    blocks = [
        f"Id={unit}\nLoadState=loaded\nActiveState={active}\nSubState=x\n"
        f"UnitFileState={enabled}\nNextElapseUSecRealtime={next_elapse}"
        for unit, (active, enabled) in units.items()
    ]
    return Probe(0, "\n\n".join(blocks))


def test_each_role_expects_the_units_and_listeners_its_component_runs(lab: Topology) -> None:
    data_1 = roles.expected(lab, lab.host("data-1"))
    assert data_1.units == (
        "ssh.service",
        "redis-server.service",
        "redis-sentinel.service",
        "etcd.service",
        "patroni@15-main.service",
        "prometheus-node-exporter.service",
        "prometheus-redis-exporter.service",
        "prometheus-postgres-exporter.service",
        "systemd-journal-upload.service",
    )
    # Only the ops host keeps the central journal.
    assert data_1.stopped_units == ("patroni.service", "systemd-journal-remote.socket")
    assert {str(item) for item in data_1.listeners} == {
        f"tcp {address}:{port}"
        for address, port in [
            ("10.77.0.11", 6379),
            ("127.0.0.1", 6379),
            ("10.77.0.11", 26379),
            ("127.0.0.1", 26379),
            ("10.77.0.11", 2379),
            ("127.0.0.1", 2379),
            ("10.77.0.11", 2380),
            ("10.77.0.11", 2381),
            ("10.77.0.11", 8008),
            ("10.77.0.11", 5432),
            ("127.0.0.1", 5432),
            ("10.77.0.11", 9100),
            ("10.77.0.11", 9121),
            ("10.77.0.11", 9187),
        ]
    }
    app = roles.expected(lab, lab.host("app-1"))
    catalogue = defaults.SERVICES["services"]
    assert app.units[:3] == ("ssh.service", "haproxy.service", "pgbouncer.service")
    assert app.units[3:] == (
        *(f"quantum-{s['name']}.service" for s in catalogue),
        "seawall-healthwatch.service",
        "prometheus-node-exporter.service",
        "systemd-journal-upload.service",
    )
    assert roles.Listener("tcp", "127.0.0.1", 6432) in app.listeners
    assert {roles.Listener("tcp", "10.77.0.21", s["port"]) for s in catalogue} <= app.listeners
    gateway = roles.expected(lab, lab.host("gw-1"))
    assert gateway.units == (
        "ssh.service",
        "nginx.service",
        "prometheus-node-exporter.service",
        "prometheus-nginx-exporter.service",
        "mtail.service",
        "systemd-journal-upload.service",
    )
    assert {str(item) for item in gateway.listeners} == {
        "tcp 0.0.0.0:80",
        "tcp [::]:80",
        "tcp 0.0.0.0:443",
        "tcp [::]:443",
        "tcp 10.77.0.31:8088",
        "tcp 127.0.0.1:8081",
        "tcp 10.77.0.31:9100",
        "tcp 10.77.0.31:9113",
        "tcp 10.77.0.31:3903",
    }
    ops = roles.expected(lab, lab.host("ops-1"))
    assert (ops.units, ops.timers, {str(item) for item in ops.listeners}) == (
        (
            "ssh.service",
            "prometheus-node-exporter.service",
            "prometheus-blackbox-exporter.service",
            "prometheus.service",
            "systemd-journal-upload.service",
            "systemd-journal-remote.socket",
        ),
        (
            "seawall-pgbackrest-full.timer",
            "seawall-restart.timer",
            "seawall-journal-vacuum.timer",
        ),
        {
            "tcp 10.77.0.41:9100",
            "tcp 10.77.0.41:9115",
            "tcp 10.77.0.41:9090",
            "tcp 10.77.0.41:19532",
        },
    )
    assert ops.stopped_units == ()


def test_restart_disabled_expects_its_timer_stopped(lab: Topology) -> None:
    off = with_data(lab, "ops-1", restart_enabled=False)
    ops = roles.expected(off, off.host("ops-1"))
    assert "seawall-restart.timer" not in ops.timers
    assert ops.stopped_units == ("seawall-restart.timer",)


def test_expectations_follow_the_inventory_data(lab: Topology) -> None:
    moved = with_data(
        lab,
        "data-1",
        redis_port=7000,
        postgres_version=16,
        postgres_cluster="trade",
    )
    data_1 = roles.expected(moved, moved.host("data-1"))
    assert roles.Listener("tcp", "10.77.0.11", 7000) in data_1.listeners
    assert roles.Listener("tcp", "10.77.0.11", 6379) not in data_1.listeners
    assert "patroni@16-trade.service" in data_1.units
    one_service = with_data(
        lab,
        "app-1",
        services=[{"name": "pricer", "port": 9100, "route": "/api/pricer/", "needs": ["redis"]}],
        services_unit_prefix="svc-",
    )
    app = roles.expected(one_service, one_service.host("app-1"))
    assert "svc-pricer.service" in app.units and "quantum-backend.service" not in app.units
    assert roles.Listener("tcp", "10.77.0.21", 9100) in app.listeners
    # No service logs in to Postgres: nothing to route, no route probe.
    assert "pg_route" not in roles.probe_commands(one_service, one_service.host("app-1"))
    no_internal = with_data(lab, "gw-1", gateway_internal_http_port=None)
    gateway = roles.expected(no_internal, no_internal.host("gw-1"))
    assert not any(item.port == 8088 for item in gateway.listeners)


def test_listeners_exactly_as_configured_pass(lab: Topology) -> None:
    want = roles.expected(lab, lab.host("data-1"))
    check = roles.judge_listeners(want, Probe(0, SS_DATA_1), Probe(0, SSHD_LISTEN))
    assert check == Check("listeners", True, "exactly the 16 configured")


def test_a_stray_or_missing_listener_fails_naming_it(lab: Topology) -> None:
    want = roles.expected(lab, lab.host("data-1"))
    stray = 'tcp LISTEN 0 5 10.77.0.11:8999 0.0.0.0:* users:(("python3",pid=9,fd=3))\n'
    udp = "udp UNCONN 0 0 0.0.0.0%eth0:68 0.0.0.0:*\n"
    ss = SS_DATA_1.replace(
        'tcp LISTEN 0 511 127.0.0.1:6379 0.0.0.0:* users:(("redis-server",pid=3,fd=7))\n', ""
    )
    check = roles.judge_listeners(want, Probe(0, ss + stray + udp), Probe(0, SSHD_LISTEN))
    assert not check.ok
    assert check.detail == (
        "unexpected tcp 10.77.0.11:8999 (python3); unexpected udp 0.0.0.0:68 (?); "
        "missing tcp 127.0.0.1:6379"
    )


def test_sshd_is_expected_where_it_is_configured_to_listen() -> None:
    assert roles.sshd_listeners("port 22\nlistenaddress 10.77.0.11:22") == {
        roles.Listener("tcp", "10.77.0.11", 22)
    }
    # Without ListenAddress lines, sshd listens on every address at its port.
    assert {str(x) for x in roles.sshd_listeners("port 2222")} == {
        "tcp 0.0.0.0:2222",
        "tcp [::]:2222",
    }


def test_units_must_run_and_be_enabled_and_stock_units_stay_off(lab: Topology) -> None:
    want = roles.expected(lab, lab.host("data-1"))
    healthy = {unit: ("active", "enabled") for unit in want.units}
    off = {
        "patroni.service": ("inactive", "disabled"),
        "systemd-journal-remote.socket": ("inactive", "disabled"),
    }
    checks = roles.judge_units(want, show(healthy | off))
    assert [c.name for c in checks] == [
        *(f"unit {u}" for u in want.units),
        "unit patroni.service off",
        "unit systemd-journal-remote.socket off",
    ]
    assert all(c.ok for c in checks)
    broken = healthy | {
        "redis-server.service": ("inactive", "enabled"),
        "etcd.service": ("active", "disabled"),
        "patroni.service": ("active", "disabled"),
    }
    checks = roles.judge_units(want, show(broken))
    assert [c.name for c in checks if not c.ok] == [
        "unit redis-server.service",
        "unit etcd.service",
        "unit patroni.service off",
    ]
    # A unit systemctl does not report at all (the block is missing) fails too.
    missing = {u: s for u, s in healthy.items() if u != "ssh.service"}
    assert [c.name for c in roles.judge_units(want, show(missing)) if not c.ok][0] == (
        "unit ssh.service"
    )


def test_timers_must_be_scheduled(lab: Topology) -> None:
    want = roles.expected(lab, lab.host("ops-1"))
    units = {"ssh.service": ("active", "enabled")} | {t: ("active", "enabled") for t in want.timers}
    scheduled = roles.judge_units(want, show(units, "Mon 2026-11-30 01:00:00 UTC"))
    assert [c.name for c in scheduled[-3:]] == [
        "timer seawall-pgbackrest-full.timer",
        "timer seawall-restart.timer",
        "timer seawall-journal-vacuum.timer",
    ]
    assert all(c.ok for c in scheduled[-3:])
    assert not roles.judge_units(want, show(units, ""))[-3].ok
    stopped = units | {want.timers[0]: ("inactive", "enabled")}
    assert not roles.judge_units(want, show(stopped, "Mon 2026-11-30 01:00:00 UTC"))[-3].ok
    restart_off = units | {"seawall-restart.timer": ("inactive", "disabled")}
    assert not roles.judge_units(want, show(restart_off, "Mon 2026-11-30 04:00:00 UTC"))[-2].ok


LEADER = ("data-1", "10.77.0.11")


@pytest.mark.parametrize(
    ("output", "failing"),
    [
        ("pgbouncer ok 10.77.0.11 primary\nhaproxy ok 10.77.0.11 primary", []),
        (
            "pgbouncer ok 10.77.0.12 replica\nhaproxy ok 10.77.0.12 primary",
            ["pgbouncer reaches leader", "haproxy reaches leader"],
        ),
        (
            "pgbouncer error OperationalError connection refused\nhaproxy ok 10.77.0.11 primary",
            ["pgbouncer reaches leader"],
        ),
        ("Traceback: ModuleNotFoundError", ["pgbouncer reaches leader", "haproxy reaches leader"]),
    ],
)
def test_pgbouncer_and_haproxy_must_land_on_the_leader(output: str, failing: list[str]) -> None:
    checks = roles.judge_pg_route(Probe(0, output), LEADER)
    assert [c.name for c in checks] == ["pgbouncer reaches leader", "haproxy reaches leader"]
    assert [c.name for c in checks if not c.ok] == failing


def test_without_a_leader_no_route_holds() -> None:
    checks = roles.judge_pg_route(Probe(0, "pgbouncer ok 10.77.0.11 primary"), None)
    assert [c.ok for c in checks] == [False, False]


def test_the_route_probe_logs_in_as_a_service_without_a_secret_on_the_command_line(
    lab: Topology,
) -> None:
    command = roles.pg_route_probe(lab.host("app-1").data)
    assert command is not None
    assert "/etc/seawall/services/backend.json" in command
    assert "/etc/seawall/secrets/backend.env" in command
    assert "password=password" in command and "SEAWALL_POSTGRES_PASSWORD" in command


# --- Cluster promises, pinned on the host they are about -------------------------------------

M, R2, R3 = "10.77.0.11:6379", "10.77.0.12:6379", "10.77.0.13:6379"


def redis(nodes: list[NodeState], sentinels: list[str | None], master: str | None = M) -> Any:
    views = [
        SentinelView(f"data-{i}", f"10.77.0.1{i}:26379", says, None if says else "refused")
        for i, says in enumerate(sentinels, start=1)
    ]
    return RedisStatus(master, "data-1" if master == M else None, nodes, views)


HEALTHY_REDIS = [
    NodeState("data-1", M, "master"),
    NodeState("data-2", R2, "replica", M, "connected", 0),
    NodeState("data-3", R3, "replica", M, "connected", 12),
]


def failing(findings: dict[str, list[Check]]) -> list[tuple[str, str]]:
    return [(host, c.name) for host, checks in findings.items() for c in checks if not c.ok]


def test_healthy_redis_holds_on_every_host(lab: Topology) -> None:
    found = cluster.redis_findings(lab, redis(HEALTHY_REDIS, [M, M, M]))
    assert failing(found) == []
    assert found["data-1"][0].detail == "master, 2/2 replicas connected"
    assert found["data-3"][0].detail == "replica of data-1, link connected, lag 12 bytes"
    assert found["data-2"][1] == Check("sentinel agreement", True, f"names data-1 ({M})")


def test_a_replica_that_stopped_replicating_is_named(lab: Topology) -> None:
    nodes = [HEALTHY_REDIS[0], NodeState("data-2", R2, "master"), HEALTHY_REDIS[2]]
    found = cluster.redis_findings(lab, redis(nodes, [M, M, M]))
    assert ("data-2", "redis replication") in failing(found)
    assert "the Sentinels name data-1" in found["data-2"][0].detail
    # The master misses a replica, so its own promise (every replica connected) fails too.
    assert found["data-1"][0].detail == "master, 1/2 replicas connected"
    down = [HEALTHY_REDIS[0], NodeState("data-2", R2, "down (ConnectionError)"), HEALTHY_REDIS[2]]
    assert ("data-2", "redis replication") in failing(
        cluster.redis_findings(lab, redis(down, [M, M, M]))
    )


def test_a_sentinel_naming_another_master_or_silent_is_named(lab: Topology) -> None:
    found = cluster.redis_findings(lab, redis(HEALTHY_REDIS, [M, R2, None]))
    assert failing(found) == [("data-2", "sentinel agreement"), ("data-3", "sentinel agreement")]
    assert found["data-3"][1].detail == "no answer: refused"
    no_master = cluster.redis_findings(lab, redis(HEALTHY_REDIS, [None, None, None], None))
    assert ("data-1", "redis replication") in failing(no_master)


def postgres(members: list[Member], etcd: tuple[bool, ...] = (True, True, True)) -> Any:
    leader = next((m.name for m in members if m.role == "leader"), None)
    status = PostgresStatus(
        leader,
        members,
        [EtcdMember(f"data-{i}", f"10.77.0.1{i}", ok) for i, ok in enumerate(etcd, 1)],
        source="data-1",
    )
    if leader is None:
        status.problems.append("the cluster has no running leader")
    return status


LEADING = Member("data-1", "10.77.0.11", "leader", "running", 3, None)
SYNC = Member("data-2", "10.77.0.12", "sync_standby", "streaming", 3, 0)


def test_patroni_leader_sync_standby_and_etcd_hold(lab: Topology) -> None:
    found = cluster.postgres_findings(lab, postgres([LEADING, SYNC]))
    assert failing(found) == []
    assert found["data-1"][0].detail == "leader, running, timeline 3, sync standby data-2"
    assert [c.name for c in found["data-3"]] == ["etcd health"]
    assert cluster.leader_of(lab, postgres([LEADING, SYNC])) == ("data-1", "10.77.0.11")


@pytest.mark.parametrize(
    ("members", "etcd", "want"),
    [
        # Synchronous mode with no synchronous standby: the leader's promise fails.
        (
            [LEADING, replace(SYNC, role="replica")],
            (True, True, True),
            [("data-1", "patroni")],
        ),
        # A standby too far behind to be promoted.
        ([LEADING, replace(SYNC, lag_bytes=2 << 20)], (True, True, True), [("data-2", "patroni")]),
        # A stopped member is missing from the cluster.
        ([LEADING], (True, True, True), [("data-1", "patroni"), ("data-2", "patroni")]),
        # No leader: every member fails.
        (
            [replace(SYNC, name="data-1"), SYNC],
            (True, True, True),
            [
                ("data-1", "patroni"),
                ("data-2", "patroni"),
            ],
        ),
        ([LEADING, SYNC], (True, True, False), [("data-3", "etcd health")]),
    ],
)
def test_patroni_and_etcd_failures_are_named(
    lab: Topology, members: list[Member], etcd: tuple[bool, ...], want: list[tuple[str, str]]
) -> None:
    assert failing(cluster.postgres_findings(lab, postgres(members, etcd))) == want


def test_a_service_down_or_silent_is_named_on_its_host() -> None:
    summary = HealthSummary(
        (
            ServiceHealth("app-1", "backend", "u", "OK", 200, 3.0, {"redis": "OK"}),
            ServiceHealth("app-1", "execution", "u", "DOWN", 503, 4.0, {"postgres": "DOWN"}),
            ServiceHealth("app-2", "backend", "u", UNREACHABLE, error="refused"),
            ServiceHealth("app-2", "execution", "u", "DEGRADED", 200, 150.0),
        )
    )
    found = cluster.health_findings(summary)
    assert failing(found) == [("app-1", "service execution"), ("app-2", "service backend")]
    assert found["app-1"][0].detail == "OK, 3 ms; redis OK"


def serve_route(echo: bool, service: str) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self.send_response(200)
            if echo:
                self.send_header("X-Request-ID", self.headers["X-Request-ID"])
            self.end_headers()
            self.wfile.write(json.dumps({"service": service, "path": self.path}).encode())

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize(
    ("echo", "answers", "ok"),
    [(True, "execution", True), (False, "execution", False), (True, "backend", False)],
)
def test_a_route_must_pass_the_request_id_and_reach_its_service(
    echo: bool, answers: str, ok: bool
) -> None:
    server = serve_route(echo, answers)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/api/execution/health"
        check = cluster.ask_route(cluster.RouteTarget("execution", "/api/execution/", url, True))
    finally:
        server.shutdown()
    assert check.name == "route /api/execution/"
    assert check.ok is ok, check.detail


def test_no_answer_from_a_route_fails() -> None:
    target = cluster.RouteTarget("backend", "/", "http://127.0.0.1:9/health", True)
    assert not cluster.ask_route(target).ok


def test_route_targets_reach_each_services_health_through_the_gateway(lab: Topology) -> None:
    targets = {t.service: t for t in cluster.route_targets(lab.host("gw-1"))}
    assert targets["backend"].url == "http://10.77.0.31:8088/health"
    assert targets["execution"].url == "http://10.77.0.31:8088/api/execution/health"
    assert targets["monitoring-health"].url == "http://10.77.0.31:8088/api/health"
    assert all(t.names_service for t in targets.values())
    tls = with_data(lab, "gw-1", gateway_internal_http_port=None)
    assert cluster.route_targets(tls.host("gw-1"))[0].url == "https://10.77.0.31:443/health"


# --- verify(): host sessions and cluster checks merged per host --------------------------------


def fake_lab(monkeypatch: pytest.MonkeyPatch, lab: Topology, redis_error: bool = False) -> None:
    import seawall.verify as verify_module

    def probe(topology: Topology, host: Any) -> dict[str, Probe]:
        return healthy()

    def boom(topology: Topology) -> Any:
        raise ConnectionError("sentinels unreachable")

    monkeypatch.setattr(verify_module, "require_lab_network", lambda topology: None)
    monkeypatch.setattr(verify_module, "_probe", probe)
    monkeypatch.setattr(verify_module, "_admin", lambda topology, host: ADMIN_OK)
    monkeypatch.setattr(
        verify_module,
        "redis_status",
        boom if redis_error else lambda topology: redis(HEALTHY_REDIS, [M, M, M]),
    )
    monkeypatch.setattr(verify_module, "postgres_status", lambda t: postgres([LEADING, SYNC]))
    monkeypatch.setattr(verify_module, "collect", lambda t: HealthSummary(()))
    monkeypatch.setattr(verify_module.cluster, "gateway_findings", lambda t: {})


def test_verify_pins_every_finding_on_its_host(
    monkeypatch: pytest.MonkeyPatch, lab: Topology
) -> None:
    fake_lab(monkeypatch, lab)
    report = verify(lab, confirm_after_s=0)
    data_1 = next(h for h in report.hosts if h.host == "data-1")
    names = [c.name for c in data_1.checks]
    assert names[: len(CHECKS)] == list(CHECKS)
    for name in ("redis replication", "sentinel agreement", "patroni", "etcd health"):
        assert data_1.check(name).ok
    # The fake probes carry no unit, listener or route answers: those fail, named.
    assert ("data-1", "unit redis-server.service") in report.failures()
    assert ("app-1", "pgbouncer reaches leader") in report.failures()
    assert "haproxy reaches leader" not in [c.name for c in data_1.checks]


def test_a_collector_that_fails_is_a_finding_on_its_hosts(
    monkeypatch: pytest.MonkeyPatch, lab: Topology
) -> None:
    fake_lab(monkeypatch, lab, redis_error=True)
    report = verify(lab, confirm_after_s=0)
    for name in ("data-1", "data-2", "data-3"):
        host = next(h for h in report.hosts if h.host == name)
        check = host.check("redis replication")
        assert not check.ok and "ConnectionError: sentinels unreachable" in check.detail
    app = next(h for h in report.hosts if h.host == "app-1")
    assert "redis replication" not in [c.name for c in app.checks]


def test_an_unreachable_or_silent_host_is_an_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, lab: Topology
) -> None:
    import seawall.verify as verify_module

    def refused(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(args, 255, "", "Connection refused")

    def silent(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        raise subprocess.TimeoutExpired(args, kwargs["timeout"])

    host = lab.host("data-2")
    monkeypatch.setattr(verify_module.subprocess, "run", refused)
    with pytest.raises(SeawallError, match="data-2: unreachable over SSH: Connection refused"):
        verify_module._probe(lab, host)
    monkeypatch.setattr(verify_module.subprocess, "run", silent)
    with pytest.raises(SeawallError, match="data-2: no answer over SSH within 30 s"):
        verify_module._admin(lab, host)


def _report(ok: bool) -> Any:
    from seawall.verify.report import Check, HostReport, VerifyReport

    check = Check("service risk-safety", ok, "OK" if ok else "DOWN")
    return VerifyReport((HostReport("app-1", (check,)),))


def test_a_failure_in_one_pass_only_holds_and_says_what_was_seen() -> None:
    from seawall.verify.report import confirmed

    once = confirmed(_report(False), _report(True), 2.0)
    assert once.ok
    assert once.hosts[0].checks[0].detail == "OK (failed once, 2 s earlier: DOWN)"
    now = confirmed(_report(True), _report(False), 2.0)
    assert now.ok and now.hosts[0].checks[0].detail == "OK (failed once, now: DOWN)"
    assert not confirmed(_report(False), _report(False), 2.0).ok
    assert confirmed(_report(True), _report(True), 2.0) == _report(True)


def test_verify_confirms_a_failure_with_a_second_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    import seawall.verify as verify_module

    slept: list[float] = []
    monkeypatch.setattr(verify_module.time, "sleep", slept.append)
    passes = [_report(False), _report(True)]
    monkeypatch.setattr(verify_module, "_verify_once", lambda topology: passes.pop(0))
    assert verify_module.verify(None).ok  # type: ignore[arg-type]
    assert slept == [verify_module.CONFIRM_AFTER_S] and passes == []
    passes = [_report(False), _report(False)]
    assert not verify_module.verify(None).ok  # type: ignore[arg-type]
    # A pass that holds is not run again.
    passes = [_report(True), _report(False)]
    assert verify_module.verify(None).ok  # type: ignore[arg-type]
    assert passes == [_report(False)]


def test_verify_settled_asks_again_until_the_site_settles(monkeypatch: pytest.MonkeyPatch) -> None:
    import seawall.verify as verify_module

    answers = [_report(False), _report(False), _report(True)]
    monkeypatch.setattr(verify_module, "verify", lambda topology: answers.pop(0))
    monkeypatch.setattr(verify_module.time, "sleep", lambda seconds: None)
    said: list[str] = []
    report = verify_module.verify_settled(None, within=60, every=5, log=said.append)  # type: ignore[arg-type]
    assert report.ok
    assert answers == []
    assert len(said) == 2 and "app-1 service risk-safety" in said[0]


def test_verify_settled_gives_up_at_its_bound_with_the_last_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import seawall.verify as verify_module

    calls: list[float] = []
    clock = [0.0]
    monkeypatch.setattr(
        verify_module, "verify", lambda topology: calls.append(clock[0]) or _report(False)
    )
    monkeypatch.setattr(verify_module.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(verify_module.time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    report = verify_module.verify_settled(None, within=12, every=5)  # type: ignore[arg-type]
    assert not report.ok
    assert calls == [0.0, 5.0, 10.0]
    # Without --settle: one answer, no wait.
    calls.clear()
    verify_module.verify_settled(None, within=0)  # type: ignore[arg-type]
    assert len(calls) == 1


def test_metrics_listeners_follow_their_port_keys(lab: Topology) -> None:
    moved = with_data(lab, "gw-1", node_exporter_port=9200, mtail_port=3904)
    gateway = roles.expected(moved, moved.host("gw-1"))
    ports = {item.port for item in gateway.listeners if item.address == "10.77.0.31"}
    assert {9200, 3904} <= ports and not {9100, 3903} & ports


# --- the first ops host's jobs: the drift cron and the rolling restart ---------------------

NOW = 1_796_000_000.0  # the ops host's clock in these probes (2026-11-30)
CRONTAB = """\
# a line root had before the deploy
MAILTO=ops@example.invalid
0 1 * * * /usr/local/bin/backup-etc

# pyinfra-name=seawall-drift
7,22,37,52 * * * * /usr/local/libexec/seawall-drift-run
"""
UNITS_SHOW = """\
Id=seawall-restart.timer
ActiveState=active
UnitFileState=enabled
LastTriggerUSec={fired}

Id=seawall-restart.service
ActiveState={restart}
UnitFileState=static
LastTriggerUSec=

Id=cron.service
ActiveState={cron}
UnitFileState=enabled
LastTriggerUSec="""


def drift_textfile(ago: float, error: str | None = None, drift: int = 0) -> Probe:
    from seawall.drift import DriftReport, textfile

    report = DriftReport(
        "inventories/lab.py",
        ("data-1", "app-1"),
        ("data-1", "app-1") if error is None else ("data-1",),
        drift={"app-1": [f"op {n}" for n in range(drift)]} if drift else {},
        error=error,
        finished_at=NOW - ago,
    )
    return Probe(0, textfile(report).strip())


def drift_json(error: str | None) -> Probe:
    from seawall.drift import DriftReport

    report = DriftReport("inventories/lab.py", ("data-1",), (), error=error, finished_at=NOW)
    return Probe(0, json.dumps(report.to_json()))


def restart_textfile(tmp_path: Any, *results: str) -> Probe:
    """What the real recorder (seawall-restart-record) wrote after runs ending with ``results``."""
    from seawall.components import ops as component
    from seawall.components.templates import render

    script = tmp_path / "record"
    context = component.ops_context(
        {**defaults.all_defaults(), "services_textfile_dir": str(tmp_path)}, "inventories/lab.py"
    )
    script.write_text(render(component.CONCERN, component.RECORD, context))
    script.chmod(0o755)
    for result in results:
        env = {"SERVICE_RESULT": result, "EXIT_STATUS": "1", "PATH": "/usr/bin:/bin"}
        subprocess.run([str(script)], env=env, check=True)
    return Probe(0, (tmp_path / "seawall_restart.prom").read_text().strip())


MISSING = Probe(1, "cat: /var/lib/prometheus/node-exporter/x.prom: No such file or directory")


def ops_probes(**changes: Probe) -> dict[str, Probe]:
    """A healthy first ops host: the drift ran 10 min ago, the restart never yet."""
    probes = {
        "drift_cron": Probe(0, CRONTAB),
        "drift_metrics": drift_textfile(600, drift=2),
        "drift_report": drift_json(None),
        "restart_metrics": MISSING,
        "ops_clock": Probe(
            0,
            f"{NOW:.0f}\n{NOW - 86400:.0f} /usr/local/libexec/seawall-drift-run\n"
            f"{NOW - 86400:.0f} /var/spool/cron/crontabs/root",
        ),
        "ops_units": Probe(0, UNITS_SHOW.format(fired="", restart="inactive", cron="active")),
    }
    return probes | changes


def ops_checks(data: dict[str, Any] | None = None, /, **changes: Probe) -> dict[str, Check]:
    from seawall.verify import ops

    checks = ops.judge(data or DATA, ops_probes(**changes))
    assert [c.name for c in checks] == list(ops.CHECKS)
    return {c.name: c for c in checks}


def test_ops_names_are_the_ones_the_ops_deploy_and_drift_give() -> None:
    from pathlib import PurePosixPath

    from seawall.components import ops as component
    from seawall.components.templates import render
    from seawall.verify import ops

    assert (ops.CRON_NAME, ops.DRIFT_RUN, ops.DRIFT_REPORT, ops.CRON_USER) == (
        component.CRON_NAME,
        component.DRIFT_RUN,
        component.DRIFT_REPORT,
        component.OPS_USER,
    )
    assert ops.RESTART_TIMER == PurePosixPath(component.TIMER).name == roles.RESTART_TIMER
    assert PurePosixPath(component.SERVICE).name == ops.RESTART_SERVICE
    context = component.ops_context(defaults.all_defaults(), "inventories/lab.py")
    recorder = render(component.CONCERN, component.RECORD, context)
    assert f'prom="$dir/{ops.RESTART_TEXTFILE}"' in recorder
    assert context["report"] == f"{defaults.all_defaults()['ops_state_dir']}/{ops.DRIFT_REPORT}"
    assert "cron" in component.PACKAGES


def test_only_the_first_ops_host_probes_its_jobs_in_its_one_session(lab: Topology) -> None:
    from seawall.verify import host_script, ops

    commands = ops.probe_commands(lab, lab.host("ops-1"))
    assert set(commands) == {
        "drift_cron",
        "drift_metrics",
        "drift_report",
        "restart_metrics",
        "ops_clock",
        "ops_units",
    }
    assert commands["drift_metrics"] == "cat /var/lib/prometheus/node-exporter/seawall_drift.prom"
    assert commands["drift_report"] == "cat /var/lib/seawall/ops/drift-last.json"
    script = host_script(lab, lab.host("ops-1"))
    assert all(command in script for command in commands.values())
    for name in ("data-1", "app-1", "gw-1"):
        assert ops.probe_commands(lab, lab.host(name)) == {}
        assert "crontab" not in host_script(lab, lab.host(name))


def test_the_ops_checks_follow_the_host_checks_on_the_first_ops_host_only(lab: Topology) -> None:
    from seawall.verify import host_checks, ops

    # The lab's own schedule (its group data sets one), not the default.
    schedule = setting(lab.host("ops-1").data, "drift_cron")
    crontab = Probe(0, CRONTAB.replace("7,22,37,52 * * * *", schedule))
    probes = healthy() | ops_probes(drift_cron=crontab)
    checks = host_checks(lab, lab.host("ops-1"), probes, ADMIN_OK, LEADER)
    assert [c.name for c in checks[-3:]] == list(ops.CHECKS)
    assert all(c.ok for c in checks[-3:]), checks[-3:]
    data_1 = host_checks(lab, lab.host("data-1"), healthy(), ADMIN_OK, LEADER)
    assert not set(ops.CHECKS) & {c.name for c in data_1}


def test_the_ops_clock_probe_gives_the_host_time_and_skips_missing_files(lab: Topology) -> None:
    import time

    from seawall.verify import ops

    # The probe as it runs: here the cron's files are missing, so stat complains.
    clock = ops.probe_commands(lab, lab.host("ops-1"))["ops_clock"]
    output = subprocess.run(
        ["sh", "-c", probe_script({"c": clock})],
        capture_output=True,
        text=True,
    ).stdout
    now, mtimes = ops.parse_clock(parse_probes(output)["c"].output)
    assert now is not None and abs(now - time.time()) < 5
    assert mtimes == {}
    assert ops.parse_clock("1796000000\n1795990000 /var/spool/cron/crontabs/root") == (
        1796000000.0,
        {"/var/spool/cron/crontabs/root": 1795990000.0},
    )


def test_the_drift_cron_line_is_read_as_pyinfra_reads_its_named_line() -> None:
    from pyinfra.facts.crontab import Crontab

    from seawall.components.ops import cron_fields
    from seawall.verify import ops

    fact = Crontab().process(CRONTAB.splitlines()).get_command(name=ops.CRON_NAME)
    line = ops.named_cron_line(CRONTAB)
    assert fact is not None and line is not None
    assert line.split(None, 5)[5] == fact["command"] == ops.DRIFT_RUN
    # pyinfra's crontab operation would change nothing on this line (its fields compare equal).
    fields = cron_fields(DATA["drift_cron"])
    assert {key: str(fact.get(key)) for key in fields} == fields
    assert ops.named_cron_line(CRONTAB.replace("pyinfra-name=seawall-drift", "other")) is None


def test_a_healthy_ops_host_holds_its_three_job_checks() -> None:
    checks = ops_checks()
    assert all(c.ok for c in checks.values()), checks
    assert checks["drift cron"].detail == (
        "root: 7,22,37,52 * * * * /usr/local/libexec/seawall-drift-run"
    )
    assert checks["drift last run"].detail == "10 min ago, 2 operations of drift"
    assert checks["restart last run"].detail == "no run yet"


@pytest.mark.parametrize(
    ("probe", "detail"),
    [
        (
            Probe(0, CRONTAB.replace("7,22,37,52 *", "*/5 *")),
            "seawall-drift line is '*/5 * * * * /usr/local/libexec/seawall-drift-run' "
            "(want '7,22,37,52 * * * * /usr/local/libexec/seawall-drift-run')",
        ),
        (Probe(0, CRONTAB.replace("seawall-drift-run", "other")), "seawall-drift line is"),
        (Probe(0, CRONTAB.replace("# pyinfra-name=seawall-drift\n", "")), "no seawall-drift line"),
        (Probe(1, "no crontab for root"), "no crontab for root"),
    ],
)
def test_a_drift_cron_line_missing_or_changed_fails(probe: Probe, detail: str) -> None:
    check = ops_checks(drift_cron=probe)["drift cron"]
    assert not check.ok and detail in check.detail


def test_the_drift_cron_follows_drift_cron_and_needs_cron_running() -> None:
    hourly = ops_checks(DATA | {"drift_cron": "0 * * * *"})["drift cron"]
    assert not hourly.ok and "(want '0 * * * * /usr/local/libexec/seawall-drift-run')" in (
        hourly.detail
    )
    stopped = UNITS_SHOW.format(fired="", restart="inactive", cron="inactive")
    check = ops_checks(ops_units=Probe(0, stopped))["drift cron"]
    assert not check.ok and check.detail == "cron.service inactive, enabled"


def test_a_failed_drift_run_names_the_reason_its_report_gives() -> None:
    reason = "unreachable: data-2 (Could not connect)"
    check = ops_checks(
        drift_metrics=drift_textfile(300, error=reason), drift_report=drift_json(reason)
    )["drift last run"]
    assert not check.ok
    assert check.detail == f"failed 5 min ago: {reason}"
    # No readable JSON report (a run cut short): the textfile's own comment names it.
    torn = ops_checks(
        drift_metrics=drift_textfile(300, error=reason), drift_report=Probe(0, '{"ok": fa')
    )["drift last run"]
    assert not torn.ok and torn.detail == f"failed 5 min ago: {reason}"


def test_a_drift_run_older_than_twice_the_longest_gap_fails() -> None:
    # The default schedule runs every 15 min: 30 min is two missed runs.
    fresh = ops_checks(drift_metrics=drift_textfile(29 * 60))["drift last run"]
    assert fresh.ok and fresh.detail == "29 min ago, 0 operations of drift"
    stale = ops_checks(drift_metrics=drift_textfile(45 * 60))["drift last run"]
    assert not stale.ok and stale.detail == "last run 45 min ago, older than 30 min"
    # A daily schedule waits two days.
    daily = DATA | {"drift_cron": "7 3 * * *"}
    assert ops_checks(daily, drift_metrics=drift_textfile(30 * 3600))["drift last run"].ok


def test_no_drift_run_yet_holds_only_while_the_cron_line_is_new() -> None:
    def clock(age: float) -> Probe:
        lines = [f"{NOW:.0f}", "stat: cannot statx '/usr/local/libexec/seawall-drift-run'"]
        return Probe(1, "\n".join([*lines, f"{NOW - age:.0f} /var/spool/cron/crontabs/root"]))

    new = ops_checks(drift_metrics=MISSING, drift_report=MISSING, ops_clock=clock(300))
    assert new["drift last run"].ok
    assert new["drift last run"].detail == "no run yet (cron line 5 min old)"
    old = ops_checks(drift_metrics=MISSING, drift_report=MISSING, ops_clock=clock(7200))
    assert not old["drift last run"].ok
    assert old["drift last run"].detail == "no run in the 2.0 h since the cron line (bound 30 min)"
    gone = ops_checks(drift_metrics=MISSING, ops_clock=Probe(1, f"{NOW:.0f}"))["drift last run"]
    assert not gone.ok and gone.detail == "no run yet, and no cron line installed"


def test_the_restart_last_run_holds_while_it_succeeds(tmp_path: Any) -> None:
    from datetime import UTC, datetime

    from seawall.verify import ops

    probes = {"restart_metrics": restart_textfile(tmp_path, "success")}
    samples = ops.parse_textfile(probes["restart_metrics"].output)
    success = samples["seawall_restart_last_success_timestamp_seconds"]
    assert samples["seawall_restart_ok"] == 1
    now = f"{success + 3 * 3600:.0f}"  # three hours later on the ops host's clock
    check = ops_checks(ops_clock=Probe(0, now), **probes)["restart last run"]
    moment = datetime.fromtimestamp(success, UTC).strftime("%Y-%m-%d %H:%M UTC")
    assert check.ok and check.detail == f"succeeded {moment} (3.0 h ago)"
    running = UNITS_SHOW.format(
        fired="Mon 2026-11-30 04:00:00 UTC", restart="activating", cron="active"
    )
    busy = ops_checks(ops_clock=Probe(0, now), ops_units=Probe(0, running), **probes)
    assert busy["restart last run"].ok
    assert busy["restart last run"].detail.endswith("; a run is under way")


def test_a_failed_restart_fails_with_how_it_ended_and_the_last_success(tmp_path: Any) -> None:
    check = ops_checks(restart_metrics=restart_textfile(tmp_path, "success", "exit-code"))[
        "restart last run"
    ]
    assert not check.ok
    assert "ended with exit-code (exit 1); last success 20" in check.detail
    assert check.detail.startswith("last run 20")


@pytest.mark.parametrize("fired", ["", "n/a"])
def test_a_restart_timer_that_never_fired_is_no_run_yet(fired: str) -> None:
    units = UNITS_SHOW.format(fired=fired, restart="inactive", cron="active")
    check = ops_checks(ops_units=Probe(0, units))["restart last run"]
    assert check.ok and check.detail == "no run yet"


def test_a_restart_timer_that_fired_without_a_record_fails() -> None:
    fired = UNITS_SHOW.format(
        fired="Mon 2026-11-30 04:00:00 UTC", restart="inactive", cron="active"
    )
    check = ops_checks(ops_units=Probe(0, fired))["restart last run"]
    assert not check.ok
    assert check.detail == "the timer fired (Mon 2026-11-30 04:00:00 UTC) but no run was recorded"
    first = fired.replace(
        "ActiveState=inactive\nUnitFileState=static", "ActiveState=activating\nUnitFileState=static"
    )
    under_way = ops_checks(ops_units=Probe(0, first))["restart last run"]
    assert under_way.ok and under_way.detail == "no run yet: the first is under way"


def test_a_disabled_restart_is_reported_disabled(tmp_path: Any) -> None:
    off = DATA | {"restart_enabled": False}
    check = ops_checks(off, restart_metrics=restart_textfile(tmp_path, "exit-code"))[
        "restart last run"
    ]
    assert check.ok and check.detail == "disabled"


@pytest.mark.parametrize(
    ("schedule", "gap_min"),
    [
        ("7,22,37,52 * * * *", 15),
        ("*/5 * * * *", 5),
        ("30 2,14 * * *", 12 * 60),
        ("0 4 * * 1-5", 3 * 24 * 60),  # Friday to Monday
        ("0 4 * * 0", 7 * 24 * 60),
        ("0 0 1 * 1", 7 * 24 * 60),  # the 1st or a Monday: cron's either-day rule
        ("0 0 */2 * *", 2 * 24 * 60),
        ("0 0 29 2 *", 1461 * 24 * 60),  # leap days only
    ],
)
def test_the_longest_gap_of_a_cron_schedule(schedule: str, gap_min: int) -> None:
    from seawall.verify import ops

    assert ops.longest_gap(schedule) == gap_min * 60


def test_the_stale_bound_is_twice_the_gap_and_covers_a_run_s_time_bound() -> None:
    from seawall.drift import DEFAULT_TIMEOUT_S
    from seawall.verify import ops

    assert ops.stale_after("7,22,37,52 * * * *") == 30 * 60
    # Every minute: a run stamped when it ends may take the dry run's whole time bound.
    assert ops.stale_after("* * * * *") == 60 + DEFAULT_TIMEOUT_S
    assert ops.longest_gap("0 0 30 2 *") is None
    check = ops_checks(DATA | {"drift_cron": "0 0 30 2 *"})["drift last run"]
    assert not check.ok and check.detail == "drift_cron '0 0 30 2 *' never runs"

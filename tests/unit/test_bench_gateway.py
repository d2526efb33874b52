"""bench/gateway.py's pure pieces: cpu.stat readings, the log pipeline's cost per request,
the ratios issue 12's acceptance names, the bare https proxy's TLS settings, --quiet-lab's
hosts. The bench itself runs against the lab (the lead runs it)."""

import dataclasses
import os
import re
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from seawall import inventory
from seawall.components import gateway as gateway_component
from tests.unit.benches import load_bench

CPU_STAT_ROOTS = (Path("/sys/fs/cgroup/unified/cpu.stat"), Path("/sys/fs/cgroup/cpu.stat"))


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_bench("gateway")


# A cgroup v2 cpu.stat as the kernel writes it (with pressure keys that share a suffix).
CPU_STAT = """usage_usec 1500
user_usec 1000
system_usec 500
core_sched.force_idle_usec 0
nr_periods 0
nr_throttled 0
throttled_usec 0
"""


def test_cpu_stat_gives_user_and_system(bench: ModuleType) -> None:
    assert bench.parse_cpu_stat(CPU_STAT, "nginx") == (1000, 500)


def test_this_machines_cpu_stat_parses(bench: ModuleType) -> None:
    # The real format: the cgroup v2 root's cpu.stat (hybrid hosts, as the lab's
    # controller, mount v2 at unified/, where the bench reads the containers' units).
    found = [p for p in CPU_STAT_ROOTS if p.exists()]
    # The bench needs cgroup v2 on the controller: a machine without it fails here.
    assert found, f"no cgroup v2 cpu.stat at {CPU_STAT_ROOTS}"
    text = found[0].read_text()
    user, system = bench.parse_cpu_stat(text, "root")
    usage = int(re.search(r"^usage_usec (\d+)$", text, re.M).group(1))  # type: ignore[union-attr]
    assert user + system == pytest.approx(usage, rel=0.05)


def test_a_cpu_stat_without_accounting_stops_the_bench(bench: ModuleType) -> None:
    with pytest.raises(SystemExit, match="systemd-journald"):
        bench.parse_cpu_stat("usage_usec 10\n", "systemd-journald")


def test_log_cost_is_each_units_cpu_per_request(bench: ModuleType) -> None:
    before = {
        "seawall-gateway-journal": 0,
        "systemd-journald": 1_000,
        "systemd-journal-upload": 500,
    }
    after = {
        "seawall-gateway-journal": 2_000,
        "systemd-journald": 41_000,
        "systemd-journal-upload": 20_500,
    }
    cost = bench.log_cost(before, after, requests=2_000, lines=1_900, drained=True)
    assert (cost.copier_us, cost.journald_us, cost.upload_us) == (1.0, 20.0, 10.0)
    assert cost.total_us == 31.0
    assert cost.logged == 0.95 and cost.drained


def test_a_unit_restarted_during_a_run_stops_the_bench(bench: ModuleType) -> None:
    # A restarted unit has a new cgroup whose counter starts at 0: no delta to trust.
    before = {
        "seawall-gateway-journal": 0,
        "systemd-journald": 1_000,
        "systemd-journal-upload": 5_000,
    }
    after = {
        "seawall-gateway-journal": 10,
        "systemd-journald": 2_000,
        "systemd-journal-upload": 100,
    }
    with pytest.raises(SystemExit, match="systemd-journal-upload restarted"):
        bench.log_cost(before, after, requests=10, lines=10, drained=True)


def _wrk(bench: ModuleType, cpu_us: float) -> object:
    return bench.Wrk(rps=10_000, requests=100_000, errors=0, nginx_cpu_us=cpu_us, nginx_user_us=1)


def _cost(bench: ModuleType, total_us: float) -> object:
    return bench.LogCost(
        copier_us=0.0,
        journald_us=total_us * 0.75,
        upload_us=total_us / 4,
        logged=1.0,
        drained=True,
    )


def _runs(bench: ModuleType, https_gateway: float, pipeline: float) -> tuple[dict, dict]:
    """Two rounds at 16 and 64 connections: bare http 40/44 µs, bare https 60/66 µs, the
    gateway http 1.2× its bare proxy, https ``https_gateway``×; ``pipeline`` µs of logs."""
    static: dict = {}
    logs: dict = {}
    for connections in (16, 64):
        for floor in (40.0, 44.0):  # one round each
            tls_floor = floor * 1.5
            rows = {
                bench.BARE: (floor, 0.5),
                bench.BARE_TLS: (tls_floor, 0.5),
                "gateway http": (floor * 1.2, pipeline),
                "gateway https": (tls_floor * https_gateway, pipeline),
            }
            for name, (cpu, shipped) in rows.items():
                static.setdefault((name, connections), []).append(_wrk(bench, cpu))
                logs.setdefault((name, connections), []).append(_cost(bench, shipped))
    return static, logs


def test_each_gateway_row_is_compared_with_the_bare_proxy_of_its_protocol(
    bench: ModuleType,
) -> None:
    static, logs = _runs(bench, https_gateway=1.2, pipeline=8.0)
    found = bench.ratios(static, logs)
    assert [r.connections for r in found] == [16, 64]
    for r in found:
        assert r.same_protocol == pytest.approx({"gateway http": 1.2, "gateway https": 1.2})
        # 8 µs of log shipping against 40 and 44 µs of bare http NGINX.
        both = (8 / 40 + 8 / 44) / 2  # the median of the two rounds
        assert r.log_pipeline == pytest.approx({"gateway http": both, "gateway https": both})
        assert r.met
    lines = "\n".join(bench.static_lines(static, logs))
    # Against bare http, https is 1.2 × 1.5 = 1.80×; against bare https, 1.20×.
    assert "| gateway https | 16 | 10000 | 0 | 75.6 (72.0-79.2) | 1.0 | 1.80 | 1.20 |" in lines
    assert (
        "| bare proxy, https | 64 | 10000 | 0 | 63.0 (60.0-66.0) | 1.0 | 1.50 | 1.00 | - |" in lines
    )
    assert lines.count("met.") == 2 and "not met" not in lines


def test_a_ratio_over_its_target_is_not_met(bench: ModuleType) -> None:
    static, logs = _runs(bench, https_gateway=1.3, pipeline=8.0)
    assert [r.met for r in bench.ratios(static, logs)] == [False, False]
    static, logs = _runs(bench, https_gateway=1.2, pipeline=22.0)  # 22/40, 22/44: 0.53
    found = bench.ratios(static, logs)
    assert found[0].log_pipeline["gateway http"] == pytest.approx((22 / 40 + 22 / 44) / 2)
    assert not found[0].met
    lines = "\n".join(bench.static_lines(static, logs))
    assert lines.count("**not met**") == 2
    # The pipeline table: journald and upload medians, the total's spread, the ratio.
    assert (
        "| gateway http | 16 | 0.0 | 16.5 | 5.5 | 22.0 (22.0-22.0) | 0.53 | <= 0.50× | 1.00 | 2/2 |"
        in (lines)
    )


def test_the_bare_https_proxy_has_the_gateways_tls_settings(
    bench: ModuleType, lab: inventory.Topology
) -> None:
    data = lab.host("gw-1").data
    conf = gateway_component.render(
        gateway_component.NGINX_CONF, gateway_component.context(data, ["10.0.0.1"])
    )
    https = conf[
        conf.index("ssl_certificate ") : conf.index(
            "add_header X-Request-ID", conf.index("ssl_certificate ")
        )
    ]
    gateway_tls = {line.strip() for line in https.splitlines() if line.strip().startswith("ssl_")}
    bare = bench.minimal_servers(data, "10.0.0.9")
    bare_tls = {line.strip() for line in bare.splitlines() if line.strip().startswith("ssl_")}
    # Every TLS directive the gateway has, the bare proxy has (its own session cache zone).
    same_zone = {d.replace("shared:BARETLS:", "shared:TLS:") for d in bare_tls}
    assert gateway_tls and same_zone == gateway_tls
    assert f"listen 10.0.0.9:{bench.MINIMAL_TLS_PORT} ssl http2;" in bare
    assert f"listen 10.0.0.9:{bench.MINIMAL_PORT};" in bare
    assert bare.count("proxy_pass http://up/;") == 2


def test_quiet_lab_keeps_the_gateway_and_the_central_journal_running(
    bench: ModuleType, lab: inventory.Topology
) -> None:
    ops = lab.group("ops")[0].name
    names = [host.name for host in lab.hosts]
    stopped = bench.quiet_hosts(names, ops)
    assert set(stopped) == set(names) - {"gw-1", ops}
    assert {"data-1", "app-1"} <= set(stopped)


def test_lines_lost_on_the_way_fail_the_target(bench: ModuleType) -> None:
    # Cheap because journald dropped half the lines (its rate limit), or because the
    # upload had not sent them: not the cost of shipping every line.
    for lost in ({"logged": 0.5}, {"drained": False}):
        static, logs = _runs(bench, https_gateway=1.2, pipeline=8.0)
        first = logs[("gateway https", 64)][0]
        logs[("gateway https", 64)][0] = dataclasses.replace(first, **lost)
        at16, at64 = bench.ratios(static, logs)
        assert at16.met and at16.shipped_all
        assert not at64.met and not at64.shipped_all
        lines = "\n".join(bench.static_lines(static, logs))
        assert lines.count("not every line reached gw-1's journal") == 1


# Cursors as journalctl prints them (`t=` is the entry's realtime in µs, hexadecimal).
EARLIER = (
    "s=4b1f0c6e2a5d4e0f9d1c2b3a4f5e6d7c;i=1a2b;b=0123456789abcdef0123456789abcdef;"
    "m=5f5e100;t=62a1f0c000000;x=1f2e3d4c5b6a7988"
)
LATER = EARLIER.replace("t=62a1f0c000000", "t=62a1f0c0f4240").replace("i=1a2b", "i=1a2c")


def test_a_journal_cursor_names_its_time(bench: ModuleType) -> None:
    assert bench.cursor_time(EARLIER) == 0x62A1F0C000000
    assert bench.cursor_time(LATER) - bench.cursor_time(EARLIER) == 1_000_000
    assert bench.cursor_time("s=abc;i=1") is None


def test_the_upload_has_shipped_a_line_once_its_cursor_is_there(bench: ModuleType) -> None:
    assert bench.shipped(LATER, EARLIER)
    assert bench.shipped(EARLIER, EARLIER)  # the line itself was the last sent
    assert not bench.shipped(EARLIER, LATER)
    assert not bench.shipped("", EARLIER)  # nothing uploaded yet
    assert bench.shipped("", "")  # no line to ship


# `nft -a list chain inet seawall input` on gw-1 with the bench's rule appended (a
# leftover from an interrupted run too), in nft 1.0.6's format.
NFT_LISTING = """table inet seawall {
\tchain input { # handle 1
\t\ttype filter hook input priority filter; policy drop;
\t\tct state established,related accept # handle 2
\t\ttcp dport 443 accept # handle 9
\t\tip saddr 10.77.0.1 tcp dport { 18091, 18092 } accept comment "seawall-bench-gateway" # handle 14
\t\tip saddr 10.77.0.1 tcp dport { 18091, 18092 } accept comment "seawall-bench-gateway" # handle 15
\t\ttcp dport 22 accept comment "not the bench's" # handle 16
\t}
}
"""


def test_the_bench_finds_its_own_firewall_rules_only(bench: ModuleType) -> None:
    assert bench.bench_rule_handles(NFT_LISTING) == [14, 15]
    assert bench.bench_rule_handles("") == []


def test_the_bench_rule_is_a_rule_nft_accepts(bench: ModuleType, tmp_path: Path) -> None:
    # nft -c parses and checks, changing nothing (no ruleset is loaded).
    ruleset = tmp_path / "check.nft"
    ruleset.write_text(
        "table inet seawall {\n chain input {\n"
        "  type filter hook input priority filter; policy drop;\n }\n}\n"
        f"{bench.bench_rule('10.77.0.1')}\n"
    )
    checked = subprocess.run(["nft", "-c", "-f", str(ruleset)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_the_bench_rule_loads_and_is_found_again(bench: ModuleType) -> None:
    # For real, in a network namespace of its own (nothing outside it is touched): the
    # rule loads into a chain like the firewall's and the listing gives its handle back.
    assert os.geteuid() == 0, "a network namespace needs root"
    script = (
        "nft 'add table inet seawall' && nft 'add chain inet seawall input "
        "{ type filter hook input priority filter; policy drop; }' && "
        "nft 'add rule inet seawall input ct state established,related accept' && "
        f"nft '{bench.bench_rule('10.77.0.1')}' && nft -a list chain inet seawall input"
    )
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert len(bench.bench_rule_handles(done.stdout)) == 1, done.stdout

"""Benchmark the gateway: added latency and CPU per request through gw-1, throughput ratio.

In one session, interleaved in rounds so drift hits every mode alike:

- a fixed, light load (``--rate`` GETs/s, under every rate limit) straight to the
  app hosts, then through gw-1 over plain HTTP (its internal listener) and over
  HTTPS; each mode's p50 and p99, and what the gateway adds;
- NGINX's CPU per proxied request, from the cgroup of gw-1's nginx.service (CPU
  accounting of the container's systemd), at the paced load and under wrk; full
  configuration (rate limits, request ids, JSON access log);
- the throughput ratio gateway / direct with wrk (bounded by -d); for that phase
  only the controller is exempted from the rate limits (a deploy with
  ``--data gateway_rate_limit_exempt=...``), and the normal configuration is
  deployed again afterwards, whatever happens;
- NGINX's own cost with a static backend on gw-1's loopback: the full gateway and a
  bare one-location proxy over http and over https (the gateway's certificate and TLS
  settings), at 16 and 64 wrk connections, in interleaved rounds; each gateway row
  against the bare proxy of its own protocol; with ``--quiet-lab`` every other lab host
  but the ops host (the central journal) is shut down meanwhile (LAB-NOTES' method);
- in the same runs, what shipping the gateway's log lines costs on gw-1: the CPU of
  its copier, systemd-journald and systemd-journal-upload units per request, counted until the
  upload has sent the run's last line (bounded wait), with the share of requests whose
  line reached gw-1's journal (journald's rate limit may drop some under wrk).

    .venv/bin/python bench/gateway.py --rounds 3 --quiet-lab

Traffic goes only to lab addresses, after checking the lab's bridge. gw-1's firewall
lets the controller reach the bare proxy's ports for the static phase only.
"""

import argparse
import base64
import http.client
import json
import os
import re
import shlex
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import load_note, publish, run_deploy  # noqa: E402  (bench/report.py)

from seawall import defaults, inventory  # noqa: E402
from seawall.components.gateway import tls_paths  # noqa: E402
from seawall.inventory import Topology  # noqa: E402
from seawall.lab import faults  # noqa: E402
from seawall.lab.config import LabConfig, lab_config  # noqa: E402
from seawall.lab.network import require_bridge  # noqa: E402
from seawall.local import run  # noqa: E402
from seawall.settings import setting  # noqa: E402
from seawall.ssh import run as ssh  # noqa: E402

INVENTORY = ROOT / "inventories" / "lab.py"
SERVICE = next(s for s in defaults.SERVICES["services"] if s["name"] == "ai-engine")
GATEWAY_PATH = f"{SERVICE['route']}items/1"
DIRECT_PATH = "/items/1"
GATEWAY_HOST = "gw-1"
# Targets from the issue.
ADDED_P50_MS, ADDED_P99_MS = 1.0, 5.0
CPU_US = {"gateway http": 40.0, "gateway https": 50.0}


@dataclass
class Mode:
    name: str
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    cpu_us: list[float] = field(default_factory=list)


def parse_cpu_stat(stat: str, unit: str) -> tuple[int, int]:
    """User and system µs of a cgroup v2 ``cpu.stat`` text."""
    user, system = (re.search(rf"^{key}_usec (\d+)$", stat, re.M) for key in ("user", "system"))
    if not (user and system):
        raise SystemExit(f"no CPU accounting for {unit} in its cpu.stat")
    return int(user.group(1)), int(system.group(1))


def container_cgroup(container: str) -> Path:
    """The running container's own v2 cgroup: after a restart LXC names it anew
    (lxc.payload.NAME-1, -2...), and the old directories may linger."""
    pid = run(["lxc-info", "-n", container, "-pH"]).stdout.strip()
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if line.startswith("0::/"):
            return Path("/sys/fs/cgroup/unified") / line[4:].split("/")[0]
    raise SystemExit(f"{container}: no cgroup v2 path for its init (pid {pid})")


def unit_cpu(container: str, unit: str = "nginx") -> tuple[int, int]:
    """User and system CPU (µs) used so far by a unit of gw-1 (nginx.service by default),
    from its cgroup (v2 cpu.stat, as the container's systemd accounts it)."""
    stat = (container_cgroup(container) / f"system.slice/{unit}.service/cpu.stat").read_text()
    return parse_cpu_stat(stat, unit)


def unit_cpu_us(container: str, unit: str = "nginx") -> int:
    return sum(unit_cpu(container, unit))


def connect(address: str, port: int, context: ssl.SSLContext | None) -> http.client.HTTPConnection:
    if context is None:
        return http.client.HTTPConnection(address, port, timeout=10)
    return http.client.HTTPSConnection(address, port, timeout=10, context=context)


# Address, port, path and TLS context (None: plain HTTP) of one paced-load target.
Target = tuple[str, int, str, ssl.SSLContext | None]


def paced_load(targets: list[Target], rate: float, seconds: float) -> tuple[list[float], int]:
    """GET at ``rate`` per second for ``seconds``, rotating over ``targets``; one keep-alive
    connection each. Return the latencies (ms) and the count of failures."""
    conns = [connect(address, port, context) for address, port, _, context in targets]
    latencies: list[float] = []
    errors = 0
    interval = 1.0 / rate
    count = int(rate * seconds)
    next_at = time.perf_counter()
    for i in range(count):
        index = i % len(targets)
        path = targets[index][2]
        started = time.perf_counter()
        try:
            conns[index].request("GET", path)
            response = conns[index].getresponse()
            response.read()
            if response.status != 200:
                errors += 1
            else:
                latencies.append((time.perf_counter() - started) * 1000)
        except OSError:
            errors += 1
            conns[index].close()
            conns[index] = connect(*targets[index][:2], targets[index][3])
        next_at += interval
        time.sleep(max(0.0, next_at - time.perf_counter()))
    for conn in conns:
        conn.close()
    return latencies, errors


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


_WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


@dataclass(frozen=True)
class Wrk:
    rps: float
    requests: int
    errors: int
    nginx_cpu_us: float  # per request, gw-1's nginx.service cgroup
    nginx_user_us: float  # of which in user space (NGINX, OpenSSL, libc)


def wrk(url: str, seconds: int, connections: int, container: str, unit: str = "nginx") -> Wrk:
    user_before, system_before = unit_cpu(container, unit)
    out = subprocess.run(
        ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout
    user, system = unit_cpu(container, unit)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = max(1, int(re.search(r"(\d+) requests in", out).group(1)))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    failed = int(errors.group(1)) if errors else 0
    used = user - user_before + system - system_before
    return Wrk(rps, requests, failed, used / requests, (user - user_before) / requests)


# The units of gw-1 that take the gateway's log lines to the central journal: the copier
# reads the access log and streams each line to journald, which writes it;
# journal-upload reads and ships it.
LOG_UNITS = ("seawall-gateway-journal", "systemd-journald", "systemd-journal-upload")
# journal-upload saves the cursor of the last entry the ops host accepted here (after
# each upload, --save-state); Debian's unit keeps it in its StateDirectory.
UPLOAD_STATE = "/var/lib/systemd/journal-upload/state"
# How long after a run the upload may take to send its last line (a bound, not a target).
UPLOAD_DRAIN_S = 90


@dataclass(frozen=True)
class LogCost:
    """What shipping one run's log lines cost gw-1, per request of the run."""

    copier_us: float
    journald_us: float
    upload_us: float
    logged: float  # the run's lines in gw-1's journal, per request (1: none dropped)
    drained: bool  # the upload sent the run's last line within UPLOAD_DRAIN_S

    @property
    def total_us(self) -> float:
        return self.copier_us + self.journald_us + self.upload_us


def log_cost(
    before: dict[str, int], after: dict[str, int], requests: int, lines: int, drained: bool
) -> LogCost:
    """The per-request cost from the log units' CPU (µs, user + system) before and after.

    Raises:
        SystemExit: a counter went back: its unit restarted (a new cgroup) during the run.
    """
    restarted = [unit for unit in LOG_UNITS if after[unit] < before[unit]]
    if restarted:
        raise SystemExit(f"{', '.join(restarted)} restarted during a run on {GATEWAY_HOST}")
    requests = max(1, requests)
    copier, journald, upload = ((after[u] - before[u]) / requests for u in LOG_UNITS)
    return LogCost(copier, journald, upload, lines / requests, drained)


def log_units_cpu(container: str) -> dict[str, int]:
    return {unit: unit_cpu_us(container, unit) for unit in LOG_UNITS}


def cursor_time(cursor: str) -> int | None:
    """The realtime (µs) a journal cursor names (its ``t=`` field, hexadecimal)."""
    found = re.search(r"(?:^|;)t=([0-9a-f]+)(?:;|$)", cursor)
    return int(found.group(1), 16) if found else None


def shipped(saved: str, last_line: str) -> bool:
    """Whether the upload's saved cursor (``saved``, empty before its first upload) is
    at or past the journal entry of cursor ``last_line`` (empty: no line to ship)."""
    if not last_line:
        return True
    sent, wanted = cursor_time(saved), cursor_time(last_line)
    return sent is not None and wanted is not None and sent >= wanted


def upload_drained(topology: Topology, tag: str, timeout: float = UPLOAD_DRAIN_S) -> bool:
    """Wait (bounded) until gw-1's journal-upload has sent the last ``tag`` line: the
    cursor it saved is at or past that line's. False if it has not within ``timeout``."""
    check = (
        f"sed -n 's/^LAST_CURSOR=//p' {UPLOAD_STATE} 2>/dev/null | tail -n 1; echo; "
        f"journalctl -q -t {tag} -n 1 -o export | sed -n 's/^__CURSOR=//p'"
    )
    deadline = time.monotonic() + timeout
    while True:
        out = ssh(topology, GATEWAY_HOST, check, check=True, timeout=60).stdout
        saved, _, last_line = out.partition("\n")
        if shipped(saved.strip(), last_line.strip()):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(1)


def journal_lines(topology: Topology, tag: str, since: float, until: float) -> int:
    """The ``tag`` lines gw-1's journal holds from ``since`` to ``until`` (Unix seconds;
    the containers share the controller's clock)."""
    out = ssh(
        topology,
        GATEWAY_HOST,
        f"journalctl -q -t {tag} --since=@{int(since)} --until=@{int(until) + 1} -o cat | wc -l",
        check=True,
        timeout=120,
    ).stdout
    return int(out.strip())


def shipped_wrk(
    topology: Topology,
    tag: str,
    url: str,
    seconds: int,
    connections: int,
    container: str,
    unit: str,
) -> tuple[Wrk, LogCost]:
    """``wrk`` with what shipping the run's log lines cost gw-1, counted until the upload
    caught up (the previous run's lines are sent before it starts)."""
    upload_drained(topology, tag)
    before = log_units_cpu(container)
    started = time.time()
    result = wrk(url, seconds, connections, container, unit)
    lines = settled_lines(topology, tag, started)
    drained = upload_drained(topology, tag)
    after = log_units_cpu(container)
    return result, log_cost(before, after, result.requests, lines, drained)


def settled_lines(topology: Topology, tag: str, since: float, timeout: float = 60) -> int:
    """The ``tag`` lines in gw-1's journal since ``since``, once their count stops growing
    (journald stamps a line when it reads it, which under load is after the run ended)."""
    deadline = time.monotonic() + timeout
    count = journal_lines(topology, tag, since, time.time())
    while time.monotonic() < deadline:
        time.sleep(2)
        now = journal_lines(topology, tag, since, time.time())
        if now == count:
            break
        count = now
    return count


# The sender of the journald floor row: the gateway's own line, FLOOR_LINES times, to
# journald as a stream tagged like the gateway's (systemd-cat): one entry per line, as
# the copier sent them before it sent batches.
FLOOR_SENDER = "import sys; sys.stdout.write((sys.argv[1] + chr(10)) * int(sys.argv[2]))"
JOURNALD_FLOOR = "journald floor (same lines, one entry each, no NGINX)"
FLOOR_LINES = 20_000
FLOOR_LIMIT_S = 120.0


def journald_floor(topology: Topology, tag: str, container: str) -> LogCost:
    """What journald and the upload spend per line when a bare sender writes the gateway's
    own access line (the last one in gw-1's journal) FLOOR_LINES times: the pipeline's
    floor for one journal entry per request, with no NGINX in the way."""
    # The last entry holds a batch of lines: its last one.
    last = f"journalctl -q -t {tag} -n 1 -o cat | tail -n 1"
    line = ssh(topology, GATEWAY_HOST, last, check=True).stdout
    if not line.strip():
        raise SystemExit(f"no {tag} line in {GATEWAY_HOST}'s journal to measure the floor with")
    upload_drained(topology, tag)
    before = log_units_cpu(container)
    started = time.time()
    send = f"python3 -c {shlex.quote(FLOOR_SENDER)} {shlex.quote(line.strip())} {FLOOR_LINES}"
    ssh(
        topology,
        GATEWAY_HOST,
        f"timeout {FLOOR_LIMIT_S:.0f} sh -c {shlex.quote(f'{send} | systemd-cat -t {tag}')}",
        check=True,
        timeout=FLOOR_LIMIT_S + 60,
    )
    lines = settled_lines(topology, tag, started)
    drained = upload_drained(topology, tag)
    after = log_units_cpu(container)
    return log_cost(before, after, FLOOR_LINES, lines, drained)


def _median_ratio(values: list[float], floors: list[float]) -> float:
    """The median over rounds of each round's value / the same round's floor."""
    return statistics.median(v / f for v, f in zip(values, floors, strict=True))


@dataclass(frozen=True)
class Ratios:
    """Issue 12's acceptance ratios at one wrk connection count (medians over rounds)."""

    connections: int
    same_protocol: dict[str, float]  # gateway row -> NGINX CPU / bare proxy's, same protocol
    log_pipeline: dict[str, float]  # gateway row -> log pipeline CPU / bare http's NGINX CPU
    # Every gateway run's lines reached gw-1's journal (none dropped) and were shipped:
    # the target is with the logs in the central journal, not with some lost on the way.
    shipped_all: bool

    @property
    def met(self) -> bool:
        return (
            self.shipped_all
            and all(r <= BARE_RATIO_MAX for r in self.same_protocol.values())
            and all(r <= LOG_RATIO_MAX for r in self.log_pipeline.values())
        )


def ratios(
    static: dict[tuple[str, int], list[Wrk]], logs: dict[tuple[str, int], list[LogCost]]
) -> list[Ratios]:
    """The acceptance ratios per connection count, each round against its own bare rows."""
    made = []
    for connections in sorted({c for _, c in static}):
        bare_http = [r.nginx_cpu_us for r in static[(BARE, connections)]]
        same, pipeline = {}, {}
        shipped_all = True
        for (name, count), results in static.items():
            if count != connections or name in (BARE, BARE_TLS, JOURNALD_FLOOR):
                continue
            floor = [r.nginx_cpu_us for r in static[(SAME_PROTOCOL[name], connections)]]
            same[name] = _median_ratio([r.nginx_cpu_us for r in results], floor)
            costs = logs[(name, count)]
            pipeline[name] = _median_ratio([c.total_us for c in costs], bare_http)
            shipped_all &= all(c.drained and c.logged >= LOGGED_MIN for c in costs)
        made.append(Ratios(connections, same, pipeline, shipped_all))
    return made


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def static_lines(
    static: dict[tuple[str, int], list[Wrk]], logs: dict[tuple[str, int], list[LogCost]]
) -> list[str]:
    """The static-backend tables (NGINX, then the log pipeline) and the acceptance ratios."""
    lines = [
        "",
        "| through gw-1 | wrk connections | requests/s | non-2xx | nginx CPU per request, "
        "µs: median (min-max) | of it user space, µs | ratio to bare http proxy | ratio to "
        "bare proxy of its protocol | target |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (name, connections), results in static.items():
        if name == JOURNALD_FLOOR:
            continue
        per_request = [r.nginx_cpu_us for r in results]
        bare = [r.nginx_cpu_us for r in static[(BARE, connections)]]
        same = [r.nginx_cpu_us for r in static[(SAME_PROTOCOL[name], connections)]]
        target = f"<= {CPU_US[name]:.0f} µs, <= {BARE_RATIO_MAX:.2f}×" if name in CPU_US else "-"
        lines.append(
            f"| {name} | {connections} | {statistics.median(r.rps for r in results):.0f} | "
            f"{sum(r.errors for r in results)} | {_spread(per_request)} | "
            f"{statistics.median(r.nginx_user_us for r in results):.1f} | "
            f"{_median_ratio(per_request, bare):.2f} | {_median_ratio(per_request, same):.2f} | "
            f"{target} |"
        )
    lines += [
        "",
        "Shipping the log lines, in the same runs (CPU on gw-1 per request of the run):",
        "",
        "| through gw-1 | wrk connections | copier µs | journald µs | journal-upload µs | "
        "log pipeline µs: "
        "median (min-max) | ratio to bare http proxy's nginx CPU | target | lines in gw-1's "
        "journal per request | upload caught up |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (name, connections), costs in logs.items():
        bare = [r.nginx_cpu_us for r in static[(BARE, connections)]]
        total = [c.total_us for c in costs]
        target = "-" if name in (BARE, BARE_TLS, JOURNALD_FLOOR) else f"<= {LOG_RATIO_MAX:.2f}×"
        lines.append(
            f"| {name} | {connections} | "
            f"{statistics.median(c.copier_us for c in costs):.1f} | "
            f"{statistics.median(c.journald_us for c in costs):.1f} | "
            f"{statistics.median(c.upload_us for c in costs):.1f} | {_spread(total)} | "
            f"{_median_ratio(total, bare):.2f} | {target} | "
            f"{statistics.median(c.logged for c in costs):.2f} | "
            f"{sum(c.drained for c in costs)}/{len(costs)} |"
        )
    lines.append("")
    for found in ratios(static, logs):
        nginx = ", ".join(f"{n} {r:.2f}×" for n, r in found.same_protocol.items())
        shipped = ", ".join(f"{n} {r:.2f}×" for n, r in found.log_pipeline.items())
        lines.append(
            f"- {found.connections} connections: NGINX against the bare proxy of the same "
            f"protocol {nginx} (target <= {BARE_RATIO_MAX:.2f}×); log pipeline against the bare "
            f"http proxy {shipped} (target <= {LOG_RATIO_MAX:.2f}×)"
            + (
                ""
                if found.shipped_all
                else "; not every line reached gw-1's journal or was shipped (table above)"
            )
            + (": met." if found.met else ": **not met**.")
        )
    return lines


def deploy_gateway(*data: str) -> None:
    run_deploy("deploys/gateway.py", *data, limit="gateway", timeout=600)


STATIC_UNIT = "seawall-bench-backend"
STATIC_PORT = 18090
# A bare proxy (no limits, ids, logs or headers) to the same static backend, in its own
# cgroup: what proxying alone costs on this machine at this moment; over http, and over
# https with the gateway's certificate and TLS settings.
MINIMAL_UNIT = "seawall-bench-minimal-proxy"
MINIMAL_PORT = 18091
MINIMAL_TLS_PORT = 18092
BARE = "bare proxy, http"
BARE_TLS = "bare proxy, https"
# Each static row's bare proxy of the same protocol.
SAME_PROTOCOL = {
    BARE: BARE,
    BARE_TLS: BARE_TLS,
    "gateway http": BARE,
    "gateway https": BARE_TLS,
}
# Targets from issue 12, with the gateway's logs reaching the central journal.
BARE_RATIO_MAX = 1.25  # NGINX CPU per request / the bare proxy's, same protocol
LOG_RATIO_MAX = 0.5  # log pipeline CPU per request / the bare http proxy's NGINX CPU
# A run's lines per request in gw-1's journal at least this (the window's edges may
# miss a line or two): below it journald dropped lines.
LOGGED_MIN = 0.99
# wrk connections for the static-backend measurement: NGINX's cost per request falls as
# more requests share each wake-up, so it is reported at both.
STATIC_CONNECTIONS = (16, 64)


def _transient_nginx(
    topology: Topology, unit: str, running: bool, server: str = "", workers: int | str = 1
) -> None:
    """Start (with one ``server`` block) or stop an NGINX of its own as transient ``unit``."""
    path = f"/run/{unit}.conf"
    if not running:
        ssh(topology, GATEWAY_HOST, f"systemctl stop {unit}; rm -f {path}")
        return
    conf = (
        f"worker_processes {workers};\npid /run/{unit}.pid;\n"
        f"error_log /run/{unit}.log warn;\nevents {{}}\n"
        f"http {{\n  access_log off;\n{server}}}\n"
    )
    encoded = base64.b64encode(conf.encode()).decode()
    ssh(
        topology,
        GATEWAY_HOST,
        # A leftover of an interrupted run is stopped first.
        f"systemctl stop {unit} 2>/dev/null; systemctl reset-failed {unit} 2>/dev/null; "
        f"echo {encoded} | base64 -d > {path} && "
        f"systemd-run --unit={unit} nginx -c {path} -g 'daemon off;' && sleep 1 "
        f"&& systemctl is-active {unit}",
        check=True,
    )


def minimal_servers(host_data: Mapping[str, Any], address: str) -> str:
    """The bare proxy's ``server`` blocks: one location to the static backend, over http
    and over https. The https listener has what the gateway's has (certificate, protocols,
    ciphers and curves, session cache, http2 offered), nothing else."""
    cert, key, _ = tls_paths(host_data)
    location = (
        '    location / { proxy_http_version 1.1; proxy_set_header Connection ""; '
        "proxy_pass http://up/; }\n"
    )
    return (
        f"  upstream up {{ server 127.0.0.1:{STATIC_PORT}; keepalive 32; }}\n"
        f"  server {{\n    listen {address}:{MINIMAL_PORT};\n{location}  }}\n"
        f"  server {{\n    listen {address}:{MINIMAL_TLS_PORT} ssl http2;\n"
        f"    ssl_certificate {cert};\n    ssl_certificate_key {key};\n"
        f"    ssl_protocols {setting(host_data, 'gateway_tls_protocols')};\n"
        f"    ssl_ciphers {setting(host_data, 'gateway_tls_ciphers')};\n"
        f"    ssl_ecdh_curve {setting(host_data, 'gateway_tls_ecdh_curves')};\n"
        "    ssl_prefer_server_ciphers off;\n"
        "    ssl_session_cache shared:BARETLS:10m;\n    ssl_session_timeout 1h;\n"
        f"    ssl_session_tickets off;\n{location}  }}\n"
    )


def minimal_proxy(topology: Topology, running: bool, address: str) -> None:
    """Start or stop the bare proxy, with as many workers as the gateway has."""
    workers = setting(topology.host(GATEWAY_HOST).data, "gateway_worker_processes")
    server = minimal_servers(topology.host(GATEWAY_HOST).data, address) if running else ""
    _transient_nginx(topology, MINIMAL_UNIT, running, server, workers)


# gw-1's firewall (table inet seawall, policy drop) lets in only the ports it serves:
# the bare proxy's are opened to the controller for the static phase by a rule of their
# own, appended (established traffic is accepted before it), found by its comment and
# removed afterwards, and before, should an earlier run have been cut short.
BENCH_RULE = "seawall-bench-gateway"


def bench_rule_handles(listing: str) -> list[int]:
    """The handles of the bench's rules in ``nft -a list chain`` output."""
    return [
        int(found.group(1))
        for found in re.finditer(rf'comment "{BENCH_RULE}" # handle (\d+)$', listing, re.M)
    ]


def bench_rule(source: str) -> str:
    """The nft command that lets ``source`` reach the bare proxy's ports."""
    return (
        f"add rule inet seawall input ip saddr {source} tcp dport "
        f'{{ {MINIMAL_PORT}, {MINIMAL_TLS_PORT} }} accept comment "{BENCH_RULE}"'
    )


def bench_ports(topology: Topology, source: str, open_: bool) -> None:
    """Open (or close) the bare proxy's ports on gw-1's firewall to ``source`` only."""
    listing = ssh(topology, GATEWAY_HOST, "nft -a list chain inet seawall input 2>/dev/null").stdout
    for handle in bench_rule_handles(listing):
        ssh(
            topology,
            GATEWAY_HOST,
            f"nft delete rule inet seawall input handle {handle}",
            check=True,
        )
    if open_ and "chain input" in listing:  # no table: no firewall deployed, nothing to open
        ssh(topology, GATEWAY_HOST, f"nft '{bench_rule(source)}'", check=True)


def static_backend(topology: Topology, running: bool) -> None:
    """Start or stop a static stand-in backend on gw-1's loopback, in its own cgroup."""
    server = (
        f"  server {{\n    listen 127.0.0.1:{STATIC_PORT};\n"
        '    location / { default_type application/json; return 200 "{}"; }\n  }\n'
    )
    _transient_nginx(topology, STATIC_UNIT, running, server)


def quiet_hosts(names: list[str], ops_host: str) -> list[str]:
    """The lab hosts ``--quiet-lab`` shuts down: all but gw-1 and the ops host, which the
    gateway's log lines are shipped to (without it journal-upload only retries, and what
    shipping costs is not measured)."""
    return [name for name in names if name not in (GATEWAY_HOST, ops_host)]


@contextmanager
def quiet_lab(config: LabConfig, enabled: bool, ops_host: str) -> Iterator[None]:
    """With ``enabled``, shut the ``quiet_hosts`` down (cleanly) for the block and start
    them again after it: NGINX then shares the machine with wrk, the static backend and the
    ops host only, near ../shared/LAB-NOTES.md's baseline. Holds the fault locks meanwhile."""
    if not enabled:
        yield
        return
    with (
        faults.app_fault_lock(timeout=600),
        faults.exclusive_lock(faults.DATA_FAULT_LOCK, timeout=600),
    ):
        try:
            stop = quiet_hosts([host.name for host in config.hosts], ops_host)
            stopping = [
                subprocess.Popen(["lxc-stop", "-n", config.host(name).container, "-t", "60"])
                for name in stop
            ]
            for process in stopping:
                process.wait(timeout=120)
            time.sleep(10)  # let the machine settle after the shutdowns
            yield
        finally:
            faults.restore(config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=80.0, help="GETs/s of the paced load")
    parser.add_argument("--seconds", type=float, default=20.0, help="per mode and round")
    parser.add_argument("--wrk-seconds", type=int, default=10)
    parser.add_argument("--no-throughput", action="store_true", help="skip the wrk phase")
    parser.add_argument(
        "--quiet-lab",
        action="store_true",
        help="shut the other lab hosts but the ops host (the central journal) down while "
        "measuring against the static backend",
    )
    parser.add_argument(
        "--gateway-data",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="deploy the gateway with this data for the static phase (a variant to compare, "
        'e.g. gateway_journal_tag="" for no journal line)',
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    general = defaults.GATEWAY["gateway_rate_zones"]["general"]["rate"]
    if args.rate >= general:
        raise SystemExit(f"--rate must stay under the general limit ({general}/s)")

    load_before = os.getloadavg()[0]
    topology: Topology = inventory.load(INVENTORY)
    config = lab_config(topology)
    require_bridge(config)
    container = config.host(GATEWAY_HOST).container
    gateway = topology.host(GATEWAY_HOST).address
    apps = [h.address for h in topology.group("app")]
    cert = ssh(topology, GATEWAY_HOST, "cat /etc/nginx/tls/gateway.crt", check=True).stdout
    tls = ssl.create_default_context(cadata=cert)
    internal = defaults.GATEWAY["gateway_internal_http_port"]
    https = defaults.GATEWAY["gateway_https_port"]
    modes: dict[str, tuple[Mode, list[Target]]] = {
        "direct": (Mode("direct"), [(a, SERVICE["port"], DIRECT_PATH, None) for a in apps]),
        "gateway http": (Mode("gateway http"), [(gateway, internal, GATEWAY_PATH, None)]),
        "gateway https": (Mode("gateway https"), [(gateway, https, GATEWAY_PATH, tls)]),
    }
    for round_number in range(1, args.rounds + 1):
        for mode, targets in modes.values():
            before = unit_cpu_us(container)
            latencies, errors = paced_load(targets, args.rate, args.seconds)
            used_us = unit_cpu_us(container) - before
            mode.latencies += latencies
            mode.errors += errors
            if mode.name != "direct":
                mode.cpu_us.append(used_us / max(1, len(latencies)))
            print(
                f"round {round_number} {mode.name}: p50 {statistics.median(latencies):.2f} ms, "
                f"errors {errors}, nginx CPU {used_us / 1000:.0f} ms",
                file=sys.stderr,
                flush=True,
            )

    throughput: dict[str, Wrk] = {}
    static: dict[tuple[str, int], list[Wrk]] = {}
    logs: dict[tuple[str, int], list[LogCost]] = {}
    tag = setting(topology.host(GATEWAY_HOST).data, "gateway_journal_tag")
    if not tag:
        raise SystemExit("gateway_journal_tag is unset: the gateway sends no line to the journal")
    # The central journal's host stays up under --quiet-lab: the upload needs its sink.
    ops_host = topology.group("ops")[0].name
    if not args.no_throughput:
        # Their cgroups are read across every static run: both must be running.
        ssh(topology, GATEWAY_HOST, f"systemctl is-active {' '.join(LOG_UNITS)}", check=True)
        # The controller's address on the lab bridge: where wrk's requests come from.
        exempt = json.dumps([f"{config.bridge_address}/32"])
        urls = {
            "direct to app-1": f"http://{apps[0]}:{SERVICE['port']}{DIRECT_PATH}",
            "gateway http": f"http://{gateway}:{internal}{GATEWAY_PATH}",
            "gateway https": f"https://{gateway}:{https}{GATEWAY_PATH}",
        }
        # The static stand-in takes ai-engine's place behind the same configuration.
        catalogue = [
            {**s, "port": STATIC_PORT} if s["name"] == SERVICE["name"] else s
            for s in defaults.SERVICES["services"]
        ]
        try:
            deploy_gateway(f"gateway_rate_limit_exempt={exempt}")
            for name, url in urls.items():
                throughput[name] = wrk(url, args.wrk_seconds, 16, container)
                print(f"wrk {name}: {throughput[name]}", file=sys.stderr, flush=True)
            static_backend(topology, running=True)
            deploy_gateway(
                f"gateway_rate_limit_exempt={exempt}",
                'gateway_upstream_addresses=["127.0.0.1"]',
                f"services={json.dumps(catalogue)}",
                *args.gateway_data,
            )
            minimal_proxy(topology, True, gateway)
            bench_ports(topology, config.bridge_address, open_=True)
            static_targets = {
                BARE: (f"http://{gateway}:{MINIMAL_PORT}/items/1", MINIMAL_UNIT),
                BARE_TLS: (f"https://{gateway}:{MINIMAL_TLS_PORT}/items/1", MINIMAL_UNIT),
                "gateway http": (urls["gateway http"], "nginx"),
                "gateway https": (urls["gateway https"], "nginx"),
            }
            with quiet_lab(config, args.quiet_lab, ops_host):
                for _ in range(args.rounds):
                    for connections in STATIC_CONNECTIONS:
                        for name, (url, unit) in static_targets.items():
                            result, cost = shipped_wrk(
                                topology, tag, url, args.wrk_seconds, connections, container, unit
                            )
                            static.setdefault((name, connections), []).append(result)
                            logs.setdefault((name, connections), []).append(cost)
                            print(
                                f"wrk static {name}, {connections} connections: {result}, {cost}",
                                file=sys.stderr,
                                flush=True,
                            )
                        floor = journald_floor(topology, tag, container)
                        # Its row sits beside each connection count's rows, measured once.
                        static.setdefault((JOURNALD_FLOOR, connections), []).append(
                            static[(BARE, connections)][-1]
                        )
                        logs.setdefault((JOURNALD_FLOOR, connections), []).append(floor)
                        print(f"journald floor: {floor}", file=sys.stderr, flush=True)
        finally:
            deploy_gateway()
            bench_ports(topology, config.bridge_address, open_=False)
            minimal_proxy(topology, False, gateway)
            static_backend(topology, running=False)

    direct = modes["direct"][0]
    lines = [
        f"Gateway overhead, {time.strftime('%Y-%m-%d', time.gmtime())}: NGINX 1.22 on gw-1 "
        "with the full configuration (rate limits, request ids, JSON access log to a file "
        "and the journal, shipped to the central journal, TLS), "
        f"reference service behind it; {args.rounds} interleaved rounds of "
        f"{args.seconds:.0f} s per mode at {args.rate:.0f} GETs/s on keep-alive connections "
        "(a load that leaves the 2 shared cores mostly idle).",
        "",
        "| mode | requests | failed | p50 ms | p99 ms | added p50 ms | added p99 ms "
        "| nginx CPU per request at this rate, µs (median of rounds) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    d50, d99 = statistics.median(direct.latencies), percentile(direct.latencies, 0.99)
    for mode, _ in modes.values():
        p50, p99 = statistics.median(mode.latencies), percentile(mode.latencies, 0.99)
        added = "" if mode is direct else f"{p50 - d50:+.2f} | {p99 - d99:+.2f}"
        cpu = (
            ""
            if mode is direct
            else f"{statistics.median(mode.cpu_us):.0f} ({min(mode.cpu_us):.0f}-"
            f"{max(mode.cpu_us):.0f})"
        )
        lines.append(
            f"| {mode.name} | {len(mode.latencies)} | {mode.errors} | {p50:.2f} | {p99:.2f} | "
            f"{added or ' | '} | {cpu} |"
        )
    lines += [
        "",
        f"Targets: added p50 <= {ADDED_P50_MS} ms, added p99 <= {ADDED_P99_MS} ms. NGINX CPU "
        "is the usage of gw-1's nginx.service cgroup (cgroup v2 cpu.stat, as the container's "
        "systemd accounts it), divided by the requests proxied. At a light paced load every "
        "request pays its own wake-ups; the per-request cost NGINX adds under load is the "
        "wrk figure below.",
    ]
    if throughput:
        direct_rps = throughput["direct to app-1"].rps
        lines += [
            "",
            f"Under load: wrk, 2 threads, 16 keep-alive connections, {args.wrk_seconds} s each. "
            "The controller was exempt from the rate limits for this phase only (the zones "
            "stay configured and evaluated; its key is empty), then the normal configuration "
            "was deployed again.",
            "",
            "| target | requests/s | non-2xx | nginx CPU per request, µs | target | "
            "ratio to direct |",
            "|---|---|---|---|---|---|",
        ]
        for name, result in throughput.items():
            target = f"<= {CPU_US[name]:.0f}" if name in CPU_US else ""
            cpu = f"{result.nginx_cpu_us:.1f}" if name in CPU_US else ""
            lines.append(
                f"| {name} | {result.rps:.0f} | {result.errors} | {cpu} | {target} | "
                f"{result.rps / direct_rps:.2f} |"
            )
        lines += [
            "",
            "With a static backend (an NGINX `return 200` on gw-1's loopback, in its own "
            "cgroup, standing in for ai-engine behind the same full gateway configuration, "
            "as in ../shared/LAB-NOTES.md's baseline of ~27 µs http / ~33 µs https), the "
            f"gateway's own cost per proxied request; {args.rounds} interleaved rounds of "
            f"{args.wrk_seconds} s per row"
            + (
                f", every other lab host but {ops_host} (the central journal) shut down "
                "meanwhile (--quiet-lab):"
                if args.quiet_lab
                else ", the rest of the lab running:"
            ),
        ]
        lines += static_lines(static, logs)
        lines += [
            "",
            "The bare proxy rows are a one-location NGINX (no limits, ids, logs or headers) "
            "to the same backend, run at the same moment in its own cgroup, over http and "
            "over https with the gateway's certificate and TLS settings: the floor of "
            "proxying over each protocol on this machine now; the gap to the gateway row of "
            "the same protocol is what the full configuration costs; the floor itself is "
            "mostly kernel time (network path, context switches).",
            "",
            "The log pipeline is the CPU of gw-1's seawall-gateway-journal.service (the "
            "copier), systemd-journald.service and systemd-journal-upload.service cgroups "
            "(cgroup v2 cpu.stat, user + system) from the start of each run until "
            "journal-upload's saved cursor is past the run's "
            f"last `{tag}` line (at most {UPLOAD_DRAIN_S} s; 'caught up' counts the runs "
            "where it was), divided by the run's requests. NGINX writes each access line to "
            "its file, buffered; the copier sends the file's lines to journald in batches, "
            "one entry each (`gateway_journal_batch_lines` lines, or what came within "
            "`gateway_journal_batch_wait`); the upload "
            f"sends them to the central journal on {ops_host}. Lines per request below 1 are "
            "lines that did not reach gw-1's journal: their cost is then not all counted. The "
            "bare rows (no access log) show what the pipeline spends meanwhile on other lines. "
            f"The journald floor row sends the gateway's own line {FLOOR_LINES:,} times "
            "through `systemd-cat` with the same tag and no NGINX, one entry per line: "
            "journald's and the upload's cost per entry alone, divided here by lines, not "
            "requests (what a line per entry would cost, the copier's way before batches).",
            "",
            "Behind the reference service (~1,000 requests/s per Python process) NGINX "
            "handles each request's events one wake-up at a time instead of in batches, "
            "which is what the higher figures above measure.",
            "",
            "Direct goes to one app host, the gateway spreads over both; every lab host "
            "shares the machine's 2 cores, so when the services fill them NGINX's CPU comes "
            "out of theirs: the ratio measures core sharing, not the gateway (baseline in "
            "../shared/LAB-NOTES.md: ~0.75 http, ~0.67 https).",
        ]
    lines += load_note(load_before)
    publish("gateway", lines, write=not args.no_write)


if __name__ == "__main__":
    main()

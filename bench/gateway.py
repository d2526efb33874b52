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
  deployed again afterwards, whatever happens.

    /tmp/venv/bin/python bench/gateway.py --rounds 3

Traffic goes only to lab addresses, after checking the lab's bridge.
"""

import argparse
import base64
import http.client
import json
import os
import re
import ssl
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import load_note, run_deploy, write_section  # noqa: E402  (bench/report.py)

from seawall import defaults, inventory  # noqa: E402
from seawall.inventory import Topology  # noqa: E402
from seawall.lab.config import lab_config  # noqa: E402
from seawall.lab.network import require_bridge  # noqa: E402
from seawall.lab.ssh import run as ssh  # noqa: E402

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


def unit_cpu_us(container: str, unit: str = "nginx") -> int:
    """CPU (µs) used so far by a unit of gw-1 (nginx.service by default), from its cgroup
    (v2 cpu.stat, as the container's systemd accounts it)."""
    stat = Path(
        f"/sys/fs/cgroup/unified/lxc.payload.{container}/system.slice/{unit}.service/cpu.stat"
    ).read_text()
    return int(re.search(r"usage_usec (\d+)", stat).group(1))  # type: ignore[union-attr]


def connect(address: str, port: int, context: ssl.SSLContext | None) -> http.client.HTTPConnection:
    if context is None:
        return http.client.HTTPConnection(address, port, timeout=10)
    return http.client.HTTPSConnection(address, port, timeout=10, context=context)


def paced_load(
    targets: list[tuple[str, int, str, ssl.SSLContext | None]], rate: float, seconds: float
) -> tuple[list[float], int]:
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


def wrk(url: str, seconds: int, connections: int, container: str, unit: str = "nginx") -> Wrk:
    before = unit_cpu_us(container, unit)
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout
    used = unit_cpu_us(container, unit) - before
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    failed = int(errors.group(1)) if errors else 0
    return Wrk(rps, requests, failed, used / max(1, requests))


def deploy_gateway(*data: str) -> None:
    run_deploy("deploys/gateway.py", *data, limit="gateway", timeout=600)


STATIC_UNIT = "seawall-bench-backend"
STATIC_PORT = 18090
# A bare proxy (no limits, ids, logs or TLS) to the same static backend, in its own
# cgroup: what proxying alone costs on this machine at this moment.
MINIMAL_UNIT = "seawall-bench-minimal-proxy"
MINIMAL_PORT = 18091


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
        f"echo {encoded} | base64 -d > {path} && "
        f"systemd-run --unit={unit} nginx -c {path} -g 'daemon off;' && sleep 1 "
        f"&& systemctl is-active {unit}",
        check=True,
    )


def minimal_proxy(topology: Topology, running: bool, address: str) -> None:
    """Start or stop the bare proxy, with as many workers as the gateway has."""
    server = (
        f"  upstream up {{ server 127.0.0.1:{STATIC_PORT}; keepalive 32; }}\n"
        f"  server {{\n    listen {address}:{MINIMAL_PORT};\n"
        '    location / { proxy_http_version 1.1; proxy_set_header Connection ""; '
        "proxy_pass http://up/; }\n  }\n"
    )
    workers = topology.host(GATEWAY_HOST).data["gateway_worker_processes"]
    _transient_nginx(topology, MINIMAL_UNIT, running, server, workers)


def static_backend(topology: Topology, running: bool) -> None:
    """Start or stop a static stand-in backend on gw-1's loopback, in its own cgroup."""
    server = (
        f"  server {{\n    listen 127.0.0.1:{STATIC_PORT};\n"
        '    location / { default_type application/json; return 200 "{}"; }\n  }\n'
    )
    _transient_nginx(topology, STATIC_UNIT, running, server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=80.0, help="GETs/s of the paced load")
    parser.add_argument("--seconds", type=float, default=20.0, help="per mode and round")
    parser.add_argument("--wrk-seconds", type=int, default=10)
    parser.add_argument("--no-throughput", action="store_true", help="skip the wrk phase")
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
    modes = {
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
    static: dict[str, Wrk] = {}
    if not args.no_throughput:
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
            )
            for name in ("gateway http", "gateway https"):
                static[name] = wrk(urls[name], args.wrk_seconds, 16, container)
                print(f"wrk static {name}: {static[name]}", file=sys.stderr, flush=True)
            minimal_proxy(topology, True, gateway)
            static["bare proxy, http (reference)"] = wrk(
                f"http://{gateway}:{MINIMAL_PORT}/items/1",
                args.wrk_seconds,
                16,
                container,
                MINIMAL_UNIT,
            )
        finally:
            deploy_gateway()
            minimal_proxy(topology, False, gateway)
            static_backend(topology, running=False)

    direct = modes["direct"][0]
    lines = [
        f"Gateway overhead, {time.strftime('%Y-%m-%d', time.gmtime())}: NGINX 1.22 on gw-1 "
        "with the full configuration (rate limits, request ids, JSON access log, TLS), "
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
            "gateway's own cost per proxied request:",
            "",
            "| through gw-1 | requests/s | non-2xx | nginx CPU per request, µs | target |",
            "|---|---|---|---|---|",
        ]
        for name, result in static.items():
            target = f"<= {CPU_US[name]:.0f}" if name in CPU_US else "-"
            lines.append(
                f"| {name} | {result.rps:.0f} | {result.errors} | "
                f"{result.nginx_cpu_us:.1f} | {target} |"
            )
        lines += [
            "",
            "The bare proxy row is a one-location NGINX (no limits, ids, logs, TLS) to the "
            "same backend, run at the same moment in its own cgroup: the floor of proxying "
            "on this machine now; the gap to the gateway rows is what the full configuration "
            "costs; the floor itself is mostly kernel time (network path, context switches).",
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
    report = "\n".join(lines)
    print(report)
    if not args.no_write:
        write_section("gateway", report)


if __name__ == "__main__":
    main()

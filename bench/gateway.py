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
  bare one-location proxy, at 16 and 64 wrk connections, in interleaved rounds; with
  ``--quiet-lab`` every other lab host is shut down meanwhile (LAB-NOTES' method).

    .venv/bin/python bench/gateway.py --rounds 3 --quiet-lab

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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import load_note, run_deploy, write_section  # noqa: E402  (bench/report.py)

from seawall import defaults, inventory  # noqa: E402
from seawall.inventory import Topology  # noqa: E402
from seawall.lab import faults  # noqa: E402
from seawall.lab.config import LabConfig, lab_config  # noqa: E402
from seawall.lab.network import require_bridge  # noqa: E402
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


def unit_cpu(container: str, unit: str = "nginx") -> tuple[int, int]:
    """User and system CPU (µs) used so far by a unit of gw-1 (nginx.service by default),
    from its cgroup (v2 cpu.stat, as the container's systemd accounts it)."""
    stat = Path(
        f"/sys/fs/cgroup/unified/lxc.payload.{container}/system.slice/{unit}.service/cpu.stat"
    ).read_text()
    user, system = (re.search(rf"{key}_usec (\d+)", stat) for key in ("user", "system"))
    assert user and system, f"no CPU accounting for {unit} in {container}"
    return int(user.group(1)), int(system.group(1))


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


def deploy_gateway(*data: str) -> None:
    run_deploy("deploys/gateway.py", *data, limit="gateway", timeout=600)


STATIC_UNIT = "seawall-bench-backend"
STATIC_PORT = 18090
# A bare proxy (no limits, ids, logs or TLS) to the same static backend, in its own
# cgroup: what proxying alone costs on this machine at this moment.
MINIMAL_UNIT = "seawall-bench-minimal-proxy"
MINIMAL_PORT = 18091
BARE = "bare proxy, http"
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


@contextmanager
def quiet_lab(config: LabConfig, enabled: bool) -> Iterator[None]:
    """With ``enabled``, shut every lab host but gw-1 down (cleanly) for the block and start
    them again after it: NGINX then shares the machine with wrk and the static backend only,
    as in ../shared/LAB-NOTES.md's baseline. Holds the fault locks meanwhile."""
    if not enabled:
        yield
        return
    with (
        faults.app_fault_lock(timeout=600),
        faults.exclusive_lock(faults.DATA_FAULT_LOCK, timeout=600),
    ):
        try:
            stopping = [
                subprocess.Popen(["lxc-stop", "-n", host.container, "-t", "60"])
                for host in config.hosts
                if host.name != GATEWAY_HOST
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
        help="shut the other lab hosts down while measuring against the static backend",
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
            minimal_proxy(topology, True, gateway)
            static_targets = {
                BARE: (f"http://{gateway}:{MINIMAL_PORT}/items/1", MINIMAL_UNIT),
                "gateway http": (urls["gateway http"], "nginx"),
                "gateway https": (urls["gateway https"], "nginx"),
            }
            with quiet_lab(config, args.quiet_lab):
                for _ in range(args.rounds):
                    for connections in STATIC_CONNECTIONS:
                        for name, (url, unit) in static_targets.items():
                            result = wrk(url, args.wrk_seconds, connections, container, unit)
                            static.setdefault((name, connections), []).append(result)
                            print(
                                f"wrk static {name}, {connections} connections: {result}",
                                file=sys.stderr,
                                flush=True,
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
            f"gateway's own cost per proxied request; {args.rounds} interleaved rounds of "
            f"{args.wrk_seconds} s per row"
            + (
                ", every other lab host shut down meanwhile (--quiet-lab):"
                if args.quiet_lab
                else ", the rest of the lab running:"
            ),
            "",
            "| through gw-1 | wrk connections | requests/s | non-2xx | nginx CPU per request, "
            "µs: median (min-max) | of it user space, µs | ratio to bare proxy | target |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for (name, connections), results in static.items():
            per_request = [r.nginx_cpu_us for r in results]
            bare = [r.nginx_cpu_us for r in static[(BARE, connections)]]
            ratio = statistics.median(c / b for c, b in zip(per_request, bare, strict=True))
            target = f"<= {CPU_US[name]:.0f}" if name in CPU_US else "-"
            lines.append(
                f"| {name} | {connections} | {statistics.median(r.rps for r in results):.0f} | "
                f"{sum(r.errors for r in results)} | {statistics.median(per_request):.1f} "
                f"({min(per_request):.1f}-{max(per_request):.1f}) | "
                f"{statistics.median(r.nginx_user_us for r in results):.1f} | {ratio:.2f} | "
                f"{target} |"
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

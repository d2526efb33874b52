"""Benchmark self-healing and the reference service: kill -9 and hang to healthy, keep-alive.

Figures (medians with min and max of several runs in one session):

- kill -9 of a service's main process -> a new process answers /health (target 10 s);
- SIGSTOP of a service (alive, silent) -> restarted by the hang checker and answering
  (target 30 s);
- keep-alive without a Nagle stall: sequential requests on one connection (a stall
  shows as ~40 ms each), and wrk's throughput and latency, straight to one app host.

    .venv/bin/python bench/services.py --runs 5 --hang-runs 3

Faults go to app-2 only, serialised through /tmp/seawall-app-faults.lock and undone
(SIGCONT) whatever happens. Load is bounded in count and time, to lab addresses only.
"""

import argparse
import http.client
import os
import re
import ssl
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import load_note, publish, run_deploy, spread  # noqa: E402  (bench/report.py)

from seawall import defaults, inventory  # noqa: E402
from seawall.errors import SeawallError  # noqa: E402
from seawall.inventory import Topology  # noqa: E402
from seawall.lab.config import lab_config  # noqa: E402
from seawall.lab.faults import app_fault_lock  # noqa: E402
from seawall.lab.network import require_bridge  # noqa: E402
from seawall.ssh import run as ssh  # noqa: E402

INVENTORY = ROOT / "inventories" / "lab.py"
PORTS = {s["name"]: s["port"] for s in defaults.SERVICES["services"]}
PREFIX = defaults.SERVICES["services_unit_prefix"]
FAULT_HOST = "app-2"
KILL_SERVICES = ("marketdata", "ai-engine", "rl-training")


@contextmanager
def app_faults(timeout: float = 600) -> Iterator[None]:
    """Hold the app-fault lock; stop with a message if it is still held after `timeout` s."""
    with ExitStack() as held:
        try:
            held.enter_context(app_fault_lock(timeout))
        except SeawallError as error:
            raise SystemExit(str(error)) from None
        yield


def answers(url: str) -> bool:
    # Longer than a /health probe's own timeout (1.5 s): a slow dependency is not silence.
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            response.read()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def main_pid(topology: Topology, service: str) -> int:
    out = ssh(topology, FAULT_HOST, f"systemctl show -p MainPID --value {PREFIX}{service}.service")
    return int(out.stdout.strip() or 0)


def heal_time(topology: Topology, service: str, signal: str, within: float) -> float:
    """Send ``signal`` to the service's main process; return seconds until a new one answers."""
    url = f"http://{topology.host(FAULT_HOST).address}:{PORTS[service]}/health"
    before = main_pid(topology, service)
    ssh(topology, FAULT_HOST, f"kill -{signal} {before}", check=True)
    started = time.monotonic()
    try:
        while time.monotonic() - started < within:
            if main_pid(topology, service) not in (0, before) and answers(url):
                return time.monotonic() - started
            time.sleep(0.1)
        raise SystemExit(f"{service}: not healthy within {within} s after SIG{signal}")
    finally:
        ssh(topology, FAULT_HOST, f"kill -CONT {before} 2>/dev/null || true")


def wait_healthy(topology: Topology, service: str, within: float = 30) -> None:
    url = f"http://{topology.host(FAULT_HOST).address}:{PORTS[service]}/health"
    deadline = time.monotonic() + within
    while not answers(url) and time.monotonic() < deadline:
        time.sleep(0.5)


def sequential_keepalive(address: str, port: int, count: int) -> list[float]:
    """Latencies (ms) of ``count`` GETs one after another on one keep-alive connection."""
    conn = http.client.HTTPConnection(address, port, timeout=5)
    latencies = []
    for i in range(count):
        started = time.perf_counter()
        conn.request("GET", f"/items/{i}")
        response = conn.getresponse()
        response.read()
        latencies.append((time.perf_counter() - started) * 1000)
        if response.will_close:
            raise SystemExit("the service closed a keep-alive connection")
    conn.close()
    return latencies


_WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url: str, seconds: int, connections: int) -> dict[str, float]:
    """Run wrk (bounded by -d); return requests/s and latency percentiles in ms."""
    out = subprocess.run(
        ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout
    figures = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for label, key in (("50%", "p50_ms"), ("99%", "p99_ms")):
        value, unit = re.search(rf"\s{label}\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        figures[key] = float(value) * _WRK_UNITS[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    figures["non_2xx"] = float(errors.group(1)) if errors else 0.0
    return figures


def rolling_restart(topology: Topology, forced: str) -> tuple[int, int, float]:
    """Deploy the services with ``forced`` data (every unit changes, so every instance
    restarts, host by host) under ~25 GETs/s through the gateway; return (requests,
    failed, deploy seconds)."""
    cert = ssh(topology, "gw-1", "cat /etc/nginx/tls/gateway.crt", check=True).stdout
    context = ssl.create_default_context(cadata=cert)
    gateway = topology.host("gw-1").address
    paths = ["/api/ai/items/1", "/api/marketdata/items/2", "/items/3", "/api/risk/items/4"]
    statuses: list[int | str] = []
    done = threading.Event()

    def load() -> None:
        conn = http.client.HTTPSConnection(gateway, context=context, timeout=25)
        count = 0
        while not done.is_set():
            try:
                conn.request("GET", paths[count % len(paths)])
                response = conn.getresponse()
                response.read()
                statuses.append(response.status)
            except OSError as error:
                statuses.append(repr(error))
                conn.close()
                conn = http.client.HTTPSConnection(gateway, context=context, timeout=25)
            count += 1
            time.sleep(0.08)
        conn.close()

    workers = [threading.Thread(target=load) for _ in range(2)]
    for worker in workers:
        worker.start()
    started = time.monotonic()
    try:
        run_deploy("deploys/services.py", forced, limit="app", timeout=900)
    finally:
        done.set()
        for worker in workers:
            worker.join(60)
    failed = sum(1 for status in statuses if status != 200)
    return len(statuses), failed, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="kill -9 runs")
    parser.add_argument("--hang-runs", type=int, default=3, help="SIGSTOP runs")
    parser.add_argument("--wrk-seconds", type=int, default=10)
    parser.add_argument(
        "--rolling", action="store_true", help="also measure two full rolling restarts (~9 min)"
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    topology = inventory.load(INVENTORY)
    require_bridge(lab_config(topology))
    kills: list[float] = []
    hangs: list[float] = []
    with app_faults():
        for run in range(args.runs):
            service = KILL_SERVICES[run % len(KILL_SERVICES)]
            kills.append(heal_time(topology, service, "9", within=30))
            print(f"kill -9 {service}: {kills[-1]:.2f} s", file=sys.stderr, flush=True)
            wait_healthy(topology, service)
        for run in range(args.hang_runs):
            service = KILL_SERVICES[run % len(KILL_SERVICES)]
            hangs.append(heal_time(topology, service, "STOP", within=60))
            print(f"SIGSTOP {service}: {hangs[-1]:.2f} s", file=sys.stderr, flush=True)
            wait_healthy(topology, service)

    rolling: list[tuple[int, int, float]] = []
    if args.rolling:
        default = defaults.SERVICES["services_restart_sec"]
        # Changing RestartSec changes every unit: every instance restarts; then back.
        for value in (default + 1, default):
            rolling.append(rolling_restart(topology, f"services_restart_sec={value}"))
            print(f"rolling restart: {rolling[-1]}", file=sys.stderr, flush=True)

    address, port = topology.host("app-1").address, PORTS["ai-engine"]
    sequential = [statistics.median(sequential_keepalive(address, port, 300)) for _ in range(3)]
    loads = [
        wrk(f"http://{address}:{port}/items/1", args.wrk_seconds, connections)
        for connections in (1, 16)
    ]
    settings = defaults.SERVICES
    check_every = settings["services_healthcheck_interval_sec"]
    lines = [
        f"Self-healing and keep-alive, {time.strftime('%Y-%m-%d', time.gmtime())}: reference "
        f"service (FastAPI 0.92, uvicorn 0.17, Debian packages) on app hosts, 2 shared cores.",
        "",
        "| figure | median | min | max | target |",
        "|---|---|---|---|---|",
        f"| kill -9 -> new process answers /health, s ({args.runs} runs) | {spread(kills)} "
        "| <= 10 |",
        f"| SIGSTOP -> restarted by the hang checker and answering, s ({args.hang_runs} runs) "
        f"| {spread(hangs)} | <= 30 |",
        "| sequential GETs on one keep-alive connection, median ms (3 x 300) "
        f"| {spread(sequential)} | no ~40 ms stall |",
        "",
        f"Hang checker: /health every {check_every} s, "
        f"{settings['services_healthcheck_failures']} silent answers in a row "
        f"(timeout {settings['services_healthcheck_timeout_sec']} s) -> SIGKILL -> "
        f"Restart=on-failure after {settings['services_restart_sec']} s.",
        "",
        f"wrk straight to app-1's ai-engine (`/items/1`, {args.wrk_seconds} s, up to 2 threads):",
        "",
        "| connections | requests/s | p50 ms | p99 ms | non-2xx |",
        "|---|---|---|---|---|",
    ]
    for connections, figures in zip((1, 16), loads, strict=True):
        lines.append(
            f"| {connections} | {figures['rps']:.0f} | {figures['p50_ms']:.2f} | "
            f"{figures['p99_ms']:.2f} | {figures['non_2xx']:.0f} |"
        )
    if rolling:
        lines += [
            "",
            "Rolling restart of every instance (8 services x 2 app hosts, one host at a time, "
            "each running instance followed by the gateway's fail_timeout + 1 s) under ~25 "
            "GETs/s through gw-1:",
            "",
            "| run | GETs | failed | deploy s |",
            "|---|---|---|---|",
        ]
        for number, (requests, failed, seconds) in enumerate(rolling, start=1):
            lines.append(f"| {number} | {requests} | {failed} | {seconds:.0f} |")
    lines += [
        "",
        "One uvicorn worker per unit on a socket opened with IPPROTO_TCP, so asyncio sets "
        "TCP_NODELAY: no request waits for a delayed ACK (uvicorn 0.17 `--workers 2` gave "
        "~700 req/s at p50 44 ms in ../shared/LAB-NOTES.md).",
    ]
    lines += load_note(load_before)
    publish("services", lines, write=not args.no_write)


if __name__ == "__main__":
    main()

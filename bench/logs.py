"""Benchmark `seawall logs --request-id`: how soon a request's full path is found.

Each round sends one request through the gateway on gw-1 (HTTPS, a fresh
X-Request-ID, a route served by an app host), then asks for it until the answer
holds the full path: the gateway's access line and the serving app host's
line. Two clocks, both started when the response arrived:

- found: polling the library (``seawall.logs.find_request``, one SSH query
  each, back to back) until the full path is there: how long the lines take to
  reach the central journal;
- command: running `seawall logs --request-id ID --json` itself, again and
  again, until one returns the full path: what an engineer waits (the
  acceptance: within 5 s).

Figures are median, min and max over the rounds; printed, and written into
docs/benchmarks.md between the `bench:logs` markers.

    .venv/bin/python bench/logs.py --requests 20

The lab must be up and deployed. It injects no fault, but holds the lab's app-
and data-fault locks while it runs, so no other session's fault lands in it.
"""

import argparse
import http.client
import json
import os
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import load_note, publish, spread  # noqa: E402  (bench/report.py)

from seawall import inventory, ssh  # noqa: E402
from seawall.lab.faults import DATA_FAULT_LOCK, app_fault_lock, exclusive_lock  # noqa: E402
from seawall.logs import LogsReport, find_request  # noqa: E402
from seawall.names import CENTRAL_JOURNAL  # noqa: E402
from seawall.netguard import require_lab_network  # noqa: E402
from seawall.settings import setting  # noqa: E402

INVENTORY = ROOT / "inventories" / "lab.py"
SEAWALL = str(Path(sys.executable).with_name("seawall"))
# The acceptance: the full path within 5 s of the request.
TARGET_S = 5.0
# A round that has not found the full path by then is counted as a miss.
GIVE_UP_S = 30.0
# A route an app host serves (not the gateway's own answer).
PATH = "/api/risk/items/1"


def full_path(hosts: list[str], gateway: str, served_by: str) -> bool:
    return gateway in hosts and served_by in hosts


def until(check: Callable[[], bool], started: float) -> float | None:
    """Seconds from ``started`` until ``check()`` first returns true; None past GIVE_UP_S."""
    while time.monotonic() - started < GIVE_UP_S:
        if check():
            return time.monotonic() - started
    return None


def gateway_lines_last_hour(topology: inventory.Topology, tag: str) -> int:
    """How many gateway access lines the central journal holds from the last hour: the
    volume each query searched (a busy gateway's hour once made it slow)."""
    sink = topology.group("ops")[0]
    command = (
        f"journalctl -D {CENTRAL_JOURNAL} --since=-1h SYSLOG_IDENTIFIER={tag} "
        "-o cat --output-fields=SEAWALL_LINES | awk '{n += $1} END {print n + 0}'"
    )
    return int(ssh.run(topology, sink.name, command, check=True, timeout=300).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20, help="rounds (default 20)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    os.chdir(ROOT)
    topology = inventory.load(INVENTORY)
    require_lab_network(topology)
    gateway = topology.group("gateway")[0]
    cert = ssh.run(topology, gateway.name, "cat /etc/nginx/tls/gateway.crt", check=True).stdout
    context = ssl.create_default_context(cadata=cert)
    load_before = os.getloadavg()[0]

    def send(request_id: str) -> str:
        """Send one request; return the app host that served it."""
        conn = http.client.HTTPSConnection(gateway.address, context=context, timeout=10)
        try:
            conn.request("GET", PATH, headers={"X-Request-ID": request_id})
            response = conn.getresponse()
            body = json.loads(response.read())
        finally:
            conn.close()
        if response.status != 200:
            raise SystemExit(f"{PATH} answered {response.status}: {body}")
        return str(body["host"])

    def command_has_path(request_id: str, served_by: str) -> bool:
        result = subprocess.run(
            [SEAWALL, "logs", "--request-id", request_id, "--json", "-i", str(INVENTORY)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode == 2:
            raise SystemExit(f"seawall logs failed: {result.stderr}")
        hosts = json.loads(result.stdout)["hosts"] if result.returncode == 0 else []
        return full_path(hosts, gateway.name, served_by)

    found: list[float] = []
    command: list[float] = []
    query: list[float] = []
    misses: list[str] = []
    with app_fault_lock(600), exclusive_lock(DATA_FAULT_LOCK, timeout=600):
        for round_ in range(args.requests):
            # found: the library, polled back to back.
            request_id = f"bench-{uuid.uuid4().hex}"
            served_by = send(request_id)
            started = time.monotonic()

            def library_has_path(rid: str = request_id, by: str = served_by) -> bool:
                asked = time.monotonic()
                report: LogsReport = find_request(topology, rid, "1h")
                query.append(time.monotonic() - asked)
                return full_path(report.hosts, gateway.name, by)

            took = until(library_has_path, started)
            if took is None:
                misses.append(f"{request_id} (found)")
            else:
                found.append(took)
            # command: a second request, asked for with the command itself.
            request_id = f"bench-{uuid.uuid4().hex}"
            served_by = send(request_id)
            started = time.monotonic()
            took = until(partial(command_has_path, request_id, served_by), started)
            if took is None:
                misses.append(f"{request_id} (command)")
            else:
                command.append(took)
            print(
                f"request {round_ + 1}: found {found[-1] if found else float('nan'):.2f} s, "
                f"command {command[-1] if command else float('nan'):.2f} s",
                file=sys.stderr,
            )
    worst = max(command) if command else float("inf")
    volume = gateway_lines_last_hour(topology, str(setting(gateway.data, "gateway_journal_tag")))
    lines = [
        "## `seawall logs --request-id`: a request's full path from the central journal",
        "",
        f"`bench/logs.py --requests {args.requests}`: each round sends `GET {PATH}` through",
        f"{gateway.name} with a fresh X-Request-ID, then waits for the gateway's access line and",
        "the serving app host's line in the central journal on the ops host (clocks start at",
        "the response).",
        "",
        "| what | median s | min s | max s |",
        "|---|---|---|---|",
        f"| found: library polled back to back until the full path is there | {spread(found)} |",
        f"| one library query (one SSH session, one journalctl query) | {spread(query)} |",
        f"| **`seawall logs` run until it returns the full path** | {spread(command)} |",
        "",
        f"The central journal held {volume:,} gateway access lines from the last hour, the",
        "span each query searched.",
        "",
        f"Target: the full path within {TARGET_S:.0f} s of the request; "
        f"`seawall logs` max {worst:.2f} s: "
        + ("met." if worst <= TARGET_S and not misses else "NOT met."),
    ]
    if misses:
        lines += ["", f"Not found within {GIVE_UP_S:.0f} s: " + ", ".join(misses)]
    lines += load_note(load_before)
    publish("logs", lines, write=not args.no_write)


if __name__ == "__main__":
    main()

"""What each part of the gateway's configuration costs NGINX per proxied request.

Issue 12 asks NGINX's CPU per request to stay within 1.25x of a bare one-location
proxy's. This measures where the gap comes from: the gateway is deployed in front
of the static backend (as bench/gateway.py's static phase does), its rendered
``nginx.conf`` is read back from gw-1, and copies of its internal plain-HTTP server
run as transient NGINX units of their own (own cgroup, own port), each with one part
taken out:

- ``full``: the gateway's configuration as deployed;
- ``no access log``: ``access_log off`` (the JSON line per request, escape=json);
- ``no rate limits``: no ``limit_req``/``limit_conn`` (the controller is exempt, so
  only the zone lookup of an empty key is left);
- ``no request id``: nothing reads ``$req_id`` (the ``map`` regex and the random id);
- ``no extra headers``: no ``X-Real-IP``/``X-Forwarded-*``/``X-Seawall-Edge``/
  ``Host`` headers to the service;
- ``none of these``: all four out;

beside the bare proxy of bench/gateway.py, in interleaved rounds of wrk (16
connections). Each row's CPU per request, its ratio to the bare proxy, and what
taking that part out saves, go to stdout and docs/benchmarks.md
(``bench:gateway-features``).

    .venv/bin/python bench/gateway_features.py --rounds 3 --quiet-lab

Traffic goes only to gw-1, after checking the lab's bridge; its firewall lets the
controller reach the bench ports for the run only; the normal gateway is deployed
again at the end, whatever happens.
"""

import argparse
import base64
import json
import os
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway import (  # noqa: E402  (bench/gateway.py)
    BARE,
    BENCH_RULE,
    GATEWAY_HOST,
    GATEWAY_PATH,
    INVENTORY,
    MINIMAL_PORT,
    MINIMAL_UNIT,
    SERVICE,
    STATIC_PORT,
    Wrk,
    bench_ports,
    deploy_gateway,
    minimal_proxy,
    quiet_lab,
    static_backend,
    wrk,
)
from report import load_note, publish  # noqa: E402

from seawall import defaults, inventory  # noqa: E402
from seawall.lab.config import lab_config  # noqa: E402
from seawall.lab.network import require_bridge  # noqa: E402
from seawall.ssh import run as ssh  # noqa: E402

FIRST_PORT = 18100  # one per variant, from here (the bare proxy keeps its own)
CONNECTIONS = 16


def without_access_log(conf: str) -> str:
    return re.sub(
        r"^(\s*)access_log [^;]*seawall_json[^;]*;", r"\1access_log off;", conf, flags=re.M
    )


def without_limits(conf: str) -> str:
    return re.sub(r"^\s*limit_(req|conn) (zone=|per_client)[^;]*;\n", "", conf, flags=re.M)


def without_request_id(conf: str) -> str:
    conf = re.sub(
        r"^\s*(proxy_set_header|add_header) X-Request-ID \$req_id[^;]*;\n", "", conf, flags=re.M
    )
    return conf.replace('"request_id":"$req_id",', "").replace('"request_id":"$req_id"', "")


def without_extra_headers(conf: str) -> str:
    names = "Host|X-Real-IP|X-Forwarded-For|X-Forwarded-Proto|X-Seawall-Edge"
    return re.sub(rf"^\s*proxy_set_header ({names}) [^;]*;\n", "", conf, flags=re.M)


def none_of_these(conf: str) -> str:
    return without_extra_headers(without_request_id(without_limits(without_access_log(conf))))


VARIANTS: dict[str, Callable[[str], str]] = {
    "full": lambda conf: conf,
    "no access log": without_access_log,
    "no rate limits": without_limits,
    "no request id": without_request_id,
    "no extra headers": without_extra_headers,
    "none of these": none_of_these,
}


def server_blocks(conf: str) -> list[tuple[int, int]]:
    """(start, end) of each top-level ``server { ... }`` block inside ``http``."""
    blocks, depth, start = [], 0, -1
    for match in re.finditer(r"\bserver\s*\{|\{|\}", conf):
        token = match.group(0)
        if token.startswith("server") and depth == 1:
            start = match.start()
            depth += 1
        elif token.endswith("{"):
            depth += 1
        else:
            depth -= 1
            if depth == 1 and start >= 0:
                blocks.append((start, match.end()))
                start = -1
    return blocks


def internal_only(conf: str, address: str, internal_port: int, port: int, unit: str) -> str:
    """The gateway's configuration with only its internal listener, moved to ``port``;
    its own pid, error log and access log file, so it touches nothing of the gateway's."""
    listen = f"listen {address}:{internal_port};"
    kept = ""
    last = 0
    for start, end in server_blocks(conf):
        block = conf[start:end]
        kept += conf[last:start] + (
            block.replace(listen, f"listen {address}:{port};") if listen in block else ""
        )
        last = end
    conf = kept + conf[last:]
    conf = re.sub(r"^pid [^;]*;", f"pid /run/{unit}.pid;", conf, flags=re.M)
    conf = re.sub(r"^error_log [^;]*;", f"error_log /run/{unit}.error.log warn;", conf, flags=re.M)
    conf = re.sub(r"(access_log )/[^ ;]+", rf"\1/run/{unit}.access.log", conf)
    # Zones are shared memory by name per NGINX instance: no clash with the gateway's.
    return conf


def start_variant(topology: inventory.Topology, unit: str, conf: str) -> None:
    path = f"/run/{unit}.conf"
    encoded = base64.b64encode(conf.encode()).decode()
    ssh(
        topology,
        GATEWAY_HOST,
        f"systemctl stop {unit} 2>/dev/null; systemctl reset-failed {unit} 2>/dev/null; "
        f"echo {encoded} | base64 -d > {path} && nginx -t -q -c {path} && "
        f"systemd-run --unit={unit} nginx -c {path} -g 'daemon off;' && sleep 1 "
        f"&& systemctl is-active {unit}",
        check=True,
    )


def stop_variant(topology: inventory.Topology, unit: str) -> None:
    ssh(topology, GATEWAY_HOST, f"systemctl stop {unit} 2>/dev/null; rm -f /run/{unit}.*")


def open_ports(topology: inventory.Topology, source: str, ports: list[int]) -> None:
    """Let ``source`` reach ``ports`` on gw-1 (a rule bench_ports removes by its comment)."""
    listing = ssh(topology, GATEWAY_HOST, "nft list chain inet seawall input 2>/dev/null").stdout
    if "chain input" not in listing:
        return
    wanted = ", ".join(str(port) for port in ports)
    rule = (
        f"add rule inet seawall input ip saddr {source} tcp dport {{ {wanted} }} accept "
        f'comment "{BENCH_RULE}"'
    )
    ssh(topology, GATEWAY_HOST, f"nft '{rule}'", check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--wrk-seconds", type=int, default=10)
    parser.add_argument("--quiet-lab", action="store_true", help="as bench/gateway.py's")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    topology = inventory.load(INVENTORY)
    config = lab_config(topology)
    require_bridge(config)
    container = config.host(GATEWAY_HOST).container
    gateway = topology.host(GATEWAY_HOST).address
    internal = defaults.GATEWAY["gateway_internal_http_port"]
    ops_host = topology.group("ops")[0].name
    exempt = json.dumps([f"{config.bridge_address}/32"])
    catalogue = [
        {**s, "port": STATIC_PORT} if s["name"] == SERVICE["name"] else s
        for s in defaults.SERVICES["services"]
    ]
    units = {name: f"seawall-bench-variant-{n}" for n, name in enumerate(VARIANTS)}
    ports = {name: FIRST_PORT + n for n, name in enumerate(VARIANTS)}
    results: dict[str, list[Wrk]] = {}
    try:
        static_backend(topology, running=True)
        deploy_gateway(
            f"gateway_rate_limit_exempt={exempt}",
            'gateway_upstream_addresses=["127.0.0.1"]',
            f"services={json.dumps(catalogue)}",
        )
        deployed = ssh(topology, GATEWAY_HOST, "cat /etc/nginx/nginx.conf", check=True).stdout
        for name, change in VARIANTS.items():
            conf = internal_only(change(deployed), gateway, internal, ports[name], units[name])
            start_variant(topology, units[name], conf)
        minimal_proxy(topology, True, gateway)
        bench_ports(topology, config.bridge_address, open_=True)
        open_ports(topology, config.bridge_address, list(ports.values()))
        targets = {BARE: (f"http://{gateway}:{MINIMAL_PORT}/items/1", MINIMAL_UNIT)} | {
            name: (f"http://{gateway}:{ports[name]}{GATEWAY_PATH}", units[name])
            for name in VARIANTS
        }
        with quiet_lab(config, args.quiet_lab, ops_host):
            for round_number in range(1, args.rounds + 1):
                for name, (url, unit) in targets.items():
                    result = wrk(url, args.wrk_seconds, CONNECTIONS, container, unit)
                    if result.errors:
                        raise SystemExit(f"{name}: {result.errors} non-2xx responses")
                    results.setdefault(name, []).append(result)
                    print(f"round {round_number} {name}: {result}", file=sys.stderr, flush=True)
    finally:
        for unit in units.values():
            stop_variant(topology, unit)
        bench_ports(topology, config.bridge_address, open_=False)
        minimal_proxy(topology, False, gateway)
        static_backend(topology, running=False)
        deploy_gateway()

    bare = statistics.median(r.nginx_cpu_us for r in results[BARE])
    full = statistics.median(r.nginx_cpu_us for r in results["full"])
    lines = [
        "## What each part of the gateway's configuration costs NGINX",
        "",
        f"`bench/gateway_features.py --rounds {args.rounds}"
        f"{' --quiet-lab' if args.quiet_lab else ''}`: copies of the gateway's deployed "
        "configuration (its internal plain-HTTP server, the static backend behind it), each "
        "with one part taken out, as transient NGINX units on gw-1 beside the bare "
        f"one-location proxy; wrk, {CONNECTIONS} keep-alive connections, {args.wrk_seconds} s "
        "per row, interleaved rounds; CPU per request from each unit's cgroup.",
        "",
        "| configuration | requests/s | nginx CPU per request, µs: median (min-max) | "
        "ratio to bare proxy | saved against full, µs |",
        "|---|---|---|---|---|",
    ]
    for name, found in results.items():
        cpu = [r.nginx_cpu_us for r in found]
        median = statistics.median(cpu)
        saved = "" if name in (BARE, "full") else f"{full - median:.1f}"
        lines.append(
            f"| {name} | {statistics.median(r.rps for r in found):.0f} | {median:.1f} "
            f"({min(cpu):.1f}-{max(cpu):.1f}) | {median / bare:.2f} | {saved} |"
        )
    lines += ["", *load_note(load_before)]
    publish("gateway-features", lines, write=not args.no_write)


if __name__ == "__main__":
    main()

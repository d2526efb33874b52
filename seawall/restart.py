"""`seawall restart --rolling`: every daemon of the platform restarted, no request failing.

The plan comes from inventory groups alone (``plan_restart``), never from host
names written here; a component's hosts are found by its group. The order:

1. each ``app`` host, one at a time: drained at the gateway, its catalogue's
   units restarted once the old NGINX workers are gone, gated on every unit
   active and every /health 200, undrained, gated on the gateway serving from it;
2. Redis: each replica (gate: ``master_link_status:up``), each Sentinel (gate:
   it names the master, ``CKQUORUM`` OK), a switchover (``seawall.redis.failover``),
   then the old master (gate: a replica, link up);
3. etcd, one member at a time (gate: every member healthy);
4. Postgres: each replica's Patroni unit (gate: streaming, lag within
   ``patroni_maximum_lag_on_failover``), a ``patronictl switchover``, then the
   old leader (gate: it streams from the new one);
5. each gateway host: ``nginx -t``, then a reload (no connection dropped).

A real run first holds the operations lock (``seawall.oplock``: no drift
check runs meanwhile), then checks ``seawall status`` and ``seawall health``:
either not ok, and nothing is touched (exit 1). The Redis master and Postgres
leader are then asked, and the plan is built from them. A gate that does not
hold within its bound stops the run at once: a drained app host stays
drained (the others serve), and the report names host, step and why (exit 1).

Draining is ``gateway_drained_hosts`` given to the real gateway deploy
(``deploys/gateway.py``, ``--limit`` to the gateway hosts, ``--data``), so the
upstreams have one renderer and every change passes ``nginx -t`` before a
reload. A host left drained after a failed run is drift: the normal deploy
renders it undrained, so ``seawall drift`` names the gateway's nginx.conf, and a
gateway (or site) deploy undrains it.

``--dry-run`` is the plan from the inventory alone: no lock, no connection.
There the Redis master and Postgres leader are the groups' first hosts (what
a new cluster starts with); a real run orders by the live roles.

Every wait is bounded (``restart_*_timeout_sec``) and every loop ends.
The steps' executor is a plain function (``Execute``), so the orchestration
(``run_plan``) is tested without servers.
"""

import json
import os
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seawall import health_report, oplock
from seawall.drift import DEFAULT_TIMEOUT_S as DRIFT_TIMEOUT_S
from seawall.drift import find_root
from seawall.errors import SeawallError
from seawall.inventory import Host, Topology
from seawall.names import catalogue, patroni_unit, unit_name
from seawall.output import table
from seawall.postgres import failover as pg_failover
from seawall.postgres.status import cluster, etcd_health_url, http_json, leader_of
from seawall.redis import failover as redis_failover
from seawall.redis.client import redis_settings
from seawall.redis.topology import redis_status
from seawall.runtime.reconnect import connect
from seawall.settings import setting
from seawall.ssh import run as ssh_run
from seawall.status import PlatformStatus, platform_status

Log = Callable[[str], None]

GATEWAY_DEPLOY = "deploys/gateway.py"
# Units the deploys name (components/redis.py, etcd.py, gateway.py).
REDIS_UNIT = "redis-server.service"
SENTINEL_UNIT = "redis-sentinel.service"
ETCD_UNIT = "etcd.service"
NGINX_UNIT = "nginx.service"
# The regex's [n] keeps pgrep from matching the shell that runs it over SSH
# (its own command line holds the pattern, the workers' titles the word).
OLD_WORKERS = "nginx: worker process is shutting dow[n]"
# A gateway deploy on a few gateway hosts takes well under a minute.
DEPLOY_TIMEOUT_S = 300.0
# How long a restart waits for a drift check to let go of the lock.
LOCK_WAIT_S = DRIFT_TIMEOUT_S + 30
POLL_S = 1.0

PHASES = (
    "app",
    "redis-replica",
    "sentinel",
    "redis-switchover",
    "redis-old-master",
    "etcd",
    "postgres-replica",
    "postgres-switchover",
    "postgres-old-leader",
    "gateway",
)


class GateFailed(SeawallError):
    """A step's gate did not hold within its bound."""


@dataclass(frozen=True)
class Step:
    """One action on one host, and the gate that must hold before the next step."""

    phase: str
    host: str
    action: str  # drain, restart, undrain, switchover, reload
    gate: str
    units: tuple[str, ...] = ()
    # switchover: the replica that takes over (Postgres), if chosen here.
    target: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "host": self.host,
            "action": self.action,
            "units": list(self.units),
            "target": self.target,
            "gate": self.gate,
        }

    def describe(self) -> str:
        # A catalogue's units would make the table unreadable: counted (JSON lists them).
        if len(self.units) > 2:
            what = f"{self.action} {len(self.units)} units"
        else:
            what = self.action + (f" {' '.join(self.units)}" if self.units else "")
        return what + (f" to {self.target}" if self.target else "")


@dataclass
class RestartPlan:
    """The steps in order, and the roles they were ordered by."""

    inventory: str
    steps: list[Step]
    redis_master: str | None
    postgres_leader: str | None
    # "inventory" (the groups' first hosts: --dry-run) or "live" (asked).
    roles_from: str

    @property
    def ok(self) -> bool:
        return True

    def to_json(self) -> dict[str, Any]:
        return {
            "inventory": self.inventory,
            "redis_master": self.redis_master,
            "postgres_leader": self.postgres_leader,
            "roles_from": self.roles_from,
            "steps": [step.to_json() for step in self.steps],
        }

    def to_text(self) -> str:
        rows = [
            (n, s.phase, s.host, s.describe(), s.gate) for n, s in enumerate(self.steps, start=1)
        ]
        roles = (
            f"Redis master {self.redis_master or '-'}, Postgres leader "
            f"{self.postgres_leader or '-'} ({self.roles_from}"
            + (
                ": a real run asks the cluster and orders by the live roles)"
                if self.roles_from == "inventory"
                else ")"
            )
        )
        return table(["#", "phase", "host", "action", "gate"], rows) + f"\n{roles}"


@dataclass
class StepResult:
    step: Step
    ok: bool
    seconds: float
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            **self.step.to_json(),
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "error": self.error,
        }


@dataclass
class RestartReport:
    """What a rolling restart did (or, dry, would do), and where it stopped."""

    plan: RestartPlan
    dry_run: bool
    results: list[StepResult] = field(default_factory=list)
    # Why nothing was touched: status or health not ok before the start.
    preflight: str | None = None
    # App hosts a failed run left drained (gateway_drained_hosts).
    drained: list[str] = field(default_factory=list)
    duration_seconds: float = 0.0

    @property
    def failed(self) -> StepResult | None:
        return next((result for result in self.results if not result.ok), None)

    @property
    def ok(self) -> bool:
        if self.dry_run:
            return True
        return (
            self.preflight is None
            and self.failed is None
            and len(self.results) == len(self.plan.steps)
        )

    def phase_seconds(self) -> dict[str, float]:
        """Seconds spent in each phase, in plan order."""
        out: dict[str, float] = {}
        for result in self.results:
            out[result.step.phase] = out.get(result.step.phase, 0.0) + result.seconds
        return out

    def to_json(self) -> dict[str, Any]:
        failed = self.failed
        return {
            "ok": self.ok,
            "dry_run": self.dry_run,
            "plan": self.plan.to_json(),
            "preflight": self.preflight,
            "results": [result.to_json() for result in self.results],
            "failed": failed.to_json() if failed else None,
            "drained": list(self.drained),
            "phase_seconds": {k: round(v, 3) for k, v in self.phase_seconds().items()},
            "duration_seconds": round(self.duration_seconds, 3),
        }

    def to_text(self) -> str:
        if self.dry_run:
            return f"{self.plan.to_text()}\ndry run: nothing was touched"
        if self.preflight is not None:
            return f"NOT STARTED, nothing touched: {self.preflight}"
        rows = [
            (
                n,
                r.step.phase,
                r.step.host,
                r.step.describe(),
                f"{r.seconds:.1f}",
                "ok" if r.ok else "FAILED",
            )
            for n, r in enumerate(self.results, start=1)
        ]
        lines = [table(["#", "phase", "host", "action", "s", ""], rows)]
        failed = self.failed
        if failed is not None:
            lines.append(
                f"FAILED at {failed.step.host}, step {failed.step.describe()} "
                f"({failed.step.phase}): {failed.error}"
            )
            skipped = len(self.plan.steps) - len(self.results)
            lines.append(f"stopped there: {skipped} step(s) not run")
        if self.drained:
            lines.append(
                f"left drained at the gateway: {', '.join(self.drained)} "
                "(a gateway or site deploy undrains; until then `seawall drift` reports it)"
            )
        if self.ok:
            lines.append(
                f"rolling restart done: {len(self.results)} steps in {self.duration_seconds:.1f} s"
            )
        return "\n".join(lines)


# --- the plan ------------------------------------------------------------------------


def _first(topology: Topology, group: str) -> str | None:
    hosts = topology.group(group)
    return hosts[0].name if hosts else None


def app_units(host: Host) -> tuple[str, ...]:
    """The units of the service catalogue on an app host, as the services deploy names them."""
    return tuple(unit_name(host.data, service) for service in catalogue(host.data))


def plan_restart(
    topology: Topology,
    *,
    redis_master: str | None = None,
    postgres_leader: str | None = None,
) -> RestartPlan:
    """Return the rolling restart's steps for ``topology``, from its groups alone.

    ``redis_master`` and ``postgres_leader`` are the live roles; unset, the
    groups' first hosts (what a new cluster starts with).

    Raises:
        SeawallError: a named master or leader is not in its group, or Postgres has
            no replica to hand the leader role to.
    """
    live = redis_master is not None or postgres_leader is not None
    master = redis_master or _first(topology, "redis")
    leader = postgres_leader or _first(topology, "postgres")
    data = topology.hosts[0].data
    gate_s = int(setting(data, "restart_gate_timeout_sec"))
    drain_s = int(setting(data, "restart_drain_timeout_sec"))
    data_s = int(setting(data, "restart_data_timeout_sec"))
    gateways = [host.name for host in topology.group("gateway")]
    at_gateway = ", ".join(gateways) or "the gateway"
    steps: list[Step] = []

    for host in topology.group("app"):
        name = host.name
        steps += [
            Step(
                "app",
                name,
                "drain",
                f"the gateway deploy marks {name} down on {at_gateway} (nginx -t, reload) "
                f"and no old NGINX worker is left within {drain_s} s",
            ),
            Step(
                "app",
                name,
                "restart",
                f"every unit active and every /health 200 within {gate_s} s",
                app_units(host),
            ),
            Step(
                "app",
                name,
                "undrain",
                f"the gateway deploy serves {name} again and {at_gateway} "
                f"answers from it within {gate_s} s",
            ),
        ]

    redis_hosts = [host.name for host in topology.group("redis")]
    if redis_hosts:
        if master not in redis_hosts:
            raise SeawallError(f"{topology.path}: Redis master {master!r} is not in group redis")
        for name in redis_hosts:
            if name != master:
                steps.append(
                    Step(
                        "redis-replica",
                        name,
                        "restart",
                        f"role replica, master_link_status:up within {data_s} s",
                        (REDIS_UNIT,),
                    )
                )
    for host in topology.group("sentinel"):
        steps.append(
            Step(
                "sentinel",
                host.name,
                "restart",
                f"it names the master every Sentinel names, CKQUORUM OK within {data_s} s",
                (SENTINEL_UNIT,),
            )
        )
    if master is not None and redis_hosts:
        if len(redis_hosts) > 1:
            steps.append(
                Step(
                    "redis-switchover",
                    master,
                    "switchover",
                    f"a replica is master, {master} follows it, every Sentinel agrees "
                    f"within {data_s} s",
                )
            )
        steps.append(
            Step(
                "redis-old-master",
                master,
                "restart",
                f"role replica, master_link_status:up within {data_s} s",
                (REDIS_UNIT,),
            )
        )

    for host in topology.group("etcd"):
        steps.append(
            Step(
                "etcd",
                host.name,
                "restart",
                f"every etcd member healthy within {data_s} s",
                (ETCD_UNIT,),
            )
        )

    members = topology.group("postgres")
    if members:
        names = [host.name for host in members]
        if leader not in names:
            raise SeawallError(
                f"{topology.path}: Postgres leader {leader!r} is not in group postgres"
            )
        replicas = [name for name in names if name != leader]
        if not replicas:
            raise SeawallError(
                f"{topology.path}: group postgres has no replica: a restart of the only "
                "member is an outage, not a rolling restart"
            )
        max_lag = setting(members[0].data, "patroni_maximum_lag_on_failover")
        for name in replicas:
            steps.append(
                Step(
                    "postgres-replica",
                    name,
                    "restart",
                    f"streaming, lag <= {max_lag} bytes, a synchronous standby within {data_s} s",
                    (patroni_unit(topology.host(name).data),),
                )
            )
        steps.append(
            Step(
                "postgres-switchover",
                str(leader),
                "switchover",
                f"{replicas[0]} leads, every replica streams within {data_s} s",
                target=replicas[0],
            )
        )
        steps.append(
            Step(
                "postgres-old-leader",
                str(leader),
                "restart",
                f"a replica, streaming, lag <= {max_lag} bytes within {data_s} s",
                (patroni_unit(topology.host(str(leader)).data),),
            )
        )

    for name in gateways:
        steps.append(
            Step(
                "gateway",
                name,
                "reload",
                f"nginx -t passes, nginx reloaded and active, it serves within {gate_s} s",
                (NGINX_UNIT,),
            )
        )
    return RestartPlan(
        str(topology.path),
        steps,
        master if redis_hosts else None,
        str(leader) if members else None,
        "live" if live else "inventory",
    )


# --- running a plan ---------------------------------------------------------------------

# Runs one step and its gate; raises (GateFailed, any SeawallError) when it does not hold.
Execute = Callable[[Step], None]


def run_plan(plan: RestartPlan, execute: Execute, log: Log) -> RestartReport:
    """Run the plan's steps in order with ``execute``; stop at the first that fails.

    An app host counts as drained from the moment its drain starts (a deploy cut
    short may have applied it) until its undrain succeeds; a failed run leaves
    it so and the report names it.
    """
    report = RestartReport(plan, dry_run=False)
    started = time.monotonic()
    drained: list[str] = []
    total = len(plan.steps)
    for number, step in enumerate(plan.steps, start=1):
        log(f"[{number}/{total}] {step.phase} {step.host}: {step.describe()}")
        if step.action == "drain" and step.host not in drained:
            drained.append(step.host)
        begun = time.monotonic()
        try:
            execute(step)
        except Exception as error:  # any failure stops the run and is reported, not raised
            reason = str(error) if isinstance(error, SeawallError) else repr(error)
            report.results.append(StepResult(step, False, time.monotonic() - begun, reason))
            log(f"[{number}/{total}] FAILED: {reason}")
            break
        report.results.append(StepResult(step, True, time.monotonic() - begun))
        if step.action == "undrain" and step.host in drained:
            drained.remove(step.host)
    report.drained = drained
    report.duration_seconds = time.monotonic() - started
    return report


def _preflight(topology: Topology) -> tuple[str | None, PlatformStatus]:
    """Return (why not to start, or None; the status, whose roles order the plan)."""
    status = platform_status(topology)
    problems = []
    if not status.ok:
        details = []
        if status.redis is not None and not status.redis.ok:
            details.append(f"Redis master {status.redis.master or 'NONE'}, not all agree or linked")
        if status.postgres is not None:
            details += status.postgres.problems
        problems.append("seawall status is not ok: " + ("; ".join(details) or "see it"))
    if topology.group("app"):
        health = health_report.collect(topology)
        down = [f"{s.host}/{s.service} {s.status}" for s in health.services if s.down]
        if down:
            problems.append("seawall health: " + ", ".join(down))
    return ("; ".join(problems) or None), status


def rolling_restart(
    topology: Topology,
    *,
    dry_run: bool,
    log: Log,
    execute: Execute | None = None,
    preflight: Callable[[Topology], tuple[str | None, PlatformStatus]] | None = None,
) -> RestartReport:
    """Restart every daemon of the topology, one host at a time, each step gated.

    ``dry_run``: the plan from the inventory alone, no lock, no connection.

    Raises:
        SeawallError: the operations lock stayed busy, or the cluster could not be
            asked (unreachable, missing secrets): nothing was touched.
    """
    if dry_run:
        return RestartReport(plan_restart(topology), dry_run=True)
    lock_file = str(topology.value("restart_lock_file"))
    started = time.monotonic()
    with oplock.held(
        lock_file,
        exclusive=True,
        wait=LOCK_WAIT_S,
        on_wait=lambda: log(f"waiting for {lock_file} (a drift check is running)"),
    ):
        problem, status = (preflight or _preflight)(topology)
        if problem is not None:
            log(f"preflight: {problem}")
            report = RestartReport(plan_restart(topology), dry_run=False, preflight=problem)
            report.duration_seconds = time.monotonic() - started
            return report
        plan = plan_restart(
            topology,
            redis_master=status.redis.master_host if status.redis else None,
            postgres_leader=status.postgres.leader if status.postgres else None,
        )
        report = run_plan(plan, execute or LiveSteps(topology, log), log)
    report.duration_seconds = time.monotonic() - started
    return report


# --- the steps on real hosts ----------------------------------------------------------


def _wait(deadline: float, check: Callable[[], str | None], what: str) -> None:
    """Ask ``check`` (None: holds, else why not) until it holds or ``deadline`` passes.

    Raises:
        GateFailed: ``what`` and the last reason, at the deadline.
    """
    reason: str | None = "never asked"
    while True:
        try:
            reason = check()
        except (SeawallError, OSError) as error:  # a daemon restarting refuses for a while
            reason = str(error)
        if reason is None:
            return
        if time.monotonic() >= deadline:
            raise GateFailed(f"{what}: {reason}")
        time.sleep(POLL_S)


def _decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def served_by(access_lines: Sequence[str], address: str) -> int:
    """Count the gateway's JSON access lines answered (status < 500) by the app host at ``address``.

    With a retry NGINX logs every upstream tried ("a:p, b:p"): the last one answered.
    """
    served = 0
    for line in access_lines:
        try:
            entry = json.loads(line)
            last = str(entry.get("upstream_addr", "")).split(", ")[-1]
            status = int(entry.get("status", 0))
        except (ValueError, TypeError, AttributeError):
            continue
        if last.startswith(f"{address}:") and status < 500:
            served += 1
    return served


def gateway_deploy_args(topology: Topology, drained: Sequence[str]) -> list[str]:
    """Return the pyinfra command that deploys the gateway hosts with ``drained`` drained."""
    pyinfra = str(Path(sys.executable).with_name("pyinfra"))
    limits = [arg for host in topology.group("gateway") for arg in ("--limit", host.name)]
    return [
        pyinfra,
        "-y",
        "--json",
        *limits,
        # pyinfra parses a --data value as JSON when it can (pyinfra_cli.util.parse_cli_arg):
        # a JSON list stays a list, [] included.
        "--data",
        f"gateway_drained_hosts={json.dumps(list(drained))}",
        # Absolute: pyinfra runs in the checkout that holds the deploy (find_root).
        str(Path(topology.path).resolve()),
        GATEWAY_DEPLOY,
    ]


class LiveSteps:
    """The executor of a real run: SSH (``seawall.ssh``), the deploy, the services' APIs."""

    def __init__(self, topology: Topology, log: Log) -> None:
        self.topology = topology
        self.log = log
        data = topology.hosts[0].data
        self.gate_s = float(setting(data, "restart_gate_timeout_sec"))
        self.drain_s = float(setting(data, "restart_drain_timeout_sec"))
        self.data_s = float(setting(data, "restart_data_timeout_sec"))
        self.gateways = [host.name for host in topology.group("gateway")]

    def __call__(self, step: Step) -> None:
        handler = getattr(self, f"_{step.phase.replace('-', '_')}_{step.action}", None)
        if handler is None:
            raise SeawallError(f"no way to {step.action} in phase {step.phase}")
        handler(step)

    # --- the gateway ---

    def deploy_gateway(self, drained: Sequence[str]) -> None:
        """Run the gateway deploy on the gateway hosts with ``gateway_drained_hosts``.

        Raises:
            GateFailed: the deploy failed (nginx -t refused: the old config stays) or hung.
        """
        root = find_root(self.topology.path, GATEWAY_DEPLOY)
        args = gateway_deploy_args(self.topology, drained)
        try:
            result = subprocess.run(
                args,
                cwd=root,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=DEPLOY_TIMEOUT_S,
                env={**os.environ, "PYINFRA_PROGRESS": "off", "NO_COLOR": "1"},
            )
        except subprocess.TimeoutExpired:
            raise GateFailed(f"the gateway deploy ran past {DEPLOY_TIMEOUT_S:.0f} s") from None
        if result.returncode != 0:
            tail = " | ".join(result.stderr.strip().splitlines()[-3:]) or "no output"
            raise GateFailed(f"the gateway deploy failed ({result.returncode}): {tail}")

    def _old_workers(self) -> str | None:
        busy = []
        for name in self.gateways:
            count = ssh_run(self.topology, name, f"pgrep -c -f {shlex.quote(OLD_WORKERS)}")
            found = count.stdout.strip() or "0"
            if count.returncode not in (0, 1):
                return f"{name}: pgrep failed ({count.returncode})"
            if found != "0":
                busy.append(f"{name}: {found} old worker(s)")
        return ", ".join(busy) or None

    def _probe(self, host: Host) -> str | None:
        """Send GETs through every gateway; None if the access log shows ``host`` served one."""
        services = catalogue(host.data)
        route = next((s["route"] for s in services if not s["route"].endswith("/")), None)
        route = route or services[0]["route"]
        token = f"seawall-restart-{uuid.uuid4().hex[:12]}"
        apps = max(1, len(self.topology.group("app")))
        for name in self.gateways:
            gateway = self.topology.host(name)
            port = setting(gateway.data, "gateway_internal_http_port")
            if port is None:
                return f"{name}: gateway_internal_http_port is None: no plain listener to probe"
            # least_conn over idle upstreams goes round robin: 2 per app host reach each.
            for n in range(2 * apps + 1):
                request = urllib.request.Request(
                    f"http://{gateway.address}:{port}{route}",
                    headers={"X-Request-ID": f"{token}-{n}"},
                )
                try:
                    with urllib.request.urlopen(request, timeout=5) as response:
                        response.read()
                except urllib.error.HTTPError:
                    pass  # the access log has its status; judged below
                except OSError as error:
                    return f"{name}: {route}: {error}"
            # The access log is buffered for at most a second (flush=1s).
            time.sleep(1.2)
            log_file = setting(gateway.data, "gateway_access_log")
            lines = ssh_run(
                self.topology,
                name,
                f"grep -F -- {shlex.quote(token)} {shlex.quote(str(log_file))}",
            ).stdout.splitlines()
            if served_by(lines, host.address) == 0:
                return f"{name} sent none of {len(lines)} probe request(s) to {host.name}"
        return None

    def _app_drain(self, step: Step) -> None:
        self.deploy_gateway([step.host])
        _wait(time.monotonic() + self.drain_s, self._old_workers, "old NGINX workers still run")

    def _app_undrain(self, step: Step) -> None:
        self.deploy_gateway([])
        host = self.topology.host(step.host)
        _wait(time.monotonic() + self.gate_s, lambda: self._probe(host), "not served again")

    def _app_restart(self, step: Step) -> None:
        host = self.topology.host(step.host)
        units = " ".join(shlex.quote(unit) for unit in step.units)
        stop = max(
            int(s.get("timeout_stop_sec") or setting(host.data, "services_timeout_stop_sec"))
            for s in catalogue(host.data)
        )
        # Stops run in parallel: the slowest graceful stop, then the starts.
        ssh_run(
            self.topology, step.host, f"systemctl restart {units}", timeout=stop + 60, check=True
        )

        def ready() -> str | None:
            active = ssh_run(self.topology, step.host, f"systemctl is-active {units}")
            states = active.stdout.split()
            idle = [u for u, s in zip(step.units, states, strict=False) if s != "active"]
            if idle or len(states) != len(step.units):
                return f"not active: {', '.join(idle) or active.stdout.strip()}"
            health = health_report.ask_all(health_report.targets(host), timeout=3)
            bad = [
                f"{s.service} {s.http_status or s.status}"
                for s in health.services
                if s.http_status != 200
            ]
            return f"/health not 200: {', '.join(bad)}" if bad else None

        _wait(time.monotonic() + self.gate_s, ready, "units or /health not ready")

    # --- Redis and Sentinel ---

    def _restart_units(self, step: Step) -> None:
        units = " ".join(shlex.quote(unit) for unit in step.units)
        ssh_run(self.topology, step.host, f"systemctl restart {units}", timeout=120, check=True)

    def _replica_linked(self, name: str) -> str | None:
        host = self.topology.host(name)
        settings = redis_settings(self.topology)
        conn = connect(host.address, int(setting(host.data, "redis_port")), settings.password, 2)
        try:
            info = conn.info("replication")
        finally:
            conn.close()
        if info.get("role") != "slave":
            return f"role {info.get('role')}"
        if info.get("master_link_status") != "up":
            return f"master_link_status:{info.get('master_link_status')}"
        return None

    def _redis_replica_restart(self, step: Step) -> None:
        self._restart_units(step)
        _wait(
            time.monotonic() + self.data_s,
            lambda: self._replica_linked(step.host),
            f"{step.host} not a linked replica",
        )

    _redis_old_master_restart = _redis_replica_restart

    def _sentinel_restart(self, step: Step) -> None:
        self._restart_units(step)
        host = self.topology.host(step.host)
        settings = redis_settings(self.topology)

        def sees_master() -> str | None:
            status = redis_status(self.topology, timeout=1.0)
            if status.master is None:
                return "no master a majority of Sentinels names"
            conn = connect(
                host.address,
                int(setting(host.data, "sentinel_port")),
                settings.sentinel_password,
                2,
            )
            try:
                named = conn.execute_command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", settings.master_name
                )
                quorum = _decode(conn.execute_command("SENTINEL", "CKQUORUM", settings.master_name))
            finally:
                conn.close()
            seen = f"{_decode(named[0])}:{_decode(named[1])}" if named else None
            if seen != status.master:
                return f"it names {seen}, the majority {status.master}"
            return None if quorum.startswith("OK") else quorum

        _wait(time.monotonic() + self.data_s, sees_master, f"Sentinel on {step.host}")

    def _redis_switchover_switchover(self, step: Step) -> None:
        old = self.topology.host(step.host)
        new = redis_failover.switchover(self.topology)
        if new.startswith(f"{old.address}:"):
            raise GateFailed(f"the master is still {new}")
        self.log(f"Redis master now {new}")

        def settled() -> str | None:
            linked = self._replica_linked(step.host)
            if linked is not None:
                return linked
            status = redis_status(self.topology, timeout=1.0)
            return None if status.ok else f"Sentinels: {status.agreeing}/{len(status.sentinels)}"

        _wait(time.monotonic() + self.data_s, settled, f"old master {step.host} or Sentinels")

    # --- etcd ---

    def _etcd_restart(self, step: Step) -> None:
        self._restart_units(step)

        def healthy() -> str | None:
            sick = []
            for host in self.topology.group("etcd"):
                status, body = http_json(etcd_health_url(host))
                if not (status == 200 and isinstance(body, dict) and body.get("health") == "true"):
                    sick.append(host.name)
            return f"unhealthy: {', '.join(sick)}" if sick else None

        _wait(time.monotonic() + self.data_s, healthy, "etcd")

    # --- Postgres ---

    def _streaming(self, name: str) -> str | None:
        healthy, leader = pg_failover.wait_healthy(self.topology, min(self.data_s, 5))
        if not healthy:
            return f"not every member streaming (leader {leader})"
        if leader == name:
            return f"{name} leads"
        limit = setting(self.topology.host(name).data, "patroni_maximum_lag_on_failover")
        for member in cluster(self.topology).members:
            lag = member.get("lag")
            if member.get("name") == name and (not isinstance(lag, int) or lag > int(limit)):
                return f"{name} lag {lag} (limit {limit})"
        return None

    def _postgres_replica_restart(self, step: Step) -> None:
        self._restart_units(step)
        _wait(time.monotonic() + self.data_s, lambda: self._streaming(step.host), step.host)

    _postgres_old_leader_restart = _postgres_replica_restart

    def _postgres_switchover_switchover(self, step: Step) -> None:
        if step.target is None:
            raise SeawallError("a Postgres switchover step names no candidate")
        if leader_of(cluster(self.topology).members) != step.host:
            raise GateFailed(f"{step.host} no longer leads: the plan is stale")
        new = pg_failover.switchover(self.topology, step.host, step.target, self.data_s)
        if new is None:
            raise GateFailed(f"no new leader within {self.data_s:.0f} s")
        self.log(f"Postgres leader now {new}")
        _wait(time.monotonic() + self.data_s, lambda: self._streaming(step.host), step.host)

    # --- the gateway itself ---

    def _gateway_reload(self, step: Step) -> None:
        ssh_run(
            self.topology,
            step.host,
            f"nginx -t -q && systemctl reload {NGINX_UNIT}",
            timeout=60,
            check=True,
        )
        apps = self.topology.group("app")

        def serving() -> str | None:
            active = ssh_run(self.topology, step.host, f"systemctl is-active {NGINX_UNIT}")
            if active.stdout.strip() != "active":
                return f"nginx {active.stdout.strip()}"
            return self._probe(apps[0]) if apps else None

        _wait(time.monotonic() + self.gate_s, serving, f"gateway {step.host}")

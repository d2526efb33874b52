"""The `seawall` command: thin wrappers over library functions.

Each command parses its arguments, calls one library function returning a
report (`seawall.output.Report`), prints it through `seawall.output.emit` (text,
or JSON with `--json`) and exits with the code that maps to. Exit codes: 0 ok,
1 a finding (failed check, unhealthy lab, failed drill), 2 an error (bad
inventory, unreachable host, failed step), 3 a declined confirmation (nothing
was done).
"""

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from seawall import inventory
from seawall.errors import SeawallError
from seawall.output import EXIT_CODES, EXIT_DECLINED, EXIT_ERROR, Report, emit, progress

if TYPE_CHECKING:  # seawall.plot is imported only by the commands that draw
    from seawall.plot import Run

app = typer.Typer(
    help=f"Harden, test and check the trading platform's hosts. {EXIT_CODES}", no_args_is_help=True
)
lab_app = typer.Typer(
    help=f"The lab: the production topology as LXC hosts. {EXIT_CODES}", no_args_is_help=True
)
fault_app = typer.Typer(
    help=f"Inject real faults into lab hosts (and undo them). {EXIT_CODES}", no_args_is_help=True
)
drill_app = typer.Typer(
    help=f"Failover drills on the lab: real faults, a bounded writer. {EXIT_CODES}",
    no_args_is_help=True,
)
app.add_typer(lab_app, name="lab")
app.add_typer(drill_app, name="drill")
lab_app.add_typer(fault_app, name="fault")

DEFAULT_LAB_INVENTORY = Path("inventories/lab.py")

InventoryOpt = Annotated[
    Path, typer.Option("--inventory", "-i", help="Inventory file (pyinfra format).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")]
YesOpt = Annotated[
    bool,
    typer.Option(
        "--yes", "-y", help="Do not ask for confirmation (declining exits 3, nothing done)."
    ),
]
PlotOpt = Annotated[
    Path | None,
    typer.Option(
        "--plot",
        dir_okay=False,
        help="Also draw every run's timeline into this SVG (needs: pip install 'seawall[plot]').",
    ),
]


@contextmanager
def _errors() -> Iterator[None]:
    """Turn a SeawallError into its message on stderr and exit code 2."""
    try:
        yield
    except SeawallError as error:
        typer.echo(f"seawall: {error}", err=True)
        raise typer.Exit(EXIT_ERROR) from None


def _confirm(question: str, yes: bool) -> None:
    """Ask before a destructive step; a "no" (or no terminal to ask on) exits 3, not 1.

    Exit 1 means a finding: cron must tell "declined, nothing done" from "drill failed".
    """
    if yes:
        return
    try:
        agreed = typer.confirm(question, default=False)
    except typer.Abort:
        agreed = False
    if not agreed:
        typer.echo("seawall: declined, nothing done", err=True)
        raise typer.Exit(EXIT_DECLINED)


def _finish(report: Report, as_json: bool) -> NoReturn:
    """Print the report (text, or JSON with --json) and exit 0 if it is ok, else 1."""
    raise typer.Exit(emit(report, as_json))


def _require_plot(path: Path | None, runs: int) -> None:
    """Before a drill spends minutes: can its --plot be drawn at all?"""
    if path is not None:
        from seawall.plot import require

        with _errors():
            require(runs)


def _draw(path: Path, runs: "Sequence[Run]") -> None:
    from seawall.plot import draw

    progress(f"timelines drawn in {draw(runs, path)}")


def _load(path: Path, check_secrets: bool = True) -> inventory.Topology:
    return inventory.check(path, check_secrets=check_secrets)


def _load_lab(path: Path) -> inventory.Topology:
    # The lab generates its own secrets and key: check them only after `up`.
    topology = inventory.load(path)
    problems = [
        problem
        for problem in inventory.validate(topology, check_secrets=False)
        if problem.key != "admin_ssh_public_key_file"
    ]
    if problems:
        raise SeawallError(
            f"inventory {path} is not valid:\n" + "\n".join(f"  {p}" for p in problems)
        )
    return topology


@lab_app.command("up")
def lab_up(inventory_path: InventoryOpt = DEFAULT_LAB_INVENTORY, as_json: JsonOpt = False) -> None:
    """Create or repair the lab and wait until every host answers SSH."""
    from seawall import lab

    with _errors():
        report = lab.up(_load_lab(inventory_path), log=progress)
    _finish(report, as_json)


@lab_app.command("down")
def lab_down(
    inventory_path: InventoryOpt = DEFAULT_LAB_INVENTORY,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove the lab's hosts, bridge, firewall table and apt proxy (the base cache stays).

    Exits 1 if any part of the lab is left afterwards.
    """
    from seawall import lab

    _confirm("Destroy every lab host?", yes)
    with _errors():
        report = lab.down(_load_lab(inventory_path), log=progress)
    _finish(report, as_json)


@lab_app.command("status")
def lab_status(
    inventory_path: InventoryOpt = DEFAULT_LAB_INVENTORY, as_json: JsonOpt = False
) -> None:
    """Show each lab host, its address and state."""
    from seawall import lab

    with _errors():
        report = lab.status(_load_lab(inventory_path))
    _finish(report, as_json)


@lab_app.command("ssh", context_settings={"allow_extra_args": True})
def lab_ssh(
    ctx: typer.Context,
    host: Annotated[str, typer.Argument(help="Lab host name, e.g. data-1.")],
    inventory_path: InventoryOpt = DEFAULT_LAB_INVENTORY,
    user: Annotated[str | None, typer.Option(help="Log in as this user.")] = None,
) -> None:
    """Open a shell (or run the extra arguments) on a lab host with the lab's key."""
    from seawall.lab import lab_config
    from seawall.lab.network import require_bridge
    from seawall.ssh import ssh_args

    with _errors():
        topology = _load_lab(inventory_path)
        require_bridge(lab_config(topology))
        args = ssh_args(topology, host, user)
    os.execvp(args[0], [*args, *ctx.args])


@lab_app.command("box")
def lab_box(
    inventory_path: InventoryOpt = DEFAULT_LAB_INVENTORY,
    force: Annotated[bool, typer.Option(help="Rebuild even if a current box exists.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Build the vagrant-lxc box from the lab's base root filesystem; print its path."""
    from seawall.lab.vagrant import BoxReport, build_box

    with _errors():
        report = BoxReport(build_box(_load_lab(inventory_path), force=force))
    _finish(report, as_json)


class Fault(StrEnum):
    crash = "crash"
    freeze = "freeze"
    unfreeze = "unfreeze"
    cut = "cut"
    isolate = "isolate"


@fault_app.command("host")
def fault_host(
    kind: Annotated[
        Fault,
        typer.Argument(
            help="crash: hard stop; freeze/unfreeze; cut: link down; isolate: from all other hosts"
        ),
    ],
    host: Annotated[str, typer.Argument(help="Lab host name.")],
    inventory_path: InventoryOpt = DEFAULT_LAB_INVENTORY,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Inject one fault into one host; report the faults in place after it."""
    from seawall.lab import faults, lab_config

    _confirm(f"{kind.value} {host}?", yes)
    with _errors():
        report = faults.inject(lab_config(_load_lab(inventory_path)), kind.value, host)
    _finish(report, as_json)


@fault_app.command("partition")
def fault_partition(
    first: Annotated[str, typer.Argument(help="Lab host name.")],
    second: Annotated[str, typer.Argument(help="Lab host name.")],
    inventory_path: InventoryOpt = DEFAULT_LAB_INVENTORY,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Drop all traffic between two lab hosts; report the faults in place after it."""
    from seawall.lab import faults, lab_config

    _confirm(f"partition {first} from {second}?", yes)
    with _errors():
        report = faults.inject(lab_config(_load_lab(inventory_path)), "partition", first, second)
    _finish(report, as_json)


@fault_app.command("restore")
def fault_restore(
    inventory_path: InventoryOpt = DEFAULT_LAB_INVENTORY, as_json: JsonOpt = False
) -> None:
    """Undo every fault and wait until every host is back; exits 1 if a fault is left."""
    from seawall.lab import faults, lab_config

    with _errors():
        report = faults.inject(lab_config(_load_lab(inventory_path)), "restore")
    _finish(report, as_json)


@app.command("logs")
def logs(
    request_id: Annotated[
        str, typer.Option("--request-id", help="The X-Request-ID the gateway logged.")
    ],
    since: Annotated[
        str, typer.Option("--since", help="How far back to look: 30m, 1h, 2d.")
    ] = "1h",
    inventory_path: InventoryOpt = DEFAULT_LAB_INVENTORY,
    as_json: JsonOpt = False,
) -> None:
    """Show one request's lines on every host, from the central journal on the ops host.

    Exit codes: 0 lines found, 1 none, 2 error (malformed id, checked before any
    connection; the ops host unreachable, named).
    """
    from seawall.logs import check_request_id, check_since, find_request

    with _errors():
        check_request_id(request_id)
        check_since(since)
        report = find_request(_load(inventory_path), request_id, since)
    _finish(report, as_json)


@app.command("status")
def status(inventory_path: InventoryOpt = DEFAULT_LAB_INVENTORY, as_json: JsonOpt = False) -> None:
    """Show the live topology: Redis master, replicas with lag, Sentinels' agreement, Postgres."""
    from seawall.status import platform_status

    with _errors():
        report = platform_status(_load(inventory_path))
    _finish(report, as_json)


@drill_app.command("redis")
def drill_redis(
    scenario: Annotated[str, typer.Argument(help="A scenario name, or `all`.")],
    inventory_path: InventoryOpt = DEFAULT_LAB_INVENTORY,
    runs: Annotated[int, typer.Option(min=1, max=20, help="Runs of each scenario.")] = 1,
    duration: Annotated[float, typer.Option(min=5, max=120, help="Writer seconds.")] = 20,
    rate: Annotated[float, typer.Option(min=1, max=1000, help="Events per second.")] = 100,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
    plot: PlotOpt = None,
) -> None:
    """Inject a real Redis fault on the lab under a bounded writer; report outage and losses.

    Scenarios: master-process-kill, master-host-crash, master-isolated,
    master-partitioned-from-peers, sentinel-down, replica-down, switchover.
    """
    from seawall.redis.drill import SCENARIOS, DrillReport, run_drill

    chosen = list(SCENARIOS) if scenario == "all" else [scenario]
    _require_plot(plot, len(chosen) * runs)
    _confirm(f"Run {', '.join(chosen)} on the lab ({runs} run(s) each)?", yes)
    with _errors():
        topology = _load_lab(inventory_path)
        report = DrillReport(
            [
                run_drill(topology, name, duration=duration, rate=rate, log=progress)
                for name in chosen
                for _ in range(runs)
            ]
        )
        if plot is not None:
            _draw(plot, report.results)
    _finish(report, as_json)


@app.command("check")
def check_inventory(
    inventory_path: InventoryOpt = DEFAULT_LAB_INVENTORY, as_json: JsonOpt = False
) -> None:
    """Validate an inventory (roles, addresses, ports, quorum, secrets) without touching a host.

    Exits 2, naming each host and key, when the inventory is not valid.
    """
    from seawall.check import check_inventory as check

    with _errors():
        report = check(inventory_path)
    _finish(report, as_json)


@app.command("verify")
def verify_hosts(
    inventory_path: InventoryOpt = DEFAULT_LAB_INVENTORY,
    as_json: JsonOpt = False,
    settle: Annotated[
        float,
        typer.Option(
            "--settle",
            help="While checks fail, ask again every 5 s for up to this many seconds "
            "(right after a deploy, restarted services may still be starting).",
            min=0,
        ),
    ] = 0,
) -> None:
    """Ask every host whether each promise of the deploys holds."""
    from seawall.verify import verify_settled

    with _errors():
        report = verify_settled(_load(inventory_path), within=settle, log=progress)
    _finish(report, as_json)


@app.command("drift")
def drift_check(
    inventory_path: InventoryOpt = DEFAULT_LAB_INVENTORY,
    as_json: JsonOpt = False,
    textfile_dir: Annotated[
        Path | None,
        typer.Option(
            "--textfile-dir",
            file_okay=False,
            help="Also write seawall_drift.prom (atomically) into this directory, the node "
            "exporter's textfile collector directory.",
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(min=1, help="Seconds the dry run may take (default: 300)."),
    ] = None,
) -> None:
    """Dry-run deploys/site.py against the inventory: an operation it would run on a host is drift.

    Changes nothing on any host. Exit codes: 0 no drift, 1 drift (each host and
    operation named), 2 error (bad inventory, unreachable host named, pyinfra
    failed or ran past --timeout).
    """
    from seawall.drift import DEFAULT_TIMEOUT_S, drift, write_textfile
    from seawall.output import render

    report = drift(inventory_path, timeout=DEFAULT_TIMEOUT_S if timeout is None else timeout)
    typer.echo(render(report, as_json))
    if report.error is not None:
        typer.echo(f"seawall: {report.error}", err=True)
    if textfile_dir is not None:
        with _errors():
            write_textfile(report, textfile_dir)
    raise typer.Exit(report.exit_code)


@app.command("restart")
def restart(
    rolling: Annotated[
        bool,
        typer.Option("--rolling", help="One host at a time, each step gated (the only mode)."),
    ] = False,
    inventory_path: InventoryOpt = DEFAULT_LAB_INVENTORY,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the plan (each step: host, action, gate) from the inventory alone: no "
            "lock, no connection, no preflight. It takes the Redis master and Postgres leader "
            "to be the groups' first hosts; a real run asks them and orders by them.",
        ),
    ] = False,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Restart every daemon, one host at a time, each step health-gated: no request fails.

    App hosts one at a time (drained at the gateway, units restarted, /health
    gated, undrained), Redis replicas, Sentinels, a Redis switchover, the old
    master, etcd members, the Postgres replica, a Patroni switchover, the old
    leader, then the gateway's reload. First `seawall status` and `seawall
    health` must be ok. It holds the operations lock throughout (drift waits).
    Exit codes: 0 done (or the --dry-run plan), 1 preflight not ok (nothing
    touched) or a gate failed (the run stopped there; the report names host,
    step and why; a drained app host stays drained), 2 error (bad inventory,
    lock busy, cluster not reachable), 3 declined (nothing done).
    """
    from seawall.restart import rolling_restart

    if not rolling:
        typer.echo("seawall: say --rolling (the only kind of restart)", err=True)
        raise typer.Exit(EXIT_ERROR)
    if not dry_run:
        _confirm("Restart every daemon of the inventory, one host at a time?", yes)
    with _errors():
        topology = _load(inventory_path, check_secrets=not dry_run)
        report = rolling_restart(topology, dry_run=dry_run, log=progress)
    _finish(report, as_json)


@app.command("health")
def health(inventory_path: InventoryOpt = DEFAULT_LAB_INVENTORY, as_json: JsonOpt = False) -> None:
    """Ask every service's /health on every app host.

    Exit codes: 0 every service answers OK or DEGRADED, 1 any is DOWN or silent, 2 error.
    """
    from seawall.health_report import collect

    with _errors():
        report = collect(inventory.load(inventory_path))
    _finish(report, as_json)


# --- Postgres (module B) ------------------------------------------------------------


@drill_app.command("postgres")
def drill_postgres(
    scenarios: Annotated[
        list[str] | None, typer.Argument(help="Scenario names, or `all` (the default).")
    ] = None,
    inventory_path: InventoryOpt = DEFAULT_LAB_INVENTORY,
    runs: Annotated[int, typer.Option(min=1, max=20, help="Runs of each scenario.")] = 1,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
    plot: PlotOpt = None,
) -> None:
    """Inject real Postgres faults on the lab under a bounded writer; report outage and losses.

    Scenarios: switchover, leader-process-kill, leader-host-crash,
    leader-partitioned, replica-down, etcd-member-down. The writer commits
    numbered rows through an app host's PgBouncer and HAProxy; each scenario
    reports the write outage, acknowledged commits lost, and whether the old
    leader rejoined. Exit codes: 0 every scenario ok, 1 one failed, 2 error, 3 declined.
    """
    from seawall.postgres.drill import SCENARIOS
    from seawall.postgres.drill import drill_postgres as run_drills

    names = list(SCENARIOS) if not scenarios or scenarios == ["all"] else scenarios
    chosen = [name for name in names for _ in range(runs)]
    _require_plot(plot, len(chosen))
    _confirm(f"Run {', '.join(names)} on the lab's Postgres ({runs} run(s) each)?", yes)
    with _errors():
        report = run_drills(_load_lab(inventory_path), chosen, log=progress)
        if plot is not None:
            _draw(plot, report.results)
    _finish(report, as_json)


tradestore_app = typer.Typer(
    help=f"The execution service's trade store. {EXIT_CODES}", no_args_is_help=True
)
app.add_typer(tradestore_app, name="tradestore")


@tradestore_app.command("migrate")
def tradestore_migrate(
    sqlite: Annotated[Path, typer.Option("--sqlite", help="The SQLite trade store file.")],
    dsn: Annotated[
        str,
        typer.Option(
            "--dsn",
            envvar="SEAWALL_TRADESTORE_DSN",
            help="libpq DSN of the Postgres leader (not PgBouncer). Keep the password out "
            "of it: libpq reads PGPASSFILE or PGPASSWORD.",
        ),
    ],
    batch_size: Annotated[int, typer.Option(min=100, max=100000, help="Rows per batch.")] = 10000,
    as_json: JsonOpt = False,
) -> None:
    """Copy the SQLite trade store into Postgres (resumable, idempotent) and verify every row.

    Exit codes: 0 copied and verified equal, 1 verified different, 2 error
    (bad SQLite file, wrong DSN, schema clash: nothing is changed then).
    """
    from seawall.postgres.tradestore import migrate

    with _errors():
        report = migrate(sqlite, dsn, batch_size=batch_size, log=progress)
    _finish(report, as_json)


@drill_app.command("pg-restore")
def drill_pg_restore(
    inventory_path: InventoryOpt = DEFAULT_LAB_INVENTORY,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Back up, restore the latest backup into scratch on the ops host, check marker rows.

    Writes numbered rows through an app host's PgBouncer, runs a pgBackRest
    backup, restores it into a scratch directory on the repository host (never
    onto a cluster member), starts Postgres there and counts the rows. Exit
    codes: 0 every row is back in time, 1 rows missing or too slow, 2 error, 3 declined.
    """
    from seawall.postgres.restore import restore_drill

    _confirm("Write marker rows, take a backup and restore it into scratch?", yes)
    with _errors():
        report = restore_drill(_load(inventory_path), log=progress)
    _finish(report, as_json)

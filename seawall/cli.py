"""The `seawall` command: thin wrappers over library functions.

Exit codes: 0 ok, 1 a finding (failed check, unhealthy lab), 2 an error
(bad inventory, unreachable host, failed step).
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from seawall import inventory
from seawall.errors import SeawallError
from seawall.output import emit, progress, table

if TYPE_CHECKING:
    from seawall.lab import LabReport

EXIT_CODES = "Exit codes: 0 ok, 1 finding (failed check or unhealthy lab), 2 error."

app = typer.Typer(
    help=f"Harden, test and check the trading platform's hosts. {EXIT_CODES}", no_args_is_help=True
)
lab_app = typer.Typer(
    help=f"The lab: the production topology as LXC hosts. {EXIT_CODES}", no_args_is_help=True
)
fault_app = typer.Typer(
    help="Inject real faults into lab hosts (and undo them).", no_args_is_help=True
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
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


@contextmanager
def _errors() -> Iterator[None]:
    """Turn a SeawallError into its message on stderr and exit code 2."""
    try:
        yield
    except SeawallError as error:
        typer.echo(f"seawall: {error}", err=True)
        raise typer.Exit(2) from None


def _confirm(question: str, yes: bool) -> None:
    if not yes and not typer.confirm(question, default=False):
        raise typer.Exit(1)


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


def _lab_text(report: "LabReport") -> str:
    rows = [(h.name, h.address, h.state, "yes" if h.ssh else "no") for h in report.hosts]
    lines = [table(["host", "address", "state", "ssh"], rows), ""]
    lines.append(
        f"bridge {report.bridge}: {'up' if report.bridge_present else 'absent'}; "
        f"guard: {'on' if report.guard_present else 'absent'}; "
        f"apt proxy: {report.proxy_pid or 'not running'}"
    )
    if report.faults:
        lines.append("faults: " + "; ".join(report.faults))
    if report.timings:
        lines.append("timings (s): " + ", ".join(f"{k} {v}" for k, v in report.timings.items()))
    return "\n".join(lines)


@lab_app.command("up")
def lab_up(inventory_path: InventoryOpt = DEFAULT_LAB_INVENTORY, as_json: JsonOpt = False) -> None:
    """Create or repair the lab and wait until every host answers SSH."""
    from seawall import lab

    with _errors():
        report = lab.up(_load_lab(inventory_path), log=progress)
    emit(report.to_json(), as_json, _lab_text(report))
    raise typer.Exit(0 if report.ok else 1)


@lab_app.command("down")
def lab_down(
    inventory_path: InventoryOpt = DEFAULT_LAB_INVENTORY,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove the lab's hosts, bridge, firewall table and apt proxy (the base cache stays)."""
    from seawall import lab

    _confirm("Destroy every lab host?", yes)
    with _errors():
        report = lab.down(_load_lab(inventory_path), log=progress)
    emit(report.to_json(), as_json, _lab_text(report))


@lab_app.command("status")
def lab_status(
    inventory_path: InventoryOpt = DEFAULT_LAB_INVENTORY, as_json: JsonOpt = False
) -> None:
    """Show each lab host, its address and state."""
    from seawall import lab

    with _errors():
        report = lab.status(_load_lab(inventory_path))
    emit(report.to_json(), as_json, _lab_text(report))
    raise typer.Exit(0 if report.ok else 1)


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
    from seawall.lab.ssh import ssh_args

    with _errors():
        topology = _load_lab(inventory_path)
        require_bridge(lab_config(topology))
        args = ssh_args(topology, host, user)
    os.execvp(args[0], [*args, *ctx.args])


@lab_app.command("box")
def lab_box(
    inventory_path: InventoryOpt = DEFAULT_LAB_INVENTORY,
    force: Annotated[bool, typer.Option(help="Rebuild even if a current box exists.")] = False,
) -> None:
    """Build the vagrant-lxc box from the lab's base root filesystem; print its path."""
    from seawall.lab.vagrant import build_box

    with _errors():
        print(build_box(_load_lab(inventory_path), force=force))


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
) -> None:
    """Inject one fault into one host."""
    from seawall.lab import faults, lab_config

    _confirm(f"{kind.value} {host}?", yes)
    with _errors():
        config = lab_config(_load_lab(inventory_path))
        getattr(faults, kind.value)(config, host)
    progress(f"{host}: {kind.value}")


@fault_app.command("partition")
def fault_partition(
    first: Annotated[str, typer.Argument(help="Lab host name.")],
    second: Annotated[str, typer.Argument(help="Lab host name.")],
    inventory_path: InventoryOpt = DEFAULT_LAB_INVENTORY,
    yes: YesOpt = False,
) -> None:
    """Drop all traffic between two lab hosts."""
    from seawall.lab import faults, lab_config

    _confirm(f"partition {first} from {second}?", yes)
    with _errors():
        faults.partition(lab_config(_load_lab(inventory_path)), first, second)
    progress(f"partitioned {first} <-> {second}")


@fault_app.command("restore")
def fault_restore(inventory_path: InventoryOpt = DEFAULT_LAB_INVENTORY) -> None:
    """Undo every fault and wait until every host is back."""
    from seawall.lab import faults, lab_config

    with _errors():
        faults.restore(lab_config(_load_lab(inventory_path)))
    progress("every fault undone")


@app.command("status")
def status(
    inventory_path: Annotated[Path, typer.Argument(help="Inventory file.")] = DEFAULT_LAB_INVENTORY,
    as_json: JsonOpt = False,
) -> None:
    """Show the live topology: Redis master, replicas with lag, Sentinels' agreement, Postgres."""
    from seawall.status import platform_status

    with _errors():
        report = platform_status(_load(inventory_path))
    emit(report.to_json(), as_json, report.to_text())
    raise typer.Exit(0 if report.ok else 1)


@drill_app.command("redis")
def drill_redis(
    scenario: Annotated[str, typer.Argument(help="A scenario name, or `all`.")],
    inventory_path: InventoryOpt = DEFAULT_LAB_INVENTORY,
    runs: Annotated[int, typer.Option(min=1, max=20, help="Runs of each scenario.")] = 1,
    duration: Annotated[float, typer.Option(min=5, max=120, help="Writer seconds.")] = 20,
    rate: Annotated[float, typer.Option(min=1, max=1000, help="Events per second.")] = 100,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Inject a real Redis fault on the lab under a bounded writer; report outage and losses.

    Scenarios: master-process-kill, master-host-crash, master-isolated,
    master-partitioned-from-peers, sentinel-down, replica-down, switchover.
    """
    from seawall.redis_ha.drill import SCENARIOS, drill_table, run_drill

    chosen = list(SCENARIOS) if scenario == "all" else [scenario]
    _confirm(f"Run {', '.join(chosen)} on the lab ({runs} run(s) each)?", yes)
    with _errors():
        topology = _load_lab(inventory_path)
        results = [
            run_drill(topology, name, duration=duration, rate=rate, log=progress)
            for name in chosen
            for _ in range(runs)
        ]
    emit({"results": [r.to_json() for r in results]}, as_json, drill_table(results))
    raise typer.Exit(0 if all(r.ok for r in results) else 1)


@app.command("check")
def check_inventory(
    inventory_path: Annotated[Path, typer.Argument(help="Inventory file.")],
) -> None:
    """Validate an inventory (roles, addresses, ports, quorum, secrets) without touching a host."""
    with _errors():
        topology = _load(inventory_path)
    rows = [(h.name, h.address, ",".join(h.roles) or "-") for h in topology]
    print(table(["host", "address", "roles"], rows))
    progress(f"{inventory_path}: valid")


@app.command("verify")
def verify_hosts(
    inventory_path: Annotated[Path, typer.Argument(help="Inventory file.")] = DEFAULT_LAB_INVENTORY,
    as_json: JsonOpt = False,
) -> None:
    """Ask every host whether each promise of the deploys holds."""
    from seawall.verify import verify

    with _errors():
        report = verify(_load(inventory_path))
    emit(report.to_json(), as_json, report.to_text())
    raise typer.Exit(0 if report.ok else 1)


@app.command("health")
def health(
    inventory_path: Annotated[Path, typer.Argument(help="Inventory file.")] = DEFAULT_LAB_INVENTORY,
    as_json: JsonOpt = False,
) -> None:
    """Ask every service's /health on every app host.

    Exit codes: 0 every service answers OK or DEGRADED, 1 any is DOWN or silent, 2 error.
    """
    from seawall.health_report import collect

    with _errors():
        report = collect(inventory.load(inventory_path))
    emit(report.to_json(), as_json, report.to_text())
    raise typer.Exit(0 if report.ok else 1)


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
) -> None:
    """Inject real Postgres faults on the lab under a bounded writer; report outage and losses.

    Scenarios: switchover, leader-process-kill, leader-host-crash,
    leader-partitioned, replica-down, etcd-member-down. The writer commits
    numbered rows through an app host's PgBouncer and HAProxy; each scenario
    reports the write outage, acknowledged commits lost, and whether the old
    leader rejoined. Exit codes: 0 every scenario ok, 1 one failed, 2 error.
    """
    from seawall.postgres.drill import SCENARIOS
    from seawall.postgres.drill import drill_postgres as run_drills

    names = list(SCENARIOS) if not scenarios or scenarios == ["all"] else scenarios
    chosen = [name for name in names for _ in range(runs)]
    _confirm(f"Run {', '.join(names)} on the lab's Postgres ({runs} run(s) each)?", yes)
    with _errors():
        report = run_drills(_load_lab(inventory_path), chosen, log=progress)
    emit(report.to_json(), as_json, report.to_text())
    raise typer.Exit(0 if report.ok else 1)


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
    emit(report.to_json(), as_json, report.to_text())
    raise typer.Exit(0 if report.ok else 1)


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
    codes: 0 every row is back in time, 1 rows missing or too slow, 2 error.
    """
    from seawall.postgres.restore import restore_drill

    _confirm("Write marker rows, take a backup and restore it into scratch?", yes)
    with _errors():
        report = restore_drill(_load(inventory_path), log=progress)
    emit(report.to_json(), as_json, report.to_text())
    raise typer.Exit(0 if report.ok else 1)

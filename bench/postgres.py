"""Benchmark Postgres HA on the lab: drill medians through the real routing path, migration.

Each drill scenario runs ``--runs`` times (default 5) with a writer committing
numbered rows through an app host's PgBouncer -> HAProxy -> leader; figures are
medians (min, max) of the write outage and the old leader's rejoin time, and
the total of acknowledged commits lost. Then a ``--trades``-row SQLite trade
store (default 1,000,000) is migrated through an SSH tunnel to HAProxy's
read-write port, verified, and migrated again (which must copy nothing).
Results are printed and written into docs/benchmarks.md between the
`bench:postgres` markers.

    .venv/bin/python bench/postgres.py --runs 5 [--plot docs/img]

``--plot DIR`` draws each scenario's median run (by write outage) as
``DIR/postgres-<scenario>.svg``.

It runs on the lab itself (`seawall lab up` and a site deploy first), taking
the data-fault lock once per drill so the Redis drills can interleave.
"""

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import load_note, publish, spread  # noqa: E402  (bench/report.py)

from seawall import inventory  # noqa: E402
from seawall.plot import draw_scenarios, require  # noqa: E402
from seawall.postgres import drill, tradestore  # noqa: E402
from seawall.postgres.restore import restore_drill  # noqa: E402
from seawall.postgres.tunnel import tunnel  # noqa: E402

INVENTORY = ROOT / "inventories" / "lab.py"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_drills(
    topology: inventory.Topology, scenarios: list[str], runs: int, plot: str | None = None
) -> list[str]:
    results: dict[str, list[drill.DrillResult]] = {name: [] for name in scenarios}
    for run in range(runs):
        for name in scenarios:
            log(f"run {run + 1}/{runs}: {name}")
            results[name] += drill.drill_postgres(topology, [name], log=log).results
    if plot:
        found = [result for each in results.values() for result in each]
        for path in draw_scenarios(found, plot, "postgres", lambda r: r.write_outage_s):
            log(f"timeline drawn in {path}")
    limits = topology.group("postgres")[0].data["postgres_drill_outage_limits"]
    lines = [
        "| scenario | write outage s: median | min | max | target s | commits lost "
        "| rejoin s: median | min | max | runs ok |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, found in results.items():
        outages = [r.write_outage_s for r in found]
        rejoins = [r.rejoin_s for r in found if r.rejoin_s is not None]
        lost = sum(r.lost for r in found)
        committed = sum(r.committed for r in found)
        ok = sum(r.ok for r in found)
        lines.append(
            f"| {name} | {spread(outages)} | <= {limits[name]} | {lost} of {committed} "
            f"| {spread(rejoins)} | {ok}/{len(found)} |"
        )
        for r in found:
            for problem in r.problems:
                lines.append(f"<!-- {name}: {problem} -->")
    return lines


def run_restore(topology: inventory.Topology) -> list[str]:
    """The restore drill once: back up, restore into scratch on the ops host, count markers."""
    report = restore_drill(topology, log=log)
    limit = topology.group("ops")[0].data["pgbackrest_restore_drill_limit_s"]
    return [
        "| restore drill (`seawall drill pg-restore`, lab database) | figure |",
        "|---|---|",
        f"| marker rows written before the backup / found after the restore "
        f"| {report.rows_written} / {report.rows_restored} |",
        f"| backup, s | {report.backup_s} |",
        f"| restore, s | {report.restore_s} |",
        f"| recovery and start, s | {report.start_s} |",
        f"| total, s (target <= {limit}) | {report.total_s} |",
        f"| ok | {'yes' if report.ok else 'NO: ' + '; '.join(report.problems)} |",
    ]


def run_migration(topology: inventory.Topology, trades: int) -> list[str]:
    app = topology.group("app")[0]
    # Into the trade store's own database, as its owner: what the real move does.
    database = "trading"
    role = str(app.data["postgres_databases"][database])
    # In the DSN, inside this process: PGPASSWORD would pass to every child (ssh for the tunnel).
    password = drill.role_password(topology, role)
    with tempfile.TemporaryDirectory() as folder:
        started = time.monotonic()
        store = tradestore.sample_trade_store(Path(folder) / "trades.db", trades)
        log(f"sample store of {trades} trades written in {time.monotonic() - started:.1f} s")
        # Hold the data-fault lock: a Redis drill's fault would cut the copy short.
        with (
            drill.data_fault_lock(log),
            tunnel(topology, app.name, app.data["haproxy_rw_port"]) as port,
        ):
            import psycopg
            from psycopg.conninfo import make_conninfo

            # TLS on the app host's hop to the member, as every network client of
            # Postgres (require: this machine holds no copy of the Postgres CA; the
            # tunnel to the app host is SSH).
            dsn = make_conninfo(
                host="127.0.0.1",
                port=port,
                dbname=database,
                user=role,
                password=password,
                sslmode="require",
            )

            with psycopg.connect(dsn, autocommit=True) as conn:
                for table in ("trades", "positions", tradestore.PROGRESS_TABLE):
                    conn.execute(f"DROP TABLE IF EXISTS {table}")
            first = tradestore.migrate(store, dsn, log=log)
            second = tradestore.migrate(store, dsn, log=log)
    rows = sum(t.sqlite_rows for t in first.tables)
    rate = rows / first.copy_seconds if first.copy_seconds else 0
    return [
        "| migration of the sample trade store | figure |",
        "|---|---|",
        f"| rows (trades + positions) | {rows} |",
        f"| first run: copy, s | {first.copy_seconds:.1f} ({rate:,.0f} rows/s) |",
        f"| first run: verify (counts + every row's checksum, both sides), s "
        f"| {first.verify_seconds:.1f} |",
        f"| first run verified equal | {'yes' if first.ok else 'NO'} |",
        f"| second run: rows copied | {second.copied} |",
        f"| second run: verify, s | {second.verify_seconds:.1f} |",
        f"| second run verified equal | {'yes' if second.ok else 'NO'} |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scenarios", nargs="*", default=list(drill.SCENARIOS))
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--skip-drills", action="store_true")
    parser.add_argument("--skip-migration", action="store_true")
    parser.add_argument("--skip-restore", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="Print only.")
    parser.add_argument(
        "--plot", metavar="DIR", help="Draw each scenario's median run as DIR/postgres-<name>.svg."
    )
    args = parser.parse_args()
    if args.plot:
        require()  # before the drills, not after them
    os.chdir(ROOT)
    load_before = os.getloadavg()[0]
    topology = inventory.load(INVENTORY)
    data: Mapping[str, Any] = topology.group("postgres")[0].data
    today = datetime.now(UTC).date().isoformat()
    lines = [
        f"Postgres HA, {today}: PostgreSQL 15 + Patroni 3.0.2 + etcd 3.4 (Debian 12 packages), "
        f"ttl/loop_wait/retry_timeout {data['patroni_ttl']}/{data['patroni_loop_wait']}/"
        f"{data['patroni_retry_timeout']}, synchronous_mode on, 2 shared cores. The writer "
        "commits one numbered row per transaction from app-1 through PgBouncer (transaction "
        "pooling) and HAProxy (Patroni REST checks), about 50-100 commits/s; outage is the "
        "longest gap between two acknowledged commits after the fault; rejoin is the time "
        "from undoing the fault until every member runs again with the old leader streaming.",
        "",
    ]
    if not args.skip_drills:
        lines += [f"Drills, {args.runs} runs each:", ""]
        lines += run_drills(topology, args.scenarios, args.runs, args.plot)
        lines.append("")
    if not args.skip_restore:
        lines += run_restore(topology)
        lines.append("")
    if not args.skip_migration:
        lines += run_migration(topology, args.trades)
    lines += load_note(load_before)
    publish("postgres", lines, write=not args.no_write)


if __name__ == "__main__":
    main()

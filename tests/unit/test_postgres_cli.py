"""`seawall drill postgres` and `seawall tradestore migrate`: arguments and exit codes."""

import os
from pathlib import Path

from typer.testing import CliRunner

from seawall.cli import app

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_migrate_missing_sqlite_file_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["tradestore", "migrate", "--sqlite", str(tmp_path / "none.db"), "--dsn", "host=x"],
    )
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_migrate_corrupt_sqlite_file_exits_2_before_connecting(tmp_path: Path) -> None:
    bad = tmp_path / "trades.db"
    bad.write_bytes(b"garbage" * 1000)
    # The DSN points nowhere: the file is refused first, nothing is contacted.
    result = runner.invoke(
        app, ["tradestore", "migrate", "--sqlite", str(bad), "--dsn", "host=127.0.0.1 port=1"]
    )
    assert result.exit_code == 2
    assert "not a usable database" in result.output


def test_migrate_wrong_dsn_exits_2(tmp_path: Path) -> None:
    from seawall.postgres.tradestore import sample_trade_store

    store = sample_trade_store(tmp_path / "trades.db", trades=10)
    result = runner.invoke(
        app,
        [
            "tradestore",
            "migrate",
            "--sqlite",
            str(store),
            "--dsn",
            "host=127.0.0.1 port=1 dbname=x user=x connect_timeout=2",
        ],
    )
    assert result.exit_code == 2
    assert "cannot connect" in result.output


def test_drill_postgres_unknown_scenario_exits_2() -> None:
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        result = runner.invoke(app, ["drill", "postgres", "meteor-strike", "--yes"])
    finally:
        os.chdir(cwd)
    assert result.exit_code == 2
    assert "unknown scenario" in result.output


def test_drill_postgres_declined_exits_3() -> None:
    result = runner.invoke(app, ["drill", "postgres", "switchover"], input="n\n")
    assert result.exit_code == 3

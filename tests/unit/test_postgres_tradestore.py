"""The trade-store migration without Postgres: SQLite checks, schema and type mapping, checksums."""

import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from seawall.errors import SeawallError
from seawall.postgres import tradestore


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        ("INTEGER", "bigint"),
        ("BIGINT", "bigint"),
        ("VARCHAR(20)", "text"),
        ("TEXT", "text"),
        ("", "bytea"),
        ("BLOB", "bytea"),
        ("REAL", "double precision"),
        ("DOUBLE", "double precision"),
        ("NUMERIC(18, 8)", "numeric"),
        ("DECIMAL", "numeric"),
        ("BOOLEAN", "boolean"),
        ("DATETIME", "timestamptz"),
        ("TIMESTAMP", "timestamptz"),
    ],
)
def test_types_map_by_affinity(declared: str, expected: str) -> None:
    assert tradestore.pg_type(declared) == expected


def test_schema_of_the_sample_store(tmp_path: Path) -> None:
    path = tradestore.sample_trade_store(tmp_path / "trades.db", trades=50)
    conn = tradestore.open_sqlite(path)
    tables = {t.name: t for t in tradestore.read_schema(conn)}
    assert sorted(tables) == ["positions", "trades"]
    trades = tables["trades"]
    assert trades.primary_key == ["id"]
    assert tradestore.create_table_sql(trades).startswith(
        'CREATE TABLE "trades" ("id" bigint NOT NULL, "order_id" text NOT NULL'
    )
    indexes = {index.name: index for index in trades.indexes}
    assert indexes["trades_order_id"].unique
    assert indexes["trades_symbol_time"].columns == ("symbol", "executed_at")
    # A text primary key keeps its (implicit) unique index out: the PK covers it.
    assert tables["positions"].primary_key == ["symbol"]
    assert tables["positions"].indexes == ()


def test_missing_sqlite_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SeawallError, match="does not exist"):
        tradestore.open_sqlite(tmp_path / "nope.db")


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "trades.db"
    path.write_bytes(b"this is not sqlite at all" * 200)
    with pytest.raises(SeawallError, match="not a usable database"):
        tradestore.open_sqlite(path)


def test_corrupt_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tradestore.sample_trade_store(tmp_path / "trades.db", trades=3000)
    data = bytearray(path.read_bytes())
    # Overwrite a few pages in the middle of the file (b-tree pages of `trades`).
    data[8192:40960] = b"\xff" * (40960 - 8192)
    path.write_bytes(bytes(data))
    with pytest.raises(SeawallError, match="corrupt|not a usable database"):
        tradestore.open_sqlite(path)


def test_without_rowid_tables_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE k (a TEXT PRIMARY KEY, b INT) WITHOUT ROWID")
    conn.commit()
    conn.close()
    with pytest.raises(SeawallError, match="WITHOUT ROWID"):
        tradestore.read_schema(tradestore.open_sqlite(path))


def column(pg_type: str) -> tradestore.Column:
    return tradestore.Column("c", pg_type, tradestore.pg_type(pg_type), False, 0)


def test_values_convert_and_checksum_the_same_on_both_sides() -> None:
    cases = [
        ("DATETIME", "2026-01-01 00:00:05"),
        ("NUMERIC", "123.45000000"),
        ("REAL", 0.1),
        ("BOOLEAN", 1),
        ("BLOB", b"\x00\x01"),
        ("INTEGER", 7),
        ("TEXT", "BTC-USDT"),
    ]
    for declared, value in cases:
        col = column(declared)
        converted = tradestore.to_postgres(value, col)
        # What Postgres hands back has the converted type: same canonical form.
        assert tradestore.canonical(value, col) == tradestore.canonical(converted, col)
    assert tradestore.canonical(Decimal("123.450"), column("NUMERIC")) == "123.45"
    assert tradestore.canonical(None, column("TEXT")) != tradestore.canonical("", column("TEXT"))


def test_a_value_that_does_not_fit_names_the_column() -> None:
    with pytest.raises(SeawallError, match="column c .*not-a-date"):
        tradestore.to_postgres("not-a-date", column("DATETIME"))


def test_report_is_ok_only_when_counts_and_rows_match() -> None:
    good = tradestore.TableResult("t", sqlite_rows=3, postgres_rows=3)
    bad = tradestore.TableResult("u", sqlite_rows=3, postgres_rows=3, mismatched_rows=2)
    assert tradestore.MigrationReport("x", [good]).ok
    report = tradestore.MigrationReport("x", [good, bad])
    assert not report.ok
    assert report.to_json()["tables"][1]["ok"] is False
    assert "DIFFERENT" in report.to_text()

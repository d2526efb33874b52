"""`seawall tradestore migrate`: move the execution service's SQLite trade store into Postgres.

Every table of the SQLite file becomes a Postgres table (types mapped from
SQLite's declared types, primary keys, NOT NULL and indexes kept), copied in
batches in rowid order. Each batch and the record of how far the copy got
commit in one transaction, so an interrupted run resumes where it stopped and
a second run copies nothing. Afterwards both sides are read in full and
compared: row counts, and a checksum of every row (as a multiset, so order
does not matter).

Before anything is written, the SQLite file is checked (exists, is a
database, passes ``PRAGMA quick_check``), the DSN is tried, and every target
table that already exists must have exactly the mapped columns and be one this
tool created: otherwise nothing changes and the error says why.

Run it against the leader (an app host's HAProxy read-write port, or the
leader itself), not through PgBouncer: it holds a session-level advisory lock.
"""

import hashlib
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from seawall.errors import SeawallError

Log = Callable[[str], None]

PROGRESS_TABLE = "seawall_tradestore_migration"
# Any constant: one migration into a database at a time.
ADVISORY_LOCK = 0x5EA3A11
DEFAULT_BATCH = 10000


# --- schema ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    name: str
    declared: str
    pg_type: str
    not_null: bool
    pk_position: int


@dataclass(frozen=True)
class Index:
    name: str
    columns: tuple[str, ...]
    unique: bool


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    indexes: tuple[Index, ...]

    @property
    def primary_key(self) -> list[str]:
        keyed = sorted((c for c in self.columns if c.pk_position), key=lambda c: c.pk_position)
        return [c.name for c in keyed]

    @property
    def column_list(self) -> str:
        """The quoted column names, comma-separated, for SELECT and COPY."""
        return ", ".join(quote(c.name) for c in self.columns)


def pg_type(declared: str) -> str:
    """Map a SQLite declared type to a Postgres type, by SQLite's affinity rules (plus dates)."""
    upper = declared.upper()
    if "BOOL" in upper:
        return "boolean"
    if "INT" in upper:
        return "bigint"
    if "TIMESTAMP" in upper or "DATETIME" in upper:
        return "timestamptz"
    if any(word in upper for word in ("CHAR", "CLOB", "TEXT")):
        return "text"
    if upper == "" or "BLOB" in upper:
        return "bytea"
    if any(word in upper for word in ("REAL", "FLOA", "DOUB")):
        return "double precision"
    return "numeric"


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def open_sqlite(path: Path) -> sqlite3.Connection:
    """Open the trade store read-only and check it.

    Raises:
        SeawallError: missing, not a SQLite database, or corrupt.
    """
    if not path.is_file():
        raise SeawallError(f"SQLite file {path} does not exist")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as error:
        raise SeawallError(f"SQLite file {path} is not a usable database: {error}") from None
    if verdict != "ok":
        conn.close()
        raise SeawallError(f"SQLite file {path} is corrupt: {verdict}")
    return conn


def read_schema(conn: sqlite3.Connection) -> list[Table]:
    """Return every user table of a SQLite database, with its columns and indexes.

    Raises:
        SeawallError: a table without rowid (it cannot be copied resumably).
    """
    tables = []
    rows = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' "
        "AND name NOT LIKE 'sqlite_%' ORDER BY name"
    ).fetchall()
    for name, sql in rows:
        if "WITHOUT ROWID" in (sql or "").upper():
            raise SeawallError(f"SQLite table {name} is WITHOUT ROWID: not supported")
        columns = tuple(
            Column(
                name=col_name,
                declared=declared or "",
                pg_type=pg_type(declared or ""),
                not_null=bool(not_null),
                pk_position=int(pk),
            )
            for _, col_name, declared, not_null, _, pk in conn.execute(
                f"PRAGMA table_info({quote(name)})"
            )
        )
        indexes = []
        for _, index_name, unique, origin, _ in conn.execute(f"PRAGMA index_list({quote(name)})"):
            if origin == "pk":
                continue  # the primary key itself
            cols = tuple(row[2] for row in conn.execute(f"PRAGMA index_info({quote(index_name)})"))
            if any(col is None for col in cols):
                raise SeawallError(f"SQLite index {index_name} on an expression: not supported")
            pg_name = (
                index_name
                if not index_name.startswith("sqlite_")
                else f"{name}_{'_'.join(cols)}_key"
            )
            indexes.append(Index(pg_name, cols, bool(unique)))
        tables.append(Table(name, columns, tuple(indexes)))
    return tables


def create_table_sql(table: Table) -> str:
    parts = [
        f"{quote(c.name)} {c.pg_type}{' NOT NULL' if c.not_null or c.pk_position else ''}"
        for c in table.columns
    ]
    if table.primary_key:
        parts.append(f"PRIMARY KEY ({', '.join(quote(c) for c in table.primary_key)})")
    return f"CREATE TABLE {quote(table.name)} ({', '.join(parts)})"


def create_index_sql(table: Table, index: Index) -> str:
    unique = "UNIQUE " if index.unique else ""
    columns = ", ".join(quote(c) for c in index.columns)
    return (
        f"CREATE {unique}INDEX IF NOT EXISTS {quote(index.name)} ON {quote(table.name)} ({columns})"
    )


# --- values ------------------------------------------------------------------------------


def _timestamp(value: Any) -> datetime:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def to_postgres(value: Any, column: Column) -> Any:
    """Convert a SQLite value for its Postgres column.

    Raises:
        SeawallError: the value does not fit the column's type.
    """
    if value is None:
        return None
    try:
        if column.pg_type == "boolean":
            return (
                bool(int(value))
                if not isinstance(value, str)
                else value.lower() in ("1", "t", "true")
            )
        if column.pg_type == "bigint":
            return int(value)
        if column.pg_type == "timestamptz":
            return _timestamp(value)
        if column.pg_type == "text":
            return value if isinstance(value, str) else str(value)
        if column.pg_type == "bytea":
            return value if isinstance(value, bytes) else str(value).encode()
        if column.pg_type == "double precision":
            return float(value)
        return Decimal(str(value))
    except (ValueError, TypeError, InvalidOperation, OverflowError) as error:
        raise SeawallError(
            f"column {column.name} ({column.declared or 'no type'} -> {column.pg_type}): "
            f"value {value!r} does not convert: {error}"
        ) from None


def canonical(value: Any, column: Column) -> str:
    """Return one text form of a value, the same whichever side it was read from."""
    if value is None:
        return "\x00"
    if column.pg_type == "timestamptz":
        return _timestamp(value).astimezone(UTC).isoformat()
    if column.pg_type == "double precision":
        return repr(float(value))
    if column.pg_type == "numeric":
        return str(Decimal(str(value)).normalize())
    if column.pg_type == "bytea":
        return bytes(value).hex()
    if column.pg_type == "boolean":
        return "t" if value else "f"
    return str(value)


def row_digest(row: Sequence[Any], columns: Sequence[Column]) -> bytes:
    text = "\x1f".join(canonical(v, c) for v, c in zip(row, columns, strict=True))
    return hashlib.blake2b(text.encode(), digest_size=12).digest()


# --- report ------------------------------------------------------------------------------


@dataclass
class TableResult:
    name: str
    sqlite_rows: int = 0
    postgres_rows: int = 0
    copied: int = 0
    mismatched_rows: int = 0
    checksum: str = ""

    @property
    def ok(self) -> bool:
        return self.sqlite_rows == self.postgres_rows and self.mismatched_rows == 0


@dataclass
class MigrationReport:
    sqlite: str
    tables: list[TableResult] = field(default_factory=list)
    copy_seconds: float = 0.0
    verify_seconds: float = 0.0

    @property
    def copied(self) -> int:
        return sum(t.copied for t in self.tables)

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tables)

    def to_json(self) -> dict[str, Any]:
        tables = [{**asdict(t), "ok": t.ok} for t in self.tables]
        return {**asdict(self), "tables": tables, "copied": self.copied, "ok": self.ok}

    def to_text(self) -> str:
        from seawall.output import table

        rows = [
            (t.name, t.sqlite_rows, t.postgres_rows, t.copied, t.mismatched_rows, t.checksum[:16])
            for t in self.tables
        ]
        headers = ["table", "sqlite rows", "postgres rows", "copied now", "mismatched", "checksum"]
        verdict = "verified equal" if self.ok else "DIFFERENT"
        return (
            table(headers, rows)
            + f"\ncopy {self.copy_seconds:.1f} s, verify {self.verify_seconds:.1f} s: {verdict}"
        )


# --- migration ---------------------------------------------------------------------------


def _pg_columns(pg: Any, name: str) -> list[tuple[str, str]]:
    rows = pg.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped "
        "ORDER BY a.attnum",
        (quote(name),),
    ).fetchall()
    return [(str(n), str(t)) for n, t in rows]


_PG_SPELLING = {"timestamp with time zone": "timestamptz"}


def _check_targets(pg: Any, tables: list[Table], progress: dict[str, Any]) -> list[str]:
    clashes = []
    for table in tables:
        # format_type() spells some types out: compare in one spelling.
        existing = [(n, _PG_SPELLING.get(t, t)) for n, t in _pg_columns(pg, table.name)]
        if not existing:
            continue
        wanted = [(c.name, c.pg_type) for c in table.columns]
        if existing != wanted:
            clashes.append(
                f"table {table.name} exists with columns {existing}, the trade store needs {wanted}"
            )
        elif table.name not in progress:
            count = pg.execute(f"SELECT count(*) FROM {quote(table.name)}").fetchone()[0]
            if count:
                clashes.append(
                    f"table {table.name} exists with {count} rows not copied by this tool"
                )
    return clashes


def _batches(
    conn: sqlite3.Connection, table: Table, after: int, size: int
) -> Iterator[list[tuple[Any, ...]]]:
    names = table.column_list
    while True:
        rows = conn.execute(
            f"SELECT rowid, {names} FROM {quote(table.name)} "
            "WHERE rowid > ? ORDER BY rowid LIMIT ?",
            (after, size),
        ).fetchall()
        if not rows:
            return
        yield rows
        after = rows[-1][0]


def _digests(rows: Iterable[Sequence[Any]], columns: Sequence[Column]) -> list[bytes]:
    return sorted(row_digest(row, columns) for row in rows)


def verify_table(conn: sqlite3.Connection, pg: Any, table: Table) -> TableResult:
    """Compare row counts and per-row checksums of one table on both sides."""
    names = table.column_list
    source = _digests(conn.execute(f"SELECT {names} FROM {quote(table.name)}"), table.columns)
    with pg.cursor(name=f"seawall_verify_{abs(hash(table.name))}") as cursor:
        cursor.itersize = 20000
        cursor.execute(f"SELECT {names} FROM {quote(table.name)}")
        target = _digests(cursor, table.columns)
    mismatched = 0
    i = j = 0
    # Both lists are sorted: walk them together to count rows only on one side.
    while i < len(source) and j < len(target):
        if source[i] == target[j]:
            i, j = i + 1, j + 1
        elif source[i] < target[j]:
            mismatched, i = mismatched + 1, i + 1
        else:
            mismatched, j = mismatched + 1, j + 1
    mismatched += (len(source) - i) + (len(target) - j)
    checksum = hashlib.sha256(b"".join(source)).hexdigest()
    return TableResult(
        table.name,
        sqlite_rows=len(source),
        postgres_rows=len(target),
        mismatched_rows=mismatched,
        checksum=checksum,
    )


def migrate(
    sqlite_path: Path | str,
    dsn: str,
    batch_size: int = DEFAULT_BATCH,
    log: Log = print,
    stop_after_batches: int | None = None,
) -> MigrationReport:
    """Copy every table of the SQLite trade store into Postgres, then verify both sides.

    ``stop_after_batches`` interrupts the copy on purpose (tests of resuming).

    Raises:
        SeawallError: bad SQLite file, unreachable or refusing DSN, a schema
            clash (nothing is written then), or a value that does not convert.
    """
    import psycopg

    path = Path(sqlite_path)
    conn = open_sqlite(path)
    tables = read_schema(conn)
    if not tables:
        raise SeawallError(f"SQLite file {path} has no tables")
    try:
        pg: Any = psycopg.connect(dsn, connect_timeout=10, autocommit=True)
    except psycopg.Error as error:
        raise SeawallError(f"cannot connect to Postgres with the given DSN: {error}") from None
    report = MigrationReport(sqlite=str(path))
    batches_done = 0
    try:
        got_lock = pg.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK,)).fetchone()[0]
        if not got_lock:
            raise SeawallError("another trade-store migration is running on this database")
        if pg.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
            raise SeawallError("the DSN reaches a read-only replica: point it at the leader")
        has_progress = pg.execute("SELECT to_regclass(%s)", (PROGRESS_TABLE,)).fetchone()[0]
        progress: dict[str, Any] = {}
        if has_progress:
            progress = {
                name: (last, done)
                for name, last, done in pg.execute(
                    f"SELECT table_name, last_rowid, done FROM {PROGRESS_TABLE}"
                )
            }
        clashes = _check_targets(pg, tables, progress)
        if clashes:
            raise SeawallError("schema clash, nothing changed:\n  " + "\n  ".join(clashes))

        started = time.monotonic()
        with pg.transaction():
            pg.execute(
                f"CREATE TABLE IF NOT EXISTS {PROGRESS_TABLE} (table_name text PRIMARY KEY, "
                "source text NOT NULL, last_rowid bigint NOT NULL, done boolean NOT NULL)"
            )
            for table in tables:
                if table.name not in progress:
                    pg.execute(create_table_sql(table))
                    pg.execute(
                        f"INSERT INTO {PROGRESS_TABLE} VALUES (%s, %s, 0, false)",
                        (table.name, str(path)),
                    )
                    progress[table.name] = (0, False)
        for table in tables:
            last, done = progress[table.name]
            result = TableResult(table.name)
            report.tables.append(result)
            if done:
                continue
            copy_sql = f"COPY {quote(table.name)} ({table.column_list}) FROM STDIN"
            for rows in _batches(conn, table, last, batch_size):
                if stop_after_batches is not None and batches_done >= stop_after_batches:
                    raise SeawallError(f"stopped after {batches_done} batches, as asked")
                with pg.transaction():
                    with pg.cursor().copy(copy_sql) as copy:
                        for row in rows:
                            copy.write_row(
                                [
                                    to_postgres(v, c)
                                    for v, c in zip(row[1:], table.columns, strict=True)
                                ]
                            )
                    pg.execute(
                        f"UPDATE {PROGRESS_TABLE} SET last_rowid = %s WHERE table_name = %s",
                        (rows[-1][0], table.name),
                    )
                result.copied += len(rows)
                batches_done += 1
            log(f"{table.name}: {result.copied} rows copied")
            with pg.transaction():
                for index in table.indexes:
                    pg.execute(create_index_sql(table, index))
                pg.execute(
                    f"UPDATE {PROGRESS_TABLE} SET done = true WHERE table_name = %s", (table.name,)
                )
        report.copy_seconds = round(time.monotonic() - started, 2)

        started = time.monotonic()
        with pg.transaction():
            for i, table in enumerate(tables):
                verified = verify_table(conn, pg, table)
                verified.copied = report.tables[i].copied
                report.tables[i] = verified
        report.verify_seconds = round(time.monotonic() - started, 2)
    except psycopg.Error as error:
        raise SeawallError(f"Postgres refused: {error}") from None
    finally:
        pg.close()
        conn.close()
    return report


def sample_trade_store(path: Path | str, trades: int, seed: int = 7) -> Path:
    """Write a SQLite trade store shaped like the execution service's, for tests and benchmarks.

    Tables ``trades`` (``trades`` rows: integers, text, reals, decimals, dates,
    blobs, NULLs, a unique index) and ``positions`` (one row per symbol).
    """
    import random

    path = Path(path)
    path.unlink(missing_ok=True)
    rng = random.Random(seed)
    symbols = ["BTC-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT", "ADA-USDT", "DOGE-USDT"]
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE trades (
            id INTEGER PRIMARY KEY,
            order_id TEXT NOT NULL,
            symbol VARCHAR(20) NOT NULL,
            side TEXT NOT NULL,
            quantity REAL NOT NULL,
            price NUMERIC(18, 8) NOT NULL,
            fee DOUBLE,
            is_maker BOOLEAN,
            executed_at DATETIME NOT NULL,
            raw BLOB
        );
        CREATE UNIQUE INDEX trades_order_id ON trades (order_id);
        CREATE INDEX trades_symbol_time ON trades (symbol, executed_at);
        CREATE TABLE positions (
            symbol TEXT PRIMARY KEY,
            quantity REAL NOT NULL,
            updated_at TIMESTAMP
        );
        """
    )
    start = 1_767_225_600  # 2026-01-01T00:00:00Z

    def rows() -> Iterator[tuple[Any, ...]]:
        for n in range(1, trades + 1):
            yield (
                n,
                f"ord-{n:09d}",
                rng.choice(symbols),
                rng.choice(("buy", "sell")),
                round(rng.uniform(0.0001, 50), 6),
                f"{rng.uniform(0.01, 90000):.8f}",
                None if n % 17 == 0 else round(rng.uniform(0, 5), 6),
                None if n % 23 == 0 else n % 2,
                datetime.fromtimestamp(start + n, UTC).strftime("%Y-%m-%d %H:%M:%S"),
                rng.randbytes(8) if n % 5 == 0 else None,
            )

    conn.executemany("INSERT INTO trades VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows())
    conn.executemany(
        "INSERT INTO positions VALUES (?, ?, ?)",
        [(s, rng.uniform(-10, 10), "2026-11-27T04:00:00+00:00") for s in symbols],
    )
    conn.commit()
    conn.close()
    return path

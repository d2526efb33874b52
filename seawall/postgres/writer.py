"""The drills' bounded writer, run on an app host through its PgBouncer (stdlib + psycopg 3.1).

This file is sent over SSH and run by the host's own ``python3`` (Debian's
python3-psycopg): it imports nothing from seawall. Its settings, password
included, arrive as a JSON line on stdin after the program, never on a
command line; a later ``stop`` line on stdin ends the writing early.

Modes:

- ``write``: commits numbered rows (one per transaction) to ``seawall_drill``,
  at most ``max_rows`` and for at most ``max_seconds``, and prints what was
  acknowledged and when;
- ``read``: prints the numbers of the run's rows that are in the table.
"""

import json
import select
import sys
import time

import psycopg

TABLE = "seawall_drill"


def _connect(settings: dict) -> "psycopg.Connection":
    return psycopg.connect(
        host=settings["host"],
        port=settings["port"],
        dbname=settings["dbname"],
        user=settings["user"],
        password=settings["password"],
        connect_timeout=2,
        autocommit=True,
        # PgBouncer in transaction mode: no server-side prepared statements.
        prepare_threshold=None,
        application_name="seawall-drill",
    )


_stdin_open = True


def _stop_requested() -> bool:
    global _stdin_open
    if not _stdin_open:
        return False
    ready, _, _ = select.select([sys.stdin], [], [], 0)
    if not ready:
        return False
    line = sys.stdin.readline()
    if line == "":
        # End of input: no more commands, run to the bounds.
        _stdin_open = False
        return False
    return line.strip() == "stop"


def _retrying(settings: dict, action, deadline: float):
    last = None
    while time.monotonic() < deadline:
        try:
            with _connect(settings) as conn:
                return action(conn)
        except psycopg.Error as error:
            last = error
            time.sleep(0.5)
    raise SystemExit(f"gave up: {last}")


def write(settings: dict) -> dict:
    run, interval = settings["run"], settings["interval"]
    started = time.monotonic()
    deadline = started + settings["max_seconds"]

    def create(conn):
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} "
            "(run text, n integer, at timestamptz DEFAULT now(), PRIMARY KEY (run, n))"
        )

    _retrying(settings, create, deadline)
    acks: list[list] = []
    errors: list[list] = []
    conn = None
    n = 0
    while n < settings["max_rows"] and time.monotonic() < deadline:
        if _stop_requested():
            break
        n += 1
        try:
            if conn is None or conn.closed:
                conn = _connect(settings)
            conn.execute(f"INSERT INTO {TABLE} (run, n) VALUES (%s, %s)", (run, n))
            acks.append([n, time.time()])
        except psycopg.Error as error:
            # Unknown outcome: this number is not counted as committed.
            errors.append([n, time.time(), type(error).__name__, str(error).strip()[:200]])
            if conn is not None:
                conn.close()
            conn = None
            time.sleep(0.1)
            continue
        time.sleep(interval)
    if conn is not None:
        conn.close()
    return {"acks": acks, "errors": errors, "attempts": n}


def read(settings: dict) -> dict:
    deadline = time.monotonic() + settings["max_seconds"]

    def select_rows(conn):
        return [
            row[0]
            for row in conn.execute(f"SELECT n FROM {TABLE} WHERE run = %s", (settings["run"],))
        ]

    return {"present": _retrying(settings, select_rows, deadline)}


def main() -> None:
    settings = json.loads(sys.stdin.readline())
    result = write(settings) if settings["mode"] == "write" else read(settings)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""One way to render every report: a plain table for people, JSON for programs.

Every command that reports hands a `Report` to `emit`, which prints it and
returns the exit code, so formats and codes are decided here and nowhere else.
"""

import json
import sys
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

# The exit codes of every `seawall` command.
EXIT_OK = 0
# A finding: a failed check, an unhealthy lab or service, a failed drill.
EXIT_FINDING = 1
# An error: bad inventory, unreachable host, failed step (typer's usage errors too).
EXIT_ERROR = 2
# A confirmation was declined (or could not be asked): nothing was done.
EXIT_DECLINED = 3

EXIT_CODES = (
    "Exit codes: 0 ok, 1 finding (failed check, unhealthy lab, failed drill), 2 error, "
    "3 declined (nothing done)."
)


@runtime_checkable
class Report(Protocol):
    """What every command's library function returns."""

    @property
    def ok(self) -> bool:
        """True when nothing was found wrong."""
        ...

    def to_json(self) -> dict[str, Any]:
        """The whole report as JSON-serialisable data, `ok` included."""
        ...

    def to_text(self) -> str:
        """The report for people: tables and a verdict."""
        ...


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(value) for value in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def render(report: Report, as_json: bool) -> str:
    """Return the report as JSON (with `ok`) when asked, else as text."""
    if as_json:
        return json.dumps({**report.to_json(), "ok": report.ok}, indent=2, default=str)
    return report.to_text()


def exit_code(report: Report) -> int:
    """0 when the report is ok, else 1 (a finding)."""
    return EXIT_OK if report.ok else EXIT_FINDING


def emit(report: Report, as_json: bool) -> int:
    """Print a report to stdout and return the exit code it maps to."""
    print(render(report, as_json))
    return exit_code(report)


def progress(message: str) -> None:
    """Progress goes to stderr so stdout stays a clean report."""
    print(message, file=sys.stderr, flush=True)

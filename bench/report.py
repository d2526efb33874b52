"""Write one benchmark's results into docs/benchmarks.md, between its own markers."""

import os
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def write_section(name: str, report: str) -> None:
    """Replace the `bench:<name>` section of docs/benchmarks.md (appended if absent)."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    if start not in text:
        text = text.rstrip("\n") + f"\n\n{start}\n{end}\n"
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    DOC.write_text(f"{head}{start}\n{report}\n{end}{tail}")


def load_note(load_before: float) -> list[str]:
    """Lines saying how loaded the shared machine was while the benchmark ran."""
    return [
        "",
        f"Load average (1 min) of the machine: {load_before:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end; other sessions' work shares the 2 cores.",
    ]

"""Write one benchmark's results into docs/benchmarks.md, between its own markers."""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
LAB_INVENTORY = "inventories/lab.py"


def write_section(name: str, report: str, doc: Path = DOC) -> None:
    """Replace the `bench:<name>` section of ``doc`` (docs/benchmarks.md; appended if absent)."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    text = doc.read_text() if doc.exists() else f"# {doc.stem.capitalize()}\n"
    if start not in text:
        text = text.rstrip("\n") + f"\n\n{start}\n{end}\n"
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    doc.write_text(f"{head}{start}\n{report}\n{end}{tail}")


def publish(name: str, lines: list[str], write: bool = True) -> None:
    """Print ``lines`` as one report; with ``write``, also into the `bench:<name>` section."""
    report = "\n".join(lines)
    print(report)
    if write:
        write_section(name, report)


def load_note(load_before: float) -> list[str]:
    """Lines saying how loaded the shared machine was while the benchmark ran."""
    return [
        "",
        f"Load average (1 min) of the machine: {load_before:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end; other sessions' work shares the 2 cores.",
    ]


def spread(values: list[float]) -> str:
    """Three table cells: median | min | max (dashes when there is nothing)."""
    if not values:
        return "- | - | -"
    return f"{statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f}"


def run_deploy(
    deploy_file: str,
    *data: str,
    limit: str | None = None,
    inventory_file: str | Path = LAB_INVENTORY,
    timeout: float = 900,
) -> None:
    """Run a deploy with pyinfra (``--data`` overrides, optional ``--limit``); stop on failure."""
    pyinfra = str(Path(sys.executable).with_name("pyinfra"))
    args = [pyinfra, "-y"]
    if limit:
        args += ["--limit", limit]
    for item in data:
        args += ["--data", item]
    result = subprocess.run(
        [*args, str(inventory_file), deploy_file],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise SystemExit(f"{deploy_file} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def timed_site_deploy(tree: Path = ROOT) -> tuple[float, int, int]:
    """Run the site deploy from ``tree`` (its seawall first on PYTHONPATH); stop on failure.

    Returns (seconds, operation-hosts, changed operation-hosts).
    """
    pyinfra = str(Path(sys.executable).with_name("pyinfra"))
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    result = subprocess.run(
        [pyinfra, "-y", "--json", LAB_INVENTORY, "deploys/site.py"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    seconds = time.monotonic() - started
    if result.returncode != 0:
        # The whole output is kept: the error is often far above the tail (every
        # later operation prints "Skipped" for each host).
        with tempfile.NamedTemporaryFile(
            "w", prefix="seawall-site-deploy-", suffix=".log", delete=False
        ) as log:
            log.write(result.stdout + "\n" + result.stderr)
        # Each error with the line before it: pyinfra's "Error: executed 0 commands"
        # follows the operation's own reason.
        lines = result.stderr.splitlines()
        errors = [
            text
            for i, line in enumerate(lines)
            if "rror" in line
            for text in lines[max(0, i - 1) : i + 1]
        ][:20]
        raise SystemExit(
            f"site deploy from {tree} failed (whole output: {log.name}):\n"
            + "\n".join(errors)
            + f"\n{result.stderr[-1500:]}"
        )
    results = json.loads(result.stdout)["results"]
    for op in results["operations"]:
        if op["success"]:  # what changed, for whoever expected no change
            print(f"changed: {op['name']}: {', '.join(op['success'])}", file=sys.stderr)
    totals = results["totals"]
    return seconds, int(totals["hosts"]), int(totals["success"])

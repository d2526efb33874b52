"""Where a no-op site redeploy spends its time: operations by wall time, facts by count and time.

Runs pyinfra's own CLI in this process (``pyinfra -y INVENTORY deploys/site.py``)
with a state callback that times each operation across all hosts, and a wrapper
round pyinfra's fact gathering that counts and times each fact class. Prints
the slowest operations, the facts that cost most, and the totals; writes them
into docs/benchmarks.md between the `bench:noop-profile` markers. The figures
are for finding the round trips to remove (issue 13, item 5), not a target.

    .venv/bin/python bench/noop_profile.py [--top 25]

It deploys the lab you work on: no drill, test or other deploy may run meanwhile.
The run before it should already have brought the lab to the current code, or
the profile is of a deploy that changes things (its count of changes is printed).
"""

import argparse
import collections
import os
import sys
import time
from pathlib import Path
from typing import Any

from pyinfra.api.state import BaseStateCallback

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import LAB_INVENTORY, load_note, publish  # noqa: E402

from seawall import inventory  # noqa: E402
from seawall.netguard import require_lab_bridge  # noqa: E402


class Recorder(BaseStateCallback):
    """Wall time per operation (start to end over all hosts) and per fact class."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.ops: dict[str, float] = {}
        self.names: dict[str, str] = {}
        self.changed = 0
        self.op_hosts = 0
        self.done: list[tuple[Any, Any, str]] = []
        self.facts: collections.Counter[str] = collections.Counter()
        self.fact_s: collections.Counter[str] = collections.Counter()

    def operation_start(self, state: Any, op_hash: str) -> None:
        self.started[op_hash] = time.monotonic()
        self.names[op_hash] = " | ".join(state.get_op_meta(op_hash).names)

    def operation_end(self, state: Any, op_hash: str) -> None:
        self.ops[op_hash] = time.monotonic() - self.started.pop(op_hash, time.monotonic())

    def operation_host_success(self, state: Any, host: Any, op_hash: str, *args: Any) -> None:
        # The operation's result is complete only after this callback: read it later.
        self.op_hosts += 1
        self.done.append((state, host, op_hash))

    def count_changed(self) -> None:
        self.changed = sum(
            1
            for state, host, op_hash in self.done
            if state.get_op_data_for_host(host, op_hash).operation_meta.did_change()
        )


def profile(argv: list[str]) -> tuple[Recorder, float]:
    """Run the pyinfra CLI on ``argv`` with the recorder attached; return it and the wall time."""
    import pyinfra.api.facts as facts
    from pyinfra.api.state import State
    from pyinfra_cli.main import main as pyinfra_main

    recorder = Recorder()
    original_init, original_fact = State.init, facts._get_fact

    # The CLI makes its State empty and calls init() once the inventory is loaded.
    def init(self: State, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.add_callback_handler(recorder)

    def timed_fact(state: Any, host: Any, cls: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        try:
            return original_fact(state, host, cls, *args, **kwargs)
        finally:
            name = f"{cls.__module__.removeprefix('pyinfra.facts.')}.{cls.__name__}"
            recorder.facts[name] += 1
            recorder.fact_s[name] += time.monotonic() - started

    State.init = init  # type: ignore[method-assign]
    facts._get_fact = timed_fact
    started = time.monotonic()
    sys.argv = ["pyinfra", *argv]
    try:
        # pyinfra's own entry point (CLI mode, its signal handling); it exits.
        pyinfra_main()
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            raise SystemExit(f"pyinfra exited {exit_.code}") from None
    finally:
        State.init = original_init  # type: ignore[method-assign]
        facts._get_fact = original_fact
    recorder.count_changed()
    return recorder, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=20, help="rows per table")
    args = parser.parse_args()
    require_lab_bridge(inventory.load(ROOT / LAB_INVENTORY))
    os.chdir(ROOT)
    load_before = os.getloadavg()[0]
    recorder, wall = profile(["-y", LAB_INVENTORY, "deploys/site.py"])
    fact_total = sum(recorder.fact_s.values())
    lines = [
        f"No-op site redeploy of the lab: {wall:.1f} s wall, {len(recorder.ops)} operations, "
        f"{recorder.op_hosts} operation-hosts, {recorder.changed} changed; "
        f"{sum(recorder.facts.values())} fact gatherings taking {fact_total:.1f} s summed over "
        "hosts (they overlap across hosts).",
        "",
        f"Slowest {args.top} operations (wall time, all hosts at once):",
        "",
        "| s | operation |",
        "|---:|---|",
    ]
    slowest = sorted(recorder.ops.items(), key=lambda item: -item[1])[: args.top]
    lines += [f"| {s:.2f} | {recorder.names[h].replace('|', '/')} |" for h, s in slowest]
    lines += [
        "",
        f"Operations by wall time: the slowest {args.top} take "
        f"{sum(s for _, s in slowest):.1f} s of {sum(recorder.ops.values()):.1f} s.",
        "",
        f"Facts by time summed over hosts (top {args.top}):",
        "",
        "| fact | gatherings | s summed | ms each |",
        "|---|---:|---:|---:|",
    ]
    for name, seconds in recorder.fact_s.most_common(args.top):
        count = recorder.facts[name]
        lines.append(f"| {name} | {count} | {seconds:.1f} | {1000 * seconds / count:.0f} |")
    lines += load_note(load_before)
    publish("noop-profile", lines)


if __name__ == "__main__":
    main()

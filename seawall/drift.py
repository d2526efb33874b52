"""`seawall drift`: a dry run of the site deploy; what it would change on a host is drift.

``drift`` runs ``pyinfra --dry --json INVENTORY deploys/site.py`` and reads its
plan. An operation whose ``hosts_with_change`` names a host is drift on that
host (one finding per host and operation name). ``hosts_with_conditional_change``
lists the ``_if=`` restarts, which pyinfra lists whether or not their condition
will hold: never drift by themselves (the change that would trigger one is).
Redis, Sentinel and Patroni state is never drift, because no deploy re-templates
it. Verdict: 0 no drift, 1 drift, 2 error (bad inventory, unreachable host,
pyinfra failed or ran past its time bound), every error named in the report.

While a rolling restart runs (it holds ``restart_lock_file``, see
``seawall.oplock``) drift runs nothing: its report is that error, exit 2.

It never changes a host: ``--dry``, and never ``-y``, which in pyinfra 3.10
turns change detection off, so a dry run with it reports no change at all
(shared/LAB-NOTES.md, trap 2). Without ``-y`` and with ``--json`` pyinfra asks
nothing. ``write_textfile`` gives the result to the node exporter's textfile
collector, replacing the file atomically so a scrape never reads half of it.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack, chdir
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from seawall import inventory, oplock
from seawall.errors import SeawallError
from seawall.output import EXIT_ERROR, EXIT_FINDING, EXIT_OK, table

DEFAULT_DEPLOY = "deploys/site.py"
# The report's error while `seawall restart --rolling` holds the operations
# lock: no dry run then (the drained host would be reported as drift), and
# the textfile says success 0 with this reason.
RESTART_RUNNING = "a rolling restart is running"
# A dry run of the 7-host lab takes well under a minute (target 15 s); five
# minutes bounds a hung SSH connection or fact without cutting a slow but
# healthy production run, and stays far below the cron interval.
DEFAULT_TIMEOUT_S = 300.0
TEXTFILE_NAME = "seawall_drift.prom"
# pyinfra's own words when it fails to connect to a host (pyinfra/connectors/ssh.py,
# logged by Host.connect as "[name] <reason>"): the host was not checked.
_CONNECT_ERRORS = (
    "Could not connect",
    "Could not resolve hostname",
    "SSH error",
    "EOF error",
    "Authentication error",
    "SSH host key error",
)
_HOST_LINE = re.compile(r"^\s*\[(?P<host>[^\]\s]+)\]\s+(?P<reason>.+?)\s*$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# How much of pyinfra's stderr an error carries: enough to name the cause.
_TAIL_LINES = 5


@dataclass
class DriftReport:
    """The verdict of one dry run: what would change where, and what could not be checked."""

    inventory: str
    # Every host of the inventory, and those whose plan pyinfra computed.
    hosts: tuple[str, ...]
    checked: tuple[str, ...]
    # host -> the names of the operations a deploy would run there (sorted, once each).
    drift: dict[str, list[str]] = field(default_factory=dict)
    # host -> pyinfra's reason for not reaching it.
    unreachable: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    duration_seconds: float = 0.0
    finished_at: float = field(default_factory=time.time)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.drift

    @property
    def operations(self) -> int:
        return sum(len(names) for names in self.drift.values())

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return EXIT_ERROR
        return EXIT_FINDING if self.drift else EXIT_OK

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "exit_code": self.exit_code,
            "inventory": self.inventory,
            "hosts": list(self.hosts),
            "checked": list(self.checked),
            "operations": self.operations,
            "drift": {host: list(names) for host, names in sorted(self.drift.items())},
            "unreachable": dict(sorted(self.unreachable.items())),
            "error": self.error,
            "duration_seconds": round(self.duration_seconds, 3),
            "finished_at": datetime.fromtimestamp(self.finished_at, UTC).isoformat(),
        }

    def to_text(self) -> str:
        rows = [(host, name) for host, names in sorted(self.drift.items()) for name in names]
        rows += [(host, f"UNREACHABLE: {why}") for host, why in sorted(self.unreachable.items())]
        parts = [table(["host", "operation a deploy would run"], rows)] if rows else []
        if self.error is not None:
            verdict = f"ERROR: {self.error}"
        elif self.drift:
            verdict = f"DRIFT: {self.operations} operation(s) on {', '.join(sorted(self.drift))}"
        else:
            verdict = "no drift"
        parts.append(
            f"{verdict} ({len(self.checked)}/{len(self.hosts)} hosts checked "
            f"in {self.duration_seconds:.1f} s)"
        )
        return "\n\n".join(parts)


def parse_plan(stdout: str) -> dict[str, list[str]]:
    """Return host -> drifted operation names from ``pyinfra --dry --json``'s stdout.

    Raises:
        SeawallError: stdout holds no plan in pyinfra's shape.
    """
    try:
        payload = json.loads(stdout)
        plan = payload["plan"]
        found: dict[str, set[str]] = {}
        for operation in plan:
            for host in operation["hosts_with_change"]:
                found.setdefault(host, set()).add(str(operation["name"]))
    except (ValueError, KeyError, TypeError) as error:
        raise SeawallError(f"pyinfra printed no plan in its JSON shape ({error!r})") from None
    return {host: sorted(names) for host, names in sorted(found.items())}


def parse_unreachable(stderr: str, hosts: Sequence[str]) -> dict[str, str]:
    """Return host -> reason for every inventory host pyinfra says it could not connect to."""
    known = set(hosts)
    found: dict[str, str] = {}
    for line in _ANSI.sub("", stderr).splitlines():
        match = _HOST_LINE.match(line)
        if match and match["host"] in known and match["reason"].startswith(_CONNECT_ERRORS):
            found.setdefault(match["host"], match["reason"])
    return found


def parse_failed(stderr: str, hosts: Sequence[str]) -> list[str]:
    """Return the inventory hosts pyinfra logged an error for (a failed fact or command)."""
    known = set(hosts)
    found = []
    for line in _ANSI.sub("", stderr).splitlines():
        match = _HOST_LINE.match(line)
        if (
            match
            and match["host"] in known
            and match["reason"].startswith("Error")
            and not match["reason"].startswith("Error (ignored")
            and match["host"] not in found
        ):
            found.append(match["host"])
    return sorted(found)


def _tail(text: str) -> str:
    lines = [line.strip() for line in _ANSI.sub("", text).splitlines() if line.strip()]
    return " | ".join(lines[-_TAIL_LINES:]) or "no output"


def judge(
    inventory_name: str,
    hosts: Sequence[str],
    returncode: int,
    stdout: str,
    stderr: str,
    duration: float,
) -> DriftReport:
    """Turn one ``pyinfra --dry --json`` run (exit code, stdout, stderr) into a report.

    pyinfra exits 0 when every host was checked and 1 when one failed (then the
    plan covers the others: their drift is still reported); with no host left it
    prints no plan at all.
    """
    unreachable = parse_unreachable(stderr, hosts)
    failed = parse_failed(stderr, hosts)
    error: str | None = None
    drift: dict[str, list[str]] = {}
    planned = False
    try:
        drift = parse_plan(stdout)
        planned = True
    except SeawallError as failure:
        if returncode == 0:
            error = str(failure)
    if returncode != 0:
        if unreachable:
            named = ", ".join(f"{host} ({why})" for host, why in sorted(unreachable.items()))
            error = f"unreachable: {named}"
        else:
            where = f" on {', '.join(failed)}" if failed else ""
            error = f"pyinfra exited {returncode}{where}: {_tail(stderr)}"
    unchecked = {*unreachable, *failed}
    checked = tuple(h for h in hosts if h not in unchecked) if planned else ()
    return DriftReport(
        inventory=inventory_name,
        hosts=tuple(hosts),
        checked=checked,
        drift=drift,
        unreachable=unreachable,
        error=error,
        duration_seconds=duration,
    )


def find_root(inventory_path: Path, deploy: str = DEFAULT_DEPLOY) -> Path:
    """Return the directory pyinfra runs in: the first of the working directory and the
    inventory's parents that holds ``deploy`` (a checkout, or the copies on the ops host).

    Raises:
        SeawallError: none holds it.
    """
    for candidate in (Path.cwd(), *inventory_path.resolve().parents):
        if (candidate / deploy).is_file():
            return candidate
    raise SeawallError(
        f"{deploy} is neither under {Path.cwd()} nor beside the inventory {inventory_path}"
    )


def drift(
    inventory_path: str | Path,
    deploy: str = DEFAULT_DEPLOY,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> DriftReport:
    """Dry-run ``deploy`` against the inventory and report the drift; never raises.

    Every failure (bad inventory, missing deploy, unreachable host, pyinfra failing
    or running past ``timeout``) is the report's ``error``, so cron always gets a
    report and a metric to write.
    """
    path = Path(inventory_path).resolve()
    started = time.monotonic()

    def failed(message: str, hosts: Sequence[str] = ()) -> DriftReport:
        return DriftReport(
            inventory=str(inventory_path),
            hosts=tuple(hosts),
            checked=(),
            error=message,
            duration_seconds=time.monotonic() - started,
        )

    try:
        root = find_root(path, deploy)
        # Loaded where pyinfra will run, so both read the same ./group_data.
        with chdir(root):
            topology = inventory.check(path)
    except SeawallError as error:
        return failed(str(error))
    hosts = [host.name for host in topology]
    pyinfra = str(Path(sys.executable).with_name("pyinfra"))
    with ExitStack() as stack:
        # Shared: drift checks may overlap each other, never a rolling restart
        # (it holds the lock exclusively; its drained host would read as drift).
        try:
            stack.enter_context(
                oplock.held(str(topology.value("restart_lock_file")), exclusive=False)
            )
        except oplock.LockBusy:
            return failed(RESTART_RUNNING, hosts)
        except SeawallError as error:
            return failed(str(error), hosts)
        try:
            result = subprocess.run(
                [pyinfra, "--dry", "--json", str(path), deploy],
                cwd=root,
                # JSON mode asks nothing, but no terminal may be waited on by cron.
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                env={**os.environ, "PYINFRA_PROGRESS": "off", "NO_COLOR": "1"},
            )
        except subprocess.TimeoutExpired:
            return failed(f"pyinfra's dry run did not finish within {timeout:.0f} s", hosts)
        except OSError as error:
            return failed(f"cannot run {pyinfra}: {error.strerror}", hosts)
    return judge(
        str(inventory_path),
        hosts,
        result.returncode,
        result.stdout,
        result.stderr,
        time.monotonic() - started,
    )


# --- Prometheus textfile ------------------------------------------------------------

# The drifted host's label is `drift_host`, not `host`: the scrape config gives
# every target a `host` label (the scraped host, here the ops host running the
# check), so a textfile `host` would be renamed `exported_host` on ingestion
# (honor_labels off) and the rules would have to know it. A distinct name keeps
# both: `host` where the check ran, `drift_host` where the drift is.
DRIFT_HOST_LABEL = "drift_host"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _comment(value: str) -> str:
    # One line: a newline would end the comment and start garbage.
    return " ".join(value.split())[:500]


def textfile(report: DriftReport) -> str:
    """Return the report as Prometheus text exposition for the textfile collector.

    One ``seawall_drift_operations`` series per host the run checked (0 included,
    so the alert resolves after a redeploy); an unchecked host has none, since its
    drift is unknown, and the run's failure shows in ``..._last_run_success`` 0.
    """
    lines = [
        f"# seawall drift of {_comment(report.inventory)}, "
        f"{datetime.fromtimestamp(report.finished_at, UTC).isoformat()}",
        "# HELP seawall_drift_operations Operations a deploy would run on the host "
        "(drift), from the last dry run that reached it.",
        "# TYPE seawall_drift_operations gauge",
    ]
    for host in report.checked:
        count = len(report.drift.get(host, []))
        lines.append(f'seawall_drift_operations{{{DRIFT_HOST_LABEL}="{_label(host)}"}} {count}')
    lines += [
        "# HELP seawall_drift_last_run_timestamp_seconds When the last drift check ended.",
        "# TYPE seawall_drift_last_run_timestamp_seconds gauge",
        f"seawall_drift_last_run_timestamp_seconds {report.finished_at:.3f}",
        "# HELP seawall_drift_last_run_success 1 if the last drift check ran to its verdict "
        "(drift or none), 0 on error.",
        "# TYPE seawall_drift_last_run_success gauge",
    ]
    if report.error is not None:
        lines.append(f"# error: {_comment(report.error)}")
    lines.append(f"seawall_drift_last_run_success {0 if report.error is not None else 1}")
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str, mode: int = 0o644) -> Path:
    """Replace ``path`` with ``text`` so a reader sees the old file or the new, never half.

    The temporary file is in the same directory (a rename is atomic only within
    one file system) and its name does not end in ``.prom``, so the collector
    never reads it; its data is on disk before the rename, and the rename is on
    disk before this returns.
    """
    directory = path.parent
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        # The collector runs as another user (prometheus): world-readable.
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def write_textfile(report: DriftReport, directory: str | Path) -> Path:
    """Write the report's metrics to ``directory/seawall_drift.prom`` atomically.

    Raises:
        SeawallError: the directory does not exist or cannot be written.
    """
    target = Path(directory) / TEXTFILE_NAME
    try:
        return write_atomically(target, textfile(report))
    except OSError as error:
        raise SeawallError(f"cannot write {target}: {error.strerror}") from None

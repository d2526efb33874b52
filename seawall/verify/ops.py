"""The first ops host's jobs, judged from their own records: the drift cron and the restart.

Three checks, from probes that run in the host's one verify session (no SSH of
their own):

- ``drift cron``: root's crontab (``crontab -l``, as pyinfra's ``Crontab`` fact
  reads it) holds the line pyinfra's ``crontab.crontab`` wrote under its
  ``# pyinfra-name=seawall-drift`` comment, with ``drift_cron``'s schedule and
  the runner as command, and cron is running and enabled;
- ``drift last run``: the textfile metrics ``seawall drift`` wrote say success
  and are younger than :func:`stale_after` (twice the schedule's longest gap);
  a failed run names the error from ``drift-last.json`` (else the textfile's
  ``# error:`` comment). No run yet is fine only while the cron line is younger
  than that bound (the newest of the runner's and root's crontab's mtimes);
- ``restart last run``: ``seawall_restart_ok`` of the restart's ExecStopPost
  recorder is 1. No metrics is fine while the timer has never fired (systemd
  keeps no ``LastTriggerUSec`` for a ``Persistent=false`` timer across a
  reboot, so the metrics file, not the trigger, is the record of past runs), or
  while the first run is under way; ``restart_enabled`` false: "disabled".

The ages are measured on the ops host's clock (``date +%s`` in the same session),
the one that stamped the records. Paths and names are the ones
``seawall/components/ops.py`` and ``seawall/drift.py`` give them
(tests/unit/test_verify.py holds them equal); these checks load no deploy module.
"""

import json
import re
import shlex
import time
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from seawall.drift import DEFAULT_TIMEOUT_S, TEXTFILE_NAME
from seawall.inventory import Host, Topology
from seawall.settings import setting
from seawall.verify.probe import Probe, probe_of
from seawall.verify.report import Check
from seawall.verify.roles import parse_show

CHECKS = ("drift cron", "drift last run", "restart last run")

# components/ops.py: the cron's name, its runner, its user, the report it keeps.
CRON_NAME = "seawall-drift"
DRIFT_RUN = "/usr/local/libexec/seawall-drift-run"
CRON_USER = "root"
DRIFT_REPORT = "drift-last.json"
# Debian's cron keeps root's crontab here; `crontab -u root` rewrites it, so its
# mtime is when the line last changed.
CRONTAB_FILE = f"/var/spool/cron/crontabs/{CRON_USER}"
# What the restart's ExecStopPost recorder (seawall-restart-record) writes.
RESTART_TEXTFILE = "seawall_restart.prom"
RESTART_TIMER = "seawall-restart.timer"
RESTART_SERVICE = "seawall-restart.service"
CRON_SERVICE = "cron.service"
# How systemctl shows a timestamp that was never set (it differs between versions).
_NEVER = ("", "n/a", "0")


def controls(topology: Topology, host: Host) -> bool:
    """Return whether ``host`` is the first ops host, the one running the cron and the timer."""
    ops = topology.group("ops")
    return bool(ops) and ops[0].name == host.name


def probe_commands(topology: Topology, host: Host) -> dict[str, str]:
    """Return the ops probes (none unless ``host`` is the first ops host)."""
    if not controls(topology, host):
        return {}
    data = host.data
    textfiles = str(setting(data, "services_textfile_dir"))
    report = f"{setting(data, 'ops_state_dir')}/{DRIFT_REPORT}"
    return {
        "drift_cron": f"crontab -l -u {CRON_USER}",
        "drift_metrics": f"cat {shlex.quote(f'{textfiles}/{TEXTFILE_NAME}')}",
        "drift_report": f"cat {shlex.quote(report)}",
        "restart_metrics": f"cat {shlex.quote(f'{textfiles}/{RESTART_TEXTFILE}')}",
        # The host's clock, then when the cron line and its runner last changed.
        "ops_clock": f"date +%s; stat -c '%Y %n' {DRIFT_RUN} {CRONTAB_FILE}",
        "ops_units": "systemctl show -p Id -p ActiveState -p UnitFileState -p LastTriggerUSec "
        f"{RESTART_TIMER} {RESTART_SERVICE} {CRON_SERVICE}",
    }


def judge(data: Mapping[str, Any], probes: Mapping[str, Probe]) -> list[Check]:
    """Turn the first ops host's probe results into its checks, in :data:`CHECKS` order."""
    now, mtimes = parse_clock(probe_of(probes, "ops_clock").output)
    units = parse_show(probe_of(probes, "ops_units").output)
    schedule = str(setting(data, "drift_cron"))
    installed = max(
        (mtimes[path] for path in (DRIFT_RUN, CRONTAB_FILE) if path in mtimes), default=None
    )
    return [
        _drift_cron(schedule, probe_of(probes, "drift_cron"), units.get(CRON_SERVICE, {})),
        _drift_last_run(
            schedule,
            probe_of(probes, "drift_metrics"),
            probe_of(probes, "drift_report"),
            installed,
            now if now is not None else time.time(),
        ),
        _restart_last_run(
            bool(setting(data, "restart_enabled")),
            probe_of(probes, "restart_metrics"),
            units.get(RESTART_TIMER, {}),
            units.get(RESTART_SERVICE, {}),
            now if now is not None else time.time(),
        ),
    ]


def parse_clock(output: str) -> tuple[float | None, dict[str, float]]:
    """Return the ``ops_clock`` probe's host time and each path's mtime (epoch seconds)."""
    now: float | None = None
    mtimes: dict[str, float] = {}
    for line in output.splitlines():
        first, _, path = line.strip().partition(" ")
        if not first.isdigit():
            continue  # stat's complaint about a missing file
        if path:
            mtimes[path] = float(first)
        elif now is None:
            now = float(first)
    return now, mtimes


# --- the crontab line ------------------------------------------------------------------


def named_cron_line(crontab: str, name: str = CRON_NAME) -> str | None:
    """Return the line pyinfra's ``crontab.crontab(cron_name=name)`` manages, if any.

    As pyinfra's ``Crontab`` fact reads it: comment lines gather until the next
    entry, which is the named one when they include ``# pyinfra-name=<name>``.
    """
    marker = f"# pyinfra-name={name}"
    comments: list[str] = []
    for raw in crontab.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            comments.append(line)
            continue
        if marker in comments:
            return line
        comments = []
    return None


def _drift_cron(schedule: str, crontab: Probe, cron: Mapping[str, str]) -> Check:
    want = f"{' '.join(schedule.split())} {DRIFT_RUN}"
    problems = []
    line = named_cron_line(crontab.output) if crontab.code == 0 else None
    if crontab.code != 0:
        problems.append(crontab.output or f"crontab -l exited {crontab.code}")
    elif line is None:
        problems.append(f"no {CRON_NAME} line in {CRON_USER}'s crontab")
    elif line.split(None, 5) != want.split(None, 5):
        problems.append(f"{CRON_NAME} line is {line!r} (want {want!r})")
    if (cron.get("ActiveState"), cron.get("UnitFileState")) != ("active", "enabled"):
        state = f"{cron.get('ActiveState', '?')}, {cron.get('UnitFileState', '?')}"
        problems.append(f"{CRON_SERVICE} {state}")
    return Check("drift cron", not problems, "; ".join(problems) or f"{CRON_USER}: {want}")


# --- how stale the drift report may be --------------------------------------------------


def cron_field(text: str, low: int, high: int) -> set[int]:
    """Return the values one cron field (numbers, ``*``, ranges, lists, steps) stands for."""
    values: set[int] = set()
    for part in text.split(","):
        span, _, step = part.partition("/")
        if span == "*":
            start, end = low, high
        elif "-" in span:
            first, last = span.split("-", 1)
            start, end = int(first), int(last)
        else:
            # `5/15` runs from 5 to the field's end, as Debian's cron reads it.
            start = int(span)
            end = high if step else start
        values |= set(range(start, end + 1, int(step) if step else 1))
    return {value for value in values if low <= value <= high}


# The span of days searched for the longest gap: whole weeks and leap years, and
# the days of months, all repeat within it.
_FROM, _DAYS = date(2024, 1, 1), 8 * 366


def longest_gap(schedule: str) -> float | None:
    """Return the longest time (s) between two runs of a five-field cron schedule.

    None when the schedule never runs (say, February 30th).
    """
    minute, hour, dom, month, dow = schedule.split()
    times = sorted(h * 60 + m for h in cron_field(hour, 0, 23) for m in cron_field(minute, 0, 59))
    days_of_month, months = cron_field(dom, 1, 31), cron_field(month, 1, 12)
    weekdays = {day % 7 for day in cron_field(dow, 0, 7)}  # 0 and 7 are both Sunday
    # cron's rule: with both day fields restricted, a day matching either runs; a
    # field starting with `*` (`*/2` too) leaves the day to the other field alone.
    either = not dom.startswith("*") and not dow.startswith("*")
    # Every day of every month allowed: the pattern repeats weekly, two weeks show it.
    weekly = len(days_of_month) == 31 and len(months) == 12
    days = []
    for offset in range(15 if weekly else _DAYS):
        day = _FROM + timedelta(days=offset)
        by_date, by_weekday = day.day in days_of_month, day.isoweekday() % 7 in weekdays
        if day.month in months and (
            (by_date or by_weekday) if either else (by_date and by_weekday)
        ):
            days.append(offset)
    if not times or not days:
        return None
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    # From a day's last run to the next running day's first (the same time
    # tomorrow when every day runs and there is one time a day).
    gaps += [(b - a) * 1440 + times[0] - times[-1] for a, b in zip(days, days[1:], strict=False)]
    if len(days) == 1:
        gaps.append(_DAYS * 1440)
    return 60.0 * max(gaps)


def stale_after(schedule: str) -> float | None:
    """Return how old (s) the last drift run may be: twice the schedule's longest gap.

    One run may fail to report (its successor is then late by a gap), and at least
    a gap plus the dry run's time bound, since a run is stamped when it ends.
    """
    gap = longest_gap(schedule)
    return None if gap is None else max(2 * gap, gap + DEFAULT_TIMEOUT_S)


# --- the drift cron's last run ------------------------------------------------------------


def parse_textfile(text: str) -> dict[str, float]:
    """Return the samples of a Prometheus textfile, labelled series summed under their name."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        try:
            number = float(value)
        except ValueError:
            continue
        name = series.split("{", 1)[0].strip()
        samples[name] = samples.get(name, 0.0) + number
    return samples


def _textfile_error(text: str) -> str | None:
    for line in text.splitlines():
        if line.startswith("# error: "):
            return line.removeprefix("# error: ").strip()
    return None


def _report(probe: Probe) -> dict[str, Any]:
    if probe.code != 0:
        return {}
    try:
        report = json.loads(probe.output)
    except ValueError:
        return {}
    return report if isinstance(report, dict) else {}


def _age(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _drift_last_run(
    schedule: str, metrics: Probe, report: Probe, installed: float | None, now: float
) -> Check:
    name = "drift last run"
    bound = stale_after(schedule)
    if bound is None:
        return Check(name, False, f"drift_cron {schedule!r} never runs")
    samples = parse_textfile(metrics.output) if metrics.code == 0 else {}
    stamp = samples.get("seawall_drift_last_run_timestamp_seconds")
    success = samples.get("seawall_drift_last_run_success")
    if stamp is None or success is None:
        if installed is None:
            return Check(name, False, "no run yet, and no cron line installed")
        since = now - installed
        if since <= bound:
            return Check(name, True, f"no run yet (cron line {_age(since)} old)")
        return Check(
            name, False, f"no run in the {_age(since)} since the cron line (bound {_age(bound)})"
        )
    age = now - stamp
    if success != 1:
        error = _report(report).get("error") or _textfile_error(metrics.output) or "no reason"
        return Check(name, False, f"failed {_age(age)} ago: {error}")
    if age > bound:
        return Check(name, False, f"last run {_age(age)} ago, older than {_age(bound)}")
    drift = samples.get("seawall_drift_operations", 0.0)
    return Check(name, True, f"{_age(age)} ago, {drift:.0f} operations of drift")


# --- the rolling restart's last run --------------------------------------------------------


def _when(stamp: float | None, now: float) -> str:
    if stamp is None:
        return "never"
    moment = datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{moment} ({_age(now - stamp)} ago)"


_ENDED = re.compile(r"^# seawall restart: last run ended \S+ with (?P<result>.+)$", re.M)


def _restart_last_run(
    enabled: bool,
    metrics: Probe,
    timer: Mapping[str, str],
    service: Mapping[str, str],
    now: float,
) -> Check:
    name = "restart last run"
    if not enabled:
        return Check(name, True, "disabled")
    samples = parse_textfile(metrics.output) if metrics.code == 0 else {}
    ok = samples.get("seawall_restart_ok")
    running = service.get("ActiveState") in ("activating", "active", "deactivating")
    if ok is None:
        if running:
            return Check(name, True, "no run yet: the first is under way")
        fired = timer.get("LastTriggerUSec", "")
        if fired in _NEVER:
            return Check(name, True, "no run yet")
        return Check(name, False, f"the timer fired ({fired}) but no run was recorded")
    success = samples.get("seawall_restart_last_success_timestamp_seconds")
    under_way = "; a run is under way" if running else ""
    if ok == 1:
        return Check(name, True, f"succeeded {_when(success, now)}{under_way}")
    ended = _ENDED.search(metrics.output)
    last = samples.get("seawall_restart_last_run_timestamp_seconds")
    how = ended.group("result") if ended else "failed"
    detail = f"last run {_when(last, now)} ended with {how}; last success {_when(success, now)}"
    return Check(name, False, detail + under_way)

"""`seawall drill pg-restore`: prove the latest backup restores, with the rows written before it.

The drill writes numbered rows through an app host's PgBouncer (the services'
path), takes a pgBackRest backup on the repository host, restores it into a
scratch directory there (never onto a cluster member), starts Postgres on it
(socket only, archiving off), counts the rows, then stops it and removes the
scratch copy. The report gives each step's time.
"""

import shlex
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from seawall.errors import SeawallError
from seawall.inventory import Topology
from seawall.netguard import require_lab_network
from seawall.postgres.remote_writer import Writer, writer_settings
from seawall.ssh import run as ssh_run

Log = Callable[[str], None]
MARKER_ROWS = 1000


@dataclass
class RestoreReport:
    """What the restore drill found and how long each step took."""

    stanza: str
    repository_host: str
    marker_run: str
    rows_written: int
    rows_restored: int | None = None
    backup_s: float | None = None
    restore_s: float | None = None
    start_s: float | None = None
    total_s: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.rows_restored == self.rows_written

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def to_text(self) -> str:
        verdict = "ok" if self.ok else "FAILED"
        lines = [
            f"restore drill of stanza {self.stanza} on {self.repository_host}: {verdict}",
            f"rows written before the backup: {self.rows_written}, "
            f"found in the restored copy: {self.rows_restored}",
            f"backup {self.backup_s} s, restore {self.restore_s} s, "
            f"recovery and start {self.start_s} s, total {self.total_s} s",
        ]
        lines += [f"problem: {problem}" for problem in self.problems]
        return "\n".join(lines)


def _step(topology: Topology, host: str, command: str, timeout: float) -> tuple[float, str]:
    started = time.monotonic()
    result = ssh_run(topology, host, command, timeout=timeout)
    if result.returncode != 0:
        raise SeawallError(
            f"{host}: restore drill step failed ({result.returncode}): "
            f"{(result.stderr or result.stdout).strip()[-800:]}"
        )
    return round(time.monotonic() - started, 2), result.stdout


def restore_drill(topology: Topology, log: Log = print) -> RestoreReport:
    """Back up, restore into scratch on the repository host, and count the marker rows.

    Raises:
        SeawallError: no ops host, the lab is down, or a step failed (its output says why).
    """
    require_lab_network(topology)
    repos = topology.group("ops")
    if not repos:
        raise SeawallError(f"{topology.path}: no host in group ops holds the backup repository")
    repo = repos[0]
    data = repo.data
    user, stanza = str(data["pgbackrest_user"]), str(data["pgbackrest_stanza"])
    scratch, port = (
        str(data["pgbackrest_restore_drill_path"]),
        int(data["pgbackrest_restore_drill_port"]),
    )
    bin_dir = f"/usr/lib/postgresql/{data['postgres_version']}/bin"
    run = f"restore-{int(time.time())}"
    started = time.monotonic()

    writer_host = topology.group("app")[0].name
    log(f"writing {MARKER_ROWS} marker rows through {writer_host}'s PgBouncer")
    settings = writer_settings(topology, "write", run, 120)
    settings.update(max_rows=MARKER_ROWS, interval=0)
    acks = Writer(topology, writer_host, settings).stop(early=False)["acks"]
    report = RestoreReport(stanza, repo.name, run, rows_written=len(acks))

    q = shlex.quote
    as_user = f"cd / && runuser -u {user} --"
    log(f"backing up stanza {stanza} on {repo.name}")
    report.backup_s, _ = _step(
        topology, repo.name, f"{as_user} pgbackrest --stanza={q(stanza)} backup", 1800
    )
    log("restoring the latest backup into scratch")
    data_dir = f"{scratch}/data"
    report.restore_s, _ = _step(
        topology,
        repo.name,
        f"rm -rf {q(data_dir)} && install -d -m 700 -o {user} -g {user} {q(scratch)} {q(data_dir)}"
        f" && {as_user} pgbackrest --config=/etc/pgbackrest/restore-drill.conf "
        f"--stanza={q(stanza)} --type=immediate --target-action=promote restore",
        1800,
    )
    options = " ".join(
        [
            f"-p {port}",
            "-c listen_addresses=''",
            f"-c unix_socket_directories={scratch}",
            f"-c hba_file={scratch}/hba.conf",
            f"-c ident_file={scratch}/ident.conf",
            "-c archive_mode=off",
            # The restored settings name the member's certificate, which this host lacks;
            # the copy listens on a socket only.
            "-c ssl=off",
            "-c hot_standby=off",
            "-c cluster_name=restore-drill",
        ]
    )
    try:
        log("starting Postgres on the restored copy (recovery to the backup's end)")
        report.start_s, _ = _step(
            topology,
            repo.name,
            # Socket-only, in a 0700 directory: trust is for this drill's own checks.
            f"printf 'local all all trust\\n' > {scratch}/hba.conf && : > {scratch}/ident.conf"
            f" && chown {user}: {scratch}/hba.conf {scratch}/ident.conf"
            f" && {as_user} {bin_dir}/pg_ctl -D {q(data_dir)} -l {scratch}/postgres.log -w -t 300"
            f" -o {q(options)} start",
            360,
        )
        database = str(data["postgres_drill_database"])
        query = f"SELECT count(*) FROM seawall_drill WHERE run = '{run}'"
        _, out = _step(
            topology,
            repo.name,
            f"{as_user} psql -XAt -h {scratch} -p {port} -U postgres -d {q(database)} "
            f"-c {q(query)}",
            60,
        )
        report.rows_restored = int(out.strip() or 0)
    finally:
        ssh_run(
            topology,
            repo.name,
            f"{as_user} {bin_dir}/pg_ctl -D {q(data_dir)} -m immediate stop; rm -rf {q(data_dir)}",
            timeout=120,
        )
    report.total_s = round(time.monotonic() - started, 2)
    if report.rows_restored != report.rows_written:
        report.problems.append(
            f"{report.rows_written} rows written before the backup, "
            f"{report.rows_restored} in the restored copy"
        )
    limit = data.get("pgbackrest_restore_drill_limit_s")
    if isinstance(limit, int | float) and report.total_s > limit:
        report.problems.append(f"took {report.total_s} s, over the {limit} s limit")
    return report

"""The backup repository is encrypted (issue 14, item 2: pgBackRest).

Asks pgBackRest itself (``info``, ``check``, a restore), never its files, for
what the repository is; the files are checked only for who may read them. The
lab's repository was made unencrypted before this change: the first deploy
with it migrates (components/pgbackrest.py), so these tests also show the
migration's end state: the old repository retired, the new one restoring.
"""

import json
from pathlib import Path

import pytest

from seawall import secrets
from seawall.components.pgbackrest import CIPHER_SECRET, CONFIG, RESTORE_CONFIG
from seawall.inventory import Topology
from seawall.names import BACKUP_SERVICE
from seawall.postgres import drill
from seawall.postgres.restore import restore_drill
from seawall.ssh import run as ssh_run
from tests.lab.test_secrets import search_host


@pytest.fixture(scope="module")
def pg_lab(deployed_lab: Topology) -> Topology:
    healthy, _ = drill.wait_healthy(deployed_lab, 180)
    assert healthy
    return deployed_lab


def _as_repo_account(topology: Topology, command: str, timeout: int = 120) -> str:
    repo = topology.group("ops")[0]
    user = repo.data["pgbackrest_user"]
    result = ssh_run(
        topology, repo.name, f"cd / && runuser -u {user} -- {command}", timeout=timeout
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_repository_reports_its_cipher_and_a_full_backup(pg_lab: Topology) -> None:
    host = pg_lab.group("ops")[0]
    info = f"pgbackrest --stanza={host.data['pgbackrest_stanza']} --output=json info"
    # A new cluster's repository holds no backup until the nightly one (or a drill):
    # start that unit now, as its timer would, so the order tests run in does not matter.
    if not json.loads(_as_repo_account(pg_lab, info))[0]["backup"]:
        started = ssh_run(
            pg_lab, host.name, f"systemctl start {Path(BACKUP_SERVICE).name}", timeout=1800
        )
        assert started.returncode == 0, started.stderr
    (stanza,) = json.loads(_as_repo_account(pg_lab, info))
    assert stanza["status"]["code"] == 0, stanza["status"]
    assert [repo["cipher"] for repo in stanza["repo"]] == ["aes-256-cbc"]
    assert stanza["cipher"] == "aes-256-cbc"
    assert any(backup["type"] == "full" for backup in stanza["backup"]), stanza["backup"]


def test_wal_reaches_the_encrypted_repository(pg_lab: Topology) -> None:
    # check: a Postgres host's archive-push lands in the repository and is read back.
    stanza = pg_lab.group("ops")[0].data["pgbackrest_stanza"]
    _as_repo_account(pg_lab, f"pgbackrest --stanza={stanza} check")


def test_the_unencrypted_repository_is_retired(pg_lab: Topology) -> None:
    repo = pg_lab.group("ops")[0]
    old, stanza = repo.data["pgbackrest_repo_path"], repo.data["pgbackrest_stanza"]
    result = ssh_run(
        pg_lab, repo.name, f"ls -d {old}/backup/{stanza} {old}/archive/{stanza} 2>&1; true"
    )
    assert result.stdout.count("No such file or directory") == 2, result.stdout


def test_only_the_repository_account_reads_the_pass(pg_lab: Topology) -> None:
    repo = pg_lab.group("ops")[0]
    result = ssh_run(pg_lab, repo.name, f"stat -c '%a %U %G' {CONFIG} {RESTORE_CONFIG}")
    owner = f"640 root {repo.data['pgbackrest_user']}"
    assert result.stdout.split("\n")[:2] == [owner, owner], result.stdout
    for member in pg_lab.group("postgres"):
        config = ssh_run(pg_lab, member.name, f"cat {CONFIG}").stdout
        assert config and "cipher" not in config, member.name


def test_the_restore_drill_restores_from_the_encrypted_repository(pg_lab: Topology) -> None:
    report = restore_drill(pg_lab, log=print)
    assert report.ok, report.to_text()
    assert report.rows_restored == report.rows_written > 0


def test_the_cipher_pass_shows_nowhere_but_its_files(pg_lab: Topology) -> None:
    # After the drill: its backup, restore and archive-get are in the journals.
    value = secrets.require([CIPHER_SECRET], pg_lab.value("secrets_file"), "lab")
    repo = pg_lab.group("ops")[0].name
    for host in pg_lab:
        report = search_host(pg_lab, host.name, value)
        control = report.pop("control", [])
        assert {"journal", "ps", "units"} <= set(report), host.name
        assert all(names == [] for names in report.values()), (host.name, report)
        if host.name == repo:
            # Not vacuous: the search finds the pass where it is meant to be.
            assert control == [CIPHER_SECRET], control

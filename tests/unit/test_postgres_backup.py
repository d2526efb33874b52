"""pgBackRest: templates rendered with lab data, archive settings, the restore report."""

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pyinfra.api import OperationError

from seawall import inventory
from seawall.components import pgbackrest, postgres
from seawall.components.templates import render, template_path
from seawall.operations.pgbackrest import FULL_BACKUP, RETIRE_OLD, STANZA_CREATE, migration_steps
from seawall.postgres.restore import RestoreReport
from tests.unit.test_deploy_phases import SECRET_VALUE, record


def context(lab: inventory.Topology, name: str) -> dict:
    members = [(host.name, host.address) for host in lab.group("postgres")]
    repo = lab.group("ops")[0]
    return pgbackrest.backup_context(lab.host(name).data, name == repo.name, members, repo.address)


@pytest.mark.parametrize("target", pgbackrest.TEMPLATES)
def test_templates_name_their_target(lab: inventory.Topology, target: str) -> None:
    assert template_path("pgbackrest", target).is_file()
    text = render("pgbackrest", target, context(lab, "ops-1"))
    first = text.splitlines()[1 if text.startswith("#!") else 0]
    assert first == f"# {target} - managed by seawall"


def test_repository_pulls_from_every_postgres_host(lab: inventory.Topology) -> None:
    text = render("pgbackrest", pgbackrest.CONFIG, context(lab, "ops-1"))
    assert "log-path=/var/lib/pgbackrest/log" in text
    assert "repo1-retention-full-type=time" in text
    assert "repo1-retention-full=7" in text
    members = lab.group("postgres")
    assert len(members) == 2
    for number, member in enumerate(members, start=1):
        assert f"pg{number}-host={member.address}" in text
    assert "[seawall]" in text


def test_postgres_hosts_push_to_the_repository(lab: inventory.Topology) -> None:
    text = render("pgbackrest", pgbackrest.CONFIG, context(lab, "data-2"))
    assert f"repo1-host={lab.group('ops')[0].address}" in text
    assert "repo1-host-user=pgbackrest" in text
    assert "pg1-path=/var/lib/postgresql/15/main" in text
    assert "repo1-path" not in text


def test_timer_runs_nightly_and_catches_up(lab: inventory.Topology) -> None:
    timer = render("pgbackrest", pgbackrest.TIMER, context(lab, "ops-1"))
    assert "OnCalendar=*-*-* 01:00:00 UTC" in timer
    assert "Persistent=true" in timer
    service = render("pgbackrest", pgbackrest.SERVICE, context(lab, "ops-1"))
    assert "User=pgbackrest" in service
    assert "--type=full backup" in service


def test_archiving_goes_through_patroni(lab: inventory.Topology) -> None:
    data = lab.host("data-1").data
    parameters = postgres.dynamic_config(data, archive=True)["postgresql"]["parameters"]
    assert parameters["archive_mode"] == "on"
    assert parameters["archive_command"] == "pgbackrest --stanza=seawall archive-push %p"
    without = postgres.dynamic_config(data, archive=False)["postgresql"]["parameters"]
    assert "archive_command" not in without


def test_restore_report_needs_every_row_back() -> None:
    report = RestoreReport("seawall", "ops-1", "restore-1", rows_written=1000, rows_restored=1000)
    assert report.ok
    assert "found in the restored copy: 1000" in report.to_text()
    short = RestoreReport("seawall", "ops-1", "restore-1", rows_written=1000, rows_restored=990)
    assert not short.ok
    assert short.to_json()["ok"] is False


def _remote(tmp_path: Path, request: str | None) -> subprocess.CompletedProcess[str]:
    """Run the forced command as sshd would, with pgBackRest replaced by a recorder."""
    script = render("pgbackrest", pgbackrest.REMOTE_COMMAND, {})
    recorder = tmp_path / "pgbackrest"
    recorder.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    recorder.chmod(0o755)
    wrapper = tmp_path / "remote"
    wrapper.write_text(script.replace("exec /usr/bin/pgbackrest", f"exec {recorder}"))
    env = {"PATH": "/usr/bin:/bin"} | ({} if request is None else {"SSH_ORIGINAL_COMMAND": request})
    return subprocess.run(
        ["sh", str(wrapper)], env=env, capture_output=True, text=True, timeout=10, cwd=tmp_path
    )


def test_a_peer_key_runs_pgbackrest_remote_with_its_words_as_they_came(tmp_path: Path) -> None:
    request = "pgbackrest --stanza=seawall --remote-type=repo --exec-id=1-ab archive-push:remote"
    result = _remote(tmp_path, request)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == request.split()[1:]
    # Shell syntax is never evaluated: it reaches pgBackRest as literal words.
    result = _remote(tmp_path, "/usr/bin/pgbackrest --x=$(touch$IFS/tmp/p);id `id` info:remote")
    assert result.returncode == 0
    assert result.stdout.splitlines() == ["--x=$(touch$IFS/tmp/p);id", "`id`", "info:remote"]


@pytest.mark.parametrize(
    "request_",
    [None, "", "sh", "bash -c id", "pgbackrest info", "pgbackrest restore", "id info:remote"],
)
def test_a_peer_key_runs_nothing_else(tmp_path: Path, request_: str | None) -> None:
    result = _remote(tmp_path, request_)
    assert result.returncode == 126
    assert result.stdout == "" and "seawall: this key runs pgBackRest" in result.stderr


CIPHER_PASS = "cipher-pass-under-test"


def test_the_repository_is_encrypted_at_its_own_path(lab: inventory.Topology) -> None:
    repo = lab.group("ops")[0]
    members = [(host.name, host.address) for host in lab.group("postgres")]
    data = repo.data
    for target in (pgbackrest.CONFIG, pgbackrest.RESTORE_CONFIG):
        ctx = pgbackrest.backup_context(data, True, members, repo.address, CIPHER_PASS)
        lines = render("pgbackrest", target, ctx).splitlines()
        assert "repo1-path=/var/lib/pgbackrest/aes-256-cbc" in lines, target
        assert "repo1-cipher-type=aes-256-cbc" in lines, target
        assert f"repo1-cipher-pass={CIPHER_PASS}" in lines, target
        # The old (unencrypted) path is never pgBackRest's repository again.
        assert "repo1-path=/var/lib/pgbackrest" not in lines, target


def test_postgres_hosts_hold_no_cipher_setting(lab: inventory.Topology) -> None:
    # They ask the repository host's pgBackRest for it, over the backup key's SSH.
    text = render("pgbackrest", pgbackrest.CONFIG, context(lab, "data-1"))
    assert "cipher" not in text


def test_only_secret_files_carry_the_cipher_pass(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    # record() gives every secret SECRET_VALUE; only this deploy's is the cipher pass.
    plan = record(monkeypatch, lab, pgbackrest, "ops-1")
    holding = [op for op in plan if SECRET_VALUE in json.dumps(op)]
    assert sorted(op["dest"] for op in holding) == sorted(
        [pgbackrest.CONFIG, pgbackrest.RESTORE_CONFIG]
    )
    for op in holding:
        assert op["op"] == "seawall.secret_file", op["dest"]
        # pgBackRest runs as the repository's account, which reads them; no one else does.
        assert (op.get("user", "root"), op["group"], op["mode"]) == ("root", "pgbackrest", 640)
    for name in ("data-1", "app-1"):
        assert SECRET_VALUE not in json.dumps(record(monkeypatch, lab, pgbackrest, name)), name


def test_the_repository_host_needs_the_cipher_pass_and_no_other_host_does(
    lab: inventory.Topology,
) -> None:
    for host in lab:
        wanted = pgbackrest.CIPHER_SECRET in host.required_secrets
        assert wanted == (host.name == lab.group("ops")[0].name), host.name


def _state(stanza: str | None, full_backups: int) -> dict[str, Any]:
    return {"stanza": stanza, "full_backups": full_backups}


NONE, PLAIN, ENCRYPTED = None, "plain", "encrypted"
STEPS = [
    # (old, new) -> steps
    ((_state(NONE, 0), _state(NONE, 0)), [STANZA_CREATE]),
    ((_state(NONE, 0), _state(ENCRYPTED, 0)), []),
    ((_state(NONE, 0), _state(ENCRYPTED, 2)), []),
    ((_state(PLAIN, 3), _state(NONE, 0)), [STANZA_CREATE, FULL_BACKUP, RETIRE_OLD]),
    ((_state(PLAIN, 0), _state(NONE, 0)), [STANZA_CREATE, FULL_BACKUP, RETIRE_OLD]),
    ((_state(PLAIN, 3), _state(ENCRYPTED, 0)), [FULL_BACKUP, RETIRE_OLD]),
    ((_state(PLAIN, 3), _state(ENCRYPTED, 1)), [RETIRE_OLD]),
]


@pytest.mark.parametrize(("states", "steps"), STEPS)
def test_migration_steps(states: tuple[dict[str, Any], dict[str, Any]], steps: list[str]) -> None:
    assert migration_steps(*states) == steps


def test_the_old_repository_goes_only_after_a_full_backup_in_the_new_one() -> None:
    for old_stanza in (NONE, PLAIN):
        for new_stanza in (NONE, ENCRYPTED):
            for full in (0, 1):
                new = _state(new_stanza, full if new_stanza else 0)
                steps = migration_steps(_state(old_stanza, 2), new)
                if RETIRE_OLD in steps:
                    before = steps[: steps.index(RETIRE_OLD)]
                    assert new["full_backups"] or FULL_BACKUP in before, (old_stanza, new)
                    # The stanza exists in the new repository before anything goes to it.
                    assert new_stanza or before[0] == STANZA_CREATE


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (_state(PLAIN, 1), _state(PLAIN, 1), "holds an unencrypted stanza"),
        (_state(ENCRYPTED, 1), _state(NONE, 0), "holds an encrypted stanza"),
        # A backup.info in a format not known here (a later pgBackRest's): hands off.
        (_state(PLAIN, 2), _state("unknown", 1), "a format this deploy does not know"),
        (_state("unknown", 2), _state(ENCRYPTED, 1), "a format this deploy does not know"),
    ],
)
def test_a_repository_this_migration_did_not_make_stops_it(
    old: dict[str, Any], new: dict[str, Any], message: str
) -> None:
    with pytest.raises(OperationError, match=message):
        migration_steps(old, new)

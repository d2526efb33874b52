"""pgBackRest: templates rendered with lab data, archive settings, the restore report."""

import subprocess
from pathlib import Path

import pytest

from seawall import inventory
from seawall.components import pgbackrest, postgres
from seawall.components.templates import render, template_path
from seawall.postgres.restore import RestoreReport


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
    assert "repo1-path=/var/lib/pgbackrest" in text
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

"""pgBackRest: templates rendered with lab data, archive settings, the restore report."""

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
    first = render("pgbackrest", target, context(lab, "ops-1")).splitlines()[0]
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

"""The WAL-marker callback: rendered for the lab, wired into Patroni only with archiving."""

import ast
from typing import Any

import pytest
import yaml

from seawall import inventory
from seawall.components import postgres
from seawall.components.templates import render

PASSWORDS = {name: f"secret-{name}" for name in postgres.SECRET_NAMES}


def context(lab: inventory.Topology, archive: bool) -> dict[str, Any]:
    return postgres.patroni_context(
        "data-1",
        lab.host("data-1").data,
        etcd_members=[],
        postgres_peers=[],
        clients=[],
        passwords=PASSWORDS,
        archive=archive,
    )


def test_script_is_python_naming_its_path_stanza_and_status_dir(lab: inventory.Topology) -> None:
    data = lab.host("data-1").data
    text = render("postgres", postgres.WAL_MARKERS, context(lab, True))
    lines = text.splitlines()
    assert lines[0] == "#!/usr/bin/python3"
    assert lines[1] == f"# {postgres.WAL_MARKERS} - managed by seawall"
    ast.parse(text)
    assert f"STANZA = {data['pgbackrest_stanza']!r}".replace("'", '"') in text
    data_dir = f"/var/lib/postgresql/{data['postgres_version']}/{data['postgres_cluster']}"
    assert f'STATUS_DIR = "{data_dir}/pg_wal/archive_status"' in text


@pytest.mark.parametrize("archive", [True, False])
def test_patroni_runs_the_callback_only_when_archiving(
    lab: inventory.Topology, archive: bool
) -> None:
    config = yaml.safe_load(render("postgres", postgres.PATRONI_TEMPLATE, context(lab, archive)))
    callbacks = config["postgresql"].get("callbacks")
    if archive:
        assert callbacks == {
            "on_start": postgres.WAL_MARKERS,
            "on_role_change": postgres.WAL_MARKERS,
        }
    else:
        assert callbacks is None

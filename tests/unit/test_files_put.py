"""seawall's files.put decides exactly as pyinfra's, from one fact instead of three.

Each state a destination and its directory can be in runs through both
operations (with and without owner and mode); the commands and no-op messages
must be the same. A changed file still reaches the upload.
"""

import hashlib
import itertools
from io import StringIO
from types import SimpleNamespace
from typing import Any

import pytest
from pyinfra.api.command import FileUploadCommand
from pyinfra.context import ctx_host, ctx_state
from pyinfra.operations import files as pyinfra_files

from seawall.facts.files import FileState
from seawall.operations import files
from tests.unit.test_operations import FakeHost, fact_key

CONTENT = "[Journal]\nSystemMaxUse=200M\n"
SHA1 = hashlib.sha1(CONTENT.encode()).hexdigest()
DIRECTORY = "/etc/systemd/journald.conf.d"
DEST = f"{DIRECTORY}/seawall.conf"
# What is at the destination: (seawall's FileState fields, pyinfra's File and Sha1File).
TARGETS: dict[str, tuple[dict[str, Any], Any, str | None]] = {
    "absent": ({"type": "absent"}, None, None),
    "link": ({"type": "link"}, False, None),
    **{
        name: (
            {"type": "file", "mode": mode, "user": user, "group": "root", "sha1": sha1},
            {"mode": mode, "user": user, "group": "root", "size": 30},
            sha1,
        )
        for name, mode, user, sha1 in (
            ("same", 644, "root", SHA1),
            ("changed", 644, "root", "0" * 40),
            ("mode", 600, "root", SHA1),
            ("owner", 644, "www-data", SHA1),
            ("all", 600, "www-data", "0" * 40),
        )
    },
}
# What is at its directory: (FileState's parent, pyinfra's Directory and Link of it).
PARENTS = {
    "directory": ("directory", {"mode": 755, "user": "root", "group": "root"}, None),
    "link": ("link", False, {"link_target": "/srv/journald"}),
    "absent": ("absent", None, None),
}
ARGUMENTS = [{}, {"user": "root", "group": "root", "mode": "644"}, {"group": "root"}]


class _Host(FakeHost):
    current_op_global_arguments: dict[str, Any] = {}


def _run(op: Any, facts: dict[str, Any], kwargs: dict[str, Any]) -> tuple[list[str], str | None]:
    fake = _Host("testhost", facts)
    src = StringIO(CONTENT)
    state = SimpleNamespace(cwd=None, config=SimpleNamespace(DIFF=False))
    with ctx_host.use(fake), ctx_state.use(state):
        commands = [
            f"upload {command.dest} {CONTENT if command.src is src else command.src}"
            if isinstance(command, FileUploadCommand)
            else str(command)
            for command in op._inner(src=src, dest=DEST, **kwargs)
        ]
    return commands, fake.noop_description


# A file in a missing directory cannot be: those pairs are left out.
PAIRS = [
    (target, parent)
    for target, parent in itertools.product(TARGETS, PARENTS)
    if parent != "absent" or target == "absent"
]


@pytest.mark.parametrize("target, parent", PAIRS, ids=lambda value: value)
def test_same_commands_and_noops_as_pyinfra(target: str, parent: str) -> None:
    ours_target, file_fact, sha1 = TARGETS[target]
    parent_kind, directory_fact, link_fact = PARENTS[parent]
    ours = {fact_key(FileState): {f"path={DEST}": ours_target | {"parent": parent_kind}}}
    theirs = {
        "files.File": {f"path={DEST}": file_fact},
        "files.Sha1File": {f"path={DEST}": sha1},
        "files.Directory": {
            f"path={DEST}": False if ours_target["type"] == "link" else None,
            f"path={DIRECTORY}": directory_fact,
        },
        "files.Link": {f"path={DIRECTORY}": link_fact},
    }
    for kwargs in ARGUMENTS:
        assert _run(files.put, ours, kwargs) == _run(pyinfra_files.put, theirs, kwargs), kwargs


def test_changed_content_is_uploaded_and_the_same_is_not() -> None:
    state = TARGETS["changed"][0] | {"parent": "directory"}
    commands, _ = _run(files.put, {fact_key(FileState): {f"path={DEST}": state}}, {})
    assert commands == [f"upload {DEST} {CONTENT}"]
    state = TARGETS["same"][0] | {"parent": "directory"}
    commands, noop = _run(files.put, {fact_key(FileState): {f"path={DEST}": state}}, {})
    assert (commands, noop) == ([], f"file {DEST} is already uploaded")

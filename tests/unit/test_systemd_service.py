"""seawall's systemd.service decides exactly as pyinfra's, from one fact instead of two.

Every combination of arguments the components use, against every unit state,
runs through both operations on fake hosts; the commands and no-op messages
must be the same.
"""

import itertools
from typing import Any

import pytest
from pyinfra.context import ctx_host
from pyinfra.operations import systemd as pyinfra_systemd

from seawall.facts.systemd import UnitState
from seawall.operations import systemd
from tests.unit.test_operations import FakeHost, fact_key

UNIT = "nginx.service"
# (SubState, UnitFileState) as systemctl shows them; "" for a unit systemd does not know.
STATES = [
    ("running", "enabled"),
    ("exited", "static"),
    ("waiting", "enabled"),
    ("dead", "disabled"),
    ("failed", "enabled"),
    ("dead", ""),
]
ARGUMENTS = [
    dict(zip(("running", "restarted", "reloaded", "enabled", "daemon_reload"), values, strict=True))
    for values in itertools.product(
        (True, False, None), (False, True), (False, True), (None, True, False), (False, True)
    )
]


def _run(op: Any, facts: dict[str, Any], kwargs: dict[str, Any]) -> tuple[list[str], str | None]:
    fake = FakeHost("testhost", facts)
    with ctx_host.use(fake):
        commands = [str(command) for command in op._inner(service=UNIT, **kwargs)]
    return commands, fake.noop_description


@pytest.mark.parametrize("sub, unit_file", STATES)
def test_same_commands_and_noops_as_pyinfra(sub: str, unit_file: str) -> None:
    running = sub in ("running", "waiting", "exited", "listening", "mounted")
    asked = f"machine=None, services=['{UNIT}'], user_mode=False, user_name=None"
    theirs = {
        "systemd.SystemdStatus": {asked: {UNIT: running}},
        "systemd.SystemdEnabled": {asked: {UNIT: unit_file in ("enabled", "static")}},
    }
    ours = {
        fact_key(UnitState): {
            f"unit={UNIT}": {"load": "loaded", "active": "", "sub": sub, "unit_file": unit_file}
        }
    }
    for kwargs in ARGUMENTS:
        expected = _run(pyinfra_systemd.service, theirs, kwargs)
        assert _run(systemd.service, ours, kwargs) == expected, kwargs


def test_a_stopped_unit_that_changed_is_started() -> None:
    """A restart on change of a stopped unit still reaches the unit: it is started."""
    state = {"load": "loaded", "active": "failed", "sub": "failed", "unit_file": "enabled"}
    commands, _ = _run(
        systemd.service,
        {fact_key(UnitState): {f"unit={UNIT}": state}},
        {"running": True, "restarted": True},
    )
    assert commands == [f"systemctl start {UNIT}"]

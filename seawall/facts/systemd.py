"""One systemd unit's state, in one cheap command."""

import shlex

from pyinfra.api import FactBase

# pyinfra's SystemdStatus and SystemdEnabled count these as running and enabled:
# the same values here, so an operation built on this fact decides as theirs do.
RUNNING_STATES = ("running", "waiting", "exited", "listening", "mounted")
ENABLED_STATES = ("enabled", "static")

_PROPERTIES = {
    "LoadState": "load",
    "ActiveState": "active",
    "SubState": "sub",
    "UnitFileState": "unit_file",
}


class UnitState(FactBase[dict[str, str]]):
    """Returns a unit's load, active, sub and unit file states (empty when systemd has none).

    ``systemctl show`` of one unit: pyinfra's ``SystemdStatus`` without a unit
    lists every unit (about 0.35 s a gathering), and its ``systemd.service``
    asks twice (``SystemdStatus``, then ``SystemdEnabled``). An unknown unit is
    ``load: not-found``, ``sub: dead``.

    .. code:: python

        {"load": "loaded", "active": "active", "sub": "running", "unit_file": "enabled"}
    """

    def requires_command(self, unit: str) -> str:
        return "systemctl"

    @staticmethod
    def default() -> dict[str, str]:
        return {}

    def command(self, unit: str) -> str:
        return f"systemctl show -p {','.join(_PROPERTIES)} -- {shlex.quote(unit)}"

    def process(self, output: list[str]) -> dict[str, str]:
        state = dict.fromkeys(_PROPERTIES.values(), "")
        for line in output:
            key, sep, value = line.strip().partition("=")
            if sep and key in _PROPERTIES:
                state[_PROPERTIES[key]] = value
        return state


def is_running(state: dict[str, str]) -> bool:
    """Whether ``state`` (a ``UnitState``) counts as running, as pyinfra's ``SystemdStatus``."""
    return state.get("sub") in RUNNING_STATES


def is_enabled(state: dict[str, str]) -> bool:
    """Whether ``state`` (a ``UnitState``) counts as enabled, as pyinfra's ``SystemdEnabled``."""
    return state.get("unit_file") in ENABLED_STATES

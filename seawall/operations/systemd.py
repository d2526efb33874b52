"""Manage systemd units, deciding from one cheap fact (pyinfra's ``daemon_reload`` re-exported)."""

import shlex
from collections.abc import Generator

from pyinfra import host
from pyinfra.api import operation
from pyinfra.operations.systemd import daemon_reload as daemon_reload

from seawall.facts.systemd import UnitState, is_enabled, is_running

# pyinfra's systemd.service appends ".service" to a name without one of these.
UNIT_TYPES = (
    ".service",
    ".socket",
    ".device",
    ".mount",
    ".automount",
    ".swap",
    ".target",
    ".path",
    ".timer",
    ".slice",
    ".scope",
)


@operation()
def service(
    service: str,
    running: bool | None = True,
    restarted: bool = False,
    reloaded: bool = False,
    enabled: bool | None = None,
    daemon_reload: bool = False,
) -> Generator[str, None, None]:
    """
    Manage a systemd unit's state: pyinfra's ``systemd.service`` from one ``UnitState`` fact.

    + service: name of the unit (``.service`` is added to a name without a unit type)
    + running: whether the unit should be running (``None``: leave it as it is)
    + restarted: restart the unit, if it is running
    + reloaded: reload the unit, if it is running
    + enabled: whether the unit should start at boot (``None``: leave it as it is)
    + daemon_reload: reload systemd first, so it reads changed unit files

    Same commands, no-op messages and decisions as pyinfra's (system units only:
    no ``user_mode``, ``machine`` or ``command``), from one ``systemctl show``
    of the unit instead of two.

    **Example:**

    .. code:: python

        service(
            name="Restart NGINX (its configuration changed)",
            service="nginx.service",
            running=True,
            restarted=True,
            _if=config.did_change,
        )
    """
    unit = service if service.endswith(UNIT_TYPES) else f"{service}.service"
    quoted = shlex.quote(unit)
    if daemon_reload:
        yield "systemctl daemon-reload"
    state = host.get_fact(UnitState, unit=unit)
    active = is_running(state)
    if running is False:
        if active:
            yield f"systemctl stop {quoted}"
        else:
            host.noop(f"service {unit} is stopped")
    if running is True:
        if not active:
            yield f"systemctl start {quoted}"
        else:
            host.noop(f"service {unit} is running")
    # As pyinfra: a stopped unit is not restarted nor reloaded (starting it is enough).
    if restarted and active:
        yield f"systemctl restart {quoted}"
    if reloaded and active:
        yield f"systemctl reload {quoted}"
    if enabled is True and not is_enabled(state):
        yield f"systemctl enable {quoted}"
    elif enabled is False and is_enabled(state):
        yield f"systemctl disable {quoted}"

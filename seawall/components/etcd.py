"""The etcd cluster Patroni keeps its leader lock in: ``deploy_etcd()``.

What it guarantees on every host of the ``etcd`` group:

- ``etcd-server`` and ``etcd-client`` from Debian are installed, and the install
  starts nothing: Debian's stock one-member localhost cluster never exists;
- one member per host, named after the host, peer and client ports on its
  private address (client also on loopback), all members listed from the
  inventory, the data in ``etcd_data_dir``;
- etcd runs, is enabled at boot and restarts after any crash;
- a configuration change restarts one member at a time, so the cluster keeps
  its quorum (and Patroni its leader) through a redeploy.

What it never does:

- remove a member, wipe a data directory or re-bootstrap an existing cluster
  (``ETCD_INITIAL_*`` are only read when the data directory is empty);
- restart etcd when nothing changed.
"""

from collections.abc import Mapping, Sequence
from io import StringIO
from typing import Any

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.host import HostData
from pyinfra.facts.systemd import SystemdStatus
from pyinfra.operations import files, systemd

from seawall.components.common import group_members, install_packages, unit_dropin
from seawall.components.templates import render
from seawall.defaults import ETCD

CONCERN = "etcd"
DEFAULTS_FILE = "/etc/default/etcd"
UNIT_DROPIN = "/etc/systemd/system/etcd.service.d/seawall.conf"
TEMPLATES: tuple[str, ...] = (DEFAULTS_FILE, UNIT_DROPIN)
PACKAGES = ["etcd-server", "etcd-client"]


def etcd_context(
    name: str, data: Mapping[str, Any] | HostData, members: Sequence[tuple[str, str]]
) -> dict[str, Any]:
    """Return what the etcd templates see for member ``name``; ``members`` is (name, address)."""
    context = {key: data.get(key, default) for key, default in ETCD.items()}
    peer_port = context["etcd_peer_port"]
    context["name"] = name
    context["address"] = str(data.get("private_address"))
    context["initial_cluster"] = ",".join(
        f"{member}=http://{address}:{peer_port}" for member, address in members
    )
    return context


@deploy("etcd cluster", data_defaults=ETCD)
def deploy_etcd() -> None:
    """
    Make this host a member of the etcd cluster: install, then configure, then activate.

    Hosts outside the ``etcd`` group are left alone.

    **Example:**

    .. code:: python

        from seawall.components.etcd import deploy_etcd

        deploy_etcd()
    """
    if "etcd" not in host.groups:
        return
    context = etcd_context(host.name, host.data, group_members("etcd"))
    # Asked before anything changes: was a member already running here?
    was_running = bool(host.get_fact(SystemdStatus).get("etcd.service"))
    install_packages("Install etcd (started by nothing until configured)", PACKAGES)

    config = files.put(
        name="Configure this etcd member",
        src=StringIO(render(CONCERN, DEFAULTS_FILE, context)),
        dest=DEFAULTS_FILE,
        user="root",
        group="root",
        mode="644",
    )
    unit_dropin(
        "Restart etcd after any crash", render(CONCERN, UNIT_DROPIN, context), UNIT_DROPIN, "etcd"
    )
    # Members start together (a new cluster needs a quorum to report ready)...
    systemd.service(
        name="Start and enable etcd", service="etcd.service", running=True, enabled=True
    )
    if not was_running:
        # It just started with this configuration: nothing to restart.
        return
    # ...but restart one at a time, so the cluster never loses its quorum.
    systemd.service(
        name="Restart etcd (its configuration changed)",
        service="etcd.service",
        running=True,
        restarted=True,
        _if=config.did_change,
        _serial=True,
    )

"""The etcd cluster Patroni keeps its leader lock in: ``deploy_etcd()``.

What it guarantees on every host of the ``etcd`` group:

- ``etcd-server`` and ``etcd-client`` from Debian are installed, and the install
  starts nothing: Debian's stock one-member localhost cluster never exists;
- one member per host, named after the host, peer and client ports on its
  private address (client also on loopback), all members listed from the
  inventory, the data in ``etcd_data_dir``;
- etcd runs, is enabled at boot and restarts after any crash;
- a configuration change restarts one member at a time, and only while every
  other member answers healthy, so the cluster keeps its quorum (and Patroni
  its leader) through a redeploy; otherwise the restart is skipped, saying
  which member is down, and stays pending (the configuration is newer than the
  running member) until a deploy finds them all healthy;
- a rebuilt member (its data directory empty while the others run) rejoins as a
  new member: its old membership is removed and a new one added through the
  healthy members before it starts with ``ETCD_INITIAL_CLUSTER_STATE=existing``
  (docs/postgres.md, "Rebuilding an etcd member").

What it never does:

- wipe a data directory or re-bootstrap an existing cluster
  (``ETCD_INITIAL_*`` are only read when the data directory is empty); a
  membership changes only for a member whose data directory is empty, and
  only while every other member is healthy;
- restart etcd when nothing changed.
"""

from collections.abc import Mapping, Sequence
from io import StringIO
from typing import Any

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.host import HostData
from pyinfra.facts.files import Directory, FindInFile

from seawall.components.common import group_members, install_packages, unit_dropin
from seawall.components.templates import render
from seawall.defaults import ETCD
from seawall.facts.etcd import EtcdConfigPending, EtcdHealth
from seawall.facts.systemd import UnitState, is_running
from seawall.operations import files, systemd
from seawall.operations.etcd import member_rejoined, member_restarted
from seawall.settings import setting

CONCERN = "etcd"
DEFAULTS_FILE = "/etc/default/etcd"
UNIT_DROPIN = "/etc/systemd/system/etcd.service.d/seawall.conf"
TEMPLATES: tuple[str, ...] = (DEFAULTS_FILE, UNIT_DROPIN)
PACKAGES = ["etcd-server", "etcd-client"]


def etcd_context(
    name: str, data: Mapping[str, Any] | HostData, members: Sequence[tuple[str, str]]
) -> dict[str, Any]:
    """Return what the etcd templates see for member ``name``; ``members`` is (name, address)."""
    context = {key: setting(data, key) for key in ETCD}
    peer_port = context["etcd_peer_port"]
    context["name"] = name
    context["address"] = str(data.get("private_address"))
    context["initial_cluster"] = ",".join(
        f"{member}=http://{address}:{peer_port}" for member, address in members
    )
    return context


STATE_PATTERN = "^ETCD_INITIAL_CLUSTER_STATE="


def initial_cluster_state(has_data: bool, rejoin: bool, current: list[str] | None) -> str:
    """Return ETCD_INITIAL_CLUSTER_STATE for this member.

    Only an empty data directory reads it: "existing" when the member rejoins a
    running cluster, "new" when the cluster starts; a member with data keeps
    what its file says, so a redeploy never changes the file for nothing.
    """
    if not has_data:
        return "existing" if rejoin else "new"
    return "existing" if any('"existing"' in line for line in current or []) else "new"


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
    members = group_members("etcd")
    context = etcd_context(host.name, host.data, members)
    port = context["etcd_client_port"]
    peers = [f"{address}:{port}" for name, address in members if name != host.name]
    # Asked before anything changes: was a member already running here, with its data?
    was_running = is_running(host.get_fact(UnitState, unit="etcd.service"))
    has_data = host.get_fact(Directory, path=f"{context['etcd_data_dir']}/member") is not None
    rejoin = not has_data and any(host.get_fact(EtcdHealth, endpoints=peers).values())
    context["initial_cluster_state"] = initial_cluster_state(
        has_data, rejoin, host.get_fact(FindInFile, path=DEFAULTS_FILE, pattern=STATE_PATTERN)
    )
    pending = was_running and bool(host.get_fact(EtcdConfigPending, path=DEFAULTS_FILE))
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
    if rejoin:
        member_rejoined(
            name="Rejoin the running cluster as a new member (this one has no data)",
            member=host.name,
            peer_url=f"http://{context['address']}:{context['etcd_peer_port']}",
            peers=peers,
        )
    # Members start together (a new cluster needs a quorum to report ready)...
    systemd.service(
        name="Start and enable etcd", service="etcd.service", running=True, enabled=True
    )
    if not was_running:
        # It just started with this configuration: nothing to restart.
        return
    # ...but restart one at a time, while the others are healthy, so the
    # cluster never loses its quorum.
    if pending or config.will_change:
        member_restarted(name="Restart etcd (its configuration changed)", peers=peers, _serial=True)

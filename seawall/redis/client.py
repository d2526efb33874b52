"""Build runtime clients for an inventory's Redis, from inventory data and secrets."""

from seawall import secrets
from seawall.errors import SeawallError
from seawall.inventory import Topology
from seawall.netguard import require_lab_network
from seawall.runtime.reconnect import MajorityClient, RedisSettings


def redis_settings(topology: Topology, **overrides: object) -> RedisSettings:
    """Return client settings: every Sentinel of the inventory, the master name, passwords.

    Raises:
        SeawallError: no Sentinel hosts, or a password is missing.
    """
    sentinels = topology.group("sentinel")
    if not sentinels:
        raise SeawallError(f"{topology.path}: group sentinel: no hosts")
    first = sentinels[0].data
    values = secrets.require(
        ["redis_password", "sentinel_password"], first.get("secrets_file"), sentinels[0].name
    )
    return RedisSettings(
        sentinels=tuple((host.address, int(host.data["sentinel_port"])) for host in sentinels),
        master_name=str(topology.value("sentinel_master_name")),
        password=values["redis_password"],
        sentinel_password=values["sentinel_password"],
        **overrides,  # type: ignore[arg-type]
    )


def majority_client(topology: Topology, **overrides: object) -> MajorityClient:
    require_lab_network(topology)
    return MajorityClient(redis_settings(topology, **overrides))

"""What the live Redis cluster looks like: master, replicas with lag, Sentinels' agreement."""

from dataclasses import asdict, dataclass, field

from seawall.errors import SeawallError
from seawall.inventory import Topology
from seawall.netguard import require_lab_network
from seawall.redis.client import redis_settings
from seawall.runtime.reconnect import MajorityClient, RedisUnavailableError, connect


@dataclass
class NodeState:
    host: str
    address: str
    role: str  # master, replica, down, or an error
    master: str | None = None  # for a replica: the address it follows
    link: str | None = None  # for a replica: connected/connecting/...
    lag_bytes: int | None = None  # for a replica: master offset - its offset


@dataclass
class SentinelView:
    host: str
    address: str
    master: str | None  # "ip:port" it names, or None when it is unreachable
    error: str | None = None


@dataclass
class RedisStatus:
    master: str | None  # "ip:port" a majority of Sentinels names
    master_host: str | None
    nodes: list[NodeState] = field(default_factory=list)
    sentinels: list[SentinelView] = field(default_factory=list)

    @property
    def agreeing(self) -> int:
        return sum(1 for view in self.sentinels if view.master == self.master)

    @property
    def ok(self) -> bool:
        replicas = [n for n in self.nodes if n.role == "replica" and n.link == "connected"]
        return (
            self.master is not None
            and self.agreeing == len(self.sentinels)
            and len(replicas) == len(self.nodes) - 1
            and all(n.master == self.master for n in replicas)
        )

    def to_json(self) -> dict:
        return {**asdict(self), "agreeing": self.agreeing, "ok": self.ok}


def _node(topology: Topology, name: str, password: str | None, timeout: float) -> NodeState:
    host = topology.host(name)
    port = int(host.data["redis_port"])
    conn = connect(host.address, port, password, timeout)
    try:
        role = conn.execute_command("ROLE")
    except Exception as error:  # a node that does not answer is reported, not fatal
        return NodeState(name, f"{host.address}:{port}", f"down ({type(error).__name__})")
    finally:
        conn.close()
    kind = role[0].decode() if isinstance(role[0], bytes) else str(role[0])
    if kind == "master":
        return NodeState(name, f"{host.address}:{port}", "master")
    master_host = role[1].decode() if isinstance(role[1], bytes) else str(role[1])
    link = role[3].decode() if isinstance(role[3], bytes) else str(role[3])
    return NodeState(
        name, f"{host.address}:{port}", "replica", f"{master_host}:{role[2]}", link, int(role[4])
    )


def redis_status(topology: Topology, timeout: float = 1.0) -> RedisStatus:
    """Ask every Sentinel and every Redis of the inventory; never raise for a node that is down.

    Raises:
        SeawallError: the inventory has no Sentinels or lacks the passwords.
    """
    require_lab_network(topology)
    settings = redis_settings(topology, socket_timeout=timeout)
    client = MajorityClient(settings)
    try:
        views = client.sentinel_views()
        try:
            master_addr = client.discover()
            master = f"{master_addr[0]}:{master_addr[1]}"
        except RedisUnavailableError:
            master = None
    finally:
        client.close()
    by_address = {f"{h.address}:{h.data['redis_port']}": h.name for h in topology.group("redis")}
    sentinels = [
        SentinelView(
            host.name,
            where,
            f"{answer[0]}:{answer[1]}" if isinstance(answer, tuple) else None,
            None if isinstance(answer, tuple) else str(answer),
        )
        for host, (where, answer) in zip(topology.group("sentinel"), views, strict=True)
    ]
    nodes = [_node(topology, h.name, settings.password, timeout) for h in topology.group("redis")]
    master_offset = None
    if master is not None:
        try:
            master_host, master_port = master.split(":")
            conn = connect(master_host, int(master_port), settings.password, timeout)
            master_offset = int(conn.info("replication")["master_repl_offset"])
            conn.close()
        except Exception:  # the master may be going away this very moment
            master_offset = None
    for node in nodes:
        if node.role == "replica" and master_offset is not None and node.lag_bytes is not None:
            node.lag_bytes = max(0, master_offset - node.lag_bytes)
        elif node.role == "replica":
            node.lag_bytes = None
    if not topology.group("redis"):
        raise SeawallError(f"{topology.path}: group redis: no hosts")
    return RedisStatus(master, by_address.get(master or ""), nodes, sentinels)

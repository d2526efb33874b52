"""`seawall status`: the live topology of the data tier, asked of the services themselves."""

from dataclasses import dataclass

from seawall.inventory import Topology
from seawall.output import table
from seawall.postgres.status import PostgresStatus, postgres_status
from seawall.redis.topology import RedisStatus, redis_status


@dataclass
class PlatformStatus:
    redis: RedisStatus | None
    postgres: PostgresStatus | None

    @property
    def ok(self) -> bool:
        return all(part.ok for part in (self.redis, self.postgres) if part is not None)

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "redis": self.redis.to_json() if self.redis else None,
            "postgres": self.postgres.to_json() if self.postgres else None,
        }

    def to_text(self) -> str:
        parts = []
        if self.redis is not None:
            redis = self.redis
            parts.append(
                f"Redis master: {redis.master_host or 'NONE'} ({redis.master or '-'}), "
                f"{redis.agreeing}/{len(redis.sentinels)} Sentinels agree"
            )
            parts.append(
                table(
                    ["host", "redis", "follows", "link", "lag bytes", "sentinel says"],
                    [
                        (
                            node.host,
                            node.role,
                            node.master or "-",
                            node.link or "-",
                            "-" if node.lag_bytes is None else node.lag_bytes,
                            next(
                                (
                                    v.master or f"unreachable ({v.error})"
                                    for v in redis.sentinels
                                    if v.host == node.host
                                ),
                                "-",
                            ),
                        )
                        for node in redis.nodes
                    ],
                )
            )
        if self.postgres is not None:
            parts.append(self.postgres.to_text())
        return "\n\n".join(parts)


def platform_status(topology: Topology) -> PlatformStatus:
    """Ask Redis/Sentinel and Patroni/etcd (where the inventory has them) for their state."""
    redis = redis_status(topology) if topology.group("redis") else None
    postgres = postgres_status(topology) if topology.group("postgres") else None
    return PlatformStatus(redis, postgres)

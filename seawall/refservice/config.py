"""The reference service's settings: a JSON file from the deploy, secrets from the environment."""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Secrets come from the unit's 0600 EnvironmentFile, never from the JSON file.
ENV_REDIS_PASSWORD = "SEAWALL_REDIS_PASSWORD"
ENV_SENTINEL_PASSWORD = "SEAWALL_SENTINEL_PASSWORD"
ENV_POSTGRES_PASSWORD = "SEAWALL_POSTGRES_PASSWORD"


@dataclass(frozen=True)
class DependencySpec:
    name: str
    kind: str  # redis | postgres | http
    critical: bool
    url: str | None = None


@dataclass(frozen=True)
class ServiceConfig:
    service: str
    port: int
    bind: str = "127.0.0.1"
    version: str = "0.0.0"
    dependencies: tuple[DependencySpec, ...] = ()
    sentinels: tuple[tuple[str, int], ...] = ()
    redis_master: str = "quantum"
    # ACL users; None logs in as `default` (the shared password, before the move to ACL users).
    redis_username: str | None = None
    sentinel_username: str | None = None
    postgres: dict[str, Any] = field(default_factory=dict)
    stream_maxlen: int = 10000
    spool_dir: str | None = None
    redis_password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)
    postgres_password: str | None = field(default=None, repr=False)

    def needs(self, kind: str) -> bool:
        return any(d.kind == kind for d in self.dependencies)


def from_dict(raw: dict[str, Any], env: dict[str, str] | None = None) -> ServiceConfig:
    """Build the settings from the deploy's JSON and the environment's secrets."""
    env = dict(os.environ) if env is None else env
    redis = raw.get("redis") or {}
    return ServiceConfig(
        service=str(raw["service"]),
        port=int(raw["port"]),
        bind=str(raw.get("bind", "127.0.0.1")),
        version=str(raw.get("version", "0.0.0")),
        dependencies=tuple(
            DependencySpec(
                name=str(d["name"]),
                kind=str(d["kind"]),
                critical=bool(d.get("critical", True)),
                url=d.get("url"),
            )
            for d in raw.get("dependencies", [])
        ),
        sentinels=tuple((str(h), int(p)) for h, p in redis.get("sentinels", [])),
        redis_master=str(redis.get("master_name", "quantum")),
        redis_username=redis.get("username"),
        sentinel_username=redis.get("sentinel_username"),
        postgres=dict(raw.get("postgres") or {}),
        stream_maxlen=int(raw.get("stream_maxlen", 10000)),
        spool_dir=raw.get("spool_dir"),
        redis_password=env.get(ENV_REDIS_PASSWORD) or None,
        sentinel_password=env.get(ENV_SENTINEL_PASSWORD) or None,
        postgres_password=env.get(ENV_POSTGRES_PASSWORD) or None,
    )


def load(path: str | Path) -> ServiceConfig:
    return from_dict(json.loads(Path(path).read_text()))

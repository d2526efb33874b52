"""Facts that ask a running Redis or Sentinel (not its files) what it is doing.

Passwords come from 0600 files on the host through REDISCLI_AUTH, so they never
appear on a command line or in pyinfra's output.
"""

from pyinfra.api import FactBase

REDIS_CLI_AUTH = "/etc/redis/seawall-cli.auth"
SENTINEL_CLI_AUTH = "/etc/redis/seawall-sentinel-cli.auth"


def cli(auth_file: str, port: int, command: str) -> str:
    """Return a shell command running redis-cli on localhost with the password from a file."""
    return (
        f'REDISCLI_AUTH="$(cat {auth_file} 2>/dev/null)" '
        f"redis-cli --no-auth-warning -h 127.0.0.1 -p {int(port)} {command}"
    )


class RedisRole(FactBase[dict[str, str] | None]):
    """Returns the live replication role of the local Redis, or ``None`` when it is not running.

    .. code:: python

        {"role": "slave", "master_host": "10.77.0.11", "master_port": "6379",
         "state": "connected"}
    """

    def requires_command(self, port: int) -> str:
        return "redis-cli"

    def command(self, port: int) -> str:
        return cli(REDIS_CLI_AUTH, port, "ROLE 2>/dev/null") + " || true"

    def process(self, output: list[str]) -> dict[str, str] | None:
        lines = [line.strip() for line in output if line.strip()]
        if not lines or lines[0] not in ("master", "slave", "sentinel"):
            return None
        if lines[0] == "slave" and len(lines) >= 4:
            return {
                "role": "slave",
                "master_host": lines[1],
                "master_port": lines[2],
                "state": lines[3],
            }
        return {"role": lines[0]}


class SentinelMaster(FactBase[tuple[str, int] | None]):
    """Returns the master address the local Sentinel names, or ``None``.

    .. code:: python

        ("10.77.0.12", 6379)
    """

    def requires_command(self, port: int, master: str) -> str:
        return "redis-cli"

    def command(self, port: int, master: str) -> str:
        return (
            cli(SENTINEL_CLI_AUTH, port, f"SENTINEL get-master-addr-by-name {master} 2>/dev/null")
            + " || true"
        )

    def process(self, output: list[str]) -> tuple[str, int] | None:
        lines = [line.strip() for line in output if line.strip()]
        if len(lines) != 2 or not lines[1].isdigit():
            return None
        return (lines[0], int(lines[1]))


class SentinelMasterSettings(FactBase[dict[str, str] | None]):
    """Returns the live settings a local Sentinel holds for a master, or ``None``.

    .. code:: python

        {"name": "platform", "ip": "10.77.0.11", "quorum": "2",
         "down-after-milliseconds": "1000", "failover-timeout": "5000", ...}
    """

    def requires_command(self, port: int, master: str) -> str:
        return "redis-cli"

    def command(self, port: int, master: str) -> str:
        return cli(SENTINEL_CLI_AUTH, port, f"SENTINEL MASTER {master} 2>/dev/null") + " || true"

    def process(self, output: list[str]) -> dict[str, str] | None:
        lines = [line.strip() for line in output]
        if len(lines) < 2 or len(lines) % 2 or lines[0] != "name":
            return None
        return dict(zip(lines[0::2], lines[1::2], strict=True))

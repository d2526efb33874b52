"""Facts that ask a running Redis or Sentinel (not its files) what it is doing.

Passwords come from 0600 files on the host through REDISCLI_AUTH, so they never
appear on a command line or in pyinfra's output.
"""

import shlex

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


# A file seawall writes in Redis's directory once Redis was first configured there.
INITIALISED_MARKER = "seawall-initialised"


class RedisHasData(FactBase[bool]):
    """Returns whether Redis was ever set up here: seawall's marker, an AOF or an RDB in ``dir``.

    Whether the package is installed says nothing: a rebuilt host reinstalls it.

    .. code:: python

        True
    """

    def command(self, dir: str) -> str:
        quoted = shlex.quote(dir.rstrip("/"))
        found = " -o ".join(
            f"-e {quoted}/{name}"
            for name in (INITIALISED_MARKER, "dump.rdb", "appendonlydir", "appendonly.aof")
        )
        return f"if [ {found} ]; then echo yes; else echo no; fi"

    def process(self, output: list[str]) -> bool:
        return [line.strip() for line in output] == ["yes"]


# awk reading the managed file's settings, then the lines of ``config`` after
# its last ``include`` of it: prints ``no-include`` when there is none, then
# every setting of the managed file a later line sets to another value.
_SHADOWED_AWK = r"""
function value(line) { sub(/^[ \t]*[^ \t]+[ \t]*/, "", line); sub(/[ \t]+$/, "", line);
  if (line ~ /^".*"$/) line = substr(line, 2, length(line) - 2); return line }
BEGIN { while ((getline line < managed) > 0) if (line !~ /^[ \t]*(#|$)/) {
  split(line, f); want[f[1]] = value(line) } }
$0 == include { found = 1; split("", after); next }
found && $0 !~ /^[ \t]*(#|$)/ { key = $1; after[key] = value($0) }
END { if (!found) { print "no-include"; exit }
  for (key in after) if ((key in want) && after[key] != want[key]) print key }
"""


def shadowed_command(config: str, managed: str) -> str:
    """Return the shell command behind :class:`ShadowedSettings` (no value is printed)."""
    include = f"include {managed}"
    return (
        f"if [ -f {shlex.quote(config)} ]; then "
        f"awk -v managed={shlex.quote(managed)} -v include={shlex.quote(include)} "
        f"{shlex.quote(_SHADOWED_AWK.strip())} {shlex.quote(config)}; "
        "else echo no-include; fi"
    )


class ShadowedSettings(FactBase[list[str] | None]):
    """Returns the settings of ``managed`` that lines after its ``include`` in ``config`` override.

    Redis reads its configuration top to bottom and the last line wins, and its
    ``CONFIG REWRITE`` (Sentinel runs one at every failover) appends settings at
    the end of ``config``, after the include. ``[]``: the managed file wins;
    ``None``: ``config`` does not include it (or does not exist). Only names
    are returned, never values (passwords are among them).

    .. code:: python

        ["requirepass", "maxmemory"]
    """

    def command(self, config: str, managed: str) -> str:
        return shadowed_command(config, managed)

    @staticmethod
    def default() -> list[str]:
        # pyinfra gives the default, not process([]), when a command prints
        # nothing: here that means "nothing overrides", not "no include".
        return []

    def process(self, output: list[str]) -> list[str] | None:
        lines = [line.strip() for line in output if line.strip()]
        if "no-include" in lines:
            return None
        return sorted(lines)


class RedisAclFile(FactBase[str | None]):
    """Returns the ACL file the running local Redis loaded (``""``: none), or ``None`` when
    it is not running or refuses the password.

    ``aclfile`` is read only at start: a Redis started before seawall wrote it
    answers ``""`` until its next restart.

    .. code:: python

        "/etc/redis/users.acl"
    """

    def requires_command(self, port: int) -> str:
        return "redis-cli"

    def command(self, port: int) -> str:
        return cli(REDIS_CLI_AUTH, port, "CONFIG GET aclfile 2>/dev/null") + " || true"

    def process(self, output: list[str]) -> str | None:
        lines = [line.strip() for line in output]
        if len(lines) == 2 and lines[0] == "aclfile":
            return lines[1]
        if lines == ["aclfile"]:
            return ""
        return None

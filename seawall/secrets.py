"""Secrets: read from a 0600 file or the environment, never from inventory data or git."""

import os
import secrets as _random
import stat
from collections.abc import Sequence
from pathlib import Path

from seawall.errors import SeawallError

ENV_PREFIX = "SEAWALL_SECRET_"


def env_name(name: str) -> str:
    """Return the environment variable that overrides secret ``name``."""
    return ENV_PREFIX + name.upper()


def read_file(path: Path) -> dict[str, str]:
    """Parse a secrets file of ``name=value`` lines.

    Raises:
        SeawallError: the file is missing, readable by others, or malformed.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise SeawallError(f"secrets file {path} does not exist") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SeawallError(f"secrets file {path} is readable by others: chmod 600 it")
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            raise SeawallError(f"secrets file {path} line {number}: expected name=value")
        values[name.strip()] = value.strip()
    return values


def resolve(names: list[str], secrets_file: str | None) -> tuple[dict[str, str], list[str]]:
    """Return (values, missing) for ``names``; the environment wins over the file."""
    from_file = read_file(Path(secrets_file)) if secrets_file else {}
    values: dict[str, str] = {}
    missing: list[str] = []
    for name in names:
        value = os.environ.get(env_name(name)) or from_file.get(name)
        if value:
            values[name] = value
        else:
            missing.append(name)
    return values, missing


def require(
    names: Sequence[str], secrets_file: str | None, owner: str, purpose: str = ""
) -> dict[str, str]:
    """Return the values of ``names`` for ``owner`` (a host's name).

    Raises:
        SeawallError: one is missing, naming the owner, the secrets, ``purpose`` and where
            they were looked for.
    """
    values, missing = resolve(list(names), secrets_file)
    if missing:
        raise SeawallError(
            f"{owner}: secrets {', '.join(missing)}{purpose} missing "
            f"(secrets_file or {', '.join('$' + env_name(n) for n in missing)})"
        )
    return values


def ensure_file(path: Path, names: list[str]) -> list[str]:
    """Create or complete a 0600 secrets file with random values; return the names added."""
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = read_file(path) if path.exists() else {}
    added = [name for name in names if name not in existing]
    if not added and path.exists():
        return []
    lines = [f"{name}={value}" for name, value in existing.items()]
    lines += [f"{name}={_random.token_urlsafe(24)}" for name in added]
    # Create with 0600 from the start so the values are never briefly world-readable.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("# seawall lab secrets: generated, never commit\n" + "\n".join(lines) + "\n")
    os.chmod(path, 0o600)
    return added

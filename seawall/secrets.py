"""Secrets: read from a 0600 file or the environment, never from inventory data or git.

The file must be a regular file (not a symlink), owned by the user reading it
or root, with no group or other bits. Every value is checked against the
formats it is written into on the hosts before anything is written; errors
name the secret and where it came from, never the value.
"""

import errno
import os
import re
import secrets as _random
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path

from seawall.errors import SeawallError

ENV_PREFIX = "SEAWALL_SECRET_"

# The formats a secret is written into on a host, and what each cannot hold.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SPACE = re.compile(r"\s")
FORMATS: dict[str, tuple[str, tuple[tuple[re.Pattern[str], str], ...]]] = {
    # requirepass/masterauth/auth-pass/sentinel-pass: Redis splits a config line
    # on blanks and reads quotes and backslashes as quoting.
    "redis": (
        "Redis's and Sentinel's config (requirepass, masterauth, auth-pass)",
        ((_SPACE, "a blank"), (re.compile(r"[\"'\\]"), "a quote or backslash")),
    ),
    # NAME=value, unquoted: systemd strips blanks around it and reads quotes
    # and backslashes as quoting.
    "env": (
        "a service's systemd EnvironmentFile",
        ((_SPACE, "a blank"), (re.compile(r"[\"'\\]"), "a quote or backslash")),
    ),
    # "role" "password": a double quote ends the field.
    "userlist": ("PgBouncer's userlist.txt", ((re.compile('"'), "a double quote"),)),
    # Patroni's YAML holds it JSON-quoted: any printable character is safe.
    "yaml": ("Patroni's YAML configuration", ()),
    # key=value, unquoted: pgBackRest trims blanks around the value.
    "pgbackrest": ("pgBackRest's configuration (repo1-cipher-pass)", ((_SPACE, "a blank"),)),
}
# Which formats each secret goes into; a secret not named here is held to all
# of them (a new use must not slip past the checks).
_WRITTEN_INTO: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = (
    (re.compile(r"(redis|sentinel)_password"), ("redis", "env")),
    (re.compile(r"postgres_role_.+_password"), ("userlist", "env")),
    (
        re.compile(r"postgres_(superuser|replication|rewind)_password|patroni_restapi_password"),
        ("yaml",),
    ),
    (re.compile(r"pgbackrest_cipher_pass"), ("pgbackrest",)),
    # A password file Prometheus trims, and Grafana's environment.
    (re.compile(r"prometheus_api_password"), ("env",)),
)


def env_name(name: str) -> str:
    """Return the environment variable that overrides secret ``name``."""
    return ENV_PREFIX + name.upper()


def formats_of(name: str) -> tuple[str, ...]:
    """Return the FORMATS keys secret ``name`` is written into."""
    for pattern, formats in _WRITTEN_INTO:
        if pattern.fullmatch(name):
            return formats
    return tuple(FORMATS)


def value_problem(name: str, value: str) -> str | None:
    """Return why ``value`` cannot be secret ``name``'s (never quoting it), or None if it can."""
    if not value:
        return "it is empty"
    if _CONTROL.search(value):
        return "it holds a control character (newline, NUL...), which no file format takes"
    for key in formats_of(name):
        target, forbidden = FORMATS[key]
        for pattern, what in forbidden:
            if pattern.search(value):
                return f"it holds {what}, which {target} cannot take"
    return None


def _open_checked(path: Path) -> int:
    """Open ``path`` for reading if it is safe to hold secrets; return the descriptor.

    Raises:
        SeawallError: missing, a symlink or not a regular file, owned by someone
            other than the current user or root, or readable by others.
    """
    try:
        # O_NOFOLLOW: a symlink is refused, not followed to wherever it points.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise SeawallError(f"secrets file {path} does not exist") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise SeawallError(
                f"secrets file {path} is a symlink: point secrets_file at the file itself"
            ) from None
        raise SeawallError(f"secrets file {path}: {error.strerror}") from None
    info = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = "is not a regular file"
    elif info.st_uid not in (os.geteuid(), 0):
        problem = f"belongs to uid {info.st_uid}, neither you ({os.geteuid()}) nor root: chown it"
    elif info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        problem = "is readable by others: chmod 600 it"
    if problem:
        os.close(fd)
        raise SeawallError(f"secrets file {path} {problem}")
    return fd


def read_file(path: Path) -> dict[str, str]:
    """Parse a secrets file of ``name=value`` lines.

    Raises:
        SeawallError: the file is missing, unsafe (see ``_open_checked``), or malformed.
    """
    with os.fdopen(_open_checked(path), encoding="utf-8") as handle:
        text = handle.read()
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            raise SeawallError(f"secrets file {path} line {number}: expected name=value")
        values[name.strip()] = value.strip()
    return values


def resolve(names: list[str], secrets_file: str | None) -> tuple[dict[str, str], list[str]]:
    """Return (values, missing) for ``names``; the environment wins over the file.

    Raises:
        SeawallError: the file is unsafe, or a value cannot be written where it goes
            (naming the secret and where it came from, never the value).
    """
    from_file = read_file(Path(secrets_file)) if secrets_file else {}
    values: dict[str, str] = {}
    missing: list[str] = []
    for name in names:
        from_env = os.environ.get(env_name(name))
        value = from_env or from_file.get(name)
        if not value:
            missing.append(name)
            continue
        problem = value_problem(name, value)
        if problem:
            source = f"${env_name(name)}" if from_env else f"secrets file {secrets_file}"
            raise SeawallError(f"secret {name} in {source}: {problem}")
        values[name] = value
    return values, missing


def require(
    names: Sequence[str], secrets_file: str | None, owner: str, purpose: str = ""
) -> dict[str, str]:
    """Return the values of ``names`` for ``owner`` (a host's name).

    Raises:
        SeawallError: one is missing, naming the owner, the secrets, ``purpose`` and where
            they were looked for; or unsafe (see ``resolve``).
    """
    values, missing = resolve(list(names), secrets_file)
    if missing:
        raise SeawallError(
            f"{owner}: secrets {', '.join(missing)}{purpose} missing "
            f"(secrets_file or {', '.join('$' + env_name(n) for n in missing)})"
        )
    return values


def write_file(path: Path, values: dict[str, str]) -> None:
    """Write ``values`` as a 0600 secrets file, atomically: a crash leaves the old file or
    the new one, whole, never a mix or an empty file."""
    text = "# seawall lab secrets: generated, never commit\n"
    text += "".join(f"{name}={value}\n" for name, value in values.items())
    # mkstemp creates the file 0600, in the same directory so the rename is atomic.
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)  # the rename itself survives a power loss
    finally:
        os.close(folder)


def ensure_file(path: Path, names: list[str]) -> list[str]:
    """Create or complete a 0600 secrets file with random values; return the names added."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # lexists: a dangling symlink is refused by read_file, not replaced.
    existing = read_file(path) if os.path.lexists(path) else {}
    added = [name for name in names if name not in existing]
    if not added:
        return []
    # token_urlsafe: letters, digits, - and _ only, which every format takes.
    write_file(path, {**existing, **{name: _random.token_urlsafe(24) for name in added}})
    return added

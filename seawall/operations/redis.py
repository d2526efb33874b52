"""Keep the settings file seawall owns in force in a redis.conf that Redis rewrites."""

import shlex

from pyinfra import host
from pyinfra.api import operation

from seawall.facts.redis import ShadowedSettings, shadowed_command


def move_include_last(config: str, managed: str) -> str:
    """Return a shell command that makes ``include managed`` the last line of ``config``."""
    include = shlex.quote(f"include {managed}")
    path = shlex.quote(config)
    pattern = shlex.quote(rf"\|^include {managed}[[:space:]]*$|d")
    return f"sed -i {pattern} {path} && printf '%s\\n' {include} >> {path}"


def include_last_if_shadowed(config: str, managed: str) -> str:
    """Return a shell command that moves the include last only when a later line overrides it.

    For the execute phase: it compares with the managed file as it is then.
    """
    return (
        f'shadowed="$({shadowed_command(config, managed)})"; '
        f'if [ -n "$shadowed" ]; then {move_include_last(config, managed)}; fi'
    )


@operation()
def managed_include_last(config: str, managed: str):
    """
    Make ``managed`` win in ``config``: include it, after any line that overrides it.

    + config: the daemon's own configuration file (Redis rewrites it)
    + managed: the file seawall owns, included from ``config``

    ``CONFIG REWRITE`` (Sentinel sends one at every failover) appends settings
    after the include; a line there that sets another value than ``managed``
    (an old password) would win at the next start. Lines that agree with it,
    and lines it does not set (``replicaof``, which Redis owns), are left alone.

    **Example:**

    .. code:: python

        managed_include_last(
            name="Include the managed settings last in redis.conf",
            config="/etc/redis/redis.conf",
            managed="/etc/redis/seawall.conf",
        )
    """
    shadowed = host.get_fact(ShadowedSettings, config=config, managed=managed)
    if shadowed is None:
        yield f"printf '%s\\n' {shlex.quote(f'include {managed}')} >> {shlex.quote(config)}"
        return
    if not shadowed:
        host.noop(f"no line after the include overrides {managed}")
        return
    host.log(f"{config} overrides {', '.join(shadowed)} after the include: moving it last")
    yield move_include_last(config, managed)

"""Running commands on the controller (this machine), with bounded time and clear errors.

The lab runs its ip, nft and lxc commands through it, and the lab-network guard
(``seawall.netguard``) its ``ip addr`` check.
"""

import subprocess
from collections.abc import Sequence

from seawall.errors import SeawallError


def run(
    args: Sequence[str],
    *,
    timeout: float = 120,
    check: bool = True,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise SeawallError with its stderr.

    Raises:
        SeawallError: the command failed (when ``check``) or ran past ``timeout``.
    """
    try:
        result = subprocess.run(
            list(args), capture_output=True, text=True, timeout=timeout, input=input
        )
    except subprocess.TimeoutExpired:
        raise SeawallError(f"{args[0]} did not finish within {timeout:.0f} s") from None
    except FileNotFoundError:
        raise SeawallError(f"{args[0]} is not installed") from None
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise SeawallError(f"{' '.join(args)} failed ({result.returncode}): " + " | ".join(detail))
    return result

"""Facts about the host itself that pyinfra's own server facts do not give."""

from pyinfra.api import FactBase


class Container(FactBase[str | None]):
    """Returns the container technology the host runs in, or ``None`` on a VM or bare metal.

    .. code:: python

        "lxc"
    """

    def command(self) -> str:
        # It prints "none" and exits 1 outside a container.
        return "systemd-detect-virt --container || true"

    def requires_command(self) -> str:
        return "systemd-detect-virt"

    def process(self, output: list[str]) -> str | None:
        value = output[0].strip() if output else ""
        return None if value in ("", "none") else value

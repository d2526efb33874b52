"""seawall: hardening deploys, a lab of real hosts, and the checks around them."""

from seawall.errors import SeawallError

__all__ = ["SeawallError"]

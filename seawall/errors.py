"""The one exception type the library raises for problems a user must fix."""


class SeawallError(Exception):
    """A user-facing error: bad inventory, missing secret, unreachable lab, failed step."""

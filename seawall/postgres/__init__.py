"""Postgres HA beyond the deploys: status, drills, restore drill, trade-store migration.

Every entry point is a library function returning a report dataclass with
``.ok`` and ``to_json()``; user errors raise :class:`seawall.errors.SeawallError`.
"""

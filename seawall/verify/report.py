"""What `seawall verify` reports: each promise on each host, held or not, and what was seen."""

from dataclasses import dataclass
from typing import Any

from seawall.output import table


@dataclass(frozen=True)
class Check:
    """One promise on one host: whether it holds, and what was seen."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class HostReport:
    host: str
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def check(self, name: str) -> Check:
        """Return the check called ``name``.

        Raises:
            KeyError: this host has no such check.
        """
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(f"{self.host}: no check {name!r}")


@dataclass(frozen=True)
class VerifyReport:
    """Every check on every host of an inventory."""

    hosts: tuple[HostReport, ...]

    @property
    def ok(self) -> bool:
        return all(host.ok for host in self.hosts)

    def failures(self) -> list[tuple[str, str]]:
        """Return (host, check) of every promise that does not hold."""
        return [(h.host, c.name) for h in self.hosts for c in h.checks if not c.ok]

    def rows(self) -> list[tuple[str, str, str, str]]:
        return [
            (host.host, check.name, "ok" if check.ok else "FAIL", check.detail)
            for host in self.hosts
            for check in host.checks
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "failures": [{"host": host, "check": name} for host, name in self.failures()],
            "hosts": {
                host.host: {
                    "ok": host.ok,
                    "checks": [
                        {"name": c.name, "ok": c.ok, "detail": c.detail} for c in host.checks
                    ],
                }
                for host in self.hosts
            },
        }

    def to_text(self) -> str:
        failed = self.failures()
        total = sum(len(host.checks) for host in self.hosts)
        summary = f"{total - len(failed)}/{total} checks hold on {len(self.hosts)} hosts"
        if failed:
            summary += "; failing: " + ", ".join(f"{host} {name}" for host, name in failed)
        return table(["host", "check", "result", "detail"], self.rows()) + "\n" + summary

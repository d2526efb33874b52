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

    def summary(self) -> str:
        """Return one line: how many checks hold, and each failing one with its detail."""
        failed = [(h.host, c) for h in self.hosts for c in h.checks if not c.ok]
        total = sum(len(host.checks) for host in self.hosts)
        line = f"{total - len(failed)}/{total} checks hold on {len(self.hosts)} hosts"
        if failed:
            line += "; failing: " + "; ".join(f"{h} {c.name} ({c.detail})" for h, c in failed)
        return line

    def to_text(self) -> str:
        return table(["host", "check", "result", "detail"], self.rows()) + "\n" + self.summary()


def confirmed(first: VerifyReport, second: VerifyReport, after_s: float) -> VerifyReport:
    """Return ``second`` where a check fails only if it failed in ``first`` too.

    A single slow probe (a /health answered after its 1.5 s timeout on a loaded
    host) is not an outage: a check that failed in one pass only holds, and its
    detail says what the other pass saw, so a flapping promise still shows.
    """
    earlier = {(h.host, c.name): c for h in first.hosts for c in h.checks}
    hosts = []
    for host in second.hosts:
        checks = []
        for check in host.checks:
            before = earlier.get((host.host, check.name))
            if before is None or before.ok == check.ok:
                checks.append(check)
                continue
            if check.ok:
                held, failed, when = check, before, f"{after_s:g} s earlier"
            else:
                held, failed, when = before, check, "now"
            note = f"{held.detail} (failed once, {when}: {failed.detail})"
            checks.append(Check(check.name, True, note))
        hosts.append(HostReport(host.host, tuple(checks)))
    return VerifyReport(tuple(hosts))

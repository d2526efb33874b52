"""Every service's /health on every app host, as one report (``seawall health``)."""

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from seawall import defaults
from seawall.errors import SeawallError
from seawall.inventory import Host, Topology
from seawall.netguard import require_lab_network
from seawall.output import table
from seawall.runtime.health import Status, fetch_health

# An answer that never came is reported as this status (and counts as DOWN).
UNREACHABLE = "UNREACHABLE"


@dataclass(frozen=True)
class ServiceHealth:
    """One service on one host, as its /health answered (or did not)."""

    host: str
    service: str
    url: str
    status: str
    http_status: int | None = None
    latency_ms: float | None = None
    dependencies: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    @property
    def down(self) -> bool:
        return self.status in (Status.DOWN.value, UNREACHABLE)


@dataclass(frozen=True)
class HealthSummary:
    """The report: ``ok`` unless some service is DOWN or did not answer."""

    services: tuple[ServiceHealth, ...]

    @property
    def ok(self) -> bool:
        return not any(s.down for s in self.services)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "services": [asdict(s) for s in self.services]}

    def to_text(self) -> str:
        rows = [
            (
                s.host,
                s.service,
                s.status,
                "-" if s.latency_ms is None else f"{s.latency_ms:.0f} ms",
                s.error
                or ", ".join(f"{n} {st}" for n, st in sorted(s.dependencies.items()))
                or "-",
            )
            for s in self.services
        ]
        down = sum(s.down for s in self.services)
        verdict = "every service answers" if self.ok else f"{down} service(s) DOWN or silent"
        return table(["host", "service", "status", "time", "dependencies"], rows) + f"\n{verdict}"


def _ask(host: str, service: str, url: str, timeout: float) -> ServiceHealth:
    started = time.perf_counter()
    try:
        code, report = fetch_health(url, timeout)
    except (OSError, ValueError) as error:
        return ServiceHealth(host, service, url, UNREACHABLE, error=str(error)[:200])
    return ServiceHealth(
        host,
        service,
        url,
        report.status.value,
        code,
        round((time.perf_counter() - started) * 1000, 1),
        {d.name: d.status.value for d in report.dependencies},
    )


def targets(host: Host) -> list[tuple[str, str, str]]:
    """Return (host, service, /health URL) for every service of the catalogue on ``host``."""
    path = host.data.get("services_health_path") or defaults.SERVICES["services_health_path"]
    return [
        (host.name, str(service["name"]), f"http://{host.address}:{service['port']}{path}")
        for service in host.data.get("services") or defaults.SERVICES["services"]
    ]


def ask_all(targets: list[tuple[str, str, str]], timeout: float = 5.0) -> HealthSummary:
    """Ask every (host, service, URL) at once."""
    with ThreadPoolExecutor(max_workers=max(1, min(32, len(targets)))) as pool:
        return HealthSummary(tuple(pool.map(lambda t: _ask(t[0], t[1], t[2], timeout), targets)))


def collect(topology: Topology, timeout: float = 5.0) -> HealthSummary:
    """Ask every service of the catalogue on every ``app`` host for its /health.

    Raises:
        SeawallError: the inventory has no app host, or (a lab inventory, run from
            outside the lab) the lab's bridge is missing.
    """
    apps = topology.group("app")
    if not apps:
        raise SeawallError(f"{topology.path}: no host in group app")
    # The ops host runs this inside the lab (the restart timer's preflight): no bridge there.
    require_lab_network(topology)
    return ask_all([target for host in apps for target in targets(host)], timeout)

"""A fake pyinfra inventory for the deploys' plans: the lab's hosts, each answering the
Postgres TLS facts a deploy reads from other hosts (``components/postgres.cluster_tls``).

A scenario gives what every member's ``PostgresTls`` and every app host's
``PgbouncerServerTls`` say; any other fact asked of another host fails the test.
"""

from dataclasses import dataclass, field
from typing import Any

from seawall import inventory
from seawall.facts.postgres import PgbouncerServerTls, PostgresTls


@dataclass(frozen=True)
class Scenario:
    postgres: dict[str, Any]
    pgbouncer: str | None


def _member(files: bool, serving: str | None, requires: bool, verifies: bool) -> dict[str, Any]:
    return {"files": files, "serving": serving, "requires": requires, "verifies": verifies}


# A cluster TLS has been rolled onto: members serve, require and verify; PgBouncer verifies.
CONVERGED = Scenario(_member(True, "tls", True, True), "verify-ca")
# A new cluster: no member runs yet, no TLS file anywhere, no PgBouncer configured.
FRESH = Scenario(_member(False, None, False, False), None)
# A cluster deployed before TLS: members serve plain TCP, PgBouncer uses its default.
PLAIN = Scenario(_member(False, "plain", False, False), "disable")
# After the first deploy with TLS on such a cluster: TLS served, PgBouncer asks for it.
SERVED = Scenario(_member(True, "tls", False, False), "prefer")


@dataclass
class Peer:
    """One inventory host as another host's deploy sees it."""

    name: str
    data: dict[str, Any]
    groups: list[str]
    scenario: Scenario
    asked: list[str] = field(default_factory=list)

    def get_fact(self, fact: Any, **kwargs: Any) -> Any:
        self.asked.append(fact.__name__)
        if fact is PostgresTls and "postgres" in self.groups:
            return dict(self.scenario.postgres)
        if fact is PgbouncerServerTls and "app" in self.groups:
            return self.scenario.pgbouncer
        raise AssertionError(f"unexpected fact {fact.__name__} {kwargs} asked of {self.name}")


class FakeInventory:
    """The lab's hosts; ``down``: hosts this run does not reach."""

    def __init__(
        self, lab: inventory.Topology, scenario: Scenario, down: tuple[str, ...] = ()
    ) -> None:
        self.hosts = [Peer(h.name, dict(h.data), list(h.groups), scenario) for h in lab]
        self.down = down

    def __iter__(self) -> Any:
        return iter(self.hosts)

    def get_group(self, name: str, default: Any = None) -> list[Peer]:
        return [one for one in self.hosts if name in one.groups] or default

    def get_active_hosts(self) -> list[Peer]:
        return [one for one in self.hosts if one.name not in self.down]

    def get_host(self, name: str) -> Peer:
        return next(one for one in self.hosts if one.name == name)

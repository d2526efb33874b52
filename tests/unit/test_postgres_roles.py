"""The Postgres roles, their owners and readers, and the role secrets come from the catalogue.

The service catalogue (``defaults.SERVICES``: ``postgres_role``,
``postgres_database``, ``postgres_reads``) is their one source; the drill's role
and database are added. ``BEFORE`` is what defaults.py stated by hand before
they were derived: the derived values, and what the deploys are given, must
stay exactly that. A service added to the catalogue brings its role, its
database and owner, and its secret, with no other edit.
"""

from dataclasses import replace
from typing import Any

import pytest

from seawall import defaults, inventory, redis_acl, secrets, settings
from seawall.components import pgroute, postgres, services
from tests.unit.test_deploy_phases import record

BEFORE: dict[str, Any] = {
    "postgres_service_roles": ["backend", "execution", "risk", "portfolio", "rl", "probe"],
    "postgres_databases": {
        "trading": "execution",
        "backend": "backend",
        "risk": "risk",
        "portfolio": "portfolio",
        "rl": "rl",
        "probe": "probe",
    },
    "postgres_database_readers": {"trading": ["backend", "risk", "portfolio", "rl"]},
    "required_secrets": {
        "redis": ["redis_password", "metrics_scrape_password"],
        "sentinel": ["sentinel_password", "metrics_scrape_password"],
        "postgres": [
            "postgres_superuser_password",
            "postgres_replication_password",
            "postgres_rewind_password",
            "patroni_restapi_password",
            "metrics_scrape_password",
            "postgres_role_backend_password",
            "postgres_role_execution_password",
            "postgres_role_risk_password",
            "postgres_role_portfolio_password",
            "postgres_role_rl_password",
            "postgres_role_probe_password",
        ],
        "etcd": ["metrics_scrape_password"],
        "app": [
            "redis_password",
            "sentinel_password",
            "metrics_scrape_password",
            "postgres_role_backend_password",
            "postgres_role_execution_password",
            "postgres_role_risk_password",
            "postgres_role_portfolio_password",
            "postgres_role_rl_password",
            "postgres_role_probe_password",
        ],
        "gateway": ["metrics_scrape_password"],
        "ops": ["metrics_scrape_password", "pgbackrest_cipher_pass", "prometheus_api_password"],
    },
}

AUDIT = {
    "name": "audit",
    "port": 8007,
    "route": "/api/audit/",
    "needs": ["redis", "postgres"],
    "postgres_role": "audit",
    "postgres_reads": ["trading"],
}


def _service_roles(plan: list[dict[str, Any]]) -> dict[str, Any]:
    (call,) = [op for op in plan if op["op"] == "seawall.service_roles"]
    return call


def test_the_derived_values_are_the_ones_stated_before() -> None:
    for key, value in BEFORE.items():
        if key == "required_secrets":
            # Plus the Redis ACL users' secrets (tests/unit/test_redis_acl.py).
            names = [s["name"] for s in defaults.SERVICES["services"]]
            value = redis_acl.required_secrets(value, names)
        assert settings.setting({}, key) == value, key
    # pyinfra's data_defaults (pgroute reads them as host data) carry the same.
    for key in settings.DERIVED:
        assert defaults.POSTGRES[key] == BEFORE[key], key


def test_the_lab_inventory_sees_the_derived_values(lab: inventory.Topology) -> None:
    for host in lab:
        for key in settings.DERIVED:
            assert host.data[key] == BEFORE[key], (host.name, key)
    assert "postgres_role_probe_password" in lab.host("app-1").required_secrets
    assert "postgres_role_rl_password" in lab.host("data-2").required_secrets


def test_the_deploys_are_given_the_same_roles_owners_grants_and_secrets(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    call = _service_roles(record(monkeypatch, lab, postgres, "data-1"))
    assert list(call["passwords"]) == BEFORE["postgres_service_roles"]
    assert call["databases"] == BEFORE["postgres_databases"]
    assert call["readers"] == BEFORE["postgres_database_readers"]
    data = dict(lab.host("app-1").data)
    context = pgroute.pgroute_context(data, [], {})
    assert context["databases"] == sorted(BEFORE["postgres_databases"])
    execution = next(s for s in defaults.SERVICES["services"] if s["name"] == "execution")
    assert services.postgres_database(data, execution["postgres_role"]) == "trading"


def test_a_new_catalogue_entry_brings_its_role_owner_and_secret(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    catalogue = [*defaults.SERVICES["services"], AUDIT]
    data = {"services": catalogue}
    assert settings.setting(data, "postgres_service_roles") == [
        *BEFORE["postgres_service_roles"][:-1],
        "audit",
        "probe",
    ]
    assert settings.setting(data, "postgres_databases") == {
        **BEFORE["postgres_databases"],
        "audit": "audit",
    }
    assert settings.setting(data, "postgres_database_readers") == {
        "trading": [*BEFORE["postgres_database_readers"]["trading"], "audit"]
    }
    wanted = settings.setting(data, "required_secrets")
    before = redis_acl.required_secrets(BEFORE["required_secrets"], [s["name"] for s in catalogue])
    for group in ("postgres", "app"):
        assert sorted(wanted[group]) == sorted([*before[group], "postgres_role_audit_password"])

    # The inventory model and the Postgres deploy see it too, from the catalogue alone.
    topology = replace(
        lab, hosts=tuple(replace(h, data={**h.data, "services": catalogue}) for h in lab.hosts)
    )
    monkeypatch.setenv(secrets.env_name("postgres_role_audit_password"), "audit-secret")
    assert "postgres_role_audit_password" in topology.host("data-1").required_secrets
    call = _service_roles(record(monkeypatch, topology, postgres, "data-1"))
    assert "audit" in call["passwords"]
    assert call["databases"]["audit"] == "audit"
    assert "audit" in call["readers"]["trading"]

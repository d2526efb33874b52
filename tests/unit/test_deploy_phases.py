"""The services, Postgres and backup deploys emit the same operations, in the same order.

Splitting a deploy into ``_install``, ``_configure`` and ``_activate`` must not
change what it does: pyinfra orders operations by where they are called, and
their names show in the output and in the lab's "second deploy changes nothing"
check. Each deploy runs on a fake host for every kind of host it treats
differently; every operation call is recorded with its arguments (file contents
included, ``_if`` as the names of the operations it depends on) and compared
with ``deploy_plans.json``, recorded from the deploys before the split.

Regenerate the file only for an intended change:
``SEAWALL_RECORD_PLANS=1 .venv/bin/pytest tests/unit/test_deploy_phases.py``.
"""

import json
import os
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from pyinfra.api import HiddenValue
from pyinfra.facts.files import File

from seawall import inventory, names, secrets
from seawall.components import common, etcd, pgbackrest, postgres, services
from seawall.facts.deb import DebInstallState
from seawall.facts.patroni import PatroniStore
from seawall.facts.systemd import UnitState
from tests.unit.test_common_templates import Call, FakeHost, Recorder, record_seawall_ops
from tests.unit.test_services_plan import no_users
from tests.unit.tls_inventory import CONVERGED, FRESH, FakeInventory

ROOT = Path(__file__).resolve().parents[2]
PLANS = Path(__file__).with_name("deploy_plans.json")
SECRET_VALUE = "s3cret-value-never-printed"
SECRET_NAMES = (
    "redis_password",
    "sentinel_password",
    "postgres_superuser_password",
    "postgres_replication_password",
    "postgres_rewind_password",
    "patroni_restapi_password",
    *(f"postgres_role_{r}_password" for r in ("backend", "execution", "risk", "portfolio", "rl")),
    "postgres_role_probe_password",
    "pgbackrest_cipher_pass",
)


def _normal(value: Any) -> Any:
    """A JSON-able stand-in for an operation argument."""
    if isinstance(value, Call):
        return f"<{value.name}>"
    if isinstance(value, StringIO):
        return value.getvalue()
    if isinstance(value, HiddenValue):
        return f"<hidden {value.unmask()}>"
    if isinstance(value, _Changed):
        return {"any_changed": [_normal(call) for call in value.calls]}
    if callable(value) and isinstance(getattr(value, "__self__", None), Call):
        return {"did_change": value.__self__.name}
    if isinstance(value, dict):
        return {str(k): _normal(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normal(v) for v in value]
    if isinstance(value, str) and value.startswith(str(ROOT)):
        return value.removeprefix(str(ROOT))
    return value


class _Changed:
    def __init__(self, *calls: Any) -> None:
        self.calls = calls


def record(
    monkeypatch: pytest.MonkeyPatch,
    lab: inventory.Topology,
    module: Any,
    name: str,
    was_running: bool = True,
    store: str | None = "https",
    restart_marker: bool = False,
) -> list[dict[str, Any]]:
    """Run ``module``'s deploy for lab host ``name`` on a fake host; return its operations.

    ``store``: the protocol Patroni's file names before the deploy (``PatroniStore``);
    ``restart_marker``: the host holds ``names.PATRONI_RESTART_MARKER``.
    """
    lab_host = lab.host(name)
    data = dict(lab_host.data) | {"secrets_file": None}
    for secret in SECRET_NAMES:
        monkeypatch.setenv(secrets.env_name(secret), SECRET_VALUE)
    unit = f"patroni@{data['postgres_version']}-{data['postgres_cluster']}.service"
    facts: dict[tuple[Any, ...], Any] = {
        (DebInstallState,): {"installed": {}, "policy_rc_d": None},
        (UnitState, ("unit", unit)): {"sub": "running" if was_running else "dead"},
        (PatroniStore, ("config", names.patroni_config_path(data))): store,
        (File, ("path", names.PATRONI_RESTART_MARKER)): {"mode": 644} if restart_marker else None,
    }
    facts[no_users(data)] = {}
    fake = FakeHost(data=data, groups=list(lab_host.groups), facts=facts, name=name)
    calls: list[Call] = []
    # A running cluster has TLS rolled on; a fresh one has nothing yet.
    fake_inventory = FakeInventory(lab, CONVERGED if was_running else FRESH)
    # Recorded before every Redis had the ACL users: the services keep the shared passwords.
    monkeypatch.setattr(services, "_acl_ready", lambda: False)
    for target in (common, etcd, postgres, pgbackrest, services):
        monkeypatch.setattr(target, "host", fake)
        monkeypatch.setattr(target, "inventory", fake_inventory, raising=False)
        for ops in ("apt", "files", "server", "systemd"):
            monkeypatch.setattr(target, ops, Recorder(ops, calls), raising=False)
        monkeypatch.setattr(target, "any_changed", _Changed, raising=False)
        record_seawall_ops(monkeypatch, target, calls)
    deploy = {
        postgres: "deploy_postgres",
        pgbackrest: "deploy_pgbackrest",
        services: "deploy_services",
    }
    getattr(module, deploy[module])._inner()
    return [{"op": call.op, **_normal(call.kwargs)} for call in calls]


CASES: dict[str, tuple[Any, str, bool]] = {
    "services app-1": (services, "app-1", True),
    "services data-1 (not an app host)": (services, "data-1", True),
    "postgres data-1 (first member, running)": (postgres, "data-1", True),
    "postgres data-1 (first member, fresh)": (postgres, "data-1", False),
    "postgres data-2 (running)": (postgres, "data-2", True),
    "postgres app-1 (not a member: trusts the CA)": (postgres, "app-1", True),
    "postgres ops-1 (the Postgres CA)": (postgres, "ops-1", True),
    "postgres gw-1 (neither)": (postgres, "gw-1", True),
    "backup ops-1 (repository)": (pgbackrest, "ops-1", True),
    "backup data-1 (Postgres host)": (pgbackrest, "data-1", True),
    "backup app-1 (neither)": (pgbackrest, "app-1", True),
}


def plans(monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology) -> dict[str, Any]:
    out = {}
    for case, (module, name, was_running) in CASES.items():
        with monkeypatch.context() as patch:
            out[case] = record(patch, lab, module, name, was_running)
    return out


def test_each_deploy_emits_the_recorded_operations_in_order(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    got = plans(monkeypatch, lab)
    if os.environ.get("SEAWALL_RECORD_PLANS"):
        PLANS.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    want = json.loads(PLANS.read_text(encoding="utf-8"))
    assert list(got) == list(CASES)
    for case in CASES:
        names = [(op["op"], op.get("name")) for op in got[case]]
        assert names == [(op["op"], op.get("name")) for op in want[case]], case
        assert got[case] == want[case], case
    # The plans are not empty where the host has work: the comparison means something.
    assert len(got["services app-1"]) > 20 and len(got["postgres data-1 (first member, fresh)"]) > 8
    assert len(got["backup ops-1 (repository)"]) > 8 and got["backup app-1 (neither)"] == []

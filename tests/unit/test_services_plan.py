"""The services and gateway deploys on a fake host that raises on any fact it was not given.

Operations are recorded instead of run; what matters is which run, in what order,
and what gates their restarts and reloads.
"""

import json
from types import SimpleNamespace
from typing import Any

import pytest
from pyinfra.api.exceptions import DeployError

from seawall import defaults, inventory, redis_acl, secrets
from seawall.components import common, gateway, services
from seawall.facts.server import PasswdEntries
from seawall.names import catalogue, user_name
from tests.unit.test_common_templates import Call, FakeHost, Recorder

SECRET_VALUE = "s3cret-value-never-printed"


def fake_inventory(lab: inventory.Topology) -> SimpleNamespace:
    return SimpleNamespace(
        get_group=lambda name, default=None: [
            SimpleNamespace(name=h.name, data=dict(h.data)) for h in lab.group(name)
        ]
    )


def no_users(data: dict[str, Any]) -> tuple[Any, ...]:
    """The key of the one passwd fact the services deploy asks (its answer: which exist)."""
    users = tuple(user_name(data, service) for service in catalogue(data))
    return (PasswdEntries, ("users", users))


def plan(
    monkeypatch: pytest.MonkeyPatch,
    lab: inventory.Topology,
    module: Any,
    name: str,
    facts: dict[tuple[Any, ...], Any] | None = None,
    secret_names: tuple[str, ...] = ("redis_password", "sentinel_password"),
    acl: bool = False,
) -> list[Call]:
    lab_host = lab.host(name)
    data = dict(lab_host.data) | {"secrets_file": None}
    for secret in [
        *secret_names,
        *(
            f"postgres_role_{r}_password"
            for r in ("backend", "execution", "risk", "portfolio", "rl")
        ),
    ]:
        monkeypatch.setenv(secrets.env_name(secret), SECRET_VALUE)
    facts = {no_users(data): {}} | (facts or {})
    fake = FakeHost(data=data, groups=list(lab_host.groups), facts=facts, name=name)
    calls: list[Call] = []
    # pyinfra's context, where the deploy and the shared helpers (host_secrets,
    # group_members in common) read it.
    for target in (module, common):
        monkeypatch.setattr(target, "host", fake)
        if hasattr(target, "inventory"):
            monkeypatch.setattr(target, "inventory", fake_inventory(lab))
    for ops in ("files", "server", "systemd"):
        monkeypatch.setattr(module, ops, Recorder(ops, calls), raising=False)
    recorder = Recorder("seawall", calls)
    monkeypatch.setattr(
        module,
        "install_packages",
        lambda name, packages: calls.append(
            Call("seawall.install_packages", {"name": name, "packages": packages})
        ),
    )
    if module is services:
        monkeypatch.setattr(module, "secret_file", recorder.secret_file)
        # Whether every Redis has the ACL users (asked of the redis hosts in a real run).
        monkeypatch.setattr(module, "_acl_ready", lambda: acl)
        services.deploy_services._inner()
    else:
        monkeypatch.setattr(module, "validated_file", recorder.validated_file)
        gateway.deploy_gateway._inner()
    return calls


def by_name(calls: list[Call]) -> dict[str, Call]:
    return {call.name: call for call in calls if "name" in call.kwargs}


@pytest.mark.parametrize("name", ["data-1", "gw-1", "ops-1"])
def test_services_leave_other_hosts_alone(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology, name: str
) -> None:
    assert plan(monkeypatch, lab, services, name) == []


def test_only_a_missing_or_changed_service_account_is_passed_to_server_user(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    data = dict(lab.host("app-1").data)
    users = [user_name(data, service) for service in catalogue(data)]
    entries = {u: {"home": f"/var/lib/{u}", "shell": "/usr/sbin/nologin"} for u in users}
    entries[users[1]]["shell"] = "/bin/bash"
    del entries[users[2]]
    calls = plan(monkeypatch, lab, services, "app-1", facts={no_users(data): entries})
    made = [call.kwargs["user"] for call in calls if call.name.startswith("Create the system user")]
    assert made == users[1:3]
    assert all(c.kwargs["shell"] == "/usr/sbin/nologin" for c in calls if c.name in made)


def test_services_plan_installs_then_configures_then_activates(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    calls = plan(monkeypatch, lab, services, "app-1")
    names = [call.name for call in calls]
    assert names[0] == "Install the services' Python runtime"
    first_restart = next(i for i, n in enumerate(names) if n.startswith("Restart "))
    assert all(
        not n.startswith(("Install the unit", "Write the settings")) for n in names[first_restart:]
    )
    for service in defaults.SERVICES["services"]:
        assert f"Install the unit of {service['name']}" in names
        assert f"Run {service['name']} now and at boot" in names


def test_a_restart_happens_only_when_something_of_its_own_changed(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    calls = by_name(plan(monkeypatch, lab, services, "app-1"))
    restart = calls["Restart execution (its unit, settings, secrets or code changed)"]
    assert restart.kwargs["_serial"] is True
    # A running instance restarts, then the gateway's fail_timeout (5 s) + 1 passes.
    assert "systemctl restart quantum-execution.service && sleep 6" in restart.kwargs["commands"][0]
    gate = restart.kwargs["_if"]
    assert gate() is False
    calls["Install the secrets of execution"].changed = True
    assert gate() is True
    calls["Install the secrets of execution"].changed = False
    # Another service's unit changing does not restart this one.
    calls["Install the unit of marketdata"].changed = True
    assert gate() is False


def test_secrets_go_only_into_the_secret_file(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    calls = plan(monkeypatch, lab, services, "app-1")
    for call in calls:
        if call.op == "seawall.secret_file":
            assert SECRET_VALUE in call.kwargs["src"]
            assert call.kwargs["dest"].startswith(defaults.SERVICES["services_secrets_dir"])
        else:
            assert SECRET_VALUE not in repr(call.kwargs), call.name


def test_a_missing_secret_stops_the_deploy_naming_host_and_secret(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    monkeypatch.delenv(secrets.env_name("sentinel_password"), raising=False)
    with pytest.raises(
        DeployError, match=r"app-1: secrets sentinel_password \(for service [a-z-]+\) missing"
    ):
        plan(monkeypatch, lab, services, "app-1", secret_names=("redis_password",))


@pytest.mark.parametrize("acl", [False, True])
def test_a_service_gets_its_own_redis_user_once_every_redis_has_it(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology, acl: bool
) -> None:
    names: tuple[str, ...] = ("redis_password", "sentinel_password")
    if acl:
        names = (redis_acl.SENTINEL_CLIENT_SECRET, redis_acl.service_secret("execution"))
        names += tuple(redis_acl.service_secret(s["name"]) for s in defaults.SERVICES["services"])
    # Each secret its own value: the file shows which one went where.
    for name in names:
        monkeypatch.setenv(secrets.env_name(name), f"value-of-{name}")
    calls = by_name(plan(monkeypatch, lab, services, "app-1", secret_names=(), acl=acl))
    env = calls["Install the secrets of execution"].kwargs["src"].splitlines()
    settings = json.loads(calls["Write the settings of execution"].kwargs["src"].getvalue())
    redis = settings["redis"]
    assert redis["key_prefix"] == "svc:execution:"
    if acl:
        assert "SEAWALL_REDIS_PASSWORD=value-of-redis_service_execution_password" in env
        assert "SEAWALL_SENTINEL_PASSWORD=value-of-sentinel_client_password" in env
        assert (redis["username"], redis["sentinel_username"]) == ("quantum-execution", "client")
    else:
        assert "SEAWALL_REDIS_PASSWORD=value-of-redis_password" in env
        assert "SEAWALL_SENTINEL_PASSWORD=value-of-sentinel_password" in env
        assert "username" not in redis and "sentinel_username" not in redis

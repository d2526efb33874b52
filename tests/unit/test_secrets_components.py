"""The Redis and PgBouncer deploys hand their secrets only to secret_file.

Each deploy runs on a fake host (facts given, operations recorded) with every
secret set to one value; that value may only be the content of a
``secret_file`` call, which is named (pyinfra prints an unnamed operation's
arguments). ``files.put`` contents are what ``pyinfra --diff`` prints: none may
hold it. (The Postgres, services and backup deploys: test_secrets_plans.py;
the metrics deploy: test_metrics_plan.py.)
"""

import ast
from pathlib import Path
from typing import Any

import pytest
from pyinfra.facts.files import File

from seawall import inventory, secrets
from seawall.components import common, pgroute, postgres, redis
from seawall.facts.deb import DebInstallState
from seawall.facts.postgres import PgbouncerServerTls
from seawall.facts.redis import RedisAclFile, RedisRole, SentinelMasterSettings
from seawall.names import PGBOUNCER_INI, postgres_tls_files
from tests.unit.test_common_templates import Call, FakeHost, Recorder
from tests.unit.tls_inventory import CONVERGED, FakeInventory

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cret-component-never-printed"


class _Data(dict[str, Any]):
    """Host data read both ways, as pyinfra's HostData is (``data["x"]``, ``data.x``)."""

    def __getattr__(self, key: str) -> Any:
        return self[key]


def _record(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology, module: Any, name: str
) -> list[Call]:
    lab_host = lab.host(name)
    for host in lab:
        for secret in host.required_secrets:
            monkeypatch.setenv(secrets.env_name(secret), SECRET)
    data = _Data(dict(lab_host.data) | {"secrets_file": None})
    facts: dict[tuple[Any, ...], Any] = {
        (DebInstallState,): {"installed": {}, "policy_rc_d": None},
        (RedisRole, ("port", data.get("redis_port", 6379))): {"role": "master"},
        (
            SentinelMasterSettings,
            ("master", data.get("sentinel_master_name", "")),
            ("port", data.get("sentinel_port", 26379)),
        ): None,
    }
    # PgBouncer's TLS (components/pgroute.py): a cluster TLS has been rolled onto.
    facts[(PgbouncerServerTls, ("path", PGBOUNCER_INI))] = "verify-ca"
    facts[(File, ("path", postgres_tls_files(data)["ca"]))] = {"mode": 644}
    fake = FakeHost(data=data, groups=list(lab_host.groups), facts=facts, name=name)
    calls: list[Call] = []
    seawall_ops = Recorder("seawall", calls)
    fake_inventory = FakeInventory(lab, CONVERGED)
    for target in (common, module):
        monkeypatch.setattr(target, "host", fake)
        monkeypatch.setattr(target, "inventory", fake_inventory, raising=False)
        for ops in ("apt", "files", "server", "systemd"):
            monkeypatch.setattr(target, ops, Recorder(ops, calls), raising=False)
        for op in ("validated_file", "secret_file", "managed_include_last", "tls_ready"):
            if hasattr(target, op):
                monkeypatch.setattr(target, op, getattr(seawall_ops, op))
    # PgBouncer's TLS mode comes from the Postgres deploy's reading of the cluster.
    monkeypatch.setattr(postgres, "inventory", fake_inventory)
    monkeypatch.setattr(module, "any_changed", lambda *calls: calls, raising=False)
    if module is redis:
        master = (str(lab.group("redis")[0].data["private_address"]), 6379)
        # Every Redis runs with the ACL file: the Sentinel's user password is written too.
        monkeypatch.setattr(redis, "acl_ready", lambda hosts: True)
        facts[(RedisAclFile, ("port", 6379))] = redis.USERS_ACL
        monkeypatch.setattr(
            redis,
            "plan_redis",
            lambda *args: redis.RedisPlan(
                master=master, initialised=True, replicaof=None, sentinel_master=master
            ),
        )
        redis.deploy_redis._inner()
    else:
        module.deploy_pgroute._inner()
    return calls


def _holds(value: Any) -> bool:
    if isinstance(value, Call):
        return False  # another operation (an ``_if``): checked on its own
    if callable(value) and isinstance(getattr(value, "__self__", None), Call):
        return False  # ``_if=op.did_change``
    if isinstance(value, dict):
        return any(_holds(item) for item in value.values())
    if isinstance(value, list | tuple):
        return any(_holds(item) for item in value)
    if hasattr(value, "getvalue"):
        return SECRET in value.getvalue()
    return SECRET in str(value)


@pytest.mark.parametrize(
    ("module", "host", "files"),
    [
        (
            redis,
            "data-1",
            {
                "/etc/redis/seawall-cli.auth",
                "/etc/redis/seawall-sentinel-cli.auth",
                redis.MANAGED_CONF,
                redis.SENTINEL_CONF,
                redis.SENTINEL_REDIS_AUTH,
            },
        ),
        (pgroute, "app-1", {pgroute.PGBOUNCER_USERS}),
    ],
    ids=["redis", "pgroute"],
)
def test_secrets_go_only_through_secret_file(
    monkeypatch: pytest.MonkeyPatch,
    lab: inventory.Topology,
    module: Any,
    host: str,
    files: set[str],
) -> None:
    calls = _record(monkeypatch, lab, module, host)
    holding = [c for c in calls if _holds(c.kwargs)]
    assert all(c.op == "seawall.secret_file" for c in holding), [c.op for c in holding]
    for call in holding:
        assert [k for k in call.kwargs if _holds(call.kwargs[k])] == ["src"], call.name
    assert {c.kwargs["dest"] for c in holding} == files
    # Daemons read these: their directories are left as they are, the file gets the group.
    assert all(c.kwargs.get("private_dir") is False for c in holding)


def test_every_secret_file_call_is_named() -> None:
    unnamed = []
    for path in sorted(ROOT.glob("seawall/**/*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "secret_file"
                and not any(k.arg == "name" for k in node.keywords)
            ):
                unnamed.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert unnamed == []

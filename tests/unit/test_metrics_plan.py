"""The metrics deploy's operations on a fake host for each kind of lab host (no lab needed).

The fake host answers only the facts given and raises on any other; every
operation call is recorded with its arguments, ``_if`` as the names of the
operations it waits on.
"""

import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.systemd import SystemdStatus

from seawall import inventory, redis_acl, secrets
from seawall.components import common, metrics, templates
from seawall.facts.deb import DebInstallState
from seawall.facts.metrics import BasicAuthHash
from tests.unit.test_common_templates import Call, FakeHost, Recorder

SECRET = "redis-s3cret-never-printed"
SENTINEL_SECRET = "sentinel-s3cret-never-printed"
SCRAPE_SECRET = "scrape-s3cret-never-printed"
API_SECRET = "api-s3cret-never-printed"
EXPORTER_SECRET = "exporter-s3cret-never-printed"
API_WEB = "Admit only seawall to Prometheus's own API (basic auth, a bcrypt hash)"
UNITS = {
    f"{p}.service"
    for p in (
        metrics.NODE,
        metrics.REDIS,
        metrics.POSTGRES,
        metrics.NGINX,
        metrics.MTAIL,
        metrics.BLACKBOX,
        metrics.PROMETHEUS,
    )
}


class Changed:
    """Stands in for ``any_changed`` / ``_unchanged``: remembers which operations it reads."""

    def __init__(self, kind: str, *calls: Call) -> None:
        self.kind = kind
        self.calls = calls

    def names(self) -> list[str]:
        return [call.name for call in self.calls]


def plan(
    monkeypatch: pytest.MonkeyPatch,
    lab: inventory.Topology,
    tmp_path: Path,
    name: str,
    running: bool,
    hashes: dict[str, str | None] | None = None,
    scrape_secret: str = SCRAPE_SECRET,
    api_hash: str | None = None,
    acl_ready: bool = False,
) -> list[Call]:
    """Run deploy_metrics for lab host ``name``; ``running``: its daemons ran before;
    ``hashes``: each exporter's web configuration hash on the host (default: none);
    ``api_hash``: Prometheus's own; ``acl_ready``: every Redis has the ACL users."""
    (tmp_path / metrics.CONCERN).mkdir(exist_ok=True)
    (tmp_path / metrics.CONCERN / metrics.ALERTS_SOURCE).write_text("groups: []\n")
    (tmp_path / metrics.CONCERN / metrics.MTAIL_SOURCE).write_text(
        "counter lines\n/./ {\n  lines++\n}\n"
    )
    monkeypatch.setattr(templates, "FILES", tmp_path)
    monkeypatch.setenv(secrets.env_name("redis_password"), SECRET)
    monkeypatch.setenv(secrets.env_name("sentinel_password"), SENTINEL_SECRET)
    monkeypatch.setenv(secrets.env_name(metrics.SCRAPE_SECRET), scrape_secret)
    monkeypatch.setenv(secrets.env_name(metrics.API_SECRET), API_SECRET)
    monkeypatch.setenv(secrets.env_name(redis_acl.EXPORTER_SECRET), EXPORTER_SECRET)
    lab_host = lab.host(name)
    units = tuple(f"{p}.service" for p in metrics.host_packages(list(lab_host.groups)))
    facts: dict[tuple[Any, ...], Any] = {
        (DebInstallState,): {"installed": {}, "policy_rc_d": None},
        (SystemdStatus, ("services", units)): dict.fromkeys(UNITS, True) if running else {},
    }
    for package in metrics.WEB_CONFIG_JOBS:
        key = (("path", metrics.web_config_file(package)), ("user", "prometheus"))
        facts[(BasicAuthHash, *key)] = (hashes or {}).get(package)
    api_key = (("path", metrics.PROMETHEUS_WEB_CONFIG), ("user", "seawall"))
    facts[(BasicAuthHash, *api_key)] = api_hash
    data = dict(lab_host.data) | {"secrets_file": None}
    fake = FakeHost(data=data, groups=list(lab_host.groups), facts=facts, name=name)
    calls: list[Call] = []
    for target in (common, metrics):
        monkeypatch.setattr(target, "host", fake)
        for ops in ("apt", "files", "server", "systemd"):
            monkeypatch.setattr(target, ops, Recorder(ops, calls), raising=False)
    seawall_ops = Recorder("seawall", calls)
    for op in ("validated_file", "secret_file", "monitoring_role"):
        monkeypatch.setattr(metrics, op, getattr(seawall_ops, op))
    monkeypatch.setattr(metrics, "inventory", list(lab))
    monkeypatch.setattr(metrics, "_acl_ready", lambda: acl_ready)
    monkeypatch.setattr(metrics, "any_changed", lambda *c: Changed("any", *c))
    monkeypatch.setattr(metrics, "_unchanged", lambda *c: Changed("none", *c))
    metrics.deploy_metrics._inner()
    return calls


def by_name(calls: list[Call]) -> dict[str, Call]:
    return {call.name: call for call in calls}


def content(call: Call) -> str:
    src = call.kwargs["src"]
    return src.getvalue() if isinstance(src, StringIO) else str(src)


def test_every_host_gets_node_exporter_and_only_its_roles_packages(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology, tmp_path: Path
) -> None:
    want = {
        "data-1": ["prometheus-node-exporter", metrics.REDIS, metrics.POSTGRES],
        "data-3": ["prometheus-node-exporter", metrics.REDIS],
        "app-1": ["prometheus-node-exporter"],
        "gw-1": ["prometheus-node-exporter", metrics.NGINX, metrics.MTAIL],
        "ops-1": ["prometheus-node-exporter", metrics.BLACKBOX, metrics.PROMETHEUS],
    }
    for name, packages in want.items():
        with monkeypatch.context() as patch:
            calls = plan(patch, lab, tmp_path, name, running=True)
        (install,) = [c for c in calls if c.op == "apt.packages"]
        assert install.kwargs["packages"] == packages, name
        started = {c.kwargs["service"] for c in calls if c.name.startswith("Run ")}
        assert started == {f"{p}.service" for p in packages}, name
        assert all(c.kwargs.get("enabled") for c in calls if c.name.startswith("Run "))


def test_the_redis_password_reaches_only_the_secret_file(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology, tmp_path: Path
) -> None:
    calls = plan(monkeypatch, lab, tmp_path, "data-1", running=True)
    for value in (SECRET, SENTINEL_SECRET):
        holding = [c for c in calls if value in repr(c.kwargs) or value in content_or_empty(c)]
        assert [c.op for c in holding] == ["seawall.secret_file"]
    (secret,) = holding
    address = lab.host("data-1").address
    assert json.loads(secret.kwargs["src"]) == {
        "redis://127.0.0.1:6379": SECRET,
        f"redis://{address}:26379": SENTINEL_SECRET,
    }
    assert secret.kwargs["dest"] == metrics.redis_secret_file(lab.host("data-1").data)
    dropin = by_name(calls)["Give the redis exporter its passwords from the root-only file"]
    assert f" {secret.kwargs['dest']} " in content(dropin)
    restart = by_name(calls)["Restart prometheus-redis-exporter (its settings changed)"]
    assert restart.kwargs["_if"].names() == [
        "Configure prometheus-redis-exporter",
        secret.name,
        dropin.name,
    ]


def content_or_empty(call: Call) -> str:
    return content(call) if "src" in call.kwargs else ""


def test_the_exporter_logs_in_as_its_own_user_once_every_redis_has_the_acl_users(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology, tmp_path: Path
) -> None:
    calls = plan(monkeypatch, lab, tmp_path, "data-1", running=True, acl_ready=True)
    # Neither admin secret reaches anything of the exporter's; its own only its file.
    for value in (SECRET, SENTINEL_SECRET):
        assert not [c for c in calls if value in repr(c.kwargs) or value in content_or_empty(c)]
    holding = [
        c
        for c in calls
        if EXPORTER_SECRET in repr(c.kwargs) or EXPORTER_SECRET in content_or_empty(c)
    ]
    assert [c.name for c in holding] == ["Install the redis exporter's passwords (root-only)"]
    address = lab.host("data-1").address
    # One user for every target (REDIS_USER): the Redis and the Sentinel both take its secret.
    assert json.loads(holding[0].kwargs["src"]) == {
        "redis://127.0.0.1:6379": EXPORTER_SECRET,
        f"redis://{address}:26379": EXPORTER_SECRET,
    }
    dropin = content(
        by_name(calls)["Give the redis exporter its passwords from the root-only file"]
    )
    assert f"Environment=REDIS_USER={redis_acl.EXPORTER_USER}" in dropin.splitlines()
    # The user name travels in the drop-in's environment, never in ARGS.
    args = content(by_name(calls)["Configure prometheus-redis-exporter"])
    assert "user" not in args.split("ARGS=")[1].lower()
    restart = by_name(calls)["Restart prometheus-redis-exporter (its settings changed)"]
    assert holding[0].name in restart.kwargs["_if"].names()


def test_the_exporter_stays_default_while_a_redis_lacks_the_acl_users(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology, tmp_path: Path
) -> None:
    calls = plan(monkeypatch, lab, tmp_path, "data-1", running=True, acl_ready=False)
    assert not [c for c in calls if EXPORTER_SECRET in repr(c.kwargs) + content_or_empty(c)]
    dropin = content(
        by_name(calls)["Give the redis exporter its passwords from the root-only file"]
    )
    assert not [line for line in dropin.splitlines() if "REDIS_USER=" in line]
    secret = by_name(calls)["Install the redis exporter's passwords (root-only)"]
    assert set(json.loads(secret.kwargs["src"]).values()) == {SECRET, SENTINEL_SECRET}


def test_postgres_role_is_made_on_the_leader_for_the_exporters_user(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology, tmp_path: Path
) -> None:
    calls = plan(monkeypatch, lab, tmp_path, "data-2", running=True)
    (role,) = [c for c in calls if c.op == "seawall.monitoring_role"]
    assert role.kwargs["role"] == "prometheus" and role.kwargs["group"] == "pg_monitor"
    assert role.kwargs["config"] == "/etc/patroni/15-main.yml"
    # Its exporter starts after the role exists.
    names = [c.name for c in calls]
    assert names.index(role.name) < names.index(f"Run {metrics.POSTGRES} now and at boot")


def test_running_daemons_restart_on_settings_and_reload_on_configuration(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology, tmp_path: Path
) -> None:
    calls = by_name(plan(monkeypatch, lab, tmp_path, "ops-1", running=True))
    restart = calls["Restart prometheus (its settings changed)"]
    # Its ARGS, or who may log in to it (exporter-toolkit reads that file once, at start).
    assert restart.kwargs["restarted"] and restart.kwargs["_if"].names() == [
        "Configure prometheus",
        API_WEB,
    ]
    reload = calls["Reload prometheus (its configuration changed)"]
    changed, unchanged = reload.kwargs["_if"]
    assert changed.kind == "any" and changed.names() == [
        "Install the alert rules (checked by promtool first)",
        "Configure Prometheus's targets (checked by promtool first)",
        "Install the exporters' scrape password (for Prometheus only)",
        "Install Prometheus's own API password (its self-scrape sends it)",
    ]
    # Not both: a restart already reads the new configuration.
    assert unchanged.kind == "none" and unchanged.names() == ["Configure prometheus", API_WEB]
    checks = {
        c.kwargs["dest"]: c.kwargs["validate"] for c in calls.values() if "validate" in c.kwargs
    }
    assert checks == {
        metrics.BLACKBOX_YML: f"{metrics.BLACKBOX} --config.check --config.file={{path}}",
        metrics.ALERTS_YML: "promtool check rules {path}",
        metrics.PROMETHEUS_YML: "promtool check config {path}",
    }
    assert calls["Install the alert rules (checked by promtool first)"].kwargs["src"] == (
        "groups: []\n"
    )


def test_rules_are_installed_before_the_configuration_that_reads_them(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology, tmp_path: Path
) -> None:
    names = [c.name for c in plan(monkeypatch, lab, tmp_path, "ops-1", running=True)]
    rules = names.index("Install the alert rules (checked by promtool first)")
    assert rules < names.index("Configure Prometheus's targets (checked by promtool first)")


def test_mtail_restarts_on_a_new_program(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology, tmp_path: Path
) -> None:
    calls = by_name(plan(monkeypatch, lab, tmp_path, "gw-1", running=True))
    program = calls["Install the gateway's mtail program (compiled by mtail first)"]
    assert program.kwargs["dest"] == "/etc/mtail/gateway.mtail"
    assert program.kwargs["validate"] == metrics.MTAIL_CHECK
    assert calls["Restart mtail (its settings changed)"].kwargs["_if"].names() == [
        "Configure mtail",
        program.name,
    ]


def test_a_fresh_host_starts_each_daemon_once_and_restarts_nothing(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology, tmp_path: Path
) -> None:
    calls = plan(monkeypatch, lab, tmp_path, "ops-1", running=False)
    assert not [c for c in calls if c.name.startswith(("Restart ", "Reload "))]
    assert [c.name for c in calls if c.op == "systemd.service"] == [
        "Run prometheus-node-exporter now and at boot",
        "Run prometheus-blackbox-exporter now and at boot",
        "Run prometheus now and at boot",
    ]


def test_a_missing_static_file_is_named(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology, tmp_path: Path
) -> None:
    monkeypatch.setattr(templates, "FILES", tmp_path / "nowhere")
    with pytest.raises(DeployError, match="nowhere/metrics/alerts.yml is missing"):
        metrics.static_file(metrics.ALERTS_SOURCE)


def web_configs(calls: list[Call]) -> dict[str, Call]:
    return {
        c.kwargs["dest"]: c
        for c in calls
        if c.op == "seawall.secret_file" and c.kwargs["dest"].startswith(metrics.WEB_CONFIG_DIR)
    }


@pytest.mark.parametrize(
    ("name", "packages"),
    [
        ("app-1", [metrics.NODE]),
        ("data-1", [metrics.NODE, metrics.POSTGRES]),
        ("ops-1", [metrics.NODE, metrics.BLACKBOX]),
    ],
)
def test_the_scrape_password_reaches_only_prometheus_and_each_exporter_gets_a_hash(
    monkeypatch: pytest.MonkeyPatch,
    lab: inventory.Topology,
    tmp_path: Path,
    name: str,
    packages: list[str],
) -> None:
    calls = plan(monkeypatch, lab, tmp_path, name, running=True)
    holding = [
        c for c in calls if SCRAPE_SECRET in repr(c.kwargs) or SCRAPE_SECRET in content_or_empty(c)
    ]
    if name == "ops-1":
        (password,) = holding
        assert password.op == "seawall.secret_file" and password.name
        assert password.kwargs == {
            "name": "Install the exporters' scrape password (for Prometheus only)",
            "src": SCRAPE_SECRET,
            "dest": metrics.SCRAPE_PASSWORD_FILE,
            "group": "prometheus",
            "mode": 640,
            "private_dir": False,
        }
        names = [c.name for c in calls]
        config = "Configure Prometheus's targets (checked by promtool first)"
        assert names.index(password.name) < names.index(config)
    else:
        assert holding == []
    found = web_configs(calls)
    assert sorted(found) == sorted(metrics.web_config_file(p) for p in packages)
    for package in packages:
        call = found[metrics.web_config_file(package)]
        assert call.name and {k: call.kwargs[k] for k in ("group", "mode", "private_dir")} == {
            "group": "prometheus",
            "mode": 640,
            "private_dir": False,
        }
        (hashed,) = yaml.safe_load(content(call))["basic_auth_users"].values()
        assert metrics.hash_verifies(hashed, SCRAPE_SECRET)
        restart = by_name(calls)[f"Restart {package} (its settings changed)"]
        assert call.name in restart.kwargs["_if"].names()


def test_a_second_deploy_keeps_each_hash_and_a_rotated_secret_replaces_it(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology, tmp_path: Path
) -> None:
    with monkeypatch.context() as patch:
        first = web_configs(plan(patch, lab, tmp_path, "ops-1", running=True))
    on_host = {
        package: BasicAuthHash().process(
            ["prometheus", *content(first[metrics.web_config_file(package)]).splitlines()]
        )
        for package in (metrics.NODE, metrics.BLACKBOX)
    }
    assert all(on_host.values())
    with monkeypatch.context() as patch:
        again = web_configs(plan(patch, lab, tmp_path, "ops-1", running=True, hashes=on_host))
    # The same content: secret_file compares it by hash and changes nothing.
    assert {d: content(c) for d, c in again.items()} == {d: content(c) for d, c in first.items()}
    with monkeypatch.context() as patch:
        rotated = web_configs(
            plan(
                patch, lab, tmp_path, "ops-1", True, hashes=on_host, scrape_secret="rotated-s3cret"
            )
        )
    for dest, call in rotated.items():
        assert content(call) != content(first[dest])
        (hashed,) = yaml.safe_load(content(call))["basic_auth_users"].values()
        assert metrics.hash_verifies(hashed, "rotated-s3cret")


def test_the_api_password_reaches_only_its_file_and_prometheus_gets_its_hash(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology, tmp_path: Path
) -> None:
    calls = plan(monkeypatch, lab, tmp_path, "ops-1", running=True)
    holding = [c for c in calls if API_SECRET in repr(c.kwargs) + content_or_empty(c)]
    (password,) = holding
    assert password.op == "seawall.secret_file"
    assert password.kwargs == {
        "name": "Install Prometheus's own API password (its self-scrape sends it)",
        "src": API_SECRET,
        "dest": metrics.API_PASSWORD_FILE,
        "group": "prometheus",
        "mode": 640,
        "private_dir": False,
    }
    names = [c.name for c in calls]
    assert names.index(password.name) < names.index(
        "Configure Prometheus's targets (checked by promtool first)"
    )
    web = by_name(calls)[API_WEB]
    assert web.op == "seawall.secret_file" and web.kwargs["dest"] == metrics.PROMETHEUS_WEB_CONFIG
    assert (web.kwargs["group"], web.kwargs["mode"]) == ("prometheus", 640)
    (user, hashed), *_ = yaml.safe_load(content(web))["basic_auth_users"].items()
    assert user == "seawall" and metrics.hash_verifies(hashed, API_SECRET)
    # A second deploy keeps the hash (the same file: nothing changes, nothing restarts).
    with monkeypatch.context() as patch:
        again = by_name(plan(patch, lab, tmp_path, "ops-1", running=True, api_hash=hashed))
    assert content(again[API_WEB]) == content(web)


def test_no_other_host_needs_or_gets_the_api_password(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology, tmp_path: Path
) -> None:
    for name in ("data-1", "app-1", "gw-1"):
        with monkeypatch.context() as patch:
            calls = plan(patch, lab, tmp_path, name, running=True)
        assert not [c for c in calls if API_SECRET in repr(c.kwargs) + content_or_empty(c)]
        assert metrics.API_SECRET not in lab.host(name).required_secrets, name
    assert metrics.API_SECRET in lab.host("ops-1").required_secrets

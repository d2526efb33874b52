"""The services deploy: unit files, settings and secrets rendered from lab data."""

import json
from pathlib import Path
from typing import Any

import pytest

from seawall import defaults, inventory, settings
from seawall.components import services

REPO = Path(__file__).resolve().parents[2]
CATALOGUE = defaults.SERVICES["services"]


def app_data(lab: inventory.Topology) -> Any:
    return lab.host("app-1").data


def unit_of(lab: inventory.Topology, name: str) -> str:
    data = app_data(lab)
    service = next(s for s in CATALOGUE if s["name"] == name)
    context = services.unit_context(data, service, f"/etc/x/{name}.json", f"/etc/s/{name}.env")
    return services.render(services.UNIT_TEMPLATE, context)


def test_the_catalogue_is_the_platform_and_each_port_is_stated_once() -> None:
    ports = {s["name"]: s["port"] for s in CATALOGUE}
    assert ports == {
        "backend": 8000,
        "ai-engine": 8001,
        "execution": 8002,
        "risk-safety": 8003,
        "portfolio-intelligence": 8004,
        "rl-training": 8005,
        "marketdata": 8006,
        "monitoring-health": 8080,
    }
    assert len(set(ports.values())) == len(ports)
    assert not set(ports.values()) & {defaults.all_defaults()[k] for k in defaults.PORT_KEYS}


STOP_TIMEOUTS = {"ai-engine": 65, "rl-training": 125}


@pytest.mark.parametrize("name", [s["name"] for s in CATALOGUE])
def test_unit_promises(lab: inventory.Topology, name: str) -> None:
    text = unit_of(lab, name)
    lines = text.splitlines()
    assert lines[0] == f"# /etc/systemd/system/quantum-{name}.service - managed by seawall"
    for directive in (
        f"User=quantum-{name}",
        "Restart=on-failure",
        "StartLimitBurst=5",
        "StartLimitIntervalSec=60",
        "KillSignal=SIGTERM",
        # Services with a long gateway read timeout drain longer (defaults.SERVICES).
        f"TimeoutStopSec={STOP_TIMEOUTS.get(name, 30)}",
        "OnFailure=seawall-unit-failed@%n.service",
        "ExecStopPost=+/usr/local/libexec/seawall-record-failure %n stopped",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "MemoryMax=512M",
        "TasksMax=256",
        "Type=notify",
        f"EnvironmentFile=/etc/s/{name}.env",
    ):
        assert directive in lines, directive
    # Secrets never reach Environment= lines (`systemctl show` prints them).
    assert "PASSWORD" not in "\n".join(line for line in lines if line.startswith("Environment="))


def test_units_start_after_their_dependencies(lab: inventory.Topology) -> None:
    text = unit_of(lab, "execution")
    after = next(line for line in text.splitlines() if line.startswith("After="))
    wants = next(line for line in text.splitlines() if line.startswith("Wants="))
    assert "quantum-risk-safety.service" in after and "pgbouncer.service" in after
    assert "quantum-risk-safety.service" in wants


def test_settings_of_execution(lab: inventory.Topology) -> None:
    data = app_data(lab)
    address = lab.host("app-1").address
    ports = {s["name"]: s["port"] for s in data["services"]}
    service = next(s for s in CATALOGUE if s["name"] == "execution")
    sentinels = [(h.address, h.data["sentinel_port"]) for h in lab.group("sentinel")]
    config = services.service_config(data, service, address, sentinels)
    deps = {d["name"]: d for d in config["dependencies"]}
    # The lab has no exchange API: it is not checked.
    assert set(deps) == {"redis", "postgres", "risk-safety"}
    assert all(d["critical"] for d in deps.values())
    assert deps["risk-safety"]["url"] == f"http://{address}:{ports['risk-safety']}/health"
    assert config["bind"] == address and config["port"] == ports["execution"]
    assert config["postgres"] == {
        "host": "127.0.0.1",
        "port": defaults.PGBOUNCER["pgbouncer_port"],
        "dbname": "trading",
        "user": "execution",
    }
    assert config["redis"]["master_name"] == defaults.SENTINEL["sentinel_master_name"]
    assert "password" not in json.dumps(config).lower()


def test_monitoring_health_only_degrades_when_a_service_is_down(lab: inventory.Topology) -> None:
    service = next(s for s in CATALOGUE if s["name"] == "monitoring-health")
    config = services.service_config(app_data(lab), service, lab.host("app-1").address, [])
    optional = [d["name"] for d in config["dependencies"] if not d["critical"]]
    assert len(optional) == len(CATALOGUE) - 1


def test_secrets_come_from_role_names_and_are_required(lab: inventory.Topology) -> None:
    data = app_data(lab)
    execution = next(s for s in CATALOGUE if s["name"] == "execution")
    names = set(services.secret_names(data, execution).values())
    assert names == {"redis_password", "sentinel_password", "postgres_role_execution_password"}
    assert names <= set(settings.setting(data, "required_secrets")["app"])


def test_hang_checker_watches_every_service(lab: inventory.Topology) -> None:
    config = services.healthwatch_config(app_data(lab), lab.host("app-1").address)
    assert len(config["services"]) == len(CATALOGUE)
    # Failures x interval + timeout: a hang is caught well within 30 s.
    assert config["failures"] * config["interval"] + config["timeout"] < 25


@pytest.mark.parametrize("target", services.TEMPLATES)
def test_every_template_names_its_target(target: str) -> None:
    path = REPO / "seawall" / "templates" / "services" / f"{target.lstrip('/')}.j2"
    lines = path.read_text().splitlines()
    head = lines[1] if lines[0].startswith("#!") else lines[0]
    rendered_target = target.replace("SERVICE", "{{ unit }}").replace(
        "{{ unit }}.service", "{{ unit }}"
    )
    assert head == f"# {rendered_target} - managed by seawall"


def test_code_shipped_to_hosts_imports_no_pyinfra_or_typer() -> None:
    for local, _ in services.code_files():
        text = local.read_text()
        assert "import pyinfra" not in text and "from pyinfra" not in text, local
        assert "import typer" not in text and "from typer" not in text, local

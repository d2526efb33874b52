"""The gateway deploy on a fake host: nginx -t before any reload, never a restart."""

import pytest
from pyinfra.facts.files import File

from seawall import inventory
from seawall.components import gateway
from tests.unit.test_services_plan import by_name, plan

CERT = (File, ("path", "/etc/nginx/tls/gateway.crt"))


@pytest.mark.parametrize("name", ["app-1", "data-1"])
def test_gateway_leaves_other_hosts_alone(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology, name: str
) -> None:
    assert plan(monkeypatch, lab, gateway, name) == []


def test_gateway_config_is_checked_then_reloaded_never_restarted(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    calls = plan(monkeypatch, lab, gateway, "gw-1", facts={CERT: {"mode": 644}})
    named = by_name(calls)
    conf = named["Configure NGINX as the gateway (checked with nginx -t first)"]
    assert conf.kwargs["validate"] == "nginx -t -q -c {path}"
    assert conf.kwargs["check_installed"] == "nginx -t -q"
    reload = named["Reload NGINX (its configuration changed)"]
    assert reload.kwargs["reloaded"] is True and reload.kwargs["_if"] == conf.did_change
    # NGINX is never restarted (the journal copier is, when its own unit changes).
    nginx = [call for call in calls if call.kwargs.get("service") == "nginx.service"]
    assert nginx and not any(call.kwargs.get("restarted") for call in nginx)
    restart = named["Restart the journal copier (its unit changed)"]
    unit = named["Install the unit that copies the access log into the journal"]
    copier = named["Install the copier of the access log into the journal"]
    assert copier.kwargs["src"] == str(gateway.COPIER_SOURCE) and copier.kwargs["mode"] == "755"
    assert gateway.COPIER_SOURCE.read_text().startswith("#!/usr/bin/python3\n")
    # Restarted when the unit or the copier changed, not otherwise.
    assert restart.kwargs["_if"]() is False
    unit.changed = True
    assert restart.kwargs["_if"]() is True
    unit.changed, copier.changed = False, True
    assert restart.kwargs["_if"]() is True
    # The certificate exists: it is never generated again.
    assert not any(call.op == "server.shell" for call in calls)


def test_gateway_generates_a_self_signed_certificate_once(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    calls = plan(monkeypatch, lab, gateway, "gw-1", facts={CERT: None})
    shell = [call for call in calls if call.op == "server.shell"]
    assert len(shell) == 1
    address = lab.host("gw-1").address
    assert f"subjectAltName=IP:{address}" in " ".join(shell[0].kwargs["commands"])

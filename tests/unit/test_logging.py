"""The central journal's deploy: its templates against lab data, and its plan on fake hosts.

The plan is what ``deploy_logging`` calls, in order, on the ops host and on an
app host (operations recorded, not run): keys are made before the CA signs,
signing before any host installs its certificate, a host this run does not
reach is neither asked nor signed for, and daemons restart only on a change.
"""

from dataclasses import dataclass, field
from typing import Any

import pytest

from seawall import defaults, inventory, schema
from seawall.components import logging as journal
from seawall.components.templates import render, template_path
from tests.unit.test_common_templates import Call, Recorder

# --- templates ------------------------------------------------------------------------


def _context(lab: inventory.Topology, name: str) -> dict[str, Any]:
    sink = lab.group("ops")[0]
    return journal.logging_context(lab.host(name).data, sink.name, sink.address)


def _lines(target: str, context: dict[str, Any]) -> list[str]:
    return render(journal.CONCERN, target, context).splitlines()


@pytest.mark.parametrize("target", journal.TEMPLATES)
def test_every_template_names_its_target_first(lab: inventory.Topology, target: str) -> None:
    assert template_path(journal.CONCERN, target).is_file()
    first = _lines(target, _context(lab, "ops-1"))[0]
    assert first == f"# {target} - managed by seawall"


def test_every_host_uploads_to_the_ops_hosts_private_address(lab: inventory.Topology) -> None:
    for name in ("app-1", "gw-1", "ops-1"):
        lines = _lines(journal.UPLOAD_CONFIG, _context(lab, name))
        assert "URL=https://10.77.0.41:19532" in lines
        assert "TrustedCertificateFile=/etc/seawall/journal-tls/ca.pem" in lines
        assert "ServerKeyFile=/etc/seawall/journal-tls/host.key" in lines


def test_the_upload_resumes_and_never_gives_up(lab: inventory.Topology) -> None:
    lines = _lines(journal.UPLOAD_DROPIN, _context(lab, "app-1"))
    unit, service = lines.index("[Unit]"), lines.index("[Service]")
    assert unit < lines.index("StartLimitIntervalSec=0") < service
    after = lines[service:]
    # The packaged ExecStart is cleared first, so exactly ours runs.
    assert [line for line in after if line.startswith("ExecStart=")] == [
        "ExecStart=",
        "ExecStart=/lib/systemd/systemd-journal-upload --save-state",
    ]
    assert {"Restart=always", "RestartSec=5", "SupplementaryGroups=seawall-journal-tls"} <= set(
        after
    )


def test_the_sink_listens_on_its_private_address_only(lab: inventory.Topology) -> None:
    lines = _lines(journal.SOCKET_DROPIN, _context(lab, "ops-1"))
    listen = [line for line in lines if line.startswith("ListenStream=")]
    assert listen == ["ListenStream=", "ListenStream=10.77.0.41:19532"]
    assert "FreeBind=yes" in lines


def test_the_sink_serves_https_split_by_host(lab: inventory.Topology) -> None:
    lines = _lines(journal.REMOTE_CONFIG, _context(lab, "ops-1"))
    assert "SplitMode=host" in lines
    assert "ServerCertificateFile=/etc/seawall/journal-tls/host.pem" in lines
    dropin = _lines(journal.REMOTE_DROPIN, _context(lab, "ops-1"))
    assert "SupplementaryGroups=seawall-journal-tls" in dropin


def test_the_vacuum_bounds_the_central_journal(lab: inventory.Topology) -> None:
    service = _lines(journal.VACUUM_SERVICE, _context(lab, "ops-1"))
    assert (
        "ExecStart=/usr/bin/journalctl -D /var/log/journal/remote "
        "--vacuum-size=8G --vacuum-time=1month"
    ) in service
    timer = _lines(journal.VACUUM_TIMER, _context(lab, "ops-1"))
    assert "OnCalendar=hourly" in timer and "Persistent=true" in timer


def test_the_port_is_collision_checked() -> None:
    assert "journal_remote_port" in defaults.PORT_KEYS


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("journal_remote_port", 0),
        ("journal_remote_max_use", "8 GB"),
        ("journal_tls_days", 30),
        ("journal_tls_renew_days", 400),
        ("journal_remote_vacuum_calendar", "hourly; rm"),
    ],
)
def test_bad_logging_values_are_refused(key: str, value: Any) -> None:
    data = {**defaults.all_defaults(), key: value}
    assert key in {problem_key for problem_key, _ in schema.key_problems(data)}


def test_defaults_pass_the_schema() -> None:
    problems = dict(schema.key_problems(defaults.all_defaults()))
    assert not {key: message for key, message in problems.items() if key in defaults.LOGGING}


# --- the plan -------------------------------------------------------------------------


@dataclass(eq=False)
class _Host:
    name: str
    data: dict[str, Any]
    groups: list[str]
    logs: list[str] = field(default_factory=list)

    def log(self, message: str, *args: Any) -> None:
        self.logs.append(message)


class _Inventory:
    def __init__(self, hosts: list[_Host], active: list[_Host]) -> None:
        self.hosts, self.active = hosts, active

    def __iter__(self) -> Any:
        return iter(self.hosts)

    def get_group(self, name: str, default: Any = None) -> list[_Host]:
        return [one for one in self.hosts if name in one.groups] or default

    def get_active_hosts(self) -> list[_Host]:
        return list(self.active)


def _plan(
    monkeypatch: pytest.MonkeyPatch,
    lab: inventory.Topology,
    name: str,
    down: tuple[str, ...] = (),
) -> tuple[_Host, list[Call]]:
    hosts = [_Host(h.name, dict(h.data), list(h.groups)) for h in lab]
    me = next(one for one in hosts if one.name == name)
    calls: list[Call] = []
    monkeypatch.setattr(journal, "host", me)
    monkeypatch.setattr(
        journal, "inventory", _Inventory(hosts, [h for h in hosts if h.name not in down])
    )
    for module in ("files", "server", "systemd"):
        monkeypatch.setattr(journal, module, Recorder(module, calls))
    ops = Recorder("tls", calls)
    for op in ("tls_ca", "tls_key", "tls_signed", "tls_certificate"):
        monkeypatch.setattr(journal, op, getattr(ops, op))
    monkeypatch.setattr(
        journal,
        "install_packages",
        lambda name, packages: calls.append(Call("install", {"name": name, "packages": packages})),
    )
    journal.deploy_logging._inner()
    return me, calls


def _ops(calls: list[Call]) -> list[str]:
    return [call.op for call in calls]


def _named(calls: list[Call], words: str) -> Call:
    found = [call for call in calls if words in call.kwargs.get("name", "")]
    assert len(found) == 1, [call.kwargs.get("name") for call in calls]
    return found[0]


def test_the_ops_host_makes_the_ca_signs_then_installs(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    _, calls = _plan(monkeypatch, lab, "ops-1")
    tls = [op for op in _ops(calls) if op.startswith("tls.")]
    assert tls == ["tls.tls_ca", "tls.tls_key", "tls.tls_signed", "tls.tls_certificate"]
    assert _ops(calls)[0] == "install"
    assert calls[0].kwargs["packages"] == ["systemd-journal-remote", "openssl"]
    signed = next(call for call in calls if call.op == "tls.tls_signed")
    assert signed.kwargs["peers"] == [
        (h.name, "/etc/seawall/journal-tls/host.csr", h.address) for h in lab
    ]
    assert (signed.kwargs["days"], signed.kwargs["renew_days"]) == (397, 30)
    installed = next(call for call in calls if call.op == "tls.tls_certificate")
    assert installed.kwargs["ca_host"] == "ops-1"
    written = {call.kwargs["dest"] for call in calls if call.op == "files.put"}
    assert written == set(journal.TEMPLATES)


def test_an_app_host_makes_its_key_and_installs_only(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    _, calls = _plan(monkeypatch, lab, "app-1")
    assert [op for op in _ops(calls) if op.startswith("tls.")] == [
        "tls.tls_key",
        "tls.tls_certificate",
    ]
    written = {call.kwargs["dest"] for call in calls if call.op == "files.put"}
    assert written == {journal.UPLOAD_CONFIG, journal.UPLOAD_DROPIN}
    off = _named(calls, "Keep the journal sink off")
    assert off.kwargs["service"] == "systemd-journal-remote.socket"
    assert (off.kwargs["running"], off.kwargs["enabled"]) == (False, False)


def test_keys_are_made_everywhere_before_the_ca_signs(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    # pyinfra orders operations by where they are called: the same call sites,
    # in the same order, on every host.
    _, sink = _plan(monkeypatch, lab, "ops-1")
    _, app = _plan(monkeypatch, lab, "app-1")
    names = [call.kwargs["name"] for call in sink]
    key = names.index(_named(app, "TLS key of its own").kwargs["name"])
    sign = names.index(_named(sink, "Sign every host's").kwargs["name"])
    install = names.index(_named(app, "Install this host's journal certificate").kwargs["name"])
    assert key < sign < install


def test_a_host_this_run_does_not_reach_is_not_signed_for(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    _, calls = _plan(monkeypatch, lab, "ops-1", down=("data-3",))
    signed = next(call for call in calls if call.op == "tls.tls_signed")
    assert "data-3" not in [peer[0] for peer in signed.kwargs["peers"]]
    assert len(signed.kwargs["peers"]) == len(lab.hosts) - 1


def test_without_the_ops_host_certificates_wait(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    me, calls = _plan(monkeypatch, lab, "app-1", down=("ops-1",))
    assert "tls.tls_certificate" not in _ops(calls)
    assert me.logs == [
        "ops-1 is not in this run: this host's certificate waits for the next deploy"
    ]


def test_restarts_follow_changes_only(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    _, calls = _plan(monkeypatch, lab, "ops-1")
    upload = _named(calls, "Restart the journal upload")
    sink = _named(calls, "Restart the journal sink")
    socket = _named(calls, "Move the journal sink's socket")
    reload = _named(calls, "Reload systemd")
    assert upload.kwargs["restarted"] is True
    for call in (upload, sink, socket, reload):
        assert call.kwargs["_if"]() is False
    certificate = next(call for call in calls if call.op == "tls.tls_certificate")
    certificate.changed = True
    # A new certificate restarts both daemons, and moves no socket.
    assert upload.kwargs["_if"]() and sink.kwargs["_if"]()
    assert not socket.kwargs["_if"]() and not reload.kwargs["_if"]()
    certificate.changed = False
    _named(calls, "Listen for journals on the private address").changed = True
    assert socket.kwargs["_if"]() and reload.kwargs["_if"]() and not upload.kwargs["_if"]()
    _named(calls, "Keep the journal upload retrying").changed = True
    assert upload.kwargs["_if"]()


def test_nothing_without_an_ops_host(monkeypatch: pytest.MonkeyPatch) -> None:
    me = _Host("app-1", {"private_address": "10.77.0.21"}, ["app"])
    calls: list[Call] = []
    monkeypatch.setattr(journal, "host", me)
    monkeypatch.setattr(journal, "inventory", _Inventory([me], [me]))
    monkeypatch.setattr(journal, "files", Recorder("files", calls))
    journal.deploy_logging._inner()
    assert calls == []


def test_the_journald_rate_limit_has_its_interval(lab: inventory.Topology) -> None:
    from seawall.components import common

    context = common.template_context(lab.host("app-1").data, lab.host("app-1").groups)
    lines = common.render(common.JOURNALD, context).splitlines()
    interval = lines.index("RateLimitIntervalSec=30s")
    assert lines[interval + 1] == "RateLimitBurst=10000"

"""The common deploy: its templates rendered with lab data, and the operations it plans."""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.files import FileContents

from seawall import defaults, inventory
from seawall.components import common
from seawall.facts.deb import DebInstallState
from seawall.facts.server import PasswdEntries

REPO = Path(__file__).resolve().parents[2]
ADMIN_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFake admin@lab"


def context_of(lab: inventory.Topology, name: str) -> dict[str, Any]:
    host = lab.host(name)
    return common.template_context(host.data, host.groups)


def rendered_lines(target: str, context: dict[str, Any]) -> list[str]:
    return common.render(target, context).splitlines()


@pytest.mark.parametrize("target", common.TEMPLATES)
def test_every_template_names_its_target_first(lab: inventory.Topology, target: str) -> None:
    context = context_of(lab, "data-1")
    first = rendered_lines(target, context)[0]
    where = context["role_marker_path"] if target == common.ROLE_MARKER else target
    comment = "//" if target.startswith("/etc/apt/") else "#"
    assert first == f"{comment} {where} - managed by seawall"


@pytest.mark.parametrize("target", common.TEMPLATES)
def test_template_file_mirrors_its_target(target: str) -> None:
    assert (REPO / "seawall" / "templates" / "common" / f"{target.lstrip('/')}.j2").is_file()


def test_apt_proxy_is_the_labs(lab: inventory.Topology) -> None:
    lines = rendered_lines(common.APT_PROXY, context_of(lab, "app-1"))
    proxy = lab.host("app-1").data["apt_proxy"]
    assert proxy and f'Acquire::http::Proxy "{proxy}";' in lines


def test_sshd_takes_keys_only(lab: inventory.Topology) -> None:
    lines = rendered_lines(common.SSHD, context_of(lab, "gw-1"))
    for expected in (
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitEmptyPasswords no",
        "PermitRootLogin prohibit-password",
        "LoginGraceTime 30",
        "MaxAuthTries 3",
        "X11Forwarding no",
    ):
        assert expected in lines


def test_sshd_root_login_follows_data(lab: inventory.Topology) -> None:
    context = context_of(lab, "gw-1") | {"sshd_permit_root_login": "no"}
    assert "PermitRootLogin no" in rendered_lines(common.SSHD, context)


def test_sudoers_grants_the_admin(lab: inventory.Topology) -> None:
    lines = rendered_lines(common.SUDOERS, context_of(lab, "ops-1"))
    assert lines[-1] == "seawall ALL=(ALL:ALL) NOPASSWD: ALL"


def test_journald_is_persistent_and_bounded(lab: inventory.Topology) -> None:
    lines = rendered_lines(common.JOURNALD, context_of(lab, "data-2"))
    assert lines[1:] == [
        "# Logs survive a reboot (a crash keeps its evidence) but never fill the disk.",
        "[Journal]",
        "Storage=persistent",
        "SystemMaxUse=1G",
        "SystemKeepFree=2G",
        "MaxRetentionSec=1month",
        "RateLimitIntervalSec=30s",
        "RateLimitBurst=10000",
    ]


def test_timesyncd_lists_the_servers(lab: inventory.Topology) -> None:
    lines = rendered_lines(common.TIMESYNCD, context_of(lab, "data-3"))
    assert "NTP=0.debian.pool.ntp.org 1.debian.pool.ntp.org" in lines


def test_sysctl_file_sets_every_key_once(lab: inventory.Topology) -> None:
    lines = rendered_lines(common.SYSCTL, context_of(lab, "data-1"))
    settings = [line for line in lines if not line.startswith("#")]
    assert settings == [
        "net.core.somaxconn = 1024",
        "vm.overcommit_memory = 1",
        "vm.swappiness = 1",
    ]


def test_thp_unit_writes_never_to_both_knobs(lab: inventory.Topology) -> None:
    lines = rendered_lines(common.THP_UNIT_PATH, context_of(lab, "data-1"))
    for knob in ("enabled", "defrag"):
        assert (
            f"ExecStart=/bin/sh -c 'echo never > /sys/kernel/mm/transparent_hugepage/{knob}'"
            in lines
        )
    assert "WantedBy=sysinit.target" in lines


@pytest.mark.parametrize(
    ("name", "roles"),
    [
        ("data-1", ["redis", "sentinel", "etcd", "postgres"]),
        ("data-3", ["redis", "sentinel", "etcd"]),
        ("app-2", ["app"]),
        ("gw-1", ["gateway"]),
        ("ops-1", ["ops"]),
    ],
)
def test_role_marker_lists_the_roles(lab: inventory.Topology, name: str, roles: list[str]) -> None:
    lines = rendered_lines(common.ROLE_MARKER, context_of(lab, name))
    assert [line for line in lines if not line.startswith("#")] == roles


# The deploy on a fake host: every fact it asks for must be one the test gave
# it (chatmail's approach), and the operations are recorded instead of run.


@dataclass
class Call:
    op: str
    kwargs: dict[str, Any]
    changed: bool = False

    def did_change(self) -> bool:
        return self.changed

    @property
    def will_change(self) -> bool:
        # pyinfra's OperationMeta answers both; a planned call changes or not.
        return self.changed

    @property
    def name(self) -> str:
        return str(self.kwargs["name"])


@dataclass
class FakeHost:
    data: dict[str, Any]
    groups: list[str]
    facts: dict[tuple[Any, ...], Any]
    name: str = "fake-1"
    logs: list[str] = field(default_factory=list)
    noops: list[str] = field(default_factory=list)

    def get_fact(self, fact: Any, **kwargs: Any) -> Any:
        if fact is DebInstallState and (fact,) in self.facts:
            # One answer for every install_packages: every package when none is
            # named (dpkg's whole list), else the packages it asks about.
            known = self.facts[(fact,)]
            assert kwargs["policy_rc_d"] == common.POLICY_RC_D
            return known | {
                "installed": {
                    package: version
                    for package, version in known["installed"].items()
                    if not kwargs["packages"] or package in kwargs["packages"]
                }
            }
        key = (fact, *sorted(kwargs.items()))
        if key not in self.facts:
            raise AssertionError(f"unexpected fact {fact.__name__} {kwargs}")
        return self.facts[key]

    def log(self, message: str, *args: Any) -> None:
        self.logs.append(message)

    def noop(self, description: str) -> None:
        self.noops.append(description)


class Recorder:
    """Stands in for an operations module: each call is recorded in order."""

    def __init__(self, module: str, calls: list[Call]) -> None:
        self.module = module
        self.calls = calls

    def __getattr__(self, op: str) -> Callable[..., Call]:
        def record(**kwargs: Any) -> Call:
            call = Call(f"{self.module}.{op}", kwargs)
            self.calls.append(call)
            return call

        return record


# seawall's own operations (seawall/operations/) that the deploys import by name.
SEAWALL_OPS = (
    "validated_file",
    "secret_file",
    "debian_cluster_absent",
    "patroni_leader",
    "patroni_dynamic_config",
    "patroni_restarted_on_store",
    "patroni_resumed",
    "service_roles",
    "repository",
    "ssh_keypair",
    "trust_peers",
    "barrier",
    "tls_ca",
    "tls_key",
    "tls_signed",
    "tls_certificate",
    "tls_ca_trusted",
    "tls_ready",
)


def record_seawall_ops(monkeypatch: pytest.MonkeyPatch, target: Any, calls: list[Call]) -> None:
    """Record, as ``seawall.<op>``, each of ``SEAWALL_OPS`` that module ``target`` imports."""
    ops = Recorder("seawall", calls)
    for op in SEAWALL_OPS:
        if hasattr(target, op):
            monkeypatch.setattr(target, op, getattr(ops, op))


def ops_of(calls: list[Call]) -> list[str]:
    return [call.op for call in calls]


def one_call(calls: list[Call], op: str) -> Call:
    """The only call of ``op``; fails, listing every call, unless there is exactly one."""
    found = [call for call in calls if call.op == op]
    assert len(found) == 1, ops_of(calls)
    return found[0]


def plan(
    monkeypatch: pytest.MonkeyPatch,
    lab: inventory.Topology,
    tmp_path: Path,
    *,
    container: str | None = "lxc",
    missing: tuple[str, ...] = (),
    policy_rc_d: str | None = None,
    admin: tuple[dict[str, str], list[str]] | None = None,
) -> tuple[FakeHost, list[Call]]:
    key = tmp_path / "admin.pub"
    key.write_text(ADMIN_KEY + "\n")
    lab_host = lab.host("data-1")
    data = dict(lab_host.data) | {"admin_ssh_public_key_file": str(key)}
    packages = {p: "1" for p in defaults.COMMON["common_packages"] if p not in missing}
    facts = {
        (common.Container,): container,
        (DebInstallState,): {"installed": packages, "policy_rc_d": policy_rc_d},
        (PasswdEntries, ("users", ("seawall",))): {"seawall": admin[0]} if admin else {},
    }
    if admin:
        authorized = f"{admin[0]['home']}/.ssh/authorized_keys"
        facts[(FileContents, ("path", authorized))] = admin[1]
    fake = FakeHost(data=data, groups=list(lab_host.groups), facts=facts)
    calls: list[Call] = []
    monkeypatch.setattr(common, "host", fake)
    for module in ("apt", "files", "server", "systemd"):
        monkeypatch.setattr(common, module, Recorder(module, calls))
    monkeypatch.setattr(common, "validated_file", Recorder("seawall", calls).validated_file)
    common.deploy_common._inner()
    return fake, calls


def test_container_plan_skips_kernel_and_time_sync(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology, tmp_path: Path
) -> None:
    fake, calls = plan(monkeypatch, lab, tmp_path)
    assert [call.name for call in calls] == [
        "Send apt through the package proxy",
        "Set the timezone to UTC",
        "Record the timezone for tools that read /etc/timezone",
        "Configure time sync servers",
        "Create the admin user seawall with the admin key only",
        "Grant seawall passwordless sudo",
        "Harden sshd: keys only, bounded logins",
        "Keep the journal on disk within bounds",
        "Write the role marker",
        "Reload sshd (its configuration changed)",
        "Restart journald (its configuration changed)",
    ]
    by_name = {call.name: call for call in calls}
    # Nothing is missing, so apt is not asked at all: a rerun changes nothing and
    # reads the package list once.
    assert "Update the package lists" not in by_name
    assert "Install base packages" not in by_name
    sshd = by_name["Harden sshd: keys only, bounded logins"]
    assert by_name["Reload sshd (its configuration changed)"].kwargs["_if"] == sshd.did_change
    assert sshd.kwargs["check_installed"] == "sshd -t"
    assert by_name["Write the role marker"].kwargs["dest"] == "/etc/seawall/roles"
    assert any(log.startswith("Skip kernel tuning: container (lxc)") for log in fake.logs)
    assert any(log.startswith("Skip time sync: container (lxc)") for log in fake.logs)


def test_real_host_plan_tunes_the_kernel(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology, tmp_path: Path
) -> None:
    fake, calls = plan(monkeypatch, lab, tmp_path, container=None)
    names = [call.name for call in calls]
    for expected in (
        "Persist kernel settings",
        "Install the transparent huge pages unit",
        "Set net.core.somaxconn to 1024",
        "Set vm.overcommit_memory to 1",
        "Set vm.swappiness to 1",
        "Apply the transparent huge pages setting (it changed)",
        "Set transparent huge pages to never at every boot",
        "Restart timesyncd (its configuration changed)",
        "Start and enable timesyncd",
    ):
        assert expected in names
    assert not any("Skip" in log for log in fake.logs)


def test_missing_packages_install_behind_policy_rc_d(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology, tmp_path: Path
) -> None:
    _, calls = plan(monkeypatch, lab, tmp_path, missing=("tzdata",))
    ops = [(call.op, call.kwargs.get("dest") or call.kwargs.get("path")) for call in calls[:5]]
    assert ops == [
        ("files.put", common.APT_PROXY),
        ("files.put", common.POLICY_RC_D),
        ("server.shell", None),
        ("apt.packages", None),
        ("files.file", common.POLICY_RC_D),
    ]
    # The update is bounded in time and retried, never left to hang.
    assert "timeout" in calls[2].kwargs["commands"][0]
    assert calls[4].kwargs["present"] is False


@pytest.mark.parametrize(
    ("shell", "keys", "made"),
    [
        ("/bin/bash", ["", ADMIN_KEY], False),
        ("/bin/sh", [ADMIN_KEY], True),
        ("/bin/bash", [ADMIN_KEY, "ssh-ed25519 AAAAOther eve@elsewhere"], True),
        ("/bin/bash", [], True),
    ],
)
def test_the_admin_user_is_passed_to_server_user_only_when_it_differs(
    monkeypatch: pytest.MonkeyPatch,
    lab: inventory.Topology,
    tmp_path: Path,
    shell: str,
    keys: list[str],
    made: bool,
) -> None:
    entry = {"home": "/home/seawall", "shell": shell}
    fake, calls = plan(monkeypatch, lab, tmp_path, admin=(entry, keys))
    names = [call.name for call in calls]
    assert ("Create the admin user seawall with the admin key only" in names) == made
    if not made:
        assert fake.noops == ["seawall exists with a bash shell and the admin key only"]


def test_leftover_policy_rc_d_of_ours_is_removed(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology, tmp_path: Path
) -> None:
    leftover = "ours"
    _, calls = plan(monkeypatch, lab, tmp_path, policy_rc_d=leftover)
    assert calls[1].name == "Let Debian start daemons again"
    _, calls = plan(monkeypatch, lab, tmp_path, missing=("curl",), policy_rc_d=leftover)
    assert [call.name for call in calls[1:5]] == [
        "Stop Debian from starting daemons while packages install",
        "Update the package lists",
        "Install base packages",
        "Let Debian start daemons again",
    ]
    assert calls[3].kwargs["_timeout"] > 0


def test_foreign_policy_rc_d_is_left_alone(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology, tmp_path: Path
) -> None:
    foreign = "other"
    _, calls = plan(monkeypatch, lab, tmp_path, missing=("curl",), policy_rc_d=foreign)
    assert common.POLICY_RC_D not in {
        call.kwargs.get("dest") or call.kwargs.get("path") for call in calls
    }


def test_missing_admin_key_stops_the_deploy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(common, "host", FakeHost(data={}, groups=[], facts={}))
    with pytest.raises(DeployError, match="admin_ssh_public_key_file"):
        common._admin_keys(str(tmp_path / "absent.pub"))


@pytest.mark.parametrize(("output", "expected"), [(["lxc"], "lxc"), (["none"], None), ([], None)])
def test_container_fact(output: list[str], expected: str | None) -> None:
    assert common.Container().process(output) == expected


@pytest.mark.parametrize(
    ("installed", "runs_apt"), [("3.5.16-4", False), ("3.4.23-1", True), (None, True)]
)
def test_a_version_pin_runs_apt_only_when_that_version_is_not_installed(
    monkeypatch: pytest.MonkeyPatch, installed: str | None, runs_apt: bool
) -> None:
    versions = {"curl": "7.88.1-10"} | ({"etcd-server": installed} if installed else {})
    fake = FakeHost(
        data={}, groups=[], facts={(DebInstallState,): {"installed": versions, "policy_rc_d": None}}
    )
    calls: list[Call] = []
    monkeypatch.setattr(common, "host", fake)
    for module in ("apt", "files", "server"):
        monkeypatch.setattr(common, module, Recorder(module, calls))
    common.install_packages("Install etcd", ["curl", "etcd-server=3.5.16-4"])
    assert ("apt.packages" in [call.op for call in calls]) == runs_apt
    # The package lists are updated only for a package that is not installed at all.
    assert ("server.shell" in [call.op for call in calls]) == (installed is None)

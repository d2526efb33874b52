"""Every systemd unit seawall writes is sandboxed (issue 14 item 5).

Two checks: every unit template states the sandbox directives (found by glob, so
a new unit cannot forget them), and each, rendered from lab data, scores at most
4.0 ("OK") in ``systemd-analyze security --offline=yes`` (systemd 252, as on the
hosts; the controller package ``systemd``).
"""

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from seawall import defaults, inventory
from seawall.components import common, firewall, gateway, ops, pgbackrest, services
from seawall.components import logging as journal
from seawall.components.templates import TEMPLATES, render
from seawall.names import CENTRAL_JOURNAL
from tests.unit.test_logging_upload import REMOTE as JOURNAL_REMOTE

THRESHOLD = 4.0

# Stated in every unit we write (a value of "no" counts, with its reason beside it).
SANDBOX = (
    "User",
    "CapabilityBoundingSet",
    "NoNewPrivileges",
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateDevices",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectClock",
    "ProtectHostname",
    "ProtectProc",
    "RestrictSUIDSGID",
    "RestrictRealtime",
    "RestrictNamespaces",
    "LockPersonality",
    "RemoveIPC",
    "RestrictAddressFamilies",
    "SystemCallArchitectures",
    "SystemCallFilter",
    "UMask",
)

# Units of other concerns, not sandboxed yet: each must still lack the set (so
# this list can only shrink), and no unit may be added to it without a reason.
NOT_YET: dict[str, str] = {}


def unit_templates() -> list[str]:
    return sorted(str(p.relative_to(TEMPLATES)) for p in TEMPLATES.rglob("*.service.j2"))


def stated(text: str) -> set[str]:
    return set(re.findall(r"^([A-Za-z]+)=", text, re.M))


def test_the_glob_finds_the_units() -> None:
    found = unit_templates()
    assert "services/etc/systemd/system/seawall-healthwatch.service.j2" in found
    assert len(found) >= 8


@pytest.mark.parametrize("template", unit_templates())
def test_every_unit_template_states_the_sandbox(template: str) -> None:
    missing = [d for d in SANDBOX if d not in stated((TEMPLATES / template).read_text())]
    if template in NOT_YET:
        assert missing, f"{template} is sandboxed now: remove it from NOT_YET"
    else:
        assert not missing, f"{template} lacks {missing}"


def test_every_exception_is_a_unit_we_ship() -> None:
    assert set(NOT_YET) <= set(unit_templates())


def _services(lab: inventory.Topology) -> list[tuple[str, str]]:
    data = lab.host("app-1").data
    out = []
    for service in defaults.SERVICES["services"]:
        context = services.unit_context(data, service, "/etc/x/s.json", "/etc/s/s.env")
        out.append((context["unit"], services.render(services.UNIT_TEMPLATE, context)))
    return out


def _healthwatch(lab: inventory.Topology) -> list[tuple[str, str]]:
    context = services.healthwatch_unit_context(lab.host("app-1").data)
    return [("seawall-healthwatch.service", services.render(services.HEALTHWATCH_UNIT, context))]


def _failed(lab: inventory.Topology) -> list[tuple[str, str]]:
    context = services.failed_unit_context(lab.host("app-1").data)
    # An instance: the template itself is not a unit systemd-analyze scores.
    text = services.render(services.FAILED_UNIT, context)
    return [("seawall-unit-failed@quantum-execution.service.service", text)]


def _thp(lab: inventory.Topology) -> list[tuple[str, str]]:
    host = lab.host("data-1")
    text = common.render(common.THP_UNIT_PATH, common.template_context(host.data, host.groups))
    return [("seawall-thp.service", text)]


def _gateway_journal(lab: inventory.Topology) -> list[tuple[str, str]]:
    apps = [h.address for h in lab.group("app")]
    text = gateway.render(gateway.JOURNAL_UNIT, gateway.context(lab.host("gw-1").data, apps))
    return [("seawall-gateway-journal.service", text)]


def _firewall(lab: inventory.Topology) -> list[tuple[str, str]]:
    return [(firewall.UNIT, firewall.unit())]


def _vacuum(lab: inventory.Topology) -> list[tuple[str, str]]:
    sink = lab.group("ops")[0]
    context = journal.logging_context(sink.data, sink.name, sink.address)
    return [("seawall-journal-vacuum.service", render("logging", journal.VACUUM_SERVICE, context))]


def _backup_context(lab: inventory.Topology) -> dict[str, Any]:
    repo = lab.group("ops")[0]
    members = [(h.name, h.address) for h in lab.group("postgres")]
    return pgbackrest.backup_context(repo.data, True, members, repo.address)


def _backup(lab: inventory.Topology) -> list[tuple[str, str]]:
    text = render("pgbackrest", pgbackrest.SERVICE, _backup_context(lab))
    return [("seawall-pgbackrest-full.service", text)]


def _restart(lab: inventory.Topology) -> list[tuple[str, str]]:
    context = ops.ops_context(lab.host("ops-1").data, "inventories/lab.py")
    return [("seawall-restart.service", render(ops.CONCERN, ops.SERVICE, context))]


RENDERERS: dict[str, Callable[[inventory.Topology], list[tuple[str, str]]]] = {
    "services/etc/systemd/system/SERVICE.service.j2": _services,
    "services/etc/systemd/system/seawall-healthwatch.service.j2": _healthwatch,
    "services/etc/systemd/system/seawall-unit-failed@.service.j2": _failed,
    "common/etc/systemd/system/seawall-thp.service.j2": _thp,
    "gateway/etc/systemd/system/seawall-gateway-journal.service.j2": _gateway_journal,
    "firewall/etc/systemd/system/seawall-firewall.service.j2": _firewall,
    "logging/etc/systemd/system/seawall-journal-vacuum.service.j2": _vacuum,
    "pgbackrest/etc/systemd/system/seawall-pgbackrest-full.service.j2": _backup,
    "ops/etc/systemd/system/seawall-restart.service.j2": _restart,
}


def score(name: str, text: str, tmp_path: Path) -> tuple[float, str]:
    path = tmp_path / name
    path.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert found, result.stdout[-500:] + result.stderr[-500:]
    return float(found.group(1)), result.stdout


def test_every_sandboxed_unit_can_be_scored() -> None:
    assert set(RENDERERS) == set(unit_templates()) - set(NOT_YET)


@pytest.mark.parametrize("template", sorted(RENDERERS))
def test_every_unit_scores_ok(lab: inventory.Topology, template: str, tmp_path: Path) -> None:
    rendered = RENDERERS[template](lab)
    assert rendered
    for name, text in rendered:
        value, report = score(name, text, tmp_path)
        worst = [line for line in report.splitlines() if line.startswith("✗")][:12]
        assert value <= THRESHOLD, f"{name}: {value} > {THRESHOLD}\n" + "\n".join(worst)


def test_the_scorer_tells_an_open_unit_from_a_closed_one(tmp_path: Path) -> None:
    # Guards the parsing: an unsandboxed unit must not pass.
    bare = "[Service]\nType=oneshot\nExecStart=/bin/true\n"
    assert score("bare.service", bare, tmp_path)[0] > 9


def test_the_hang_checker_keeps_root_but_no_capability(lab: inventory.Topology) -> None:
    ((_, text),) = _healthwatch(lab)
    assert "User=root\n" in text and "CapabilityBoundingSet=\n" in text
    assert "SystemCallFilter=~@privileged @resources" in text


def test_the_failure_hook_writes_only_its_log_and_the_textfile_directory(
    lab: inventory.Topology,
) -> None:
    ((_, text),) = _failed(lab)
    data: Any = lab.host("app-1").data
    log_dir = str(Path(data["services_failure_log"]).parent)
    assert f"ReadWritePaths={log_dir} -{data['services_textfile_dir']}\n" in text
    assert "ProtectSystem=strict" in text and "PrivateNetwork=yes" in text
    assert "CapabilityBoundingSet=CAP_DAC_OVERRIDE\n" in text


def directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for key, value in re.findall(r"^([A-Za-z]+)=(.*)$", text, re.M):
        found.setdefault(key, []).append(value)
    return found


def test_the_firewall_keeps_the_host_network_and_net_admin_only(lab: inventory.Topology) -> None:
    # nft must load into the host's own network namespace, over netlink, as root
    # with CAP_NET_ADMIN; nothing else is left to it.
    ((_, text),) = _firewall(lab)
    found = directives(text)
    assert "PrivateNetwork" not in found
    assert found["User"] == ["root"]
    assert found["CapabilityBoundingSet"] == ["CAP_NET_ADMIN"]
    assert found["RestrictAddressFamilies"] == ["AF_NETLINK"]
    # No mount namespace at all: at sysinit its set-up failed on a lab host's boot
    # (226/NAMESPACE), and the host came up without its table.
    namespaced = {
        "ProtectSystem": "no",
        "ProtectHome": "no",
        "PrivateTmp": "no",
        "PrivateDevices": "no",
        "ProtectKernelTunables": "no",
        "ProtectKernelModules": "no",
        "ProtectKernelLogs": "no",
        "ProtectControlGroups": "no",
        "ProtectHostname": "no",
        "ProtectProc": "default",
    }
    assert {key: found[key][-1] for key in namespaced} == namespaced
    assert not {"ProcSubset", "ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths"} & set(found)


def as_the_unit(text: str) -> list[str]:
    """setpriv arguments giving a command the unit's user, group and capability bound."""
    found = directives(text)
    user = found["User"][-1]
    group = found.get("Group", [user])[-1]
    caps = found["CapabilityBoundingSet"][-1].split()
    bound = ",".join(["-all", *(f"+{c.removeprefix('CAP_').lower()}" for c in caps)])
    args = ["setpriv", f"--reuid={user}", f"--regid={group}", "--clear-groups"]
    args += [f"--bounding-set={bound}", "--inh-caps=-all"]
    return args + (["--no-new-privs"] if found["NoNewPrivileges"] == ["yes"] else [])


def exec_start(text: str) -> list[str]:
    (line,) = directives(text)["ExecStart"]
    return line.split()


def test_the_firewall_loads_with_its_units_capabilities_only(
    lab: inventory.Topology, tmp_path: Path
) -> None:
    # The unit's own ExecStart, user and bounding set, in a fresh network
    # namespace: nft loads the lab host's real ruleset.
    assert os.geteuid() == 0, "a network namespace needs root"
    ((_, text),) = _firewall(lab)
    host = lab.host("ops-1")
    content, comment = firewall.ruleset(host.name, host.groups, host.data, list(lab))
    (tmp_path / "firewall.nft").write_text(content)
    command = [tmp_path / "firewall.nft" if a == firewall.RULESET else a for a in exec_start(text)]
    script = f"{' '.join(map(str, command))} && nft list table inet seawall"
    result = subprocess.run(
        ["unshare", "--net", *as_the_unit(text), "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert comment in result.stdout
    # Without CAP_NET_ADMIN it would not: the one capability left is the one it needs.
    bare = text.replace("CapabilityBoundingSet=CAP_NET_ADMIN\n", "CapabilityBoundingSet=\n")
    result = subprocess.run(
        ["unshare", "--net", *as_the_unit(bare), *map(str, command)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0 and "Operation not permitted" in result.stderr


def test_the_vacuum_runs_as_journal_remote_and_writes_its_directory_only(
    lab: inventory.Topology,
) -> None:
    ((_, text),) = _vacuum(lab)
    found = directives(text)
    assert found["User"] == ["systemd-journal-remote"]
    assert found["CapabilityBoundingSet"] == [""]
    assert found["LogsDirectory"] == [CENTRAL_JOURNAL.removeprefix("/var/log/")]
    assert "ReadWritePaths" not in found and found["PrivateNetwork"] == ["yes"]


def test_the_vacuum_removes_archived_files_as_its_unit_runs_it(lab: inventory.Topology) -> None:
    # The unit's own ExecStart as journal-remote's account with no capability,
    # on journal files journal-remote wrote (as it owns them on the ops host):
    # the archived file goes, the active one stays.
    assert os.geteuid() == 0, "switching to systemd-journal-remote needs root"
    ((_, text),) = _vacuum(lab)
    # Under /tmp itself: pytest's own temporary folders are root's alone.
    top = Path(tempfile.mkdtemp(prefix="seawall-vacuum-"))
    try:
        top.chmod(0o755)
        directory = top / "remote"
        directory.mkdir()
        export = top / "entry.export"
        export.write_text(
            "__REALTIME_TIMESTAMP=1600000000000000\n__MONOTONIC_TIMESTAMP=1\n"
            "_BOOT_ID=0123456789abcdef0123456789abcdef\n_HOSTNAME=app-1\nMESSAGE=old\n\n"
        )
        active = directory / "remote-app-1.journal"
        subprocess.run(
            [JOURNAL_REMOTE, "-o", str(active), str(export)],
            check=True,
            capture_output=True,
            timeout=30,
        )
        # Named as journald names a file it archived (2020: past any retention).
        archived = directory / (
            "remote-app-1@0123456789abcdef0123456789abcdef-0000000000000001-0005b2c0bc4a8000.journal"
        )
        shutil.copy(active, archived)
        shutil.chown(directory, "systemd-journal-remote", "systemd-journal-remote")
        for path in (active, archived):
            shutil.chown(path, "systemd-journal-remote", "systemd-journal-remote")
        command = [str(directory) if a == CENTRAL_JOURNAL else a for a in exec_start(text)]
        assert str(directory) in command
        result = subprocess.run(
            [*as_the_unit(text), *command], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        assert not archived.exists() and active.exists()
    finally:
        shutil.rmtree(top)


def test_the_backup_writes_its_repository_and_the_hosts_lock_folder(
    lab: inventory.Topology,
) -> None:
    ((_, text),) = _backup(lab)
    found = directives(text)
    context = _backup_context(lab)
    user, home = context["pgbackrest_user"], str(context["pgbackrest_repo_path"])
    assert found["User"] == [user] and found["CapabilityBoundingSet"] == [""]
    # The repository (old and encrypted), log/ and spool/ (both in the repository
    # path, as pgbackrest.conf names them) and the SSH key's home: all writable.
    writable = found["ReadWritePaths"][0].split()
    assert home in writable and context["pgbackrest_cipher_repo_path"] in writable
    conf = render("pgbackrest", pgbackrest.CONFIG, {**context, "cipher_pass": "x"})
    for key in ("log-path", "spool-path"):
        (value,) = re.findall(rf"^{key}=(.*)$", conf, re.M)
        assert value.startswith(home + "/")
    # pgBackRest's lock stays in the host's /tmp (no lock-path set), shared with
    # the deploy's and the restore drill's runs: no private /tmp, /tmp writable.
    assert "lock-path" not in conf
    assert found["PrivateTmp"] == ["no"] and "/tmp" in writable
    # ProtectHome= hides /home, /root and /run/user: the account's home is elsewhere.
    assert found["ProtectHome"] == ["yes"]
    assert not home.startswith(("/home/", "/root/", "/run/user/"))
    # The restore drill's Postgres runs as this account: its IPC must survive a backup's end.
    assert found["RemoveIPC"] == ["no"]
    assert "PrivateNetwork" not in found
    assert found["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]


def test_the_restart_reads_roots_key_and_writes_its_lock_and_metrics_only(
    lab: inventory.Topology,
) -> None:
    ((_, text),) = _restart(lab)
    found = directives(text)
    data: Any = lab.host("ops-1").data
    # Root's key, which a lab inventory's ssh_key links to: home stays readable.
    assert ops.OPS_KEY.startswith("/root/") and found["ProtectHome"] == ["read-only"]
    assert found["User"] == ["root"]
    assert found["CapabilityBoundingSet"] == ["CAP_DAC_OVERRIDE"]
    # The operations lock in the host's own /run/lock (the drift cron takes it
    # too) and the recorder's textfile directory: nothing else is writable.
    lock_dir = str(Path(data["restart_lock_file"]).parent)
    assert found["ReadWritePaths"] == [f"{lock_dir} -{data['services_textfile_dir']}"]
    assert found["ProtectSystem"] == ["strict"] and "PrivateNetwork" not in found
    assert found["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    # psycopg's ctypes callbacks may need writable executable memory.
    assert found["MemoryDenyWriteExecute"] == ["no"]


def test_the_restart_recorder_writes_node_exporters_folder_with_the_units_one_capability(
    lab: inventory.Topology,
) -> None:
    # ExecStopPost= runs in the unit's sandbox: as root bound to CAP_DAC_OVERRIDE
    # it writes a textfile directory root does not own; with no capability it could not.
    assert os.geteuid() == 0, "switching capabilities needs root"
    ((_, text),) = _restart(lab)
    top = Path(tempfile.mkdtemp(prefix="seawall-record-"))
    try:
        textfile = top / "node-exporter"
        textfile.mkdir(mode=0o755)
        shutil.chown(textfile, "nobody", "nogroup")
        context = ops.ops_context(
            {**lab.host("ops-1").data, "services_textfile_dir": str(textfile)},
            "inventories/lab.py",
        )
        script = top / "record"
        script.write_text(render(ops.CONCERN, ops.RECORD, context))
        script.chmod(0o755)
        env = {"SERVICE_RESULT": "success", "PATH": "/usr/bin:/bin"}
        bare = text.replace("CapabilityBoundingSet=CAP_DAC_OVERRIDE\n", "CapabilityBoundingSet=\n")
        refused = subprocess.run(
            [*as_the_unit(bare), str(script)], env=env, capture_output=True, timeout=30
        )
        assert refused.returncode != 0 and not (textfile / "seawall_restart.prom").exists()
        subprocess.run([*as_the_unit(text), str(script)], env=env, check=True, timeout=30)
        assert "seawall_restart_ok 1" in (textfile / "seawall_restart.prom").read_text()
    finally:
        shutil.rmtree(top)

"""The ops host as controller: rendered units, the wheelhouse's reuse, the inventory keys."""

import hashlib
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pyinfra.api.exceptions import DeployError
from pyinfra.api.host import HostData
from pyinfra.facts.files import FileContents

from seawall import defaults, inventory, schema
from seawall.components import ops
from seawall.components.templates import render
from seawall.facts.files import FileState, TreeState
from tests.unit.test_common_templates import Call, FakeHost, Recorder

REPO = Path(__file__).resolve().parents[2]


def context(**overrides: object) -> dict[str, object]:
    data = {**defaults.all_defaults(), **overrides}
    return ops.ops_context(data, "inventories/lab.py")


def unit_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith(("#", ";"))]


def test_timer_fires_at_04_utc_on_the_second_and_never_catches_up() -> None:
    timer = unit_lines(render(ops.CONCERN, ops.TIMER, context()))
    assert "OnCalendar=*-*-* 04:00:00 UTC" in timer
    assert "Persistent=false" in timer
    assert "AccuracySec=1s" in timer
    assert "RandomizedDelaySec=0" in timer
    assert "WantedBy=timers.target" in timer


def test_timer_reads_its_keys() -> None:
    timer = unit_lines(
        render(
            ops.CONCERN,
            ops.TIMER,
            context(restart_calendar="Sun *-*-* 03:30:00 UTC", restart_randomized_delay_sec=90),
        )
    )
    assert "OnCalendar=Sun *-*-* 03:30:00 UTC" in timer
    assert "RandomizedDelaySec=90" in timer


def test_service_is_a_bounded_oneshot_with_failure_hook_and_metrics() -> None:
    service = unit_lines(render(ops.CONCERN, ops.SERVICE, context()))
    assert "Type=oneshot" in service
    assert "TimeoutStartSec=3600" in service
    assert "OnFailure=seawall-unit-failed@%n.service" in service
    assert (
        "ExecStart=/opt/seawall/venv/bin/seawall restart --rolling --yes --json "
        "-i inventories/lab.py" in service
    )
    assert "WorkingDirectory=/opt/seawall/site" in service
    assert f"ExecStopPost={ops.RECORD}" in service
    assert "StandardOutput=journal" in service


def test_every_template_names_its_target() -> None:
    for target in ops.TEMPLATES:
        text = render(ops.CONCERN, target, context())
        first = text.splitlines()[1 if text.startswith("#!") else 0]
        assert first == f"# {target} - managed by seawall", target


def test_drift_runner_passes_the_textfile_dir_and_keeps_the_report() -> None:
    text = render(ops.CONCERN, ops.DRIFT_RUN, context())
    assert (
        "/opt/seawall/venv/bin/seawall drift -i inventories/lab.py --json \\\n"
        "    --textfile-dir /var/lib/prometheus/node-exporter" in text
    )
    assert "report=/var/lib/seawall/ops/drift-last.json" in text
    assert 'mv -f "$report.new" "$report"' in text
    subprocess.run(["sh", "-n"], input=text, text=True, check=True)


def run_record(tmp_path: Path, result: str) -> str:
    script = tmp_path / "record"
    script.write_text(render(ops.CONCERN, ops.RECORD, context(services_textfile_dir=str(tmp_path))))
    script.chmod(0o755)
    env = {"SERVICE_RESULT": result, "PATH": "/usr/bin:/bin"}
    subprocess.run([str(script)], env=env, check=True)
    return (tmp_path / "seawall_restart.prom").read_text()


def metric(text: str, name: str) -> str | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return line.split()[1]
    return None


def test_restart_recorder_writes_ok_then_keeps_last_success_on_failure(tmp_path: Path) -> None:
    first = run_record(tmp_path, "success")
    assert metric(first, "seawall_restart_ok") == "1"
    success = metric(first, "seawall_restart_last_success_timestamp_seconds")
    assert success is not None and int(success) > 0
    second = run_record(tmp_path, "timeout")
    assert metric(second, "seawall_restart_ok") == "0"
    assert metric(second, "seawall_restart_last_success_timestamp_seconds") == success
    # Renamed into place: no temporary file left for the collector to trip on.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record", "seawall_restart.prom"]


def test_restart_recorder_without_any_success_has_no_success_time(tmp_path: Path) -> None:
    text = run_record(tmp_path, "exit-code")
    assert metric(text, "seawall_restart_ok") == "0"
    assert metric(text, "seawall_restart_last_success_timestamp_seconds") is None


def test_cron_fields_split_drift_cron() -> None:
    assert ops.cron_fields("7,22,37,52 * * * *") == {
        "minute": "7,22,37,52",
        "hour": "*",
        "day_of_month": "*",
        "month": "*",
        "day_of_week": "*",
    }


def test_default_drift_schedule_never_runs_at_four() -> None:
    minute = ops.cron_fields(defaults.OPS["drift_cron"])["minute"]
    assert "0" not in minute.split(",")


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("restart_calendar", "*-*-* 25:00:00 UTC", "systemd-analyze calendar rejects it"),
        ("restart_calendar", "every night", "systemd-analyze calendar rejects it"),
        ("drift_cron", "7 * * *", "five cron fields"),
        ("restart_randomized_delay_sec", -1, "greater than or equal"),
        ("restart_enabled", "maybe", "bool"),
        ("restart_timeout_sec", 10, "greater than or equal"),
    ],
)
def test_bad_ops_values_are_errors_naming_the_key(key: str, value: object, words: str) -> None:
    problems = dict(schema.key_problems({**defaults.all_defaults(), key: value}))
    assert key in problems, problems
    assert words in problems[key]


def test_defaults_pass() -> None:
    assert list(schema.key_problems(defaults.all_defaults())) == []


def fake_source(root: Path, body: str) -> None:
    (root / "seawall").mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text("[project]\nname='x'\n")
    (root / "seawall" / "__init__.py").write_text(body)


def test_wheelhouse_is_built_once_and_reused_until_the_source_changes(tmp_path: Path) -> None:
    root, cache = tmp_path / "src", tmp_path / "cache"
    fake_source(root, "A = 1\n")
    builds: list[Path] = []

    def build(source: Path, target: Path) -> None:
        builds.append(source)
        (target / f"seawall-{len(builds)}.whl").write_bytes(b"wheel %d" % len(builds))

    first = ops.wheelhouse(root, cache, build)
    # A byte-compiled file does not count as a source change.
    (root / "seawall" / "__pycache__").mkdir()
    (root / "seawall" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    assert ops.wheelhouse(root, cache, build) == first
    assert len(builds) == 1
    assert (first / ops.MANIFEST).read_text().endswith("  seawall-1.whl\n")
    (root / "seawall" / "__init__.py").write_text("A = 2\n")
    second = ops.wheelhouse(root, cache, build)
    assert second != first and len(builds) == 2
    # The old folder goes: the cache holds only the current source's wheels.
    assert [p.name for p in cache.iterdir()] == [second.name]


def test_a_failed_build_leaves_nothing_to_reuse(tmp_path: Path) -> None:
    root, cache = tmp_path / "src", tmp_path / "cache"
    fake_source(root, "A = 1\n")

    def broken(source: Path, target: Path) -> None:
        (target / "half.whl").write_bytes(b"x")
        raise RuntimeError("pip died")

    with pytest.raises(RuntimeError):
        ops.wheelhouse(root, cache, broken)
    assert list(cache.iterdir()) == []


def test_pip_wheel_builds_a_copy_and_never_writes_the_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # setuptools writes build/ and egg-info into the tree pip builds; a checkout
    # that grew build/ during a test run failed the README's layout test in CI.
    root = tmp_path / "src"
    fake_source(root, "A = 1\n")
    (root / "seawall" / "__pycache__").mkdir()
    (root / "seawall" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    seen: dict[str, object] = {}

    def pip(command: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        source = Path(command[command.index("--wheel-dir") + 2])
        seen["source"] = source
        seen["files"] = sorted(p.relative_to(source) for p in source.rglob("*"))
        (source / "build").mkdir()
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(ops.subprocess, "run", pip)
    ops.pip_wheel(root, tmp_path / "wheels")
    source = seen["source"]
    assert isinstance(source, Path) and root not in source.parents
    assert seen["files"] == [Path("pyproject.toml"), Path("seawall"), Path("seawall/__init__.py")]
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    assert not source.exists()


def test_source_hash_covers_the_package_and_pyproject(tmp_path: Path) -> None:
    fake_source(tmp_path, "A = 1\n")
    before = ops.source_hash(tmp_path)
    (tmp_path / "pyproject.toml").write_text("[project]\nname='y'\n")
    assert ops.source_hash(tmp_path) != before


def test_this_checkout_is_a_source_root() -> None:
    assert ops.source_root() == REPO


def test_site_files_are_the_inventory_its_group_data_and_config() -> None:
    found = [target for _, target in ops.site_files(REPO, Path("inventories/lab.py"))]
    assert found[:2] == ["config.py", "inventories/lab.py"]
    assert "inventories/group_data/lab.py" in found


def _install_plan(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, remote_manifest: list[str] | None
) -> tuple[FakeHost, list[Call]]:
    """Run the ops install phase on a fake host whose wheelhouse holds ``remote_manifest``."""
    local = tmp_path / "wheelhouse"
    local.mkdir(parents=True)
    (local / "seawall-1-py3-none-any.whl").write_bytes(b"wheel")
    (local / ops.MANIFEST).write_text(ops.manifest(local))
    data = defaults.all_defaults()
    remote = data["ops_wheelhouse_dir"]
    digest = hashlib.sha256((local / ops.MANIFEST).read_bytes()).hexdigest()
    facts = {
        (FileContents, ("path", f"{remote}/{ops.MANIFEST}")): remote_manifest,
        (FileContents, ("path", f"{data['ops_venv_dir']}/{ops.INSTALLED}")): [digest],
    }
    fake = FakeHost(data=data, groups=["ops"], facts=facts, name="ops-1")
    calls: list[Call] = []
    monkeypatch.setattr(ops, "host", fake)
    monkeypatch.setattr(ops, "install_packages", lambda name, packages: None)
    monkeypatch.setattr(ops, "local_wheelhouse", lambda data: local)
    for module in ("files", "server"):
        monkeypatch.setattr(ops, module, Recorder(module, calls))
    ops._install(data)
    return fake, calls


def test_the_wheelhouse_is_copied_only_when_its_manifest_differs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake, calls = _install_plan(monkeypatch, tmp_path / "a", None)
    copy = ["Create the wheelhouse folder", "Copy the controller's wheelhouse"]
    assert [c.name for c in calls] == copy
    lines = (tmp_path / "a" / "wheelhouse" / ops.MANIFEST).read_text().splitlines()
    fake, calls = _install_plan(monkeypatch, tmp_path / "b", lines)
    assert [c.name for c in calls] == ["Create the wheelhouse folder"]
    assert fake.noops[0].startswith("the ops host holds wheelhouse ")
    # A wheel swapped on the host shows in its manifest: copied again.
    fake, calls = _install_plan(monkeypatch, tmp_path / "c", [lines[0].replace("a", "b", 1)])
    assert [c.name for c in calls] == copy


@pytest.mark.parametrize(
    ("found", "expected"),
    [
        # An admin key an earlier deploy copied beside the linked key: replaced by a link.
        ({"type": "file"}, "server.shell"),
        ({"type": "link"}, "files.link"),
        (None, "files.link"),
    ],
)
def test_the_ssh_keys_public_half_is_the_ops_keys_own(
    monkeypatch: pytest.MonkeyPatch, found: dict[str, str] | None, expected: str
) -> None:
    key = "/var/lib/seawall/lab/id_ed25519"
    fake = FakeHost(
        data={}, groups=["ops"], facts={(FileState, ("path", f"{key}.pub")): found}, name="ops-1"
    )
    calls: list[Call] = []
    monkeypatch.setattr(ops, "host", fake)
    for module in ("files", "server"):
        monkeypatch.setattr(ops, module, Recorder(module, calls))
    ops._ops_key_at(key)
    assert [c.op for c in calls] == ["files.directory", "files.link", expected]
    assert calls[1].kwargs == {
        "name": "Point the inventory's ssh_key at the ops key",
        "path": key,
        "target": ops.OPS_KEY,
    }
    last = calls[2].kwargs
    if expected == "files.link":
        assert (last["path"], last["target"]) == (f"{key}.pub", f"{ops.OPS_KEY}.pub")
    else:
        assert last["commands"] == [f"ln -sfn {ops.OPS_KEY}.pub {key}.pub"]


def test_an_admin_key_at_the_ssh_keys_public_half_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = defaults.all_defaults() | {
        "ssh_key": "/root/.ssh/id_ed25519",
        "admin_ssh_public_key_file": "/root/.ssh/id_ed25519.pub",
    }
    monkeypatch.setattr(ops, "host", FakeHost(data=data, groups=["ops"], facts={}, name="ops-1"))
    # pyinfra's own HostData, as a deploy passes it (no [] access).
    with pytest.raises(DeployError, match=r"ops-1: admin_ssh_public_key_file: /root/\.ssh/id_ed"):
        ops.admin_key_apart(HostData(None, data))
    apart = data | {"admin_ssh_public_key_file": "/etc/seawall/admin_ed25519.pub"}
    ops.admin_key_apart(HostData(None, apart))


def test_the_lab_keeps_the_admin_key_apart_from_the_ssh_keys_public_half() -> None:
    lab = inventory.load(REPO / "inventories/lab.py")
    for member in lab:
        assert member.data["admin_ssh_public_key_file"] != f"{member.data['ssh_key']}.pub"


def test_tree_state_reads_a_real_tree_as_wanted_tree_describes_the_copy(tmp_path: Path) -> None:
    """TreeState's command, run by a real shell on a copy made as files.sync makes it,
    equals wanted_tree of the source; a changed byte, mode or extra file does not."""
    source, copy = tmp_path / "deploys", tmp_path / "copy"
    (source / "sub" / "__pycache__").mkdir(parents=True)
    (source / "site.py").write_text("print('site')\n")
    (source / "sub" / "a file.py").write_text("x = 1\n")
    (source / "sub" / "__pycache__" / "x.pyc").write_bytes(b"cache")
    (source / "stale.pyc").write_bytes(b"cache")
    shutil.copytree(source, copy)
    for path in [copy, *copy.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)

    def read() -> Any:
        fact = TreeState()
        run = subprocess.run(
            ["sh", "-c", fact.command(str(copy))], capture_output=True, text=True, check=True
        )
        return fact.process(run.stdout.splitlines())

    wanted = ops.wanted_tree(source)
    assert set(wanted) == {"site.py", "sub", "sub/a file.py"}
    assert read() == wanted
    (copy / "site.py").write_text("print('changed')\n")
    assert read() != wanted
    (copy / "site.py").write_text("print('site')\n")
    (copy / "sub" / "a file.py").chmod(0o600)
    assert read() != wanted
    (copy / "sub" / "a file.py").chmod(0o644)
    (copy / "extra.py").write_text("")
    assert read() != wanted
    (copy / "extra.py").unlink()
    assert read() == wanted
    shutil.rmtree(copy)
    assert read() is None

"""`seawall drift`: reading pyinfra's dry-run plan, the verdict and exit codes, the textfile.

No lab. The plans in tests/unit/drift/ are written by hand in the exact shape
of pyinfra 3.10's ``print_run_json`` (``pyinfra_cli/prints.py``); one test
runs the real pyinfra on this machine (``@local``, plus a loopback port nobody
listens on) so the shape and the "could not connect" lines are checked against
pyinfra itself, not against our reading of it. The CLI tests point every host at
a loopback listener that counts connections: a bad inventory must make none.
"""

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from seawall import drift as drift_module
from seawall.cli import app
from seawall.drift import (
    DRIFT_HOST_LABEL,
    TEXTFILE_NAME,
    DriftReport,
    find_root,
    judge,
    parse_plan,
    parse_unreachable,
    textfile,
    write_textfile,
)
from seawall.errors import SeawallError
from tests.unit.test_inventory_rules import HOSTS, Listener, write_site

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).with_name("drift")
LAB_HOSTS = ["data-1", "data-2", "data-3", "app-1", "app-2", "gw-1", "ops-1"]
PYINFRA = str(Path(sys.executable).with_name("pyinfra"))
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
ALERTS = REPO / "seawall" / "files" / "metrics" / "alerts.yml"
runner = CliRunner()


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def judged(name: str, returncode: int = 0, stderr: str = "") -> DriftReport:
    return judge("inventories/lab.py", LAB_HOSTS, returncode, fixture(name), stderr, 2.5)


@pytest.fixture
def listener() -> Iterator[Listener]:
    served = Listener()
    yield served
    served.close()


# --- the plan -----------------------------------------------------------------------


def test_no_drift_right_after_a_deploy() -> None:
    report = judged("no_drift.json")
    assert report.drift == {}
    assert report.error is None
    assert report.ok
    assert report.exit_code == 0
    assert report.checked == tuple(LAB_HOSTS)
    assert "no drift (7/7 hosts checked" in report.to_text()


def test_drift_on_two_hosts_names_host_and_operation() -> None:
    report = judged("two_hosts.json")
    assert report.drift == {
        "app-2": ["Write the role marker", "Write the service unit"],
        "gw-1": ["Configure NGINX as the gateway (checked with nginx -t first)"],
    }
    # One finding per host and operation name: the loop's two op hashes count once.
    assert report.operations == 3
    assert not report.ok
    assert report.exit_code == 1
    text = report.to_text()
    assert "DRIFT: 3 operation(s) on app-2, gw-1" in text
    assert "gw-1   Configure NGINX as the gateway (checked with nginx -t first)" in text


def test_conditional_restarts_are_not_drift() -> None:
    report = judged("conditional_only.json")
    assert report.drift == {}
    assert report.exit_code == 0
    # The same restarts beside a real change do not add to it either.
    assert "Reload NGINX (its configuration changed)" not in str(judged("two_hosts.json").drift)


def test_an_unreachable_host_is_an_error_naming_it_and_the_others_are_still_judged() -> None:
    report = judged("failed_host.json", returncode=1, stderr=fixture("failed_host.stderr"))
    assert report.unreachable == {"data-3": "Could not connect ([Errno 113] No route to host)"}
    assert report.error is not None and "data-3" in report.error
    assert report.exit_code == 2
    assert "data-3" not in report.checked and len(report.checked) == 6
    # What pyinfra did plan for the reachable hosts is still reported.
    assert report.drift == {"app-1": ["Write the role marker"]}
    assert "data-3  UNREACHABLE: Could not connect" in report.to_text()


def test_a_failed_run_without_connect_errors_is_an_error_with_pyinfra_s_words() -> None:
    stderr = "--> Loading inventory...\nseawall: inventory x.py is not valid:\n  gw-1: foo: bad\n"
    report = judge("x.py", LAB_HOSTS, 2, "", stderr, 0.4)
    assert report.exit_code == 2
    assert report.checked == ()
    assert report.error == (
        "pyinfra exited 2: --> Loading inventory... | seawall: inventory x.py is not valid: "
        "| gw-1: foo: bad"
    )


def test_a_host_failing_after_it_connected_is_named() -> None:
    stderr = (
        "    [app-1]  Connected\n"
        "    [gw-1]   Error (ignored): a warning that does not fail the run\n"
        "    [data-2] Error: could not load fact: Postgres\n"
    )
    report = judge("x.py", LAB_HOSTS, 1, fixture("no_drift.json"), stderr, 3.0)
    assert report.exit_code == 2
    assert report.unreachable == {}
    assert report.error is not None
    assert report.error.startswith("pyinfra exited 1 on data-2: ")
    assert "data-2" not in report.checked and "gw-1" in report.checked


def test_exit_0_without_a_plan_is_an_error_not_a_clean_bill() -> None:
    report = judge("x.py", LAB_HOSTS, 0, "not json", "", 0.1)
    assert report.exit_code == 2
    assert report.error is not None and "no plan" in report.error


@pytest.mark.parametrize(
    "stdout",
    ["", "{}", '{"plan": [{"name": "x"}]}', '{"plan": null}', "[1]"],
)
def test_a_malformed_plan_is_refused(stdout: str) -> None:
    with pytest.raises(SeawallError, match="no plan"):
        parse_plan(stdout)


def test_connect_errors_of_hosts_outside_the_inventory_and_other_lines_are_ignored() -> None:
    stderr = (
        "    [gw-1]   Could not connect (timed out)\n"
        "    [app-9]  Could not connect (timed out)\n"
        "    [app-1]  Connected\n"
        "    [app-2]  \x1b[31mSSH error (Error reading SSH protocol banner)\x1b[0m\n"
        "    Failed to load host keys from /root/.ssh/known_hosts\n"
    )
    assert parse_unreachable(stderr, LAB_HOSTS) == {
        "gw-1": "Could not connect (timed out)",
        "app-2": "SSH error (Error reading SSH protocol banner)",
    }


def test_json_report() -> None:
    data = judged("two_hosts.json").to_json()
    assert data["ok"] is False and data["exit_code"] == 1
    assert data["operations"] == 3
    assert data["drift"]["gw-1"] == ["Configure NGINX as the gateway (checked with nginx -t first)"]
    assert data["hosts"] == LAB_HOSTS and data["unreachable"] == {} and data["error"] is None
    assert data["duration_seconds"] == 2.5
    json.dumps(data)


# --- against pyinfra itself ---------------------------------------------------------


def _dry_run(folder: Path, inventory: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYINFRA, "--dry", "--json", inventory, "deploys/site.py"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "NO_COLOR": "1", "PYINFRA_PROGRESS": "off"},
    )


def test_the_fixtures_have_the_shape_real_pyinfra_prints(
    tmp_path: Path, listener: Listener
) -> None:
    # A deploy on this machine (@local): one file that would be created, one
    # directory that exists already, a restart conditional on the file. Nothing
    # is written: it is a dry run.
    (tmp_path / "deploys").mkdir()
    (tmp_path / "deploys" / "site.py").write_text(
        "from pyinfra.operations import files, server\n"
        f"made = files.file(name='Write the marker', path={str(tmp_path / 'marker')!r})\n"
        f"files.directory(name='Keep the folder', path={str(tmp_path)!r})\n"
        "server.shell(name='Restart after the marker', commands=['true'], _if=made.did_change)\n"
    )
    (tmp_path / "inventory.py").write_text(
        "all = ['@local', ('gone-1', "
        f"{{'ssh_hostname': '127.0.0.1', 'ssh_port': {listener.port}}})]\n"
    )
    result = _dry_run(tmp_path, "inventory.py")
    assert not (tmp_path / "marker").exists()
    recorded = json.loads(fixture("two_hosts.json"))
    real = json.loads(result.stdout)
    assert real.keys() == recorded.keys() and real["results"] is None
    assert {tuple(op) for op in real["plan"]} == {tuple(op) for op in recorded["plan"]}

    report = judge("inventory.py", ["@local", "gone-1"], result.returncode, *_outs(result), 1.0)
    assert result.returncode == 1, result.stderr
    assert listener.accepted >= 1
    assert report.drift == {"@local": ["Write the marker"]}
    assert list(report.unreachable) == ["gone-1"]
    assert report.exit_code == 2 and report.checked == ("@local",)


def _outs(result: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    return result.stdout, result.stderr


def test_without_any_reachable_host_pyinfra_prints_no_plan_and_every_host_is_named(
    tmp_path: Path,
) -> None:
    (tmp_path / "deploys").mkdir()
    (tmp_path / "deploys" / "site.py").write_text("from pyinfra.operations import server\n")
    (tmp_path / "inventory.py").write_text(
        "all = [('h-1', {'ssh_hostname': '127.0.0.1', 'ssh_port': 1}),"
        " ('h-2', {'ssh_hostname': '127.0.0.1', 'ssh_port': 9})]\n"
    )
    result = _dry_run(tmp_path, "inventory.py")
    report = judge("inventory.py", ["h-1", "h-2"], result.returncode, *_outs(result), 1.0)
    assert result.stdout.strip() == ""
    assert sorted(report.unreachable) == ["h-1", "h-2"]
    assert report.exit_code == 2 and report.checked == ()


# --- drift() and the CLI, with hosts no connection may leave the machine for -------


def test_finds_the_deploy_beside_the_inventory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on the ops host: copies of deploys/ and inventories/ side by side.
    (tmp_path / "deploys").mkdir()
    (tmp_path / "deploys" / "site.py").write_text("")
    (tmp_path / "inventories").mkdir()
    monkeypatch.chdir("/")
    assert find_root(tmp_path / "inventories" / "prod.py") == tmp_path
    with pytest.raises(SeawallError, match="deploys/site.py is neither under /"):
        find_root(Path("/nonexistent/inventories/x.py"))


def test_cli_bad_inventory_exits_2_before_any_host_is_contacted(
    tmp_path: Path, listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_site(tmp_path, ssh_port=listener.port, group_data="redis_apendfsync = 'always'\n")
    monkeypatch.chdir(REPO)
    textfiles = tmp_path / "textfile"
    textfiles.mkdir()
    result = runner.invoke(
        app,
        ["drift", "-i", str(path), "--json", "--textfile-dir", str(textfiles)],
        catch_exceptions=False,
    )
    assert result.exit_code == 2, result.output
    report = json.loads(result.stdout)
    assert report["exit_code"] == 2 and report["checked"] == []
    assert "redis_apendfsync" in report["error"]
    assert "redis_apendfsync" in result.stderr
    assert listener.accepted == 0
    written = (textfiles / TEXTFILE_NAME).read_text()
    assert "seawall_drift_last_run_success 0" in written
    assert "# error: inventory" in written and "redis_apendfsync" in written


def test_cli_unreachable_hosts_exit_2_naming_each(
    tmp_path: Path, listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A valid inventory whose every host is a loopback listener that hangs up:
    # pyinfra tries (the control that the test above would see a connection)
    # and fails on each; the real deploys/site.py is never reached.
    path = write_site(tmp_path, ssh_port=listener.port)
    monkeypatch.chdir(REPO)
    result = runner.invoke(app, ["drift", "-i", str(path), "--json"], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    report = json.loads(result.stdout)
    assert sorted(report["unreachable"]) == sorted(HOSTS)
    assert report["checked"] == [] and report["drift"] == {}
    assert listener.accepted >= len(HOSTS)
    for host in HOSTS:
        assert host in result.stderr


def test_the_dry_run_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A host that accepts the TCP connection and never says a word: pyinfra
    # waits on its SSH banner; the time bound ends the run as an error.
    import socket

    silent = socket.create_server(("127.0.0.1", 0))
    try:
        path = write_site(tmp_path, ssh_port=silent.getsockname()[1])
        monkeypatch.chdir(REPO)
        report = drift_module.drift(path, timeout=3)
    finally:
        silent.close()
    assert report.exit_code == 2
    assert report.error == "pyinfra's dry run did not finish within 3 s"
    assert report.duration_seconds < 30


@pytest.mark.parametrize(("name", "code"), [("no_drift.json", 0), ("two_hosts.json", 1)])
def test_cli_exit_codes_follow_the_report(
    name: str, code: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The verdict itself is judged above from pyinfra's output; here only the
    # CLI's mapping of a report to output, textfile and exit code.
    monkeypatch.setattr(drift_module, "drift", lambda *_args, **_kw: judged(name))
    result = runner.invoke(
        app,
        ["drift", "-i", "inventories/lab.py", "--textfile-dir", str(tmp_path)],
        catch_exceptions=False,
    )
    assert result.exit_code == code, result.output
    assert ("no drift" in result.stdout) == (code == 0)
    assert "seawall_drift_last_run_success 1" in (tmp_path / TEXTFILE_NAME).read_text()


def test_cli_unwritable_textfile_dir_is_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drift_module, "drift", lambda *_args, **_kw: judged("no_drift.json"))
    result = runner.invoke(
        app, ["drift", "-i", "inventories/lab.py", "--textfile-dir", "/nonexistent/textfile"]
    )
    assert result.exit_code == 2
    assert "cannot write /nonexistent/textfile/seawall_drift.prom" in result.stderr


# --- the textfile -------------------------------------------------------------------


def _samples(text: str) -> dict[str, str]:
    return {
        line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_textfile_has_a_series_per_checked_host_and_promtool_accepts_it() -> None:
    report = judged("two_hosts.json")
    text = textfile(report)
    samples = _samples(text)
    assert samples['seawall_drift_operations{drift_host="app-2"}'] == "2"
    assert samples['seawall_drift_operations{drift_host="gw-1"}'] == "1"
    assert samples['seawall_drift_operations{drift_host="data-1"}'] == "0"
    assert len([s for s in samples if s.startswith("seawall_drift_operations")]) == 7
    assert samples["seawall_drift_last_run_success"] == "1"
    assert float(samples["seawall_drift_last_run_timestamp_seconds"]) == pytest.approx(
        report.finished_at, abs=0.001
    )
    lint = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_textfile_on_error_has_success_0_the_reason_and_no_series_for_unchecked_hosts() -> None:
    report = judged("failed_host.json", returncode=1, stderr=fixture("failed_host.stderr"))
    text = textfile(report)
    samples = _samples(text)
    assert samples["seawall_drift_last_run_success"] == "0"
    assert 'seawall_drift_operations{drift_host="data-3"}' not in samples
    assert samples['seawall_drift_operations{drift_host="app-1"}'] == "1"
    reason = [line for line in text.splitlines() if line.startswith("# error: ")]
    assert reason == [
        "# error: unreachable: data-3 (Could not connect ([Errno 113] No route to host))"
    ]


def test_a_multi_line_error_stays_one_comment_line() -> None:
    report = DriftReport("x", (), (), error="inventory x is not valid:\n  gw-1: key: bad")
    lines = textfile(report).splitlines()
    assert "# error: inventory x is not valid: gw-1: key: bad" in lines
    assert all(line.startswith("#") or line.startswith("seawall_") for line in lines)


def test_the_alert_rule_fires_on_what_the_textfile_writes(tmp_path: Path) -> None:
    # The series as Prometheus stores them after scraping ops-1's node exporter
    # (the scrape adds job, instance and host; drift_host survives unrenamed).
    report = judged("two_hosts.json")
    series = [
        {
            "series": name.replace("{", '{job="node",instance="10.0.0.41:9100",host="ops-1",'),
            "values": f"{value}x10",
        }
        for name, value in _samples(textfile(report)).items()
        if name.startswith("seawall_drift_operations")
    ]
    case = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": series,
                "alert_rule_test": [
                    {
                        "eval_time": "1m",
                        "alertname": "DriftDetected",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "job": "node",
                                    "instance": "10.0.0.41:9100",
                                    "host": "ops-1",
                                    DRIFT_HOST_LABEL: host,
                                },
                                "exp_annotations": {
                                    "summary": f"Configuration drift on {host}: {count} "
                                    "operations pending",
                                    "description": f"The drift check on ops-1 found {count} "
                                    f"operations that a deploy would run on {host}. Read its "
                                    "JSON report on ops-1 (or run `seawall drift`), find who "
                                    "changed what by hand, then either deploy "
                                    "(deploys/site.py) or put the change in the inventory.",
                                },
                            }
                            for host, count in (("app-2", 2), ("gw-1", 1))
                        ],
                    }
                ],
            }
        ],
    }
    (tmp_path / "drift.yml").write_text(yaml.safe_dump(case))
    result = subprocess.run(
        [PROMTOOL, "test", "rules", "drift.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_write_textfile_replaces_the_file_readable_by_the_collector(tmp_path: Path) -> None:
    write_textfile(judged("failed_host.json", 1, fixture("failed_host.stderr")), tmp_path)
    path = write_textfile(judged("no_drift.json"), tmp_path)
    assert path == tmp_path / TEXTFILE_NAME
    assert "seawall_drift_last_run_success 1" in path.read_text()
    assert path.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == [TEXTFILE_NAME]


def test_write_goes_through_a_temporary_file_the_collector_ignores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    renames: list[tuple[Path, Path, str]] = []
    real_replace = os.replace

    def replace(src: str, dst: str) -> None:
        renames.append((Path(src), Path(dst), Path(src).read_text()))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    write_textfile(judged("two_hosts.json"), tmp_path)
    [(src, dst, content)] = renames
    assert src.parent == dst.parent == tmp_path
    assert not src.name.endswith(".prom")  # node exporter reads *.prom only
    assert content == dst.read_text()  # complete before the rename


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_textfile(judged("no_drift.json"), tmp_path)
    before = (tmp_path / TEXTFILE_NAME).read_text()

    def replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(SeawallError, match="No space left on device"):
        write_textfile(judged("two_hosts.json"), tmp_path)
    assert (tmp_path / TEXTFILE_NAME).read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [TEXTFILE_NAME]


READER = """
import json, pathlib, sys
path, stop = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
reads = torn = 0
print("ready", flush=True)
while not stop.exists():
    text = path.read_text()
    reads += 1
    torn += not text.endswith("seawall_drift_last_run_success 1\\n")
print(json.dumps({"reads": reads, "torn": torn}))
"""


def test_a_reader_never_sees_half_a_file(tmp_path: Path) -> None:
    # The collector's side, in another process (a thread would mostly wait on
    # the GIL): it reads the file over and over while it is replaced 200 times.
    reports = [judged("two_hosts.json"), judged("no_drift.json")]
    write_textfile(reports[0], tmp_path)
    stop = tmp_path.parent / f"{tmp_path.name}.stop"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(tmp_path / TEXTFILE_NAME), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert reader.stdout is not None and reader.stdout.readline() == "ready\n"
    try:
        for i in range(200):
            write_textfile(reports[i % 2], tmp_path)
    finally:
        stop.touch()
    out, _ = reader.communicate(timeout=60)
    seen = json.loads(out)
    assert seen["torn"] == 0
    assert seen["reads"] > 20  # it did read while the file was being replaced


def test_a_missing_textfile_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SeawallError, match="cannot write"):
        write_textfile(judged("no_drift.json"), tmp_path / "absent")

"""Alert rules and the gateway's mtail program, checked by the real promtool and mtail.

`promtool check rules` accepts seawall/files/metrics/alerts.yml, every test file
under tests/prometheus passes `promtool test rules`, and each alert has a case
where it fires and one where it does not. gateway.mtail compiles and counts a
log written in the gateway template's own log_format.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from seawall import defaults, inventory
from seawall.components import gateway, templates
from tests.prometheus import promql

TESTS = Path(promql.__file__).resolve().parent
TEST_FILES = sorted(TESTS.glob("*.yml"))
MTAIL_PROGRAM = promql.ROOT / "seawall" / "files" / "metrics" / "gateway.mtail"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
MTAIL = shutil.which("mtail") or "/usr/bin/mtail"


def _run(*argv: str, cwd: Path = TESTS) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)


def _rules() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in promql.alert_rules()}


def test_promtool_accepts_the_rules() -> None:
    result = _run(PROMTOOL, "check", "rules", str(promql.ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


@pytest.mark.parametrize("test_file", TEST_FILES, ids=lambda path: path.name)
def test_promtool_rule_tests_pass(test_file: Path) -> None:
    result = _run(PROMTOOL, "test", "rules", test_file.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_a_wrong_expectation_fails_promtool(tmp_path: Path) -> None:
    # The harness above would pass vacuously if promtool did not compare: here a
    # drift of 0 operations is expected to alert, and promtool must say no.
    case = {
        "rule_files": [str(promql.ALERTS)],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": [
                    {
                        "series": 'seawall_drift_operations{job="node",host="ops-1"}',
                        "values": "0x10",
                    }
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "1m",
                        "alertname": "DriftDetected",
                        "exp_alerts": [{"exp_labels": {"severity": "warning"}}],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "wrong.yml"
    path.write_text(yaml.safe_dump(case))
    result = _run(PROMTOOL, "test", "rules", path.name, cwd=tmp_path)
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


def _cases() -> tuple[set[str], set[str]]:
    """(alerts some case expects firing, alerts some case expects quiet)."""
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in TEST_FILES:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    return firing, quiet


def test_every_alert_has_a_firing_case_and_a_quiet_case() -> None:
    firing, quiet = _cases()
    names = set(_rules())
    assert names, "no alert rules found"
    assert sorted(names - firing) == [], "alerts without a case where they fire"
    assert sorted(names - quiet) == [], "alerts without a case where they do not fire"
    assert sorted((firing | quiet) - names) == [], "cases for alerts that do not exist"


def test_every_rule_has_a_severity_a_summary_and_a_description() -> None:
    for name, rule in _rules().items():
        severity = rule["labels"]["severity"]
        assert severity in {"warning", "critical"} or (
            "critical" in severity and "warning" in severity
        ), name
        assert rule["annotations"]["summary"].strip(), name
        assert rule["annotations"]["description"].strip(), name


def test_rules_select_only_the_documented_job_names() -> None:
    jobs = promql.documented_jobs()
    assert jobs == {
        "node",
        "redis",
        "sentinel",
        "postgres",
        "patroni",
        "etcd",
        "nginx",
        "mtail",
        "blackbox",
    }
    used = {
        job for rule in promql.alert_rules() for job in re.findall(r'job="(\w+)"', rule["expr"])
    }
    assert used and used <= jobs


def test_the_replica_lag_threshold_is_patronis_maximum_lag_on_failover() -> None:
    # Beyond it Patroni will not promote the replica: the alert says so.
    expr = _rules()["PostgresReplicaLag"]["expr"]
    assert re.search(r">\s*(\d+)\s*$", expr.strip()).group(1) == str(  # type: ignore[union-attr]
        defaults.PATRONI["patroni_maximum_lag_on_failover"]
    )


def test_mtail_compiles_the_gateway_program() -> None:
    result = _run(MTAIL, "--compile_only", "--progs", str(MTAIL_PROGRAM), cwd=promql.ROOT)
    assert result.returncode == 0, result.stderr


def test_mtail_refuses_a_broken_program(tmp_path: Path) -> None:
    # The compile check above means something only if mtail fails on an error.
    broken = tmp_path / "broken.mtail"
    broken.write_text("counter x\n/a/ { y++ }\n")
    result = _run(MTAIL, "--compile_only", "--progs", str(broken), cwd=tmp_path)
    assert result.returncode != 0


# Values for the log_format's variables; the rest become 1 (a JSON number where
# the format leaves a variable unquoted, a string elsewhere).
SAMPLE = {"route": "execution", "status": "502", "request_time": "0.123"}


def _log_line(log_format: str, values: dict[str, str]) -> str:
    return re.sub(r"\$(\w+)", lambda m: values.get(m.group(1), "1"), log_format)


def _gateway_log_format(lab: inventory.Topology) -> str:
    """The seawall_json log_format of the gateway's nginx.conf as rendered for gw-1."""
    apps = [host.address for host in lab.group("app")]
    conf = templates.render(
        "gateway", "/etc/nginx/nginx.conf", gateway.context(lab.host("gw-1").data, apps)
    )
    statement = re.search(r"log_format seawall_json escape=json(.*?);", conf, re.S)
    assert statement, "no seawall_json log_format in nginx.conf"
    return "".join(re.findall(r"'([^']*)'", statement.group(1)))


def _one_shot(tmp_path: Path, lines: list[str]) -> str:
    log = tmp_path / "access-json.log"
    log.write_text("".join(line + "\n" for line in lines))
    result = _run(
        MTAIL,
        "--one_shot",
        "--one_shot_format",
        "prometheus",
        "--progs",
        str(MTAIL_PROGRAM),
        "--logs",
        str(log),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _value(metrics: str, series: str) -> float:
    match = re.search(rf"^{re.escape(series)} (\S+)$", metrics, re.M)
    assert match, f"{series} not in mtail's output:\n{metrics}"
    return float(match.group(1))


def test_mtail_counts_the_gateway_log_by_route_and_status(
    lab: inventory.Topology, tmp_path: Path
) -> None:
    log_format = _gateway_log_format(lab)
    lines = [
        _log_line(log_format, SAMPLE),
        _log_line(log_format, SAMPLE),
        _log_line(log_format, {"route": "-", "status": "404", "request_time": "0.000"}),
        # A field that looks like another one inside a value (escape=json turns
        # its quotes into \") is not taken for it.
        _log_line(
            log_format,
            SAMPLE | {"status": "200", "http_user_agent": '\\"status\\":599,\\"route\\":\\"y\\"'},
        ),
        '{"ts":"2026-01-01T00:00:00+00:00","request_id":"r1"}',
    ]
    for line in lines[:4]:
        json.loads(line)  # the sample lines are the JSON nginx would write
    metrics = _one_shot(tmp_path, lines)
    prog = 'prog="gateway.mtail"'
    total = "seawall_gateway_responses_total"
    assert _value(metrics, f'{total}{{{prog},route="execution",status="502"}}') == 2
    assert _value(metrics, f'{total}{{{prog},route="execution",status="200"}}') == 1
    assert _value(metrics, f'{total}{{{prog},route="-",status="404"}}') == 1
    assert 'status="599"' not in metrics and 'route="y"' not in metrics
    assert _value(metrics, f"seawall_gateway_unparsed_lines_total{{{prog}}}") == 1

    histogram = "seawall_gateway_request_duration_seconds"
    execution = f'{prog},route="execution"'
    assert _value(metrics, f'{histogram}_bucket{{{execution},le="0.1"}}') == 0
    assert _value(metrics, f'{histogram}_bucket{{{execution},le="0.25"}}') == 3
    assert _value(metrics, f"{histogram}_count{{{execution}}}") == 3
    assert _value(metrics, f"{histogram}_sum{{{execution}}}") == pytest.approx(0.369)
    # A 0.000 request is counted in the first bucket (mtail rc50 drops an
    # observed 0 from every bucket).
    nothing = f'{prog},route="-"'
    assert _value(metrics, f'{histogram}_bucket{{{nothing},le="0.005"}}') == 1
    assert _value(metrics, f'{histogram}_bucket{{{nothing},le="+Inf"}}') == 1


def test_mtail_metric_names_are_listed() -> None:
    # What the alerts and dashboards may query from job="mtail".
    declared: set[str] = set()
    for kind, name in re.findall(
        r"^(counter|histogram|gauge) (\w+)", MTAIL_PROGRAM.read_text(), re.M
    ):
        suffixes = ("_bucket", "_sum", "_count") if kind == "histogram" else ("",)
        declared.update(name + suffix for suffix in suffixes)
    assert len(declared) == 5
    known = promql.known_metric_names()
    assert sorted(declared - known) == []

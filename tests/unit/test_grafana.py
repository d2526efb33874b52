"""Grafana provisioning files, and the metric names every panel and alert queries.

Each file parses; dashboards have unique uids and use the provisioned
datasource; every panel queries something, its PromQL parses (promtool checks
it as a recording rule) and every metric it names, like every metric an alert
rule names, is in tests/prometheus/metric_names.txt (what the Debian 12
exporters expose).
"""

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.prometheus import promql

DATASOURCE = promql.GRAFANA / "datasources" / "prometheus.yml"
PROVIDER = promql.GRAFANA / "providers" / "seawall.yml"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
DASHBOARDS = promql.dashboards()


def _datasource() -> dict[str, Any]:
    data = yaml.safe_load(DATASOURCE.read_text())
    assert data["apiVersion"] == 1
    (source,) = data["datasources"]
    return dict(source)


def test_the_datasource_is_prometheus_with_its_address_from_the_environment() -> None:
    source = _datasource()
    assert source["type"] == "prometheus"
    assert source["uid"] == "seawall-prometheus"
    # Addresses are stated in the inventory only: Grafana expands the variable.
    assert source["url"] == "$SEAWALL_PROMETHEUS_URL"
    assert not re.search(r"\d+\.\d+\.\d+\.\d+", DATASOURCE.read_text())


def test_the_datasource_logs_in_with_a_password_from_the_environment() -> None:
    # Prometheus admits only its API user; the password is never in this file.
    source = _datasource()
    assert source["basicAuth"] is True
    assert source["basicAuthUser"] == "$SEAWALL_PROMETHEUS_USER"
    assert source["secureJsonData"] == {"basicAuthPassword": "$SEAWALL_PROMETHEUS_PASSWORD"}
    assert "password" not in source.get("jsonData", {})


def test_the_provider_loads_a_folder_of_read_only_dashboards() -> None:
    data = yaml.safe_load(PROVIDER.read_text())
    assert data["apiVersion"] == 1
    (provider,) = data["providers"]
    assert provider["type"] == "file"
    assert provider["allowUiUpdates"] is False
    assert provider["options"]["path"].startswith("/")


def test_one_dashboard_per_area_with_unique_uids_and_titles() -> None:
    uids = [board["uid"] for board in DASHBOARDS.values()]
    titles = [board["title"] for board in DASHBOARDS.values()]
    assert len(set(uids)) == len(uids)
    assert len(set(titles)) == len(titles)
    assert {path.stem for path in DASHBOARDS} == {"hosts", "redis", "postgres", "gateway"}
    for board in DASHBOARDS.values():
        # Grafana refuses a uid over 40 characters.
        assert re.fullmatch(r"[a-z0-9-]{1,40}", board["uid"]), board["uid"]


@pytest.mark.parametrize("path", list(DASHBOARDS), ids=lambda path: path.name)
def test_every_panel_queries_the_provisioned_datasource(path: Path) -> None:
    board = DASHBOARDS[path]
    uid = _datasource()["uid"]
    panels = list(promql.panels(board))
    assert panels
    assert len({panel["id"] for panel in panels}) == len(panels), "panel ids repeat"
    for panel in panels:
        assert panel["title"], panel
        assert panel["datasource"]["uid"] == uid, panel["title"]
        targets = panel.get("targets", [])
        assert targets, f"{panel['title']} has no query"
        for target in targets:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == uid, panel["title"]
    for variable in board["templating"]["list"]:
        assert variable["datasource"]["uid"] == uid, variable["name"]


@pytest.mark.parametrize("path", list(DASHBOARDS), ids=lambda path: path.name)
def test_panels_do_not_overlap(path: Path) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in promql.panels(DASHBOARDS[path]):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


@pytest.mark.parametrize("path", list(DASHBOARDS), ids=lambda path: path.name)
def test_every_variable_a_query_uses_is_defined(path: Path) -> None:
    board = DASHBOARDS[path]
    defined = {variable["name"] for variable in board["templating"]["list"]}
    builtin = {"__rate_interval", "__interval", "__range"}
    for title, expr in promql.panel_exprs(board):
        used = set(re.findall(r"\$\{?(\w+)", expr))
        assert used <= defined | builtin, f"{title}: {sorted(used - defined - builtin)}"


def test_every_panel_query_is_valid_promql(tmp_path: Path) -> None:
    # promtool parses each expression as a recording rule; Grafana's variables
    # are replaced first, as Grafana does before it sends the query.
    rules = [
        {"record": f"seawall:panel_{n}", "expr": promql.as_promql(expr)}
        for n, (_, expr) in enumerate(
            item for board in DASHBOARDS.values() for item in promql.panel_exprs(board)
        )
    ]
    assert len(rules) > 20
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_metric_queried_is_one_the_exporters_expose() -> None:
    used = promql.used_metric_names()
    known = promql.known_metric_names()
    # Every area is queried: the list is not checked against nothing.
    for name in ("up", "redis_instance_info", "patroni_primary", "probe_success"):
        assert name in used
    unknown = {name: sorted(where) for name, where in used.items() if name not in known}
    assert unknown == {}


def test_every_alert_metric_is_on_a_dashboard() -> None:
    # Whoever is paged finds the series the alert fired on, on a dashboard.
    on_dashboards = {
        name
        for board in DASHBOARDS.values()
        for _, expr in promql.panel_exprs(board)
        for name in promql.metric_names(promql.as_promql(expr))
    }
    in_alerts = {
        name for rule in promql.alert_rules() for name in promql.metric_names(rule["expr"])
    }
    assert sorted(in_alerts - on_dashboards) == []


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('up{job="node"} == 0', {"up"}),
        ("rate(a_total[5m]) / ignoring(x) b", {"a_total", "b"}),
        (
            'histogram_quantile(0.99, sum by (le, route) (rate(h_bucket{route=~"a|b"}[1m])))',
            {"h_bucket"},
        ),
        ("x unless x offset 15m", {"x"}),
        ('absent(m{role="master"}) or count(n) > 1e6', {"m", "n"}),
        ("scalar(max(p and on (instance) q == 1)) - r > 24 * 3600", {"p", "q", "r"}),
        ('label_replace(s, "dst", "$1", "src", "(.*)")', {"s"}),
        ("level:job:rate5m", {"level:job:rate5m"}),
    ],
)
def test_metric_names_are_found_in_promql(expr: str, names: set[str]) -> None:
    assert promql.metric_names(expr) == names

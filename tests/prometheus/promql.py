"""The metric names PromQL expressions query, for the rules and dashboards tests.

promtool 2.42 parses rules (`check rules`) but prints no parse tree, so names
are found lexically: strings, label matchers, ranges and the label lists of
by/without/on/ignoring/group_* are removed, then every identifier that is not a
function call, keyword or number is a metric name. Expressions are also checked
by promtool itself, so this only has to be right on valid PromQL.
"""

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "seawall" / "files" / "metrics" / "alerts.yml"
GRAFANA = ROOT / "seawall" / "files" / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
METRIC_NAMES = Path(__file__).resolve().parent / "metric_names.txt"

_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "inf",
    "nan",
    "atan2",
}
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_DURATION = re.compile(r"\b\d+(?:ms|[smhdwy])\b")
_IDENT = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression queries (`rate(x_total[5m]) / y` → {x_total, y})."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _LABEL_LIST.sub(" ", text)
    text = _DURATION.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call is None and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


def documented_jobs() -> set[str]:
    """The job names the header of alerts.yml promises the scrape configuration uses."""
    header = ALERTS.read_text().split("\ngroups:", 1)[0]
    return set(re.findall(r"^#     (\w+) {2,}", header, re.M))


def alert_rules() -> list[dict[str, Any]]:
    """Every rule of alerts.yml."""
    data = yaml.safe_load(ALERTS.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def dashboards() -> dict[Path, dict[str, Any]]:
    """Every dashboard JSON, by path."""
    return {path: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL expr) for every query target, and the template variables' queries."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            if "expr" in target:
                yield panel.get("title", ""), target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            yield f"${variable['name']}", variable_expr(text)


def variable_expr(query: str) -> str:
    """The PromQL inside a Grafana variable query: label_values(up{job="node"}, host) → up{...}."""
    match = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", query, re.S)
    return match.group(1) if match else query


def as_promql(expr: str) -> str:
    """A panel expr with Grafana's variables replaced, so promtool can parse it."""
    text = expr.replace("$__rate_interval", "1m").replace("$__interval", "1m")
    text = text.replace("$__range", "1h")
    # Variables sit inside label matchers ("=~\"$host\"") in these dashboards.
    return re.sub(r"\$\{?\w+\}?", "x", text)


def used_metric_names() -> dict[str, set[str]]:
    """{metric name: where it is queried} over every alert rule and dashboard."""
    used: dict[str, set[str]] = {}
    for rule in alert_rules():
        for name in metric_names(rule["expr"]):
            used.setdefault(name, set()).add(f"alert {rule['alert']}")
    for path, dashboard in dashboards().items():
        for title, expr in panel_exprs(dashboard):
            for name in metric_names(as_promql(expr)):
                used.setdefault(name, set()).add(f"{path.name}: {title}")
    return used


def known_metric_names() -> set[str]:
    """The names in metric_names.txt (one a line, '#' comments)."""
    lines = (line.split("#", 1)[0].strip() for line in METRIC_NAMES.read_text().splitlines())
    return {line for line in lines if line}

"""The observability files of deploy/ as the tests read them: the compose file with
its `tracing` profile, the collector and Prometheus configurations, and the Grafana
dashboard with the metric names its PromQL queries read."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Final

import yaml

DEPLOY: Final = Path(__file__).resolve().parent.parent / "deploy"
COMPOSE: Final = DEPLOY / "docker-compose.yml"
COLLECTOR: Final = DEPLOY / "otel-collector.yaml"
PROMETHEUS: Final = DEPLOY / "prometheus.yml"
DASHBOARD: Final = DEPLOY / "grafana" / "servicetrail.json"
DATASOURCES: Final = (
    DEPLOY / "grafana" / "provisioning" / "datasources" / "servicetrail.yaml"
)
DASHBOARD_SCHEMA: Final = (
    Path(__file__).resolve().parent / "schemas" / "grafana-dashboard.schema.json"
)

# PromQL's functions, aggregations and keywords: every other bare name is a metric.
PROMQL_WORDS: Final = frozenset(
    {
        "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk",
        "quantile", "count_values", "group", "by", "without", "on", "ignoring",
        "group_left", "group_right", "and", "or", "unless", "bool", "offset",
        "rate", "irate", "increase", "delta", "idelta", "deriv", "time", "vector",
        "scalar", "abs", "clamp_min", "clamp_max", "histogram_quantile",
        "label_replace", "label_join", "sort", "sort_desc", "absent",
        "avg_over_time", "max_over_time", "min_over_time", "sum_over_time",
        "count_over_time", "last_over_time", "changes", "resets", "timestamp",
    }
)  # fmt: skip


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard's panels."""
    return [
        target["expr"]
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])
    ]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads.

    Label matchers, groupings, range selectors, strings and numbers are removed
    first; what bare names remain, less PromQL's own words, are metrics.
    """
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    stripped = re.sub(r"\{[^}]*\}", "", stripped)
    stripped = re.sub(r"\[[^\]]*\]", "", stripped)
    stripped = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", stripped)
    names = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", stripped))
    return names - PROMQL_WORDS


def exposed_names(exposition: str) -> set[str]:
    """The sample names a Prometheus text exposition offers, observed or not yet.

    A labelled metric that has seen nothing shows only its `# TYPE` line; its
    samples' names follow from its type.
    """
    names = {
        line.split("{")[0].split(" ")[0]
        for line in exposition.splitlines()
        if line and not line.startswith("#")
    }
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.MULTILINE):
        names.add(name)
        if kind in ("histogram", "summary"):
            names |= {f"{name}_sum", f"{name}_count"}
        if kind == "histogram":
            names.add(f"{name}_bucket")
    return names

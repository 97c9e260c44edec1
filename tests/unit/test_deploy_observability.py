"""deploy/: the `tracing` compose profile, the collector, Prometheus and the Grafana
dashboard fit together (docker-compose validates the file; a JSON schema the
dashboard)."""

from __future__ import annotations

import json
import shutil
import subprocess
import warnings
from typing import Any

import jsonschema_rs
import pytest
import yaml

from tests.deploy_files import (
    COLLECTOR,
    COMPOSE,
    DASHBOARD_SCHEMA,
    DATASOURCES,
    PROMETHEUS,
    dashboard,
    dashboard_queries,
    load_yaml,
    metric_names,
)

PROFILE_SERVICES = {"otel-collector", "jaeger", "prometheus", "grafana"}
APP_SERVICES = {"intake": 8001, "dispatch": 8002, "ledger": 8003, "metrics": 8004}


@pytest.fixture(scope="module")
def compose_config() -> dict[str, Any]:
    """The compose file as docker-compose resolves it, with the tracing profile."""
    command = shutil.which("docker-compose")
    if command is None:
        message = (
            "SKIPPED LOUDLY: docker-compose is not installed, so deploy/docker-compose.yml "
            "is not validated (Debian: apt-get install -y docker-compose)"
        )
        warnings.warn(message, stacklevel=1)
        pytest.skip(message)
    resolved = subprocess.run(
        [command, "-f", str(COMPOSE), "--profile", "tracing", "config"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert resolved.returncode == 0, resolved.stderr
    config: dict[str, Any] = yaml.safe_load(resolved.stdout)
    return config


def test_the_tracing_profile_adds_the_collector_jaeger_prometheus_and_grafana(
    compose_config: dict[str, Any],
) -> None:
    services = compose_config["services"]
    assert set(services) >= PROFILE_SERVICES
    for name in PROFILE_SERVICES:
        assert services[name]["profiles"] == ["tracing"], name
    for name in APP_SERVICES:
        assert "profiles" not in services[name], f"{name} must run without the profile"


def test_services_trace_only_when_told_and_then_to_the_collector(
    compose_config: dict[str, Any],
) -> None:
    collector = load_yaml(COLLECTOR)
    http = collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    for name, port in APP_SERVICES.items():
        environment = compose_config["services"][name]["environment"]
        assert environment["OTEL_TRACES_EXPORTER"] == "none"
        assert environment["OTEL_EXPORTER_OTLP_ENDPOINT"] == (
            f"http://otel-collector:{http.rsplit(':', 1)[1]}"
        )
        assert int(environment["PORT"]) == port


def test_the_collector_pipeline_uses_only_components_it_defines(
    compose_config: dict[str, Any],
) -> None:
    collector = load_yaml(COLLECTOR)
    service = collector["service"]
    assert set(service["extensions"]) <= set(collector["extensions"])
    traces = service["pipelines"]["traces"]
    for kind in ("receivers", "processors", "exporters"):
        assert traces[kind], kind
        assert set(traces[kind]) <= set(collector[kind]), kind
    # Refuse before running out of memory: the limiter comes first.
    assert traces["processors"][0] == "memory_limiter"
    # Exports go to a service of the same compose file.
    host = collector["exporters"]["otlp/traces"]["endpoint"].split(":")[0]
    assert host in compose_config["services"]
    # The collector reads this very file.
    collector_service = compose_config["services"]["otel-collector"]
    mounts = {
        (v["target"], v["source"])
        if isinstance(v, dict)
        else tuple(v.split(":")[1::-1])
        for v in collector_service["volumes"]
    }
    config_path = collector_service["command"][0].removeprefix("--config=")
    assert mounts >= {(config_path, str(COLLECTOR))}


def test_prometheus_scrapes_every_service_on_its_port() -> None:
    jobs = {job["job_name"]: job for job in load_yaml(PROMETHEUS)["scrape_configs"]}
    assert set(jobs) == set(APP_SERVICES)
    for name, port in APP_SERVICES.items():
        (discovery,) = jobs[name]["dns_sd_configs"]
        assert discovery["names"] == [name]
        assert discovery["port"] == port


def test_the_dashboard_matches_its_schema() -> None:
    schema = json.loads(DASHBOARD_SCHEMA.read_text())
    validator = jsonschema_rs.validator_for(schema)
    errors = [
        f"{e.instance_path}: {e.message}" for e in validator.iter_errors(dashboard())
    ]
    assert errors == []


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda d: d.pop("uid"), "uid"),
        (lambda d: d["panels"][1]["gridPos"].update(w=25), "25"),
        (lambda d: d["panels"][1]["targets"][0].update(expr=""), "shorter"),
        (lambda d: d["panels"][1].update(type="graph-legacy"), "graph-legacy"),
        (lambda d: d.update(schemaVersion=16), "16"),
    ],
)
def test_the_schema_refuses_a_broken_dashboard(change: Any, error: str) -> None:
    broken = dashboard()
    change(broken)
    validator = jsonschema_rs.validator_for(json.loads(DASHBOARD_SCHEMA.read_text()))
    messages = " ".join(e.message for e in validator.iter_errors(broken))
    assert error in messages


def test_the_dashboard_panels_tile_the_grid_and_use_provisioned_sources() -> None:
    panels = dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
    uids = {source["uid"] for source in load_yaml(DATASOURCES)["datasources"]}
    used = {
        source["uid"]
        for panel in panels
        for source in [
            panel.get("datasource"),
            *(t.get("datasource") for t in panel.get("targets", [])),
        ]
        if source
    }
    assert used <= uids


def test_every_query_reads_at_least_one_servicetrail_metric() -> None:
    for expr in dashboard_queries():
        names = metric_names(expr)
        assert names, expr
        assert all(name.startswith("servicetrail_") for name in names), (expr, names)


def test_metric_names_are_read_out_of_promql() -> None:
    assert metric_names(
        'histogram_quantile(0.99, sum by (service, le) (rate(a_bucket{s=~"4.."}[5m])))'
    ) == {"a_bucket"}
    assert metric_names("time() - max by (group) (b_seconds)") == {"b_seconds"}
    assert metric_names('sum(rate(c_total[5m])) / on (job) d{x="by (y)"}') == {
        "c_total",
        "d",
    }

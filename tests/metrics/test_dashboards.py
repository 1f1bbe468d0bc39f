"""The shipped Grafana dashboard and Prometheus alerts query only metrics a live pilot serves, and the chart
installs the dashboard as the Grafana sidecar expects."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from pilot.server import PilotServer, ServerOptions
from pilot.sources.kube.source import KubeOptions
from tests.chart.helm import render, requires_helm
from tests.kube import objects as o
from tests.kube.ads import Proxy
from tests.kube.conftest import FAST
from tests.kube.harness import serve_api, write_kubeconfig
from tests.metrics.support import Family, metrics_of

CHART = Path(__file__).resolve().parents[2] / "charts" / "pilot"
DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))
ALERTS = CHART / "templates" / "prometheusrule.yaml"

# PromQL words that are not metric names.
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset", "inf"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NAME = re.compile(r"(?<![\w:$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (simply: identifiers that are not functions, keywords,
    label names or Grafana/Helm template parts)."""
    text = re.sub(r"\{\{.*?\}\}", " ", expr, flags=re.S)  # Helm / Grafana legend templates
    text = _STRING.sub('""', text)
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _NAME.finditer(text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in _KEYWORDS or re.fullmatch(r"\d[\d.e+-]*", word):
            continue
        names.add(word)
    return names


def test_metric_names_are_found_in_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, type) (rate(pilot_xds_push_time_bucket{namespace=~"$ns",type="cds"}'
        "[$__rate_interval]))) / clamp_min(sum(rate(xds_cache_reads[5m])), 1e-9) > on (pod) pilot_xds "
        "or vector(0) + max_over_time(sum(pilot_xds{ {{- $sel -}} })[5m:30s])"
    )
    assert metric_names(expr) == {"pilot_xds_push_time_bucket", "xds_cache_reads", "pilot_xds"}


def dashboard_exprs(path: Path) -> Iterator[tuple[str, str]]:
    """(panel title, expr) of every query in a dashboard, rows' nested panels and variables included."""
    dashboard = json.loads(path.read_text())

    def walk(panels: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    yield panel.get("title", ""), target["expr"]
            yield from walk(panel.get("panels", []))

    yield from walk(dashboard["panels"])
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if variable.get("type") == "query" and query:
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", query)
            yield f"variable {variable['name']}", inner.group(1) if inner else query


def alert_exprs() -> Iterator[tuple[str, str]]:
    """(alert, expr) from the PrometheusRule template (Helm parts are dropped by metric_names)."""
    text = ALERTS.read_text()
    for alert, body in re.findall(r"- alert: (\w+)\n(.*?)(?=\n\s*- alert: |\Z)", text, flags=re.S):
        expr = re.search(r"expr: \|-\n(.*?)\n\s*for:", body, flags=re.S)
        assert expr, f"{alert}: no expr"
        yield alert, expr.group(1)


@pytest.fixture
async def live_families(tmp_path: Path) -> AsyncIterator[dict[str, Family]]:
    """/metrics of a pilot reading Kubernetes (fake API server) with a proxy connected and one push done."""
    async with serve_api() as (api, url):
        api.apply(o.namespace("default"))
        api.apply(o.service("reviews"))
        api.apply(o.pod("reviews-1", ip="10.1.0.2", app="reviews"))
        api.apply(o.endpoint_slice("reviews", [("10.1.0.2", True, "reviews-1")]))
        api.apply(o.virtual_service("reviews", "reviews.default.svc.cluster.local"))
        kube = KubeOptions(
            kubeconfig=write_kubeconfig(tmp_path / "kubeconfig", url), identity="pilot-test", informer=FAST
        )
        pilot = PilotServer(
            ServerOptions(
                config_dir=None,
                grpc_addr="127.0.0.1:0",
                monitoring_addr="127.0.0.1:0",
                debounce_after=0.01,
                kube=kube,
            )
        )
        await pilot.start()
        envoy = Proxy(pilot.grpc_port)
        envoy.start()
        try:
            await envoy.wait(lambda p: p.route_timeout("80") == 5.0, what="the VirtualService's route")
            api.apply(o.virtual_service("reviews", "reviews.default.svc.cluster.local", timeout="7s"))
            await envoy.wait(lambda p: p.route_timeout("80") == 7.0, what="the edited route")
            yield await metrics_of(pilot.monitoring_port)
        finally:
            await envoy.stop()
            await pilot.stop()


def _family_of(name: str, families: dict[str, Family]) -> str | None:
    if name in families:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and families.get(base) is not None and families[base].type == "histogram":
            return base
    return None


async def test_every_dashboard_and_alert_query_names_a_served_metric(live_families: dict[str, Family]) -> None:
    assert DASHBOARDS, "no dashboard shipped"
    queries = [(f"{path.name}: {title}", expr) for path in DASHBOARDS for title, expr in dashboard_exprs(path)]
    queries += [(f"alert {alert}", expr) for alert, expr in alert_exprs()]
    assert len([q for q in queries if q[0].startswith("alert")]) == 3
    used: set[str] = set()
    for where, expr in queries:
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        for name in names:
            family = _family_of(name, live_families)
            assert family is not None, f"{where}: {name} is not in pilot's /metrics ({expr})"
            used.add(family)
    # The overview covers what the issue asks for: proxies, pushes, convergence, rejects, cache, CPU, memory.
    assert {
        "pilot_xds",
        "pilot_xds_pushes",
        "pilot_proxy_convergence_time",
        "pilot_total_xds_rejects",
        "xds_cache_reads",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    } <= used


def test_dashboards_are_valid_grafana_json() -> None:
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for panel in dashboard["panels"]:
            grid = panel["gridPos"]
            assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, f"{path.name}: {panel['title']} overflows"
            for target in panel.get("targets", []):
                assert target["datasource"]["uid"] == "${datasource}"


@requires_helm
def test_chart_installs_the_dashboards_for_the_grafana_sidecar() -> None:
    assert not [d for d in render() if d["metadata"]["name"].endswith("-dashboards")], "on by default"
    docs = render(
        "--set",
        "grafana.dashboards.enabled=true,grafana.dashboards.namespace=monitoring,"
        "grafana.dashboards.annotations.grafana_folder=Istio",
    )
    (configmap,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboards")]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "Istio"}
    assert sorted(configmap["data"]) == [p.name for p in DASHBOARDS]
    for path in DASHBOARDS:
        assert json.loads(configmap["data"][path.name]) == json.loads(path.read_text())

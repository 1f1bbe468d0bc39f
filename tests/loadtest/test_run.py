"""``pilot loadtest run`` against a real pilot: every scenario, the floor, and the JSON report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pilot.loadtest import report as report_module
from pilot.loadtest.fleet import FleetSpec
from pilot.loadtest.mesh import render_service
from pilot.loadtest.report import REPORT_KEYS
from tests.loadtest.conftest import ServedMesh

PROXIES = 20
ROUTERS = 2


@pytest.fixture(scope="module")
def report(served_mesh: ServedMesh, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from pilot.cli import main

    path = tmp_path_factory.mktemp("report") / "report.json"
    argv = [
        "loadtest", "run",
        "--config-dir", str(served_mesh.config_dir),
        "--xds-addr", served_mesh.xds_addr,
        "--monitoring-addr", served_mesh.monitoring_addr,
        "--pilot-pid", str(served_mesh.pid),
        "--proxies", str(PROXIES), "--routers", str(ROUTERS),
        "--churn-changes", "2", "--vs-edits", "2",
        "--settle", "0.2", "--timeout", "30",
        "--floor", "--no-progress",
        "--json", str(path),
    ]  # fmt: skip
    assert main(argv) == 0
    return json.loads(path.read_text())


def _seeing(served_mesh: ServedMesh, host: str) -> int:
    """Proxies that can see a service in the test mesh (Sidecar isolation): its namespace's sidecars and the
    routers (which see every service, and every route through the gateway)."""
    namespace = host.split(".")[1]
    nodes = FleetSpec(PROXIES, served_mesh.spec.namespace_names, routers=ROUTERS).nodes()
    return sum(1 for n in nodes if n.router or n.namespace == namespace)


def test_connect_storm_reaches_full_sync(report: dict[str, Any]) -> None:
    storm = report["connect_storm"]
    assert storm["synced"] == storm["proxies"] == PROXIES
    assert storm["time_to_full_sync_s"] == storm["sync_s"]["max"] > 0
    per_type = storm["per_proxy"]
    assert all(per_type["proxies_receiving"][t] == PROXIES for t in ("cds", "eds", "lds", "rds"))
    assert all(per_type["bytes"][t] > 0 for t in ("cds", "eds", "lds", "rds"))
    assert storm["pilot"]["cpu_s"] > 0
    assert storm["client"]["cpu_s"] > 0


def test_endpoint_churn_is_observed_by_the_proxies_that_see_the_service(
    report: dict[str, Any], served_mesh: ServedMesh
) -> None:
    churn = report["endpoint_churn"]
    assert [c["label"].split()[0] for c in churn["changes"]] == ["add", "remove"]
    for change in churn["changes"]:
        assert change["expected"] == _seeing(served_mesh, change["service"]) > 0
        assert change["converged"] == change["expected"]
        assert change["latency_s"]["max"] >= change["latency_s"]["p50"] > 0
        assert change["per_proxy"]["proxies_receiving"]["eds"] >= change["converged"]
    assert churn["summary"]["converged"] == churn["summary"]["expected"]


def test_virtual_service_edits_are_observed(report: dict[str, Any], served_mesh: ServedMesh) -> None:
    edits = report["vs_edits"]
    for change in edits["changes"]:
        assert "v1 weight 80 -> 20" in change["label"]
        assert change["expected"] == _seeing(served_mesh, change["service"]) > 0
        assert change["converged"] == change["expected"]
        assert change["per_proxy"]["proxies_receiving"]["rds"] >= change["converged"]


def test_reconnect_storm_and_transport_floor(report: dict[str, Any]) -> None:
    reconnect = report["reconnect_storm"]
    assert reconnect["proxies"] == PROXIES
    # A server may trust the versions the proxies send and resend little: only count what arrived.
    assert reconnect["fully_resent"] <= reconnect["answered"] <= PROXIES
    if reconnect["answered"]:
        assert reconnect["time_to_last_response_s"] == reconnect["last_response_s"]["max"] > 0
    assert not reconnect["stream_errors"]
    floor = report["floor"]
    assert floor["synced"] == PROXIES
    assert floor["per_proxy"]["messages"] == {"cds": 1.0, "eds": 1.0, "lds": 1.0, "rds": 1.0}
    storm = report["connect_storm"]["per_proxy"]
    if storm["messages"] == floor["per_proxy"]["messages"]:  # pilot answered each type once, as it does when idle
        # Byte for byte the responses pilot sent during the storm.
        assert floor["per_proxy"]["bytes"] == storm["bytes"]
    assert floor["cpu_s"] is not None and floor["pilot_cpu_s"] == report["connect_storm"]["pilot"]["cpu_s"]


def test_json_report_has_the_documented_keys(report: dict[str, Any]) -> None:
    assert list(report) == list(REPORT_KEYS)
    for key in REPORT_KEYS:
        assert f"``{key}``" in (report_module.__doc__ or ""), f"{key} is not documented in pilot/loadtest/report.py"
    assert report["schema"] == "pilot-loadtest/1"
    assert report["fleet"] == {"proxies": 20, "sidecars": 18, "routers": 2, "label_sets": 1, "client_procs": 1}
    assert set(report["pilot"]) >= {"rss_idle_bytes", "rss_peak_bytes", "rss_end_bytes", "cpu_s"}
    assert report["pilot"]["rss_peak_bytes"] > 0
    assert set(report["client"]) == {"procs", "cpu_s", "max_core_fraction", "busiest_phase", "saturated"}


def test_edited_files_are_restored(report: dict[str, Any], served_mesh: ServedMesh) -> None:
    spec = served_mesh.spec
    for i in range(spec.services):
        assert (served_mesh.config_dir / spec.service_file(i)).read_text() == render_service(spec, i)
    assert not list(Path(served_mesh.config_dir).rglob(".*.tmp"))


def test_bench_fleet_puts_a_run_on_top_of_results_md_and_keeps_the_earlier_ones(
    report: dict[str, Any], tmp_path: Path
) -> None:
    import importlib.util

    from tests.e2e.harness import REPO_ROOT

    spec = importlib.util.spec_from_file_location("bench_fleet", REPO_ROOT / "benchmarks" / "bench_fleet.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = tmp_path / "RESULTS.md"
    machine = bench.machine()
    assert machine["cores"] and machine["python"]
    extra = {"workers": None, "ready_s": 0.5, "rss_per_service_bytes": 1000.0, "shutdown": {}}
    first = bench.run_section(report, machine, extra, ["--proxies", "20"], "first run")
    bench.update_results(results, first)
    second = bench.run_section(report, machine, extra, ["--proxies", "20"], "second run")
    bench.update_results(results, second)
    text = results.read_text()
    assert text.startswith("# Fleet benchmark results")
    assert text.count("| measure | result | target (issue 5) |") == 2
    assert text.index("second run") < text.index("first run")
    assert f"{machine['cores']} cores" in text and "Command: `python benchmarks/bench_fleet.py --proxies 20`" in text
    assert "| endpoint change → every watching proxy, p50 / p99 / max (2 changes) |" in text
    assert "pilot CPU for the full sync / transport floor's" in text

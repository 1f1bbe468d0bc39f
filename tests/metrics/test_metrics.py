"""/metrics of a running pilot (in process, simulated Envoy over a real ADS stream) against istiod's metrics:
names, types, label sets and buckets as tests/metrics/istiod_metrics.txt lists them; series present at 0 from
start; histograms and counters that move when a push happens."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpclib.client
import pytest
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from pilot.metrics.definitions import DEFINITIONS, Kind, Origin
from pilot.metrics.registry import WORKER_FAMILIES
from pilot.server import PilotServer, ServerOptions
from pilot.xds.names import CLUSTER_TYPE, ROUTE_TYPE
from tests.kube.ads import Proxy
from tests.metrics.support import Family, istiod_metrics, metrics_of, scrape, write_config
from tests.xds.test_ads_protocol import ads_request

# Families that only exist once their source has something to count: Kubernetes events (a Kubernetes
# source), webhook reviews (the webhook), rejected Gateway servers and quarantined resources.
EVENT_DRIVEN = frozenset(
    {
        "pilot_k8s_cfg_events",
        "pilot_k8s_reg_events",
        "galley_validation_passed",
        "galley_validation_failed",
        "galley_validation_http_error",
        "pilot_total_rejected_configs",
        "pilot_xds_nack_quarantined",
    }
)


@pytest.fixture
async def pilot(tmp_path: Path) -> AsyncIterator[PilotServer]:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    write_config(config_dir)
    server = PilotServer(
        ServerOptions(
            config_dir=config_dir,
            grpc_addr="127.0.0.1:0",
            monitoring_addr="127.0.0.1:0",
            debounce_after=0.01,
            debounce_max=1.0,
        )
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def proxy(pilot: PilotServer) -> AsyncIterator[Proxy]:
    envoy = Proxy(pilot.grpc_port)
    envoy.start()
    try:
        await envoy.wait(lambda p: p.route_timeout("80") == 5.0, what="RDS 80 with the 5s timeout")
        yield envoy
    finally:
        await envoy.stop()


async def until(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"timed out after {within}s waiting for {what}"
        await asyncio.sleep(0.01)


def histogram_count(family: Family, **labels: str) -> float:
    return family.value(f"{family.name}_count", **labels)


def assert_histograms_consistent(families: dict[str, Family]) -> None:
    """Buckets cumulative and ending at +Inf == _count, for every series of every histogram."""
    for family in families.values():
        if family.type != "histogram":
            continue
        series: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
        for name, labels, value in family.samples:
            if name.endswith("_bucket"):
                le = labels.pop("le")
                bound = float("inf") if le == "+Inf" else float(le)
                series.setdefault(tuple(sorted(labels.items())), []).append((bound, value))
        for key, buckets in series.items():
            counts = [count for _, count in sorted(buckets)]
            assert counts == sorted(counts), f"{family.name}{dict(key)}: buckets not cumulative: {buckets}"
            assert sorted(buckets)[-1][0] == float("inf")
            assert counts[-1] == family.value(f"{family.name}_count", **dict(key))


async def test_every_series_is_described_and_there_at_zero_from_start(pilot: PilotServer) -> None:
    content_type, text = await scrape(pilot.monitoring_port)
    assert content_type.startswith("text/plain; version=0.0.4")
    families = await metrics_of(pilot.monitoring_port)
    # Each family is one block: HELP, TYPE, then only its own samples.
    declared: list[str] = []
    for line in text.splitlines():
        if line.startswith("# HELP "):
            declared.append(line.split()[2])
        elif line.startswith("# TYPE "):
            assert line.split()[2] == declared[-1], line
        else:
            name = line.partition("{")[0].partition(" ")[0]
            assert name == declared[-1] or name.removeprefix(declared[-1]) in ("_bucket", "_sum", "_count"), line
    assert len(declared) == len(set(declared)), "a family is declared twice"
    for family in families.values():
        assert family.type and family.help, f"{family.name} lacks HELP or TYPE"

    expected = {d.name for d in DEFINITIONS if d.name in WORKER_FAMILIES} - EVENT_DRIVEN
    assert expected <= set(families), f"missing at start: {sorted(expected - set(families))}"
    for definition in DEFINITIONS:
        if definition.name not in expected:
            continue
        family = families[definition.name]
        assert family.type == definition.kind.value
        for values in definition.known:
            labels = {k: v for k, v in zip(definition.labels, values, strict=True) if v}
            if definition.kind is Kind.COUNTER:
                assert family.value(**labels) == 0, f"{definition.name}{labels}"
            elif definition.kind is Kind.HISTOGRAM:
                assert histogram_count(family, **labels) == 0, f"{definition.name}{labels}"
    assert families["pilot_xds"].value() == 0
    assert families["pilot_services"].value() == 1
    assert families["pilot_virt_services"].value() == 1
    assert histogram_count(families["pilot_pushcontext_init_seconds"]) == 1  # the initial build
    assert histogram_count(families["pilot_proxy_convergence_time"]) == 0
    assert families["process_cpu_seconds_total"].value() > 0
    assert families["process_resident_memory_bytes"].value() > 1e6
    assert families["process_start_time_seconds"].value() <= time.time()
    assert families["istio_build"].samples[0][1]["component"] == "pilot"
    assert_histograms_consistent(families)


async def test_names_types_labels_and_buckets_are_istiods(pilot: PilotServer, proxy: Proxy) -> None:
    istiod = istiod_metrics()
    defined = {d.name: d for d in DEFINITIONS}
    # The definitions and the committed list agree, and everything the list says pilot exports is defined.
    for definition in DEFINITIONS:
        if definition.origin is Origin.PILOT:
            assert definition.name not in istiod, f"{definition.name} is istiod's"
            continue
        reference = istiod[definition.name]
        assert reference.exported, f"{definition.name}: the list says {reference.why_not}"
        assert definition.kind.value == reference.type, definition.name
        assert frozenset(definition.labels) == reference.labels, definition.name
        assert tuple(float(b) for b in definition.buckets) == reference.buckets, definition.name
    assert {r.name for r in istiod.values() if r.exported} <= set(defined)

    # What a pilot that has pushed serves.
    families = await metrics_of(pilot.monitoring_port)
    for name, family in families.items():
        if name not in istiod:
            assert name in defined and defined[name].origin is Origin.PILOT, f"{name}: neither istiod's nor pilot's"
            continue
        reference = istiod[name]
        assert family.type == reference.type, name
        label_sets = {frozenset(labels) - {"le"} for _, labels, _ in family.samples}
        for labels in label_sets:
            # A label with an empty value is left out, as Prometheus treats it (pilot_xds{version=""}).
            assert labels <= reference.labels, f"{name}: labels {sorted(labels)} not in istiod's"
        if reference.labels and name != "pilot_xds":
            assert reference.labels in label_sets, f"{name}: no series with istiod's labels {reference.labels}"
        if reference.type == "histogram":
            bounds: dict[frozenset[tuple[str, str]], list[float]] = {}
            for sample, labels, _ in family.samples:
                if sample.endswith("_bucket") and labels["le"] != "+Inf":
                    key = frozenset(labels.items()) - {("le", labels["le"])}
                    bounds.setdefault(key, []).append(float(labels["le"]))
            assert bounds, name
            for key, les in bounds.items():
                assert sorted(les) == sorted(reference.buckets), f"{name}{dict(key)}: buckets {les}"


async def test_histograms_and_counters_move_when_a_push_happens(
    pilot: PilotServer, proxy: Proxy, tmp_path: Path
) -> None:
    before = await metrics_of(pilot.monitoring_port)
    assert before["pilot_xds"].value() == 1
    assert before["pilot_xds_pushes"].value(type="rds") >= 1  # the initial responses count too
    write_config(tmp_path / "config", timeout="7s")
    await proxy.wait(lambda p: p.route_timeout("80") == 7.0, what="RDS 80 with the 7s timeout")

    async def converged() -> bool:
        families = await metrics_of(pilot.monitoring_port)
        return histogram_count(families["pilot_proxy_convergence_time"]) > 0

    await until(converged, 5.0, "pilot_proxy_convergence_time to count the push")
    after = await metrics_of(pilot.monitoring_port)

    def grew(family: str, sample: str = "", **labels: str) -> float:
        delta = after[family].value(sample, **labels) - before[family].value(sample, **labels)
        assert delta > 0, f"{sample or family}{labels} did not move"
        return delta

    assert grew("pilot_proxy_convergence_time", "pilot_proxy_convergence_time_count") == 1
    assert grew("pilot_proxy_queue_time", "pilot_proxy_queue_time_count") == 1
    assert grew("pilot_debounce_time", "pilot_debounce_time_count") >= 1
    assert grew("pilot_pushcontext_init_seconds", "pilot_pushcontext_init_seconds_count") >= 1
    grew("pilot_xds_push_time", "pilot_xds_push_time_count", type="rds")
    grew("pilot_xds_push_time", "pilot_xds_push_time_sum", type="rds")
    grew("pilot_xds_send_time", "pilot_xds_send_time_count")
    grew("pilot_xds_config_size_bytes", "pilot_xds_config_size_bytes_count", type=ROUTE_TYPE)
    assert grew("pilot_xds_config_size_bytes", "pilot_xds_config_size_bytes_sum", type=ROUTE_TYPE) > 100
    assert grew("pilot_xds_pushes", type="rds") == 1
    assert grew("pilot_push_triggers", type="config") >= 1
    assert grew("pilot_inbound_updates", type="config") >= 1
    assert after["pilot_xds_pushes"].value(type="rds_senderr") == 0
    # Nothing else was resent: the edit changed only the route.
    assert after["pilot_xds_pushes"].value(type="cds") == before["pilot_xds_pushes"].value(type="cds")
    # The debounce includes the PushContext build; convergence counts from the push's start (istiod's).
    debounce = after["pilot_debounce_time"].value("pilot_debounce_time_sum")
    assert debounce >= 0.01 * after["pilot_debounce_time"].value("pilot_debounce_time_count")
    assert_histograms_consistent(after)


async def test_a_nack_counts_as_a_reject_and_proxies_are_counted_by_istio_version(pilot: PilotServer) -> None:
    channel = grpclib.client.Channel("127.0.0.1", pilot.grpc_port)
    try:
        async with ads_request(channel) as stream:
            request = discovery_pb2.DiscoveryRequest(type_url=CLUSTER_TYPE)
            request.node.id = "sidecar~10.250.0.9~versioned.default~default.svc.cluster.local"
            request.node.metadata.update({"ISTIO_VERSION": "1.24.0", "NAMESPACE": "default"})
            await stream.send_message(request)
            response = await asyncio.wait_for(stream.recv_message(), 5)
            assert response is not None
            nack = discovery_pb2.DiscoveryRequest(type_url=CLUSTER_TYPE, response_nonce=response.nonce, version_info="")
            nack.error_detail.CopyFrom(status_pb2.Status(code=3, message="rejected for the test"))
            await stream.send_message(nack)

            async def rejected() -> bool:
                return (await metrics_of(pilot.monitoring_port))["pilot_total_xds_rejects"].value(type="cds") == 1

            await until(rejected, 5.0, "pilot_total_xds_rejects{type=cds} == 1")
            families = await metrics_of(pilot.monitoring_port)
            assert families["pilot_xds"].value(version="1.24.0") == 1
            assert len(families["pilot_xds"].samples) == 1  # no empty-version series beside it
            await stream.cancel()
    finally:
        channel.close()

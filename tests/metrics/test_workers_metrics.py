"""/metrics of ``pilot serve --workers 2``: one exposition, every family described once, counters and histograms
summed across the workers (bucket by bucket), config gauges and build info from one worker, the supervisor's
own process included."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from pilot.metrics.registry import Metrics
from pilot.workers.metrics import merge
from pilot.xds.names import CLUSTER_TYPE
from tests.e2e.harness import wait_until
from tests.metrics.support import families
from tests.workers.harness import MonitoringClient, SimulatedProxy, SupervisorProcess


def test_merging_two_workers_sums_histograms_bucket_by_bucket() -> None:
    first, second = Metrics(), Metrics()
    for value in (0.05, 0.2, 2.0):
        first.histogram("pilot_proxy_convergence_time").observe(value)
    for value in (0.2, 40.0):
        second.histogram("pilot_proxy_convergence_time").observe(value)
    first.counters["pilot_xds_pushes{type=cds}"] += 3
    second.counters["pilot_xds_pushes{type=cds}"] += 4
    for metrics in (first, second):
        metrics.add_gauges(lambda: {"pilot_services": {(): 7}, "pilot_xds": {("1.24.0",): 2}})
    merged = families(merge([first.render(), second.render()]))
    convergence = merged["pilot_proxy_convergence_time"]
    assert convergence.type == "histogram"
    buckets = {labels["le"]: v for name, labels, v in convergence.samples if name.endswith("_bucket")}
    assert buckets == {"0.1": 1, "0.5": 3, "1": 3, "3": 4, "5": 4, "10": 4, "20": 4, "30": 4, "+Inf": 5}
    assert convergence.value("pilot_proxy_convergence_time_count") == 5
    assert convergence.value("pilot_proxy_convergence_time_sum") == pytest.approx(42.45)
    assert merged["pilot_xds_pushes"].value(type="cds") == 7
    assert merged["pilot_xds"].value(version="1.24.0") == 4  # connections: summed
    assert merged["pilot_services"].value() == 7  # the config: one worker's
    assert merged["istio_build"].samples[0][2] == 1
    for metrics in (first, second):
        metrics.shutdown()


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[SupervisorProcess]:
    process = SupervisorProcess(tmp_path, workers=2)
    process.start()
    try:
        yield process
    finally:
        process.kill()


@pytest.fixture
async def client(supervisor: SupervisorProcess) -> AsyncIterator[MonitoringClient]:
    async with aiohttp.ClientSession() as session:
        yield MonitoringClient(session, supervisor.url)


async def test_workers_metrics_are_one_exposition_summed_across_workers(
    supervisor: SupervisorProcess, client: MonitoringClient
) -> None:
    async def ready() -> bool:
        try:
            return await client.is_ready()
        except aiohttp.ClientError:
            return False

    await wait_until(ready, 20, message="supervisor ready", describe=supervisor.log)
    port = int((await client.json("/debug/workerz"))["grpcAddress"].rpartition(":")[2])
    proxies = [SimulatedProxy(n, port) for n in range(1, 13)]
    tasks = [asyncio.create_task(proxy.run()) for proxy in proxies]
    try:
        await wait_until(lambda: all(p.synced_on == 1 for p in proxies), 15, message="every proxy's CDS")
        adsz = await client.json("/debug/adsz")
        assert set(Counter(entry["worker"] for entry in adsz["clients"])) == {0, 1}, "proxies on one worker"

        status, text, headers = await client.get("/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
        declared = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
        assert len(declared) == len(set(declared)), "a family is declared twice"
        merged = families(text)
        assert all(f.type and f.help for f in merged.values())
        assert merged["pilot_xds"].value() == 12
        # Each proxy was sent one CDS response by the worker holding it: the sums cover both workers.
        assert merged["pilot_xds_pushes"].value(type="cds") == 12
        size = merged["pilot_xds_config_size_bytes"]
        assert size.value("pilot_xds_config_size_bytes_count", type=CLUSTER_TYPE) == 12
        assert size.value("pilot_xds_config_size_bytes_bucket", type=CLUSTER_TYPE, le="+Inf") == 12
        assert merged["pilot_xds_send_time"].value("pilot_xds_send_time_count") >= 12
        # Every worker built its PushContext once at start; the config gauges are one worker's.
        assert merged["pilot_pushcontext_init_seconds"].value("pilot_pushcontext_init_seconds_count") == 2
        assert merged["pilot_services"].value() == len(await client.json("/debug/registryz"))
        assert merged["istio_build"].samples[0][2] == 1
        assert merged["pilot_workers"].value() == 2 and merged["pilot_worker_restarts"].value() == 0
        # Supervisor and workers: three processes' CPU and memory.
        assert merged["process_resident_memory_bytes"].value() > 3 * 10e6
        assert merged["process_cpu_seconds_total"].value() > 0
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

"""Soak: config churn every 200 ms for minutes with hundreds of connected proxies; is pilot's footprint flat?

    python benchmarks/soak.py [--minutes 10] [--proxies 300] [--services 200] [--interval 0.2] [--json FILE]

A generated mesh (``pilot loadtest mesh``) is served by ``pilot serve`` (a subprocess); a second process holds
``--proxies`` ADS streams that ACK everything (SotW; a tenth of them Delta); the main process changes one
service every ``--interval`` seconds, alternating endpoint churn (an endpoint added or removed) and
VirtualService weight flips, by rewriting its file atomically. Every 30 s it samples pilot's resident memory,
open file descriptors and threads (from /proc) and its asyncio tasks and connected proxies (from /metrics),
and at the end says whether each stayed flat: the last third of the run within 10 % (RSS, fds), within 5
(tasks) or the same (proxies) as the first sample after warm-up.

Results and the machine they were measured on go into benchmarks/RESULTS.md by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pilot.loadtest.mesh import MeshSpec, ServiceState, atomic_write, render_service, write_mesh

SAMPLE_EVERY = 30.0


def proc_stats(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return {"rss_mb": rss_kb / 1024, "fds": fds, "threads": threads}


def metric(text: str, name: str) -> float | None:
    """The sum of a metric's samples in Prometheus text (None when absent)."""
    total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    return total if found else None


def monitoring_stats(addr: str) -> dict[str, float | None]:
    text = urllib.request.urlopen(f"http://{addr}/metrics", timeout=10).read().decode()
    return {
        "tasks": metric(text, "pilot_asyncio_tasks"),
        "proxies": metric(text, "pilot_xds"),
        "pushes": metric(text, "pilot_xds_pushes"),
    }


def wait_ready(addr: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"http://{addr}/ready", timeout=2).status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"pilot at {addr} not ready in time")


CLIENT = r"""
import asyncio, sys
import grpclib.client, grpclib.const
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import discovery_pb2
from pilot.xds.server import ADS_METHOD, DELTA_ADS_METHOD
CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
def eds_names(response):
    out = []
    for any_msg in response.resources:
        cluster = cluster_pb2.Cluster()
        any_msg.Unpack(cluster)
        if cluster.type == cluster_pb2.Cluster.EDS:
            out.append(cluster.name)
    return sorted(out)
async def sotw(port, i, ns):
    # An Envoy-like SotW client: CDS and LDS wildcard, EDS for its EDS clusters, RDS "80"; ACKs everything.
    channel = grpclib.client.Channel("127.0.0.1", port)
    async with channel.request(ADS_METHOD, grpclib.const.Cardinality.STREAM_STREAM,
                               discovery_pb2.DiscoveryRequest, discovery_pb2.DiscoveryResponse) as stream:
        first = discovery_pb2.DiscoveryRequest(type_url=CDS)
        first.node.id = f"sidecar~10.200.{i // 250}.{i % 250 + 1}~soak-{i}.{ns}~{ns}.svc.cluster.local"
        await stream.send_message(first)
        await stream.send_message(discovery_pb2.DiscoveryRequest(type_url=LDS))
        await stream.send_message(discovery_pb2.DiscoveryRequest(type_url=RDS, resource_names=["80"]))
        names = {RDS: ["80"], EDS: []}
        async for response in stream:
            if response.type_url == CDS:
                names[EDS] = eds_names(response)
            await stream.send_message(discovery_pb2.DiscoveryRequest(
                type_url=response.type_url, version_info=response.version_info, response_nonce=response.nonce,
                resource_names=names.get(response.type_url, [])))
            if response.type_url == CDS:
                await stream.send_message(discovery_pb2.DiscoveryRequest(type_url=EDS, resource_names=names[EDS]))
async def delta(port, i, ns):
    channel = grpclib.client.Channel("127.0.0.1", port)
    async with channel.request(DELTA_ADS_METHOD, grpclib.const.Cardinality.STREAM_STREAM,
                               discovery_pb2.DeltaDiscoveryRequest, discovery_pb2.DeltaDiscoveryResponse) as stream:
        first = discovery_pb2.DeltaDiscoveryRequest(type_url=CDS, resource_names_subscribe=["*"])
        first.node.id = f"sidecar~10.201.{i // 250}.{i % 250 + 1}~soakd-{i}.{ns}~{ns}.svc.cluster.local"
        await stream.send_message(first)
        await stream.send_message(discovery_pb2.DeltaDiscoveryRequest(type_url=RDS, resource_names_subscribe=["80"]))
        subscribed = False
        async for response in stream:
            await stream.send_message(discovery_pb2.DeltaDiscoveryRequest(
                type_url=response.type_url, response_nonce=response.nonce))
            if response.type_url == CDS and not subscribed:
                names = sorted(r.name for r in response.resources)
                await stream.send_message(discovery_pb2.DeltaDiscoveryRequest(type_url=EDS,
                                                                              resource_names_subscribe=names))
                subscribed = True
async def main(port, count, namespaces):
    tasks = []
    for i in range(count):
        ns = f"ns{i % namespaces}"
        tasks.append(asyncio.create_task((delta if i % 10 == 0 else sotw)(port, i, ns)))
    await asyncio.gather(*tasks, return_exceptions=True)
asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--proxies", type=int, default=300)
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--json", type=Path, help="write the samples and verdicts here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pilot-soak-"))
    mesh_dir = work / "mesh"
    spec = MeshSpec(services=args.services, endpoints=5, namespaces=args.namespaces, virtual_services=args.services)
    write_mesh(spec, mesh_dir)
    grpc_port, mon_port = 25810, 25814
    mon = f"127.0.0.1:{mon_port}"
    log = (work / "pilot.log").open("w")
    pilot = subprocess.Popen(
        [sys.executable, "-m", "pilot", "serve", "--config-dir", str(mesh_dir), "--grpc-addr",
         f"127.0.0.1:{grpc_port}", "--monitoring-addr", mon],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    clients = None
    try:
        wait_ready(mon, time.monotonic() + 60)
        clients = subprocess.Popen(
            [sys.executable, "-c", CLIENT, str(grpc_port), str(args.proxies), str(args.namespaces)],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        )
        time.sleep(20)  # connect and settle
        rng = random.Random(1)
        states: dict[int, ServiceState] = {}
        samples: list[dict[str, float | None]] = []
        started = time.monotonic()
        next_sample = started
        changes = 0
        while time.monotonic() - started < args.minutes * 60:
            i = rng.randrange(args.services)
            state = states.get(i, ServiceState())
            if changes % 2 == 0:
                state = ServiceState(extra=1 - state.extra, v1_weight=state.v1_weight)
            else:
                state = ServiceState(extra=state.extra, v1_weight=100 - state.v1_weight)
            states[i] = state
            atomic_write(mesh_dir / spec.service_file(i), render_service(spec, i, state))
            changes += 1
            now = time.monotonic()
            if now >= next_sample:
                sample: dict[str, float | None] = {"t": round(now - started, 1), **proc_stats(pilot.pid)}
                sample.update(monitoring_stats(mon))
                samples.append(sample)
                print(json.dumps(sample), flush=True)
                next_sample += SAMPLE_EVERY
            time.sleep(max(0.0, args.interval - (time.monotonic() - now)))
        final = {"t": round(time.monotonic() - started, 1), **proc_stats(pilot.pid), **monitoring_stats(mon)}
        samples.append(final)
        print(json.dumps(final), flush=True)
    finally:
        if clients is not None:
            clients.kill()
        pilot.terminate()
        pilot.wait(timeout=30)
    first, tail = samples[1] if len(samples) > 1 else samples[0], samples[len(samples) * 2 // 3 :]
    verdicts = {
        "rss_flat": all(s["rss_mb"] <= first["rss_mb"] * 1.10 for s in tail),  # type: ignore[operator]
        "fds_flat": all(s["fds"] <= first["fds"] * 1.10 for s in tail),  # type: ignore[operator]
        # a scrape or a send in flight may add a task or two at the moment of sampling
        "tasks_flat": all(abs(s["tasks"] - first["tasks"]) <= 5 for s in tail),  # type: ignore[operator]
        "proxies_flat": all(s["proxies"] == first["proxies"] for s in tail),
    }
    print(json.dumps({"changes": changes, **verdicts}))
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "samples": samples,
                                         "changes": changes, **verdicts}, indent=1))  # fmt: skip
    return 0 if all(verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Generation benchmark: PushContext build and per-type xDS generation for a synthetic mesh.

    python benchmarks/bench_generate.py [--services 1000] [--endpoints 10] [--repeat 5]

The mesh: N ServiceEntries (STATIC, one HTTP port, E endpoints split over v1/v2), a DestinationRule with
two subsets and a VirtualService (80/20 split + header match) per service, one Gateway binding every
VirtualService. Times are the median of --repeat runs, without the XdsCache (generators called directly).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable

from pilot.config.loader import load_text
from pilot.model.proxy import parse_proxy
from pilot.push.context import PushContext
from pilot.push.offline import environment_of
from pilot.xds import cds, eds, lds, rds
from pilot.xds.names import outbound_cluster


def mesh_yaml(services: int, endpoints: int) -> str:
    docs = [
        """apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]"""
    ]
    for i in range(services):
        host = f"svc{i}.ns{i % 20}.example.com"
        eps = "\n".join(
            f"  - address: 10.{i // 250}.{i % 250}.{j}\n    labels: {{version: v{1 + j % 2}}}" for j in range(endpoints)
        )
        docs.append(
            f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: svc{i}, namespace: default}}
spec:
  hosts: [{host}]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
{eps}"""
        )
        docs.append(
            f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: svc{i}, namespace: default}}
spec:
  host: {host}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}"""
        )
        docs.append(
            f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: svc{i}, namespace: default}}
spec:
  hosts: [{host}]
  gateways: [mesh, gw]
  http:
  - match: [{{headers: {{end-user: {{exact: jason}}}}}}]
    route: [{{destination: {{host: {host}, subset: v2}}}}]
  - route:
    - {{destination: {{host: {host}, subset: v1}}, weight: 80}}
    - {{destination: {{host: {host}, subset: v2}}, weight: 20}}
    timeout: 5s"""
        )
    return "\n---\n".join(docs)


def median_time(
    fn: Callable[[], object], repeat: int, setup: Callable[[], object] = lambda: None
) -> tuple[float, object]:
    times = []
    result = None
    for _ in range(repeat):
        setup()
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    text = mesh_yaml(args.services, args.endpoints)
    t_load, result = median_time(lambda: load_text("bench.yaml", text), 1)
    assert not result.errors, result.errors[:3]  # type: ignore[union-attr]
    configs = list(result.configs)  # type: ignore[union-attr]
    t_env, env = median_time(lambda: environment_of(configs), 1)
    t_ctx, push = median_time(lambda: PushContext.build(env, "bench", 1), args.repeat)  # type: ignore[arg-type]
    sidecar = parse_proxy("sidecar~10.0.0.1~app-1.default~default.svc.cluster.local", {"LABELS": {"app": "a"}})
    router = parse_proxy(
        "router~10.0.0.2~gw-1.default~default.svc.cluster.local", {"LABELS": {"istio": "ingressgateway"}}
    )
    cluster_names = [
        outbound_cluster(80, s, f"svc{i}.ns{i % 20}.example.com")
        for i in range(args.services)
        for s in ("", "v1", "v2")
    ]

    rows = [
        ("load+validate YAML", t_load, len(configs)),
        ("registries", t_env, len(env.services.services())),  # type: ignore[union-attr]
        ("PushContext.build", t_ctx, len(push.services)),  # type: ignore[union-attr]
    ]
    # Each timed run gets a fresh copy of the snapshot, so its lazily built indexes and memos start cold,
    # as they do for the first proxy after a push.
    fresh: list[PushContext] = [push]  # type: ignore[list-item]

    def renew() -> None:
        fresh[0] = dataclasses.replace(push)  # type: ignore[type-var]

    for label, proxy in (("sidecar", sidecar), ("router", router)):
        for name, fn in (
            ("CDS", lambda p=proxy: cds.build_clusters(p, fresh[0])),
            ("EDS", lambda p=proxy: eds.build_endpoints(p, fresh[0], cluster_names)),
            ("LDS", lambda p=proxy: lds.build_listeners(p, fresh[0])),
            ("RDS", lambda p=proxy: rds.build_routes(p, fresh[0], ["80"] if p is sidecar else ["http.8080"])),
        ):
            t, out = median_time(fn, args.repeat, renew)
            size = sum(m.ByteSize() for m in out)  # type: ignore[union-attr]
            rows.append((f"{label} {name}", t, f"{len(out)} resources, {size / 1e3:.0f} kB"))  # type: ignore[arg-type]
    print(f"services={args.services} endpoints/service={args.endpoints} repeat={args.repeat}")
    for label, t, extra in rows:
        print(f"{label:22s} {t * 1e3:9.1f} ms   {extra}")


if __name__ == "__main__":
    main()

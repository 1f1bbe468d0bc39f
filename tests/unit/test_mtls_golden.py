"""Mesh mTLS, Istio YAML in, Envoy resources out: outbound TLS (DestinationRule ISTIO_MUTUAL, auto-mTLS), EDS
``tlsMode`` metadata, and a sidecar's inbound side (virtualInbound filter chains per PeerAuthentication mode,
inbound clusters, Sidecar ingress listeners), with istiod's names. Each case reads as a table row; Envoy
itself validates the generated listeners and clusters at the end.

Summaries keep the fields that matter:
* a cluster's TLS: ``None`` (plaintext), ``("mtls", sni, alpn)`` for a transport socket, or the
  ``transport_socket_matches`` as ``[(name, match, "mtls"/"raw")]``;
* a filter chain: ``(name, destination port, transport protocol, ALPNs, "mtls"/"-", "http:<cluster>"/"tcp:<cluster>")``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import json_format

from pilot.bootstrap import sds_cluster
from pilot.model.proxy import Proxy, parse_proxy
from pilot.push.context import PushContext
from pilot.xds import cds, eds, lds, names
from tests.support import push_of

Cluster = cluster_pb2.Cluster
REVIEWS = "reviews.default.svc.cluster.local"
POD_IP = "10.1.0.5"  # reviews-1, with a sidecar
PLAIN_POD_IP = "10.1.0.6"  # reviews-2, without one
ALPN = ("istio-peer-exchange", "istio")
ALPN_H2 = ("istio-peer-exchange", "istio", "h2")
SNI = f"outbound_.9080_._.{REVIEWS}"

# reviews: HTTP 9080 -> 8080, TCP 5432, gRPC 7070, and a port of unknown protocol ("web", sniffed) 8000.
MESH = f"""
apiVersion: v1
kind: Service
metadata: {{name: reviews, namespace: default}}
spec:
  clusterIP: 10.96.0.10
  ports:
  - {{name: http, port: 9080, targetPort: 8080}}
  - {{name: tcp-db, port: 5432, targetPort: 5432}}
  - {{name: grpc, port: 7070, targetPort: 7070}}
  - {{name: web, port: 8000, targetPort: 8000}}
---
apiVersion: v1
kind: Pod
metadata: {{name: reviews-1, namespace: default, labels: {{app: reviews, security.istio.io/tlsMode: istio}}}}
status: {{podIP: {POD_IP}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: reviews-2, namespace: default, labels: {{app: reviews}}}}
status: {{podIP: {PLAIN_POD_IP}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: reviews-1, namespace: default, labels: {{kubernetes.io/service-name: reviews}}}}
addressType: IPv4
ports: [{{name: http, port: 8080}}, {{name: tcp-db, port: 5432}}, {{name: grpc, port: 7070}}, {{name: web, port: 8000}}]
endpoints:
- {{addresses: [{POD_IP}], targetRef: {{kind: Pod, name: reviews-1, namespace: default}}}}
- {{addresses: [{PLAIN_POD_IP}], targetRef: {{kind: Pod, name: reviews-2, namespace: default}}}}
---
"""


def peer(mode: str, namespace: str = "default", name: str = "default", extra: str = "") -> str:
    return f"""
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: {name}, namespace: {namespace}}}
spec: {{mtls: {{mode: {mode}}}{extra}}}
---
"""


def rule(traffic_policy: str | None, subsets: str = "[]") -> str:
    policy = f", trafficPolicy: {traffic_policy}" if traffic_policy else ""
    return f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec: {{host: reviews{policy}, subsets: {subsets}}}
---
"""


# Injected sidecars: Istio's injector labels their pods, and pilot then knows they have workload certificates.
INJECTED = {"security.istio.io/tlsMode": "istio"}


def client(labels: dict[str, str] | None = None) -> Proxy:
    return parse_proxy(
        "sidecar~10.1.0.9~client-1.default~default.svc.cluster.local",
        {"NAMESPACE": "default", "LABELS": {"app": "client", **INJECTED} if labels is None else labels},
    )


def server(metadata: dict[str, Any] | None = None, labels: dict[str, str] | None = None) -> Proxy:
    return parse_proxy(
        f"sidecar~{POD_IP}~reviews-1.default~default.svc.cluster.local",
        {
            "NAMESPACE": "default",
            "LABELS": {"app": "reviews", **INJECTED} if labels is None else labels,
            **(metadata or {}),
        },
    )


# ----- summaries -----


def _socket(socket: Any) -> Any:
    if socket.name == "envoy.transport_sockets.raw_buffer":
        return "raw"
    context = tls_pb2.UpstreamTlsContext()
    assert socket.typed_config.Unpack(context)
    common = context.common_tls_context
    assert [s.name for s in common.tls_certificate_sds_secret_configs] == [names.SDS_DEFAULT_RESOURCE]
    assert common.combined_validation_context.validation_context_sds_secret_config.name == names.SDS_ROOT_RESOURCE
    for sds in (
        common.tls_certificate_sds_secret_configs[0],
        common.combined_validation_context.validation_context_sds_secret_config,
    ):
        assert sds.sds_config.api_config_source.grpc_services[0].envoy_grpc.cluster_name == names.SDS_CLUSTER
    return ("mtls", context.sni, tuple(common.alpn_protocols))


def cluster_tls(cluster: Cluster) -> Any:
    if cluster.transport_socket_matches:
        return [(m.name, dict(m.match), _socket(m.transport_socket)) for m in cluster.transport_socket_matches]
    if cluster.HasField("transport_socket"):
        return _socket(cluster.transport_socket)
    return None


def endpoint_modes(cla: Any) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for group in cla.endpoints:
        for lb in group.lb_endpoints:
            meta = lb.metadata.filter_metadata.get(names.TRANSPORT_SOCKET_MATCH_METADATA)
            out[lb.endpoint.address.socket_address.address] = dict(meta)["tlsMode"] if meta is not None else None
    return out


def chain(fc: Any) -> tuple[Any, ...]:
    fcm = fc.filter_chain_match
    port = fcm.destination_port.value if fcm.HasField("destination_port") else 0
    (network_filter,) = fc.filters
    if network_filter.name == names.HCM_FILTER:
        manager = hcm_pb2.HttpConnectionManager()
        network_filter.typed_config.Unpack(manager)
        target = "http:" + manager.route_config.virtual_hosts[0].routes[0].route.cluster
    else:
        proxy = tcp_proxy_pb2.TcpProxy()
        network_filter.typed_config.Unpack(proxy)
        target = "tcp:" + proxy.cluster
    tls = "mtls" if fc.HasField("transport_socket") else "-"
    return (fc.name, port, fcm.transport_protocol or "-", ",".join(fcm.application_protocols) or "-", tls, target)


def listeners(proxy: Proxy, push: PushContext) -> dict[str, listener_pb2.Listener]:
    return {x.name: x for x in lds.build_listeners(proxy, push)}


def clusters(proxy: Proxy, push: PushContext) -> dict[str, Cluster]:
    return {c.name: c for c in cds.build_clusters(proxy, push)}


# ----- outbound -----

AUTO = [("tlsMode-istio", {"tlsMode": "istio"}, ("mtls", SNI, ALPN)), ("tlsMode-disabled", {}, "raw")]
ISTIO_MUTUAL = ("mtls", SNI, ALPN)


@pytest.mark.parametrize(
    ("config", "http", "grpc", "endpoints"),
    [
        # No TLS settings: auto-mTLS to endpoints with a sidecar (EDS metadata), plaintext to the others.
        (
            "",
            AUTO,
            [(n, m, ("mtls", f"outbound_.7070_._.{REVIEWS}", ALPN_H2) if s != "raw" else s) for n, m, s in AUTO],
            {POD_IP: "istio", PLAIN_POD_IP: None},
        ),
        (peer("STRICT"), AUTO, "auto", {POD_IP: "istio", PLAIN_POD_IP: None}),
        (peer("PERMISSIVE", "istio-system"), AUTO, "auto", {POD_IP: "istio", PLAIN_POD_IP: None}),
        # DISABLE for the destination's namespace (or the mesh) turns auto-mTLS and the metadata off.
        (peer("DISABLE"), None, None, {POD_IP: None, PLAIN_POD_IP: None}),
        (peer("DISABLE", "istio-system"), None, None, {POD_IP: None, PLAIN_POD_IP: None}),
        (peer("DISABLE", "istio-system") + peer("STRICT"), AUTO, "auto", {POD_IP: "istio", PLAIN_POD_IP: None}),
        (peer("DISABLE", "other"), AUTO, "auto", {POD_IP: "istio", PLAIN_POD_IP: None}),
        # A workload-level DISABLE (or port-level, on the endpoint's port) takes that endpoint out of mTLS.
        (
            peer("DISABLE", name="w", extra=", selector: {matchLabels: {app: reviews}}"),
            AUTO,
            "auto",
            {POD_IP: None, PLAIN_POD_IP: None},
        ),
        (
            peer(
                "UNSET",
                name="w",
                extra=", selector: {matchLabels: {app: reviews}}, portLevelMtls: {8080: {mode: DISABLE}}",
            ),
            AUTO,
            "auto",
            {POD_IP: None, PLAIN_POD_IP: None},
        ),
        (
            peer(
                "UNSET",
                name="w",
                extra=", selector: {matchLabels: {app: reviews}}, portLevelMtls: {9999: {mode: DISABLE}}",
            ),
            AUTO,
            "auto",
            {POD_IP: "istio", PLAIN_POD_IP: None},
        ),
        # ISTIO_MUTUAL: a plain transport socket; the DestinationRule decides the metadata (label permitting).
        (
            rule("{tls: {mode: ISTIO_MUTUAL}}"),
            ISTIO_MUTUAL,
            ("mtls", f"outbound_.7070_._.{REVIEWS}", ALPN_H2),
            {POD_IP: "istio", PLAIN_POD_IP: None},
        ),
        (
            peer("DISABLE") + rule("{tls: {mode: ISTIO_MUTUAL}}"),
            ISTIO_MUTUAL,
            "mutual",
            {POD_IP: "istio", PLAIN_POD_IP: None},
        ),
        (
            rule("{tls: {mode: ISTIO_MUTUAL, sni: my.sni}}"),
            ("mtls", "my.sni", ALPN),
            ("mtls", "my.sni", ALPN_H2),
            {POD_IP: "istio", PLAIN_POD_IP: None},
        ),
        # Any user TLS setting, DISABLE included, turns auto-mTLS off.
        (rule("{tls: {mode: DISABLE}}"), None, None, {POD_IP: None, PLAIN_POD_IP: None}),
        (
            rule("{portLevelSettings: [{port: {number: 9080}, tls: {mode: DISABLE}}]}"),
            None,
            "auto",
            {POD_IP: None, PLAIN_POD_IP: None},
        ),
    ],
)
def test_outbound_tls(config: str, http: Any, grpc: Any, endpoints: dict[str, str | None]) -> None:
    push = push_of(MESH + config)
    out = clusters(client(), push)
    assert cluster_tls(out[f"outbound|9080||{REVIEWS}"]) == http
    expected_grpc = (
        {
            "auto": [
                (n, m, ("mtls", f"outbound_.7070_._.{REVIEWS}", ALPN_H2) if s != "raw" else s) for n, m, s in AUTO
            ],
            "mutual": ("mtls", f"outbound_.7070_._.{REVIEWS}", ALPN_H2),
        }.get(grpc, grpc)
        if isinstance(grpc, str)
        else grpc
    )
    assert cluster_tls(out[f"outbound|7070||{REVIEWS}"]) == expected_grpc
    assert endpoint_modes(eds.build_endpoint(client(), push, f"outbound|9080||{REVIEWS}")) == endpoints


def test_istio_mutual_for_a_subset_uses_its_dns_srv_sni_and_subject_alt_names() -> None:
    subsets = "[{name: v1, labels: {app: reviews}, trafficPolicy: {tls: {mode: ISTIO_MUTUAL, subjectAltNames: [spiffe://cluster.local/ns/default/sa/reviews]}}}]"
    push = push_of(MESH + rule(None, subsets))
    out = clusters(client(), push)
    subset = out[f"outbound|9080|v1|{REVIEWS}"]
    assert cluster_tls(subset) == ("mtls", f"outbound_.9080_.v1_.{REVIEWS}", ALPN)
    context = tls_pb2.UpstreamTlsContext()
    subset.transport_socket.typed_config.Unpack(context)
    (san,) = (
        context.common_tls_context.combined_validation_context.default_validation_context.match_typed_subject_alt_names
    )
    assert san.san_type == san.URI and san.matcher.exact == "spiffe://cluster.local/ns/default/sa/reviews"
    assert (
        context.common_tls_context.tls_params.tls_minimum_protocol_version
        == context.common_tls_context.tls_params.TLSv1_2
    )
    assert (
        context.common_tls_context.tls_params.tls_maximum_protocol_version
        == context.common_tls_context.tls_params.TLSv1_3
    )
    # The default cluster (no TLS setting) keeps auto-mTLS.
    assert cluster_tls(out[f"outbound|9080||{REVIEWS}"]) == AUTO


SERVICE_ENTRY = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: se, namespace: default}}
spec:
  hosts: [{host}]
  location: {location}
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: {resolution}
  endpoints: {endpoints}
---
"""
PASSTHROUGH_RULE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: se, namespace: default}
spec: {host: svc.example.internal, trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}}
---
"""
WITH_SIDECAR = "{address: 10.2.0.1, labels: {security.istio.io/tlsMode: istio}}"


@pytest.mark.parametrize(
    ("location", "endpoints", "policy", "expected"),
    [
        # MESH_EXTERNAL (the default location) never gets auto-mTLS.
        ("MESH_EXTERNAL", f"[{WITH_SIDECAR}]", "", None),
        ("MESH_INTERNAL", f"[{WITH_SIDECAR}]", "", "matches"),
        # Passthrough (ORIGINAL_DST) cannot choose per endpoint: mTLS only when every instance has a sidecar.
        ("MESH_INTERNAL", f"[{WITH_SIDECAR}]", PASSTHROUGH_RULE, "socket"),
        ("MESH_INTERNAL", f"[{WITH_SIDECAR}, {{address: 10.2.0.2}}]", PASSTHROUGH_RULE, None),
        ("MESH_INTERNAL", "[]", PASSTHROUGH_RULE, None),
    ],
)
def test_auto_mtls_for_service_entries(location: str, endpoints: str, policy: str, expected: str | None) -> None:
    host = "svc.example.internal"
    text = SERVICE_ENTRY.format(host=host, location=location, resolution="STATIC", endpoints=endpoints)
    push = push_of(text + policy)
    c = clusters(client(), push)[f"outbound|80||{host}"]
    sni = f"outbound_.80_._.{host}"
    want = {
        None: None,
        "matches": [("tlsMode-istio", {"tlsMode": "istio"}, ("mtls", sni, ALPN)), ("tlsMode-disabled", {}, "raw")],
        "socket": ("mtls", sni, ALPN),
    }[expected]
    assert cluster_tls(c) == want


def test_dns_cluster_inline_endpoints_carry_the_metadata() -> None:
    text = SERVICE_ENTRY.format(
        host="db.example.internal",
        location="MESH_INTERNAL",
        resolution="DNS",
        endpoints="[{address: db-0.example.internal, labels: {security.istio.io/tlsMode: istio}}, "
        "{address: db-1.example.internal}]",
    )
    c = clusters(client(), push_of(text))["outbound|80||db.example.internal"]
    assert c.type == Cluster.STRICT_DNS
    assert endpoint_modes(c.load_assignment) == {"db-0.example.internal": "istio", "db-1.example.internal": None}
    assert cluster_tls(c)[0][0] == "tlsMode-istio"


# ----- inbound -----

PASS = names.INBOUND_PASSTHROUGH_CLUSTER
BLACKHOLE = ("virtualInbound-blackhole", 15006, "-", "-", "-", "tcp:BlackHoleCluster")
MTLS_HTTP = "istio-http/1.0,istio-http/1.1,istio-h2"
ALL_ISTIO = "istio,istio-peer-exchange,istio-http/1.0,istio-http/1.1,istio-h2"
PASSTHROUGH = {
    "STRICT": [
        ("virtualInbound-catchall-http", 0, "tls", MTLS_HTTP, "mtls", f"http:{PASS}"),
        ("virtualInbound", 0, "tls", "-", "mtls", f"tcp:{PASS}"),
    ],
    "PERMISSIVE": [
        ("virtualInbound-catchall-http", 0, "tls", MTLS_HTTP, "mtls", f"http:{PASS}"),
        ("virtualInbound-catchall-http", 0, "raw_buffer", "http/1.1,h2c", "-", f"http:{PASS}"),
        ("virtualInbound", 0, "tls", "istio-peer-exchange,istio", "mtls", f"tcp:{PASS}"),
        ("virtualInbound", 0, "raw_buffer", "-", "-", f"tcp:{PASS}"),
        ("virtualInbound", 0, "tls", "-", "-", f"tcp:{PASS}"),
    ],
    "DISABLE": [
        ("virtualInbound-catchall-http", 0, "raw_buffer", "http/1.1,h2c", "-", f"http:{PASS}"),
        ("virtualInbound", 0, "raw_buffer", "-", "-", f"tcp:{PASS}"),
    ],
}


PORT_LEVEL_EXTRA = (
    ", selector: {matchLabels: {app: reviews}}, portLevelMtls: {8080: {mode: DISABLE}, 9999: {mode: PERMISSIVE}}"
)


def port_chains(mode: str) -> list[tuple[Any, ...]]:
    """The chains of reviews' four ports (HTTP 8080, TCP 5432, gRPC 7070, sniffed 8000) in one mode."""

    def http(port: int) -> list[tuple[Any, ...]]:
        name, cluster = f"0.0.0.0_{port}", f"http:inbound|{port}||"
        return {
            "STRICT": [(name, port, "tls", "-", "mtls", cluster)],
            "PERMISSIVE": [
                (name, port, "tls", ALL_ISTIO, "mtls", cluster),
                (name, port, "raw_buffer", "-", "-", cluster),
            ],
            "DISABLE": [(name, port, "raw_buffer", "-", "-", cluster)],
        }[mode]

    def tcp(port: int) -> list[tuple[Any, ...]]:
        name, cluster = f"0.0.0.0_{port}", f"tcp:inbound|{port}||"
        return {
            "STRICT": [(name, port, "tls", "-", "mtls", cluster)],
            "PERMISSIVE": [
                (name, port, "tls", ALL_ISTIO, "mtls", cluster),
                (name, port, "tls", "-", "-", cluster),
                (name, port, "raw_buffer", "-", "-", cluster),
            ],
            "DISABLE": [(name, port, "raw_buffer", "-", "-", cluster)],
        }[mode]

    def auto(port: int) -> list[tuple[Any, ...]]:
        http_cluster, tcp_cluster = f"http:inbound|{port}||", f"tcp:inbound|{port}||"
        return [
            (n, port, t, a, s, http_cluster if n == "http" else tcp_cluster)
            for n, t, a, s in {
                "STRICT": [("http", "tls", MTLS_HTTP, "mtls"), ("tcp", "tls", "-", "mtls")],
                "PERMISSIVE": [
                    ("http", "tls", MTLS_HTTP, "mtls"),
                    ("http", "raw_buffer", "http/1.1,h2c", "-"),
                    ("tcp", "tls", "istio-peer-exchange,istio", "mtls"),
                    ("tcp", "raw_buffer", "-", "-"),
                    ("tcp", "tls", "-", "-"),
                ],
                "DISABLE": [("http", "raw_buffer", "http/1.1,h2c", "-"), ("tcp", "raw_buffer", "-", "-")],
            }[mode]
        ]

    rows = [*tcp(5432), *http(7070), *auto(8000), *http(8080)]
    return [(f"0.0.0.0_{r[1]}", *r[1:]) for r in rows]


@pytest.mark.parametrize(
    ("config", "mode"),
    [
        ("", "PERMISSIVE"),
        (peer("STRICT"), "STRICT"),
        (peer("DISABLE"), "DISABLE"),
        (peer("STRICT", "istio-system"), "STRICT"),
        (peer("STRICT", "istio-system") + peer("UNSET"), "STRICT"),
        (peer("STRICT", "istio-system") + peer("PERMISSIVE"), "PERMISSIVE"),
        (peer("STRICT") + peer("DISABLE", name="w", extra=", selector: {matchLabels: {app: reviews}}"), "DISABLE"),
        (peer("STRICT") + peer("DISABLE", name="w", extra=", selector: {matchLabels: {app: ratings}}"), "STRICT"),
    ],
)
def test_virtual_inbound_chains_by_mode(config: str, mode: str) -> None:
    listener = listeners(server(), push_of(MESH + config))["virtualInbound"]
    assert (listener.address.socket_address.address, listener.address.socket_address.port_value) == ("0.0.0.0", 15006)
    assert listener.traffic_direction == base_pb2.INBOUND and listener.continue_on_listener_filters_timeout
    assert [chain(fc) for fc in listener.filter_chains] == [BLACKHOLE, *PASSTHROUGH[mode], *port_chains(mode)]
    filters = [f.name for f in listener.listener_filters]
    expected = ["envoy.filters.listener.original_dst"]
    if mode != "DISABLE":
        expected.append("envoy.filters.listener.tls_inspector")
    if mode != "STRICT":  # plaintext passthrough (and sniffed-port) chains match on the HTTP ALPN
        expected.append("envoy.filters.listener.http_inspector")
    assert filters == expected


def test_port_level_modes_make_their_own_chains_and_passthrough() -> None:
    listener = listeners(server(), push_of(MESH + peer("STRICT", name="w", extra=PORT_LEVEL_EXTRA)))["virtualInbound"]
    rows = [chain(fc) for fc in listener.filter_chains]
    assert ("0.0.0.0_8080", 8080, "raw_buffer", "-", "-", "http:inbound|8080||") in rows
    assert not any(r[1] == 8080 and r[4] == "mtls" for r in rows)
    # A port-level setting no service port covers gets passthrough chains of its own, in its mode.
    assert [r for r in rows if r[1] == 9999] == [(n, 9999, *rest) for n, _, *rest in PASSTHROUGH["PERMISSIVE"]]
    assert [r for r in rows if r[1] == 0] == PASSTHROUGH["STRICT"]
    # The TLS inspector runs where a chain matches on TLS (not on 8080 nor 15006).
    (tls_inspector,) = [f for f in listener.listener_filters if f.name.endswith("tls_inspector")]
    ranges = [
        (r.destination_port_range.start, r.destination_port_range.end)
        for r in tls_inspector.filter_disabled.or_match.rules
    ]
    assert ranges == [(8080, 8081), (15006, 15007)]


def test_inbound_http_chain_details() -> None:
    listener = listeners(server(), push_of(MESH + peer("STRICT")))["virtualInbound"]
    fc = next(fc for fc in listener.filter_chains if fc.name == "0.0.0.0_8080")
    context = tls_pb2.DownstreamTlsContext()
    fc.transport_socket.typed_config.Unpack(context)
    assert context.require_client_certificate.value
    common = context.common_tls_context
    assert list(common.alpn_protocols) == ["h2", "http/1.1"]
    assert [s.name for s in common.tls_certificate_sds_secret_configs] == ["default"]
    assert common.combined_validation_context.validation_context_sds_secret_config.name == "ROOTCA"
    assert "ECDHE-ECDSA-AES256-GCM-SHA384" in common.tls_params.cipher_suites
    manager = hcm_pb2.HttpConnectionManager()
    fc.filters[0].typed_config.Unpack(manager)
    assert manager.stat_prefix == "inbound_0.0.0.0_8080"
    assert manager.forward_client_cert_details == manager.APPEND_FORWARD
    assert manager.set_current_client_cert_details.uri and manager.set_current_client_cert_details.subject.value
    assert manager.server_name == "istio-envoy" and not manager.use_remote_address.value
    route_config = manager.route_config
    assert route_config.name == "inbound|8080||"
    (vhost,) = route_config.virtual_hosts
    assert vhost.name == "inbound|http|9080" and list(vhost.domains) == ["*"]
    (route,) = vhost.routes
    assert route.name == "default" and route.match.prefix == "/"
    assert route.route.timeout.ToSeconds() == 0 and route.route.retry_policy.retry_on == "reset-before-request"
    assert route.route.retry_policy.num_retries.value == 2
    assert route.decorator.operation == f"{REVIEWS}:9080/*"
    tcp_fc = next(fc for fc in listener.filter_chains if fc.name == "0.0.0.0_5432")
    tcp_context = tls_pb2.DownstreamTlsContext()
    tcp_fc.transport_socket.typed_config.Unpack(tcp_context)
    assert list(tcp_context.common_tls_context.alpn_protocols) == ["istio-peer-exchange", "h2", "http/1.1"]
    grpc_fc = next(fc for fc in listener.filter_chains if fc.name == "0.0.0.0_7070")
    grpc_manager = hcm_pb2.HttpConnectionManager()
    grpc_fc.filters[0].typed_config.Unpack(grpc_manager)
    assert grpc_manager.HasField("http2_protocol_options")
    assert not grpc_manager.route_config.virtual_hosts[0].routes[0].route.HasField("retry_policy")  # gRPC: none


def test_inbound_clusters() -> None:
    out = clusters(server(), push_of(MESH))
    inbound = {name: c for name, c in out.items() if name.startswith("inbound|") or name == PASS}
    assert sorted(inbound) == [PASS, "inbound|5432||", "inbound|7070||", "inbound|8000||", "inbound|8080||"]
    for c in inbound.values():
        # istiod's default inboundTrafficPolicy PASSTHROUGH: to the original destination, from 127.0.0.6.
        assert c.type == Cluster.ORIGINAL_DST and c.lb_policy == Cluster.CLUSTER_PROVIDED
        assert c.upstream_bind_config.source_address.address == "127.0.0.6"
    assert inbound["inbound|8080||"].cleanup_interval.seconds == 9223372035
    options = http_protocol_options_pb2.HttpProtocolOptions()
    inbound["inbound|7070||"].typed_extension_protocol_options[cds.HTTP_PROTOCOL_OPTIONS_KEY].Unpack(options)
    assert options.explicit_http_config.HasField("http2_protocol_options")
    inbound["inbound|8000||"].typed_extension_protocol_options[cds.HTTP_PROTOCOL_OPTIONS_KEY].Unpack(options)
    assert options.HasField("use_downstream_protocol_config")
    assert not inbound["inbound|8080||"].typed_extension_protocol_options


def _threshold(cluster: Cluster) -> Any:
    (threshold,) = cluster.circuit_breakers.thresholds
    return threshold


def test_inbound_connection_pools() -> None:
    """istiod's buildInboundCluster: the service's DestinationRule pool (port-level first), replaced by the
    Sidecar's inboundConnectionPool, replaced for one port by its ingress listener's connectionPool."""
    dr_pool = rule(
        "{connectionPool: {tcp: {maxConnections: 11, connectTimeout: 2s}, http: {idleTimeout: 9s}},"
        " portLevelSettings: [{port: {number: 5432}, connectionPool: {tcp: {maxConnections: 22}}}]}"
    )
    by_rule = clusters(server(), push_of(MESH + dr_pool))
    assert _threshold(by_rule["inbound|8080||"]).max_connections.value == 11
    assert by_rule["inbound|8080||"].connect_timeout.seconds == 2
    options = http_protocol_options_pb2.HttpProtocolOptions()
    by_rule["inbound|8080||"].typed_extension_protocol_options[cds.HTTP_PROTOCOL_OPTIONS_KEY].Unpack(options)
    assert options.common_http_protocol_options.idle_timeout.seconds == 9
    assert options.explicit_http_config.HasField("http_protocol_options")
    assert _threshold(by_rule["inbound|5432||"]).max_connections.value == 22  # port level, service port 5432
    assert not by_rule["inbound|5432||"].typed_extension_protocol_options  # TCP: no HTTP options
    sidecar = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  inboundConnectionPool: {tcp: {maxConnections: 33}}
---
"""
    by_sidecar = clusters(server(), push_of(MESH + dr_pool + sidecar))
    assert _threshold(by_sidecar["inbound|8080||"]).max_connections.value == 33
    assert by_sidecar["inbound|8080||"].connect_timeout.seconds != 2  # the whole pool is replaced
    ingress = INGRESS.replace(
        '{port: {number: 9080, protocol: HTTP, name: http}, defaultEndpoint: "127.0.0.1:8080"}',
        '{port: {number: 9080, protocol: HTTP, name: http}, defaultEndpoint: "127.0.0.1:8080",'
        " connectionPool: {http: {http1MaxPendingRequests: 44}}}",
    ).replace("spec:\n", "spec:\n  inboundConnectionPool: {tcp: {maxConnections: 55}}\n", 1)
    by_listener = clusters(server(), push_of(MESH + ingress))
    assert _threshold(by_listener["inbound|9080||"]).max_pending_requests.value == 44
    assert _threshold(by_listener["inbound|9080||"]).max_connections.value == 2**32 - 1
    assert _threshold(by_listener["inbound|9090||"]).max_connections.value == 55
    # A rule that selects the workload is for its outbound side only (istiod).
    selecting = dr_pool.replace(
        "spec: {host: reviews", "spec: {host: reviews, workloadSelector: {matchLabels: {app: reviews}}"
    )
    assert (
        _threshold(clusters(server(), push_of(MESH + selecting))["inbound|8080||"]).max_connections.value == 2**32 - 1
    )


def test_proxies_without_workload_certificates_get_no_mtls_config() -> None:
    """A proxy without Istio's agent (no SDS) would wait forever for the secrets: no auto-mTLS, ISTIO_MUTUAL
    stays plaintext, PERMISSIVE ports take plaintext only, STRICT ones stay mTLS-only (failing closed)."""
    bare = {"app": "reviews"}
    push = push_of(
        MESH
        + rule(
            "{tls: {mode: ISTIO_MUTUAL}}",
            "[{name: v1, labels: {app: reviews}, trafficPolicy: {loadBalancer: {simple: RANDOM}}}]",
        )
    )
    out = clusters(client({"app": "client"}), push)
    assert cluster_tls(out[f"outbound|9080||{REVIEWS}"]) is None
    assert cluster_tls(clusters(client({"app": "client"}), push_of(MESH))[f"outbound|9080||{REVIEWS}"]) is None
    rows = [chain(fc) for fc in listeners(server(labels=bare), push_of(MESH))["virtualInbound"].filter_chains]
    assert not [r for r in rows if r[4] == "mtls"]
    strict = [
        chain(fc)
        for fc in listeners(server(labels=bare), push_of(MESH + peer("STRICT")))["virtualInbound"].filter_chains
    ]
    assert [r for r in strict if r[1] == 8080] == [("0.0.0.0_8080", 8080, "tls", "-", "mtls", "http:inbound|8080||")]
    # The agent's ISTIO_VERSION metadata (gateways, and sidecars of any labels) says the certificates are there.
    agent = parse_proxy(
        "sidecar~10.1.0.9~c.default~default.svc.cluster.local", {"LABELS": {"app": "c"}, "ISTIO_VERSION": "1.30.0"}
    )
    assert cluster_tls(clusters(agent, push_of(MESH))[f"outbound|9080||{REVIEWS}"]) == AUTO
    assert push.view_of(client({"app": "client"})) != push.view_of(client())


def test_proxies_without_inbound_side() -> None:
    push = push_of(MESH)
    # Not an instance of any service: no virtualInbound (see pilot.xds.inbound on this deviation).
    assert "virtualInbound" not in listeners(client(), push)
    assert PASS not in clusters(client(), push)
    # No interception: nothing inbound without Sidecar ingress listeners (the application binds its ports).
    none = server({"INTERCEPTION_MODE": "NONE"})
    assert not [n for n in listeners(none, push) if n.startswith(("virtual", "0.0.0.0_8080"))]
    assert not [n for n in clusters(none, push) if n.startswith("inbound") or n == PASS]
    # Captured instances always have virtualOutbound too.
    assert {"virtualOutbound", "virtualInbound"} <= set(listeners(server(), push))


INGRESS = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: reviews, namespace: default}
spec:
  workloadSelector: {labels: {app: reviews}}
  ingress:
  - {port: {number: 9080, protocol: HTTP, name: http}, defaultEndpoint: "127.0.0.1:8080"}
  - {port: {number: 9090, protocol: HTTP, name: admin}, defaultEndpoint: "0.0.0.0:8081", captureMode: NONE}
  - port: {number: 9091, protocol: TCP, name: sock}
    defaultEndpoint: "unix:///var/run/app.sock"
    captureMode: NONE
    bind: 127.0.0.1
  - {port: {number: 9092, protocol: TCP, name: passthrough}}
---
"""


def test_sidecar_ingress_listeners_replace_service_ports() -> None:
    push = push_of(MESH + INGRESS + peer("STRICT"))
    out = listeners(server(), push)
    virtual = out["virtualInbound"]
    rows = [chain(fc) for fc in virtual.filter_chains]
    # Chains are named after the bind, which defaults to the proxy's (global unicast) IP.
    assert [r for r in rows if r[1]] == [
        BLACKHOLE,
        (f"{POD_IP}_9080", 9080, "tls", "-", "mtls", "http:inbound|9080||"),
        (f"{POD_IP}_9092", 9092, "tls", "-", "mtls", "tcp:inbound|9092||"),
    ]
    assert not [r for r in rows if r[1] in (8080, 5432)]  # service ports give way to the ingress listeners
    sidecar_path = "/apis/networking.istio.io/v1/namespaces/default/sidecar/reviews"
    fc = next(fc for fc in virtual.filter_chains if fc.name == f"{POD_IP}_9080")
    assert dict(fc.metadata.filter_metadata["istio"])["config"] == sidecar_path
    # captureMode NONE binds: at the proxy's IP unless a bind is given.
    bound = out[f"{POD_IP}_9090"]
    assert bound.address.socket_address.address == POD_IP and bound.address.socket_address.port_value == 9090
    assert [f.name for f in bound.listener_filters] == ["envoy.filters.listener.tls_inspector"]  # no original_dst
    assert [chain(fc) for fc in bound.filter_chains] == [
        (f"{POD_IP}_9090", 9090, "tls", "-", "mtls", "http:inbound|9090||")
    ]
    assert "127.0.0.1_9091" in out
    c = clusters(server(), push)

    def upstream(name: str) -> Any:
        cluster = c[name]
        if cluster.type == Cluster.ORIGINAL_DST:
            return "original_dst"
        address = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address
        where = address.pipe.path or f"{address.socket_address.address}:{address.socket_address.port_value}"
        return where, cluster.upstream_bind_config.source_address.address or None

    assert upstream("inbound|9080||") == ("127.0.0.1:8080", None)
    assert upstream("inbound|9090||") == (f"{POD_IP}:8081", "127.0.0.6")  # 0.0.0.0 = the instance IP
    assert upstream("inbound|9091||") == ("/var/run/app.sock", None)
    assert upstream("inbound|9092||") == "original_dst"
    assert "inbound|8080||" not in c


def test_ingress_listeners_without_interception_bind_and_skip_virtual_inbound() -> None:
    out = listeners(server({"INTERCEPTION_MODE": "NONE"}), push_of(MESH + INGRESS))
    assert "virtualInbound" not in out and "virtualOutbound" not in out
    assert {f"{POD_IP}_9080", f"{POD_IP}_9090", "127.0.0.1_9091", f"{POD_IP}_9092"} <= set(out)


def test_conflicting_service_ports_are_reported() -> None:
    other = """
apiVersion: v1
kind: Service
metadata: {name: legacy, namespace: default}
spec:
  clusterIP: 10.96.0.11
  ports: [{name: tcp-legacy, port: 18080, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: legacy-1, namespace: default, labels: {kubernetes.io/service-name: legacy}}
addressType: IPv4
ports: [{name: tcp-legacy, port: 8080}]
endpoints: [{addresses: [10.1.0.5]}]
---
"""
    push = push_of(MESH + other)
    rows = [chain(fc) for fc in listeners(server(), push)["virtualInbound"].filter_chains if fc.name == "0.0.0.0_8080"]
    assert {r[-1] for r in rows} == {"tcp:inbound|8080||"}  # legacy sorts first and keeps the port
    status = push.proxy_status()["pilot_conflict_inbound_listener"]
    assert (
        "Conflicting inbound listener:8080. existing: legacy.default.svc.cluster.local"
        in status[server().id]["message"]
    )


# ----- Envoy accepts it -----


def _envoy() -> str | None:
    found = shutil.which("envoy") or str(Path(sys.executable).with_name("envoy"))
    return found if Path(found).exists() else None


def _bootstrap(proxies: list[Proxy], push: PushContext, path: Path) -> dict[str, Any]:
    """All clusters and listeners of the proxies as static resources (names made unique per proxy)."""
    static_clusters: dict[str, Any] = {}
    static_listeners: list[Any] = []
    for i, proxy in enumerate(proxies):
        for c in cds.build_clusters(proxy, push):
            static_clusters.setdefault(c.name, json.loads(json_format.MessageToJson(c)))
        for listener in lds.build_listeners(proxy, push):
            data = json.loads(json_format.MessageToJson(listener))
            data["name"] = f"{i}-{listener.name}"
            address = data["address"]["socketAddress"]
            address["portValue"] = address.get("portValue", 0) + i  # distinct addresses for the validator
            static_listeners.append(data)
    xds = {
        "name": "xds-grpc",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": "xds-grpc",
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 15010}}}}
                    ]
                }
            ],
        },
        "typed_extension_protocol_options": {
            cds.HTTP_PROTOCOL_OPTIONS_KEY: {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
    }
    bootstrap = {
        "node": {"id": proxies[0].id, "cluster": "test"},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
            }
        },
        "static_resources": {
            "clusters": [*static_clusters.values(), xds, sds_cluster("/tmp/pilot-test-sds.sock")],
            "listeners": static_listeners,
        },
    }
    path.write_text(json.dumps(bootstrap))
    return bootstrap


def _validate(envoy: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [envoy, "--mode", "validate", "-c", str(path), "-l", "error"], capture_output=True, text=True, timeout=60
    )


@pytest.mark.skipif(_envoy() is None, reason="envoy binary not found")
@pytest.mark.parametrize(
    "config",
    [
        "",
        peer("STRICT") + rule("{tls: {mode: ISTIO_MUTUAL}}", "[{name: v1, labels: {app: reviews}}]"),
        peer("DISABLE") + INGRESS,
        peer(
            "STRICT",
            name="w",
            extra=PORT_LEVEL_EXTRA,
        ),
        rule("{connectionPool: {tcp: {maxConnections: 5, idleTimeout: 3s}, http: {maxRequestsPerConnection: 2}}}"),
    ],
    ids=["permissive-auto", "strict-istio-mutual", "disable-ingress", "port-level", "inbound-pools"],
)
def test_envoy_validates_generated_mtls_config(tmp_path: Path, config: str) -> None:
    envoy = _envoy()
    assert envoy is not None
    push = push_of(MESH + config)
    path = tmp_path / "bootstrap.json"
    bootstrap = _bootstrap([server(), client()], push, path)
    result = _validate(envoy, path)
    assert result.returncode == 0, result.stdout + result.stderr
    # The check has teeth: Envoy rejects two filter chains with the same match.
    virtual = next(x for x in bootstrap["static_resources"]["listeners"] if x["name"] == "0-virtualInbound")
    virtual["filterChains"].append(virtual["filterChains"][-1])
    path.write_text(json.dumps(bootstrap))
    assert _validate(envoy, path).returncode != 0

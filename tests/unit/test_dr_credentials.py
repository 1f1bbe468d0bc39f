"""DestinationRule ``tls.credentialName`` (istiod's ApplyCustomSDSToClientCommonTLSContext): on gateways, and on
sidecars selected by a rule's workloadSelector, the client certificate (MUTUAL) and the CA to verify the server
with come over SDS from the credential's Secret in the proxy's namespace; other sidecars use the file paths."""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from pilot.model.config import ConfigKey
from pilot.model.proxy import Proxy, parse_proxy
from pilot.push.scope import scope_for
from pilot.xds import cds
from tests.certs import TestCA, tls_secret
from tests.unit.test_gateway_tls import push_of, secret_snapshot

NS = "istio-system"
HOST = "api.example.com"
CLUSTER = f"outbound|443||{HOST}"
SERVER_CA = TestCA("server-ca")
CLIENT_CERT = TestCA("client-ca").issue("egress", client=True)

SERVICE = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "ServiceEntry",
    "metadata": {"name": "api", "namespace": NS},
    "spec": {
        "hosts": [HOST],
        "location": "MESH_EXTERNAL",
        "ports": [{"number": 443, "name": "https", "protocol": "HTTPS"}],
        "resolution": "DNS",
    },
}


def rule(tls: dict[str, Any], *, namespace: str = NS, selector: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"host": HOST, "trafficPolicy": {"tls": tls}}
    if selector:
        spec["workloadSelector"] = {"matchLabels": selector}
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "api", "namespace": namespace},
        "spec": spec,
    }


MUTUAL = {"mode": "MUTUAL", "credentialName": "api-client", "sni": HOST, "subjectAltNames": [HOST]}


def egress() -> Proxy:
    return parse_proxy(f"router~10.0.0.1~egress-1.{NS}~{NS}.svc.cluster.local", {"LABELS": {"istio": "egress"}})


def sidecar(app: str, namespace: str = NS) -> Proxy:
    return parse_proxy(f"sidecar~10.0.0.2~{app}-1.{namespace}~{namespace}.svc.cluster.local", {"LABELS": {"app": app}})


def upstream_tls(proxy: Proxy, *objects: dict[str, Any]) -> tls_pb2.UpstreamTlsContext | None:
    clusters = {c.name: c for c in cds.build_clusters(proxy, push_of(*objects))}
    cluster: cluster_pb2.Cluster = clusters[CLUSTER]
    if not cluster.HasField("transport_socket"):
        return None
    context = tls_pb2.UpstreamTlsContext()
    cluster.transport_socket.typed_config.Unpack(context)
    return context


def test_a_gateway_fetches_the_client_certificate_and_the_ca_over_ads() -> None:
    context = upstream_tls(egress(), SERVICE, rule(MUTUAL))
    assert context is not None and context.sni == HOST
    common = context.common_tls_context
    (certificate,) = common.tls_certificate_sds_secret_configs
    assert certificate.name == "kubernetes://api-client"
    assert certificate.sds_config.HasField("ads")
    combined = common.combined_validation_context
    assert combined.validation_context_sds_secret_config.name == "kubernetes://api-client-cacert"
    assert [m.matcher.exact for m in combined.default_validation_context.match_typed_subject_alt_names] == [HOST]


def test_simple_fetches_only_the_ca_and_insecure_skip_verify_only_the_certificate() -> None:
    simple = upstream_tls(egress(), SERVICE, rule({"mode": "SIMPLE", "credentialName": "api-client"}))
    assert simple is not None
    assert not simple.common_tls_context.tls_certificate_sds_secret_configs
    ca = simple.common_tls_context.combined_validation_context.validation_context_sds_secret_config
    assert ca.name == "kubernetes://api-client-cacert"
    skip = {"mode": "MUTUAL", "credentialName": "api-client", "insecureSkipVerify": True}
    insecure = upstream_tls(egress(), SERVICE, rule(skip))
    assert insecure is not None and not insecure.common_tls_context.HasField("combined_validation_context")
    assert len(insecure.common_tls_context.tls_certificate_sds_secret_configs) == 1


def test_sidecars_use_it_only_through_a_selecting_rule() -> None:
    plain = upstream_tls(sidecar("web"), SERVICE, rule(MUTUAL))
    assert plain is not None  # TLS from the certificate paths (none given): no SDS, as istiod
    assert not plain.common_tls_context.tls_certificate_sds_secret_configs
    selected = upstream_tls(sidecar("web"), SERVICE, rule(MUTUAL, selector={"app": "web"}))
    assert selected is not None
    assert [s.name for s in selected.common_tls_context.tls_certificate_sds_secret_configs] == [
        "kubernetes://api-client"
    ]


def test_sds_serves_a_rules_credentials_to_the_proxies_it_applies_to_only() -> None:
    secret = tls_secret("api-client", NS, CLIENT_CERT, ca=SERVER_CA.pem)
    wanted = ("kubernetes://api-client", "kubernetes://api-client-cacert")
    push = push_of(SERVICE, rule(MUTUAL), secret)
    served = secret_snapshot(push, egress(), *wanted)
    assert served["kubernetes://api-client"].tls_certificate.private_key.inline_bytes == CLIENT_CERT.key_pem
    assert served["kubernetes://api-client-cacert"].validation_context.trusted_ca.inline_bytes == SERVER_CA.pem
    assert secret_snapshot(push, sidecar("web"), *wanted) == {}  # no selector: not for sidecars
    assert ConfigKey("Secret", NS, "api-client") in scope_for(push, egress()).secrets

    selecting = push_of(SERVICE, rule(MUTUAL, selector={"app": "web"}), secret)
    assert sorted(secret_snapshot(selecting, sidecar("web"), *wanted)) == sorted(wanted)
    assert secret_snapshot(selecting, sidecar("db"), *wanted) == {}
    assert selecting.sidecars_read_secrets and not push.sidecars_read_secrets
    # A Secret of another namespace is never served, whoever names it.
    foreign = push_of(SERVICE, rule({**MUTUAL, "credentialName": "kubernetes://default/api-client"}), secret)
    assert secret_snapshot(foreign, egress(), "kubernetes://default/api-client") == {}

"""Gateway TLS termination, Istio YAML in, Envoy resources out: the filter chains and DownstreamTlsContexts of
HTTPS and TLS servers (credentialName over SDS, file-mounted certificates, ISTIO_MUTUAL), the SDS Secrets a
gateway proxy gets (and those it does not), Secrets as the loader reads them, and how a Secret change travels
(SDS only, to the gateways using it). Each TLS case reads as a table row."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2

from pilot.config.loader import load_text
from pilot.model.config import ConfigKey
from pilot.model.proxy import Proxy, parse_proxy
from pilot.push.context import PushContext
from pilot.push.offline import push_of_configs
from pilot.push.request import PushRequest
from pilot.push.scope import scope_for
from pilot.push.triggers import ChangeHandler
from pilot.xds import lds, names, rds, sds
from pilot.xds.cache import XdsCache
from pilot.xds.generate import Generator
from pilot.xds.snapshot import NameSet
from tests.certs import TestCA, b64, generic_secret, tls_secret

NS = "istio-system"  # the gateway proxy's namespace
CA = TestCA("gateway-ca")
CLIENT_CA = TestCA("client-ca")
A_CERT = CA.issue("a.example.com")
B_CERT = CA.issue("b.example.com")


# ----- building config -----


def docs(*objects: dict[str, Any]) -> str:
    return yaml.safe_dump_all(list(objects), sort_keys=False)


def push_of(*objects: dict[str, Any]) -> PushContext:
    result = load_text("test.yaml", docs(*objects))
    assert not result.errors, [str(e) for e in result.errors]
    return push_of_configs(result.configs)


def gateway(name: str, *servers: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"istio": "ingressgateway"}, "servers": list(servers)},
    }


def https(port: int, name: str, hosts: list[str], tls: dict[str, Any], protocol: str = "HTTPS") -> dict[str, Any]:
    return {"port": {"number": port, "name": name, "protocol": protocol}, "hosts": hosts, "tls": tls}


def router(namespace: str = NS, metadata: dict[str, Any] | None = None) -> Proxy:
    meta = {"LABELS": {"istio": "ingressgateway"}, **(metadata or {})}
    return parse_proxy(f"router~10.0.0.1~gw-1.{namespace}~{namespace}.svc.cluster.local", meta)


def listeners_of(push: PushContext, proxy: Proxy | None = None) -> dict[str, listener_pb2.Listener]:
    return {x.name: x for x in lds.build_listeners(proxy or router(), push)}


# ----- summaries -----


def _sds(config: secret_pb2.SdsSecretConfig) -> str:
    via = (
        "ads"
        if config.sds_config.HasField("ads")
        else config.sds_config.api_config_source.grpc_services[0].envoy_grpc.cluster_name
    )
    return f"{config.name}@{via}"


def tls_summary(chain: Any) -> dict[str, Any] | None:
    """What a filter chain's DownstreamTlsContext says, in short."""
    if not chain.HasField("transport_socket"):
        return None
    context = tls_pb2.DownstreamTlsContext()
    chain.transport_socket.typed_config.Unpack(context)
    common = context.common_tls_context
    out: dict[str, Any] = {
        "alpn": list(common.alpn_protocols),
        "require_client": context.require_client_certificate.value,
    }
    if common.tls_certificate_sds_secret_configs:
        out["certs"] = [_sds(c) for c in common.tls_certificate_sds_secret_configs]
    if common.tls_certificates:
        out["certs"] = [(c.certificate_chain.filename, c.private_key.filename) for c in common.tls_certificates]
    validation = None
    if common.HasField("combined_validation_context"):
        combined = common.combined_validation_context
        validation = combined.default_validation_context
        out["ca"] = _sds(combined.validation_context_sds_secret_config)
    elif common.HasField("validation_context"):
        validation = common.validation_context
        out["ca"] = validation.trusted_ca.filename
        if validation.crl.filename:
            out["crl"] = validation.crl.filename
    if validation is not None:
        sans = [(m.san_type, m.matcher.exact) for m in validation.match_typed_subject_alt_names]
        if sans:
            out["sans"] = sans
        if validation.verify_certificate_spki:
            out["spki"] = list(validation.verify_certificate_spki)
        if validation.verify_certificate_hash:
            out["hash"] = list(validation.verify_certificate_hash)
    params = common.tls_params
    if params.ListFields():
        out["params"] = (
            params.tls_minimum_protocol_version,
            params.tls_maximum_protocol_version,
            list(params.cipher_suites),
        )
    return out


def hcm(chain: Any) -> hcm_pb2.HttpConnectionManager:
    manager = hcm_pb2.HttpConnectionManager()
    chain.filters[0].typed_config.Unpack(manager)
    return manager


def tcp(chain: Any) -> tcp_proxy_pb2.TcpProxy:
    proxy = tcp_proxy_pb2.TcpProxy()
    chain.filters[0].typed_config.Unpack(proxy)
    return proxy


# ----- TLS contexts: a table -----

P = common_pb2.TlsParameters
DNS, URI = 2, 3  # SubjectAltNameMatcher.SanType

TLS_CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "SIMPLE with a credential: the certificate over ADS, no client check",
        {"mode": "SIMPLE", "credentialName": "a-cert"},
        {"alpn": ["h2", "http/1.1"], "require_client": False, "certs": ["kubernetes://a-cert@ads"]},
    ),
    (
        "SIMPLE ignores subjectAltNames (Envoy refuses SAN checks without a CA)",
        {"mode": "SIMPLE", "credentialName": "a-cert", "subjectAltNames": ["x.example.com"]},
        {"alpn": ["h2", "http/1.1"], "require_client": False, "certs": ["kubernetes://a-cert@ads"]},
    ),
    (
        "MUTUAL: client certificate required, validated against the -cacert companion, SANs, SPKI, hash",
        {
            "mode": "MUTUAL",
            "credentialName": "a-cert",
            "subjectAltNames": ["client.example.com", "spiffe://cluster.local/ns/a/sa/b"],
            "verifyCertificateSpki": ["Pb1OeS2jnkZ6aTyzVl5YMHjhhuq2AcRJnsxfZqpP+Cw="],
            "verifyCertificateHash": ["AB:CD"],
        },
        {
            "alpn": ["h2", "http/1.1"],
            "require_client": True,
            "certs": ["kubernetes://a-cert@ads"],
            "ca": "kubernetes://a-cert-cacert@ads",
            "sans": [(DNS, "client.example.com"), (URI, "spiffe://cluster.local/ns/a/sa/b")],
            "spki": ["Pb1OeS2jnkZ6aTyzVl5YMHjhhuq2AcRJnsxfZqpP+Cw="],
            "hash": ["AB:CD"],
        },
    ),
    (
        "OPTIONAL_MUTUAL: validated when presented, not required",
        {"mode": "OPTIONAL_MUTUAL", "credentialName": "kubernetes://a-cert"},
        {
            "alpn": ["h2", "http/1.1"],
            "require_client": False,
            "certs": ["kubernetes://a-cert@ads"],
            "ca": "kubernetes://a-cert-cacert@ads",
        },
    ),
    (
        "credentialNames (RSA and ECDSA): both certificates, the CA of the first",
        {"mode": "MUTUAL", "credentialNames": ["rsa", "ecdsa"]},
        {
            "alpn": ["h2", "http/1.1"],
            "require_client": True,
            "certs": ["kubernetes://rsa@ads", "kubernetes://ecdsa@ads"],
            "ca": "kubernetes://rsa-cacert@ads",
        },
    ),
    (
        "file-mounted SIMPLE: Envoy reads the files",
        {"mode": "SIMPLE", "serverCertificate": "/etc/certs/tls.crt", "privateKey": "/etc/certs/tls.key"},
        {"alpn": ["h2", "http/1.1"], "require_client": False, "certs": [("/etc/certs/tls.crt", "/etc/certs/tls.key")]},
    ),
    (
        "file-mounted MUTUAL with a CRL and SANs",
        {
            "mode": "MUTUAL",
            "serverCertificate": "/c/cert.pem",
            "privateKey": "/c/key.pem",
            "caCertificates": "/c/ca.pem",
            "caCrl": "/c/ca.crl",
            "subjectAltNames": ["client.example.com"],
        },
        {
            "alpn": ["h2", "http/1.1"],
            "require_client": True,
            "certs": [("/c/cert.pem", "/c/key.pem")],
            "ca": "/c/ca.pem",
            "crl": "/c/ca.crl",
            "sans": [(DNS, "client.example.com")],
        },
    ),
    (
        "tlsCertificates: several file pairs",
        {
            "mode": "SIMPLE",
            "tlsCertificates": [
                {"serverCertificate": "/r/cert", "privateKey": "/r/key"},
                {"serverCertificate": "/e/cert", "privateKey": "/e/key"},
            ],
        },
        {"alpn": ["h2", "http/1.1"], "require_client": False, "certs": [("/r/cert", "/r/key"), ("/e/cert", "/e/key")]},
    ),
    (
        "versions and cipher suites (invalid and repeated suites dropped, as istiod's FilterCipherSuites)",
        {
            "mode": "SIMPLE",
            "credentialName": "a-cert",
            "minProtocolVersion": "TLSV1_2",
            "maxProtocolVersion": "TLSV1_3",
            "cipherSuites": ["ECDHE-RSA-AES256-GCM-SHA384", "NOT-A-CIPHER", "ECDHE-RSA-AES256-GCM-SHA384"],
        },
        {
            "alpn": ["h2", "http/1.1"],
            "require_client": False,
            "certs": ["kubernetes://a-cert@ads"],
            "params": (P.TLSv1_2, P.TLSv1_3, ["ECDHE-RSA-AES256-GCM-SHA384"]),
        },
    ),
]


@pytest.mark.parametrize(("tls", "expected"), [(c[1], c[2]) for c in TLS_CASES], ids=[c[0] for c in TLS_CASES])
def test_https_server_tls_context(tls: dict[str, Any], expected: dict[str, Any]) -> None:
    push = push_of(gateway("gw", https(443, "https", ["a.example.com"], tls)))
    listener = listeners_of(push)["0.0.0.0_443"]
    (chain,) = listener.filter_chains
    assert tls_summary(chain) == expected
    assert list(chain.filter_chain_match.server_names) == ["a.example.com"]
    assert hcm(chain).rds.route_config_name == "https.443.https.gw.default"
    assert [f.name for f in listener.listener_filters] == ["envoy.filters.listener.tls_inspector"]
    assert chain.transport_socket_connect_timeout.seconds == 15


def test_https_hosts_on_one_port_get_one_chain_per_server_with_its_route() -> None:
    push = push_of(
        gateway(
            "gw",
            https(443, "https-a", ["a.example.com", "./www.a.example.com"], {"mode": "SIMPLE", "credentialName": "a"}),
            https(443, "https-b", ["b.example.com"], {"mode": "SIMPLE", "credentialName": "b"}),
            https(443, "https-any", ["*"], {"mode": "SIMPLE", "credentialName": "any"}),
        )
    )
    listener = listeners_of(push)["0.0.0.0_443"]
    summary = [
        (list(c.filter_chain_match.server_names), hcm(c).rds.route_config_name, tls_summary(c)["certs"])  # type: ignore[index]
        for c in listener.filter_chains
    ]
    assert summary == [
        (["a.example.com", "www.a.example.com"], "https.443.https-a.gw.default", ["kubernetes://a@ads"]),
        (["b.example.com"], "https.443.https-b.gw.default", ["kubernetes://b@ads"]),
        ([], "https.443.https-any.gw.default", ["kubernetes://any@ads"]),  # "*": the chain for any SNI
    ]
    # RDS answers each server's name with that server's hosts only.
    vs = virtual_service("a", ["a.example.com", "b.example.com"], ["default/gw"], "a-svc")
    push = push_of(*_push_objects(push), vs, service_entry("a-svc", "a-svc.example.com"))
    routes = {r.name: r for r in rds.build_routes(router(), push, ["https.443.https-a.gw.default"])}
    assert [vh.name for vh in routes["https.443.https-a.gw.default"].virtual_hosts] == ["a.example.com:443"]


def _push_objects(push: PushContext) -> list[dict[str, Any]]:
    """The Gateways of a push context as objects again (to extend a case)."""
    out = []
    for cfg in push.gateways:
        out.append(
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "Gateway",
                "metadata": {"name": cfg.name, "namespace": cfg.namespace},
                "spec": cfg.spec.to_dict(),
            }
        )
    return out


def virtual_service(name: str, hosts: list[str], gateways: list[str], dest: str, namespace: str = "default") -> dict:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "hosts": hosts,
            "gateways": gateways,
            "http": [{"route": [{"destination": {"host": f"{dest}.example.com", "port": {"number": 80}}}]}],
        },
    }


def service_entry(name: str, host: str, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "hosts": [host],
            "location": "MESH_INTERNAL",
            "resolution": "STATIC",
            "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
            "endpoints": [{"address": "10.9.0.1"}],
        },
    }


def test_tls_server_terminating_tls_proxies_tcp_with_the_tls_context() -> None:
    vs = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "db", "namespace": "default"},
        "spec": {
            "hosts": ["db.example.com"],
            "gateways": ["default/gw"],
            "tcp": [{"route": [{"destination": {"host": "db.example.com", "port": {"number": 5432}}}]}],
        },
    }
    server = https(5443, "tls", ["db.example.com"], {"mode": "SIMPLE", "credentialName": "db"}, protocol="TLS")
    listener = listeners_of(push_of(gateway("gw", server), vs))["0.0.0.0_5443"]
    (chain,) = listener.filter_chains
    assert list(chain.filter_chain_match.server_names) == ["db.example.com"]
    assert tcp(chain).cluster == "outbound|5432||db.example.com"
    assert tls_summary(chain) == {
        "alpn": ["h2", "http/1.1"],
        "require_client": False,
        "certs": ["kubernetes://db@ads"],
    }


def test_istio_mutual_server_needs_the_proxys_workload_certificate() -> None:
    push = push_of(gateway("gw", https(15443, "mtls", ["*.local"], {"mode": "ISTIO_MUTUAL"})))
    assert listeners_of(push) == {}  # no agent, no certificate: skipped (a warning says so)
    with_agent = router(metadata={"ISTIO_VERSION": "1.30.0"})
    (chain,) = listeners_of(push, with_agent)["0.0.0.0_15443"].filter_chains
    assert tls_summary(chain) == {
        "alpn": ["h2", "http/1.1"],
        "require_client": True,
        "certs": ["default@sds-grpc"],
        "ca": "ROOTCA@sds-grpc",
    }
    revoking = push_of(gateway("gw", https(15443, "mtls", ["*.local"], {"mode": "ISTIO_MUTUAL", "caCrl": "/crl.pem"})))
    (chain,) = listeners_of(revoking, with_agent)["0.0.0.0_15443"].filter_chains
    context = tls_pb2.DownstreamTlsContext()
    chain.transport_socket.typed_config.Unpack(context)
    assert context.common_tls_context.combined_validation_context.default_validation_context.crl.filename == "/crl.pem"


def test_credentials_follow_the_proxys_xds_transport() -> None:
    push = push_of(gateway("gw", https(443, "https", ["a.example.com"], {"mode": "SIMPLE", "credentialName": "a"})))
    grpc = router(metadata={})
    grpc = Proxy(**{**grpc.__dict__, "xds_api": "grpc"})
    (chain,) = listeners_of(push, grpc)["0.0.0.0_443"].filter_chains
    assert tls_summary(chain)["certs"] == [f"kubernetes://a@{names.XDS_GRPC_CLUSTER}"]  # type: ignore[index]


# ----- SDS -----


def secret_snapshot(push: PushContext, proxy: Proxy, *resources: str) -> dict[str, secret_pb2.Secret]:
    generator = Generator(XdsCache())
    snapshot = generator.snapshot(names.SECRET_TYPE, proxy, push, push.view_of(proxy), NameSet.of(resources))
    return {name: r.decode(secret_pb2.Secret) for name, r in snapshot.resources.items()}


def mutual_gateway() -> dict[str, Any]:
    return gateway(
        "gw",
        https(443, "a", ["a.example.com"], {"mode": "SIMPLE", "credentialName": "a-cert"}),
        https(443, "b", ["b.example.com"], {"mode": "MUTUAL", "credentialName": "b-cert"}),
        https(443, "c", ["c.example.com"], {"mode": "MUTUAL", "credentialName": "c-cert"}),
    )


def test_sds_serves_the_referenced_secrets_of_the_proxys_namespace() -> None:
    push = push_of(
        mutual_gateway(),
        tls_secret("a-cert", NS, A_CERT),
        tls_secret("b-cert", NS, B_CERT, ca=CLIENT_CA.pem),  # the CA in the same Secret (ca.crt)
        generic_secret("c-cert", NS, {"cert": A_CERT.cert_pem, "key": A_CERT.key_pem}),  # generic keys
        generic_secret("c-cert-cacert", NS, {"cacert": CLIENT_CA.pem}),  # the CA in its own Secret
    )
    wanted = ["kubernetes://a-cert", "kubernetes://b-cert", "kubernetes://b-cert-cacert"]
    wanted += ["kubernetes://c-cert", "kubernetes://c-cert-cacert"]
    secrets = secret_snapshot(push, router(), *wanted)
    assert sorted(secrets) == sorted(wanted)
    a = secrets["kubernetes://a-cert"].tls_certificate
    assert a.certificate_chain.inline_bytes == A_CERT.cert_pem
    assert a.private_key.inline_bytes == A_CERT.key_pem
    assert secrets["kubernetes://b-cert-cacert"].validation_context.trusted_ca.inline_bytes == CLIENT_CA.pem
    assert secrets["kubernetes://c-cert"].tls_certificate.private_key.inline_bytes == A_CERT.key_pem
    assert secrets["kubernetes://c-cert-cacert"].validation_context.trusted_ca.inline_bytes == CLIENT_CA.pem


def test_sds_refuses_other_namespaces_and_unreferenced_secrets(caplog: pytest.LogCaptureFixture) -> None:
    push = push_of(
        mutual_gateway(),
        tls_secret("a-cert", NS, A_CERT),
        tls_secret("a-cert", "default", A_CERT),
        tls_secret("unused", NS, A_CERT),
    )
    asked = ["kubernetes://a-cert", "kubernetes://default/a-cert", "kubernetes://unused", "kubernetes://x/y/z"]
    assert list(secret_snapshot(push, router(), *asked)) == ["kubernetes://a-cert"]
    assert "asked for secrets it may not have" in caplog.text
    # A gateway proxy in another namespace reads that namespace's Secret of the same name.
    other = secret_snapshot(push, router("default"), "kubernetes://a-cert")
    assert list(other) == ["kubernetes://a-cert"]
    # Sidecars get no credentials.
    sidecar = parse_proxy("sidecar~10.0.0.2~app.istio-system~istio-system.svc.cluster.local", {})
    assert secret_snapshot(push, sidecar, "kubernetes://a-cert") == {}


def test_missing_and_malformed_secrets_are_reported_not_served(caplog: pytest.LogCaptureFixture) -> None:
    expired = CA.issue("c.example.com", expired=True)
    push = push_of(
        mutual_gateway(),
        # a generic Secret without the keys istiod reads
        generic_secret("a-cert", NS, {"password": b"hunter2"}),
        # b-cert missing entirely; c-cert expired (served, reported)
        tls_secret("c-cert", NS, expired, ca=CLIENT_CA.pem),
    )
    secrets = secret_snapshot(push, router(), "kubernetes://a-cert", "kubernetes://b-cert", "kubernetes://c-cert")
    assert list(secrets) == ["kubernetes://c-cert"]
    status = push.proxy_status()["pilot_sds_certificate_errors"]
    assert status == {
        f"{NS}/kubernetes://a-cert": {
            "message": "Gateway default/gw server 0 (port 443): secret istio-system/a-cert: found secret, but didn't "
            "have expected keys (cert and key) or (tls.crt and tls.key); found: password"
        },
        f"{NS}/kubernetes://b-cert": {
            "message": "Gateway default/gw server 1 (port 443): secret istio-system/b-cert not found"
        },
        f"{NS}/kubernetes://b-cert-cacert": {
            "message": "Gateway default/gw server 1 (port 443): secret istio-system/b-cert not found"
        },
        f"{NS}/kubernetes://c-cert": {
            "message": "Gateway default/gw server 2 (port 443): secret istio-system/c-cert: certificate is expired or "
            "not yet valid"
        },
    }
    assert "Gateway default/gw server 1 (port 443): credential kubernetes://b-cert" in caplog.text
    assert "secret istio-system/b-cert not found (not served)" in caplog.text
    assert "hunter2" not in caplog.text and "hunter2" not in json.dumps(status)


def test_a_secret_with_bad_pem_is_rejected_by_name() -> None:
    bad = tls_secret("a-cert", NS, A_CERT)
    bad["data"]["tls.key"] = b64(b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    not_pem = generic_secret("b-cert", NS, {"cert": b"hello", "key": A_CERT.key_pem})
    no_key = {**tls_secret("c-cert", NS, A_CERT), "data": {"tls.crt": b64(A_CERT.cert_pem)}}
    bad_base64 = {**tls_secret("d-cert", NS, A_CERT), "data": {"tls.crt": "%%%", "tls.key": b64(A_CERT.key_pem)}}
    result = load_text("secrets.yaml", docs(bad, not_pem, no_key, bad_base64))
    assert result.configs == ()
    assert [str(e) for e in result.errors] == [
        "secrets.yaml[doc 0] Secret istio-system/a-cert: data.tls.key: the PEM private key cannot be parsed "
        "(or is encrypted)",
        "secrets.yaml[doc 1] Secret istio-system/b-cert: data.cert: no PEM data found",
        "secrets.yaml[doc 2] Secret istio-system/c-cert: data.tls.key: required for type kubernetes.io/tls",
        "secrets.yaml[doc 3] Secret istio-system/d-cert: data.tls.crt: not valid base64",
    ]
    assert sorted(k.name for k in result.rejected) == ["a-cert", "b-cert", "c-cert", "d-cert"]


def test_secret_material_never_prints() -> None:
    doc = tls_secret("a-cert", NS, A_CERT)
    doc["metadata"]["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": json.dumps(doc["data"])}
    doc["stringData"] = {"note": "s3cr3t-value"}
    (config,) = load_text("a.yaml", docs(doc)).configs
    key_text = A_CERT.key_pem.decode()
    for shown in (repr(config), str(config.spec), json.dumps(config.spec.to_dict())):
        assert "PRIVATE KEY" not in shown and "s3cr3t" not in shown and key_text[40:80] not in shown
    assert config.spec.to_dict() == {
        "type": "kubernetes.io/tls",
        "data": {
            "note": "<redacted: 12 bytes>",
            "tls.crt": f"<redacted: {len(A_CERT.cert_pem)} bytes>",
            "tls.key": f"<redacted: {len(A_CERT.key_pem)} bytes>",
        },
    }
    assert config.annotations == {}  # kubectl's last-applied copy would hold the data
    with pytest.raises(TypeError):
        __import__("pickle").dumps(config.spec)
    secret = secret_snapshot(push_of(mutual_gateway(), doc), router(), "kubernetes://a-cert")["kubernetes://a-cert"]
    assert "<redacted" in str(sds.redacted(secret)) and key_text not in str(sds.redacted(secret))


def test_renewed_secret_changes_its_sds_resource_and_nothing_else() -> None:
    old = push_of(mutual_gateway(), tls_secret("a-cert", NS, A_CERT))
    renewed_cert = CA.issue("a.example.com")
    new = push_of(mutual_gateway(), tls_secret("a-cert", NS, renewed_cert))
    proxy = router()
    assert [x.SerializeToString() for x in lds.build_listeners(proxy, old)] == [
        x.SerializeToString() for x in lds.build_listeners(proxy, new)
    ]
    before = secret_snapshot(old, proxy, "kubernetes://a-cert")["kubernetes://a-cert"]
    after = secret_snapshot(new, proxy, "kubernetes://a-cert")["kubernetes://a-cert"]
    assert (
        after.tls_certificate.certificate_chain.inline_bytes
        == renewed_cert.cert_pem
        != (before.tls_certificate.certificate_chain.inline_bytes)
    )
    # Only SDS is affected by a Secret change, and only the gateways using the Secret depend on it.
    assert names.affected_types(frozenset({"Secret"})) == (names.SECRET_TYPE,)
    scope = scope_for(new, proxy)
    assert scope.depends_on(ConfigKey("Secret", NS, "a-cert"))
    assert scope.depends_on(ConfigKey("Secret", NS, "b-cert-cacert"))
    assert not scope.depends_on(ConfigKey("Secret", NS, "unused"))
    assert not scope.depends_on(ConfigKey("Secret", "default", "a-cert"))
    sidecar = parse_proxy("sidecar~10.0.0.2~app.istio-system~istio-system.svc.cluster.local", {})
    assert not scope_for(new, sidecar).depends_on(ConfigKey("Secret", NS, "a-cert"))


def test_a_secret_change_is_a_secret_push() -> None:
    result = load_text("s.yaml", docs(tls_secret("a-cert", NS, A_CERT)))
    config = result.configs[0]
    requests: list[PushRequest] = []

    class Store:
        def get(self, key: ConfigKey) -> Any:
            return config if key == config.key else None

        def list(self, kind: str) -> list[Any]:
            return []

    class Registry:
        kinds: frozenset[str] = frozenset()

        def apply(self, configs: Any) -> Any:
            from pilot.registry.base import RegistryUpdate

            return RegistryUpdate()

    ChangeHandler(Store(), Registry(), requests.append)({config.key})  # type: ignore[arg-type]
    (request,) = requests
    assert request.full and request.configs_updated == {config.key} and request.reason == Counter({"secret": 1})


def test_envoy_accepts_gateway_tls_listeners_and_secrets(tmp_path: Path) -> None:
    """A real Envoy validates the generated listeners (every TLS variant) with the SDS Secrets in place."""
    from tests.unit.test_lds import _envoy, _validate

    envoy = _envoy()
    if envoy is None:
        pytest.skip("envoy binary not found")
    for name, data in (("cert.pem", A_CERT.cert_pem), ("key.pem", A_CERT.key_pem), ("ca.pem", CLIENT_CA.pem)):
        (tmp_path / name).write_bytes(data)
    push = push_of(
        gateway(
            "gw",
            https(
                443,
                "a",
                ["a.example.com"],
                {"mode": "SIMPLE", "credentialName": "a-cert", "minProtocolVersion": "TLSV1_2"},
            ),
            https(
                443, "b", ["b.example.com"], {"mode": "MUTUAL", "credentialName": "b-cert", "subjectAltNames": ["c"]}
            ),
            https(
                8443,
                "f",
                ["*"],
                {
                    "mode": "MUTUAL",
                    "serverCertificate": str(tmp_path / "cert.pem"),
                    "privateKey": str(tmp_path / "key.pem"),
                    "caCertificates": str(tmp_path / "ca.pem"),
                    "cipherSuites": ["ECDHE-ECDSA-AES128-GCM-SHA256"],
                },
            ),
            {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]},
        ),
        tls_secret("a-cert", NS, A_CERT),
        tls_secret("b-cert", NS, B_CERT, ca=CLIENT_CA.pem),
    )
    proxy = router()
    listeners = lds.build_listeners(proxy, push)
    secrets = secret_snapshot(push, proxy, "kubernetes://a-cert", "kubernetes://b-cert", "kubernetes://b-cert-cacert")
    from google.protobuf import json_format

    def as_json(message: Any) -> Any:
        return json.loads(json_format.MessageToJson(message))

    for listener in listeners:  # static secrets stand in for SDS over ADS (validate mode has no xDS server)
        for chain in listener.filter_chains:
            if chain.HasField("transport_socket"):
                context = tls_pb2.DownstreamTlsContext()
                chain.transport_socket.typed_config.Unpack(context)
                common = context.common_tls_context
                for config in common.tls_certificate_sds_secret_configs:
                    config.ClearField("sds_config")
                if common.HasField("combined_validation_context"):
                    common.combined_validation_context.validation_context_sds_secret_config.ClearField("sds_config")
                chain.transport_socket.typed_config.Pack(context)
    bootstrap = {
        "node": {"id": proxy.id, "cluster": "test"},
        "static_resources": {
            "listeners": [as_json(x) for x in listeners],
            "secrets": [as_json(s) for s in secrets.values()],
        },
    }
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(bootstrap))
    result = _validate(envoy, path)
    assert result.returncode == 0, result.stdout + result.stderr

"""Upstream TLS of outbound clusters (istiod's cluster_tls.go), and the PROXY protocol around it.

DestinationRule TLS: SIMPLE and MUTUAL from files on the proxy (``caCertificates``, ``caCrl``, client
certificate and key) or, with ``credentialName``, over SDS from pilot (gateways, and sidecars a rule's
workloadSelector selects, as istiod; other sidecars use the paths). ISTIO_MUTUAL gets the workload's SDS
secrets (``pilot.xds.mtls``). Without a TLS setting, a destination in the mesh gets auto-mTLS: Istio mTLS to
the endpoints whose EDS metadata says ``tlsMode: istio`` (their sidecar is injected), plaintext to the others,
through ``transport_socket_matches`` (a passthrough cluster, which has no EDS metadata, gets mTLS only when
all its instances have sidecars). Auto-mTLS is off for MESH_EXTERNAL services and when the PeerAuthentication
of the service's namespace (or the mesh) says DISABLE. Both need the proxy's workload certificates (a proxy
without Istio's agent gets neither). Server identities: the rule's ``subjectAltNames``, else the service's
(a ServiceEntry's subjectAltNames and instance accounts).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2, proxy_protocol_pb2
from envoy.extensions.transport_sockets.proxy_protocol.v3 import upstream_proxy_protocol_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from google.protobuf import struct_pb2

from pilot.config.convert import enum_name
from pilot.model.config import Config, ConfigKey
from pilot.model.service import Endpoint, Port, Resolution, Service
from pilot.push import credentials
from pilot.push.authn import TLS_MODE_ISTIO, TLS_MODE_LABEL, MtlsMode
from pilot.push.context import PushContext
from pilot.xds import mtls, names
from pilot.xds.cluster_policy import EffectivePolicy, wrapped

log = logging.getLogger(__name__)

DISABLED_TLS_MODE = "disabled"  # istiod's DisabledTLSModeLabel: the tlsMode of an endpoint without the label
TLS_TRANSPORT_SOCKET = mtls.TLS_SOCKET
PROXY_PROTOCOL_TRANSPORT_SOCKET = "envoy.transport_sockets.upstream_proxy_protocol"

Cluster = cluster_pb2.Cluster


def apply_tls(
    cluster: Cluster,
    tls: Any,
    service: Service,
    port: Port,
    subset: str,
    http2: bool,
    workload_certs: bool,
    credential_source: config_source_pb2.ConfigSource | None,
) -> None:
    if tls is None:
        return
    mode = enum_name(getattr(tls, "mode", None))
    if mode in ("", "DISABLE"):
        return
    if mode == "ISTIO_MUTUAL":
        if not workload_certs:
            log.debug("cluster %s: ISTIO_MUTUAL without workload certificates; plaintext", cluster.name)
            return
        # istiod: the DestinationRule's SNI, else the DNS-SRV name; its subjectAltNames (else the service
        # accounts, which the service model does not carry).
        sni = getattr(tls, "sni", "") or names.dns_srv_name(port.number, subset, service.hostname)
        sans = list(getattr(tls, "subject_alt_names", None) or service.subject_alt_names)
        context = mtls.istio_mutual_upstream(sni, sans, http2=http2)
        cluster.transport_socket.CopyFrom(mtls.transport_socket(context))
        return
    context = tls_pb2.UpstreamTlsContext(sni=getattr(tls, "sni", "") or service.hostname)
    common = context.common_tls_context
    if port.protocol.is_http2:
        common.alpn_protocols.append("h2")
    insecure = bool(wrapped(getattr(tls, "insecure_skip_verify", None)))
    ca = getattr(tls, "ca_certificates", "")
    # istiod: a ServiceEntry's subjectAltNames stand in for the rule's when it names none.
    sans = list(getattr(tls, "subject_alt_names", None) or service.subject_alt_names)
    if getattr(tls, "credential_name", "") and credential_source is not None:
        _credential_tls(common, tls, credential_source, sans)
    elif ca and not insecure:
        validation = common.validation_context
        validation.trusted_ca.filename = ca
        if getattr(tls, "ca_crl", ""):
            validation.crl.filename = tls.ca_crl
        validation.match_typed_subject_alt_names.extend(mtls.san_matchers(sans))
    if mode == "MUTUAL":
        cert, key = getattr(tls, "client_certificate", ""), getattr(tls, "private_key", "")
        if cert and key:
            certificate = common.tls_certificates.add()
            certificate.certificate_chain.filename = cert
            certificate.private_key.filename = key
    cluster.transport_socket.name = TLS_TRANSPORT_SOCKET
    cluster.transport_socket.typed_config.Pack(context)


def _credential_tls(
    common: common_pb2.CommonTlsContext, tls: Any, source: config_source_pb2.ConfigSource, sans: list[str]
) -> None:
    """istiod's ApplyCustomSDSToClientCommonTLSContext: the client certificate (MUTUAL) and the CA to verify the
    server with (with the rule's SANs) from the credential's Secret, fetched over SDS from pilot."""
    for resource in credentials.client_resources(tls):
        sds = secret_pb2.SdsSecretConfig(name=resource, sds_config=source)
        if resource.endswith(credentials.CA_SUFFIX):
            combined = common.combined_validation_context
            combined.default_validation_context.match_typed_subject_alt_names.extend(mtls.san_matchers(sans))
            combined.validation_context_sds_secret_config.CopyFrom(sds)
        else:
            common.tls_certificate_sds_secret_configs.append(sds)


def apply_auto_mtls(cluster: Cluster, service: Service, port: Port, subset: str, http2: bool) -> None:
    """istiod's auto-detected ISTIO_MUTUAL: mTLS to endpoints labelled ``tlsMode: istio``, plaintext to others
    (a passthrough cluster has no endpoint metadata: it was decided for all of them at once)."""
    sni = names.dns_srv_name(port.number, subset, service.hostname)
    context = mtls.istio_mutual_upstream(sni, service.subject_alt_names, http2=http2)
    socket = mtls.transport_socket(context)
    if cluster.type == Cluster.ORIGINAL_DST:
        cluster.transport_socket.CopyFrom(socket)
        return
    istio = cluster.transport_socket_matches.add(name=f"tlsMode-{TLS_MODE_ISTIO}")
    istio.match.fields[names.TLS_MODE_METADATA_KEY].string_value = TLS_MODE_ISTIO
    istio.transport_socket.CopyFrom(socket)
    plaintext = cluster.transport_socket_matches.add(name="tlsMode-disabled")
    plaintext.match.CopyFrom(struct_pb2.Struct())
    plaintext.transport_socket.CopyFrom(mtls.raw_buffer_socket())


def apply_proxy_protocol(cluster: Cluster, proxy_protocol: Any) -> None:
    """istiod's applyUpstreamProxyProtocol: a PROXY header before whatever the cluster speaks (plaintext, TLS,
    or each auto-mTLS choice)."""
    if proxy_protocol is None:
        return
    version = (
        proxy_protocol_pb2.ProxyProtocolConfig.V2
        if enum_name(getattr(proxy_protocol, "version", None)) == "V2"
        else proxy_protocol_pb2.ProxyProtocolConfig.V1
    )

    def wrapped(inner: base_pb2.TransportSocket) -> base_pb2.TransportSocket:
        config = upstream_proxy_protocol_pb2.ProxyProtocolUpstreamTransport()
        config.config.version = version
        config.transport_socket.CopyFrom(inner)
        out = base_pb2.TransportSocket(name=PROXY_PROTOCOL_TRANSPORT_SOCKET)
        out.typed_config.Pack(config)
        return out

    if cluster.HasField("transport_socket"):
        cluster.transport_socket.CopyFrom(wrapped(cluster.transport_socket))
    elif not cluster.transport_socket_matches:
        cluster.transport_socket.CopyFrom(wrapped(mtls.raw_buffer_socket()))
    for match in cluster.transport_socket_matches:
        match.transport_socket.CopyFrom(wrapped(match.transport_socket))


def endpoint_tls_mode(endpoint: Endpoint) -> str:
    """The endpoint's ``security.istio.io/tlsMode`` label (Istio's injector sets ``istio``); "disabled" when unset."""
    return endpoint.labels.get(TLS_MODE_LABEL, DISABLED_TLS_MODE)


def service_mtls_mode(push: PushContext, service: Service, port: Port, policy: EffectivePolicy) -> MtlsMode:
    """istiod's BestEffortInferServiceMTLSMode: what mTLS a destination accepts, as far as a client can tell."""
    if service.mesh_external:
        return MtlsMode.UNKNOWN
    passthrough = enum_name(getattr(policy.load_balancer, "simple", None)) == "PASSTHROUGH"
    if service.resolution is Resolution.NONE or passthrough:
        # A passthrough cluster cannot choose per endpoint: mTLS only when every instance has a sidecar.
        instances = push.service_endpoints(service.hostname).for_port(port)
        if not instances or any(endpoint_tls_mode(ep) == DISABLED_TLS_MODE for ep in instances):
            return MtlsMode.DISABLE
    mode = push.authn_policies.namespace_mode(service.namespace)
    return mode if mode is not MtlsMode.UNKNOWN else MtlsMode.PERMISSIVE


def auto_mtls(push: PushContext, service: Service, port: Port, policy: EffectivePolicy) -> bool:
    """Whether a cluster without TLS settings gets auto-detected Istio mTLS (mesh enableAutoMtls is on)."""
    if policy.tls is not None:
        return False  # user supplied (even DISABLE)
    return service_mtls_mode(push, service, port, policy) not in (MtlsMode.UNKNOWN, MtlsMode.DISABLE)


def destination_rule_tls_mode(rule: Config | None, subset: str, port: int) -> str | None:
    """istiod's tlsModeForDestinationRule: the TLS mode a DestinationRule sets for a cluster (None: none)."""
    if rule is None:
        return None
    if not subset:
        return _policy_tls_mode(rule.spec.traffic_policy, port)
    for candidate in rule.spec.subsets or ():
        if candidate.name == subset:
            mode = _policy_tls_mode(candidate.traffic_policy, port)
            return mode if mode is not None else _policy_tls_mode(rule.spec.traffic_policy, port)
    return None


def _policy_tls_mode(policy: Any, port: int) -> str | None:
    if policy is None:
        return None
    mode = enum_name(policy.tls.mode) if policy.tls is not None else None
    for settings in policy.port_level_settings or ():
        if settings.port is not None and settings.port.number == port and settings.tls is not None:
            return enum_name(settings.tls.mode)
    return mode


def endpoint_tls_metadata(
    push: PushContext, service: Service, rule: Config | None, subset: str, port: int
) -> Callable[[Endpoint], str]:
    """istiod's mtlsChecker: an endpoint's ``tlsMode`` metadata value, or "" when mTLS is not possible for it:
    the DestinationRule's TLS mode decides when it has one; otherwise the endpoint must have a sidecar and the
    PeerAuthentication in effect for it (workload, port-level included) must not say DISABLE."""
    dr_mode = destination_rule_tls_mode(rule, subset, port)
    policies = push.authn_policies

    def tls_mode(endpoint: Endpoint) -> str:
        label = endpoint_tls_mode(endpoint)
        if dr_mode is not None:
            enabled = dr_mode == "ISTIO_MUTUAL"
        elif label != TLS_MODE_ISTIO:
            enabled = False
        else:
            effective = policies.effective(service.namespace, endpoint.labels)
            enabled = effective.mode_for_port(endpoint.port) is not MtlsMode.DISABLE
        return label if enabled and label not in ("", DISABLED_TLS_MODE) else ""

    return tls_mode


def authn_version(push: PushContext, service: Service) -> tuple[tuple[ConfigKey, int], ...]:
    """The PeerAuthentications that can shape a service's clusters and endpoints (its namespace's and the
    mesh's), with their content: a cache key part (istiod's PeerAuthentication version)."""
    return push.authn_policies.version_of((service.namespace, push.root_namespace))


def authn_deps(push: PushContext, service: Service) -> frozenset[ConfigKey]:
    return push.authn_policies.keys_in((service.namespace, push.root_namespace))

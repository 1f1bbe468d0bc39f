"""Istio mutual TLS as Envoy transport sockets: the TLS contexts istiod builds for ISTIO_MUTUAL.

Both sides take the workload's certificate and the mesh root over SDS from the node agent: secrets ``default``
(certificate chain and key) and ``ROOTCA`` (root certificate), fetched over the bootstrap's ``sds-grpc`` cluster
(istiod's ConstructSdsSecretConfig, with an initial fetch timeout of 0 so a proxy never blocks on them).

* Upstream (``istio_mutual_upstream``, istiod's buildUpstreamClusterTLSContext for ISTIO_MUTUAL): TLS 1.2 to
  1.3, ALPN ``istio-peer-exchange, istio`` (+ ``h2`` for HTTP/2 clusters): the server's filter chains tell
  mesh traffic apart by it; SNI the cluster's DNS-SRV name unless set; SANs from the DestinationRule.
* Downstream (``inbound_downstream``, istiod's BuildInboundTLS): client certificate required, validated
  against ROOTCA; ALPN ``h2, http/1.1`` for HTTP chains and ``istio-peer-exchange, h2, http/1.1`` for TCP
  ones; TLS 1.2 to 1.3 with istiod's cipher suites.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import message as pb_message

from pilot.xds import names

TLS_SOCKET = "envoy.transport_sockets.tls"
RAW_BUFFER_SOCKET = "envoy.transport_sockets.raw_buffer"

# ALPN a client sidecar offers to an in-mesh destination (istiod's ALPNInMeshWithMxc / ALPNInMeshH2WithMxc).
ALPN_IN_MESH = ("istio-peer-exchange", "istio")
ALPN_IN_MESH_H2 = ("istio-peer-exchange", "istio", "h2")
# ALPN a server sidecar negotiates (istiod's ALPNHttp / ALPNDownstreamWithMxc).
ALPN_DOWNSTREAM_HTTP = ("h2", "http/1.1")
ALPN_DOWNSTREAM_TCP = ("istio-peer-exchange", "h2", "http/1.1")
# istiod's SupportedCiphers for server-side mesh TLS.
SUPPORTED_CIPHERS = (
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-GCM-SHA256",
)

TlsParameters = common_pb2.TlsParameters


def sds_secret_config(name: str) -> secret_pb2.SdsSecretConfig:
    """A secret the node agent serves over the bootstrap's ``sds-grpc`` cluster."""
    config = secret_pb2.SdsSecretConfig(name=name)
    source = config.sds_config
    source.resource_api_version = config_source_pb2.ApiVersion.V3
    source.initial_fetch_timeout.SetInParent()  # 0s: never wait for the agent
    api = source.api_config_source
    api.api_type = config_source_pb2.ApiConfigSource.GRPC
    api.set_node_on_first_message_only = True
    api.transport_api_version = config_source_pb2.ApiVersion.V3
    api.grpc_services.add().envoy_grpc.cluster_name = names.SDS_CLUSTER
    return config


def transport_socket(context: pb_message.Message) -> base_pb2.TransportSocket:
    socket = base_pb2.TransportSocket(name=TLS_SOCKET)
    socket.typed_config.Pack(context)
    return socket


def raw_buffer_socket() -> base_pb2.TransportSocket:
    socket = base_pb2.TransportSocket(name=RAW_BUFFER_SOCKET)
    socket.typed_config.Pack(raw_buffer_pb2.RawBuffer())
    return socket


def san_matchers(sans: Iterable[str]) -> list[common_pb2.SubjectAltNameMatcher]:
    """Exact SAN matches, typed by the value's form (istiod matches them untyped): SPIFFE identities and other
    URIs, e-mail addresses, IP addresses, else DNS names."""
    out = []
    kinds = common_pb2.SubjectAltNameMatcher
    for san in sans:
        if "://" in san:
            san_type = kinds.URI
        elif "@" in san:
            san_type = kinds.EMAIL
        else:
            try:
                ipaddress.ip_address(san)
                san_type = kinds.IP_ADDRESS
            except ValueError:
                san_type = kinds.DNS
        out.append(kinds(san_type=san_type, matcher=string_pb2.StringMatcher(exact=san)))
    return out


def _combined_validation(common: common_pb2.CommonTlsContext, sans: Iterable[str]) -> None:
    combined = common.combined_validation_context
    combined.default_validation_context.SetInParent()
    combined.default_validation_context.match_typed_subject_alt_names.extend(san_matchers(sans))
    combined.validation_context_sds_secret_config.CopyFrom(sds_secret_config(names.SDS_ROOT_RESOURCE))


def istio_mutual_upstream(
    sni: str, subject_alt_names: Iterable[str] = (), *, http2: bool
) -> tls_pb2.UpstreamTlsContext:
    context = tls_pb2.UpstreamTlsContext(sni=sni)
    common = context.common_tls_context
    common.tls_params.tls_minimum_protocol_version = TlsParameters.TLSv1_2
    common.tls_params.tls_maximum_protocol_version = TlsParameters.TLSv1_3
    common.tls_certificate_sds_secret_configs.append(sds_secret_config(names.SDS_DEFAULT_RESOURCE))
    _combined_validation(common, subject_alt_names)
    common.alpn_protocols.extend(ALPN_IN_MESH_H2 if http2 else ALPN_IN_MESH)
    return context


def inbound_downstream(*, http: bool) -> tls_pb2.DownstreamTlsContext:
    context = tls_pb2.DownstreamTlsContext()
    context.require_client_certificate.value = True
    common = context.common_tls_context
    common.alpn_protocols.extend(ALPN_DOWNSTREAM_HTTP if http else ALPN_DOWNSTREAM_TCP)
    common.tls_params.cipher_suites.extend(SUPPORTED_CIPHERS)
    common.tls_params.tls_minimum_protocol_version = TlsParameters.TLSv1_2
    common.tls_params.tls_maximum_protocol_version = TlsParameters.TLSv1_3
    common.tls_certificate_sds_secret_configs.append(sds_secret_config(names.SDS_DEFAULT_RESOURCE))
    _combined_validation(common, ())
    return context

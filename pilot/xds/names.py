"""istiod's naming conventions for generated Envoy resources, in one place."""

from __future__ import annotations

from typing import NamedTuple

CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

# istiod pushes types in this order so referenced resources exist before their referrers. Secrets come last, as
# in istiod: Envoy asks for a listener's secrets once it has the listener, and a listener waits (warming) for them.
PUSH_ORDER = (CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE)
# Types whose subscriptions may be wildcard (all resources); the others are always requested by name.
WILDCARD_TYPES = frozenset({CLUSTER_TYPE, LISTENER_TYPE})

# Config kinds that cannot change a type's resources, given what each generator reads (keys of pushes:
# routing kinds, "ServiceEntry" for services of any registry, "Endpoints" for endpoint-only changes):
#   cds: services (+ endpoints inline in DNS clusters, reported as a service change), DestinationRule, Sidecar,
#        PeerAuthentication (auto-mTLS)
#   eds: services and endpoints, DestinationRule subsets and TLS modes, PeerAuthentication (tlsMode metadata)
#   lds: services (ports, VIPs), Gateway, Sidecar, VirtualService (gateway TCP/TLS routes), PeerAuthentication
#        (inbound filter chains)
#   rds: services, VirtualService, Gateway, Sidecar, DestinationRule (consistent hash)
#   sds: Secret (the credential's content), Gateway (which credentials a gateway proxy may fetch)
# and, for gateways only: cds: Gateway (AUTO_PASSTHROUGH SNI-DNAT clusters), lds: DestinationRule (the
# subsets of AUTO_PASSTHROUGH filter chains).
# A push whose changed keys are all of these kinds skips the type (istiod's skipped*Configs). The skip only
# saves work: the per-resource diff would find nothing to send anyway.
UNAFFECTED_BY: dict[str, frozenset[str]] = {
    CLUSTER_TYPE: frozenset({"VirtualService", "Namespace", "Endpoints", "Secret"}),
    ENDPOINT_TYPE: frozenset({"VirtualService", "Gateway", "Sidecar", "Namespace", "Secret"}),
    LISTENER_TYPE: frozenset({"Namespace", "Endpoints", "Secret"}),
    ROUTE_TYPE: frozenset({"Namespace", "Endpoints", "PeerAuthentication", "Secret"}),
    SECRET_TYPE: frozenset(
        {
            "VirtualService",
            "Sidecar",
            "PeerAuthentication",
            "Namespace",
            "Endpoints",
            "ServiceEntry",
        }
    ),
}
# What else cannot change a sidecar's resources (only gateways read them; see above). DestinationRules do
# change a sidecar's listeners: its TCP proxies carry their tcp settings (pilot.xds.cds.tcp_settings).
UNAFFECTED_SIDECARS_BY: dict[str, frozenset[str]] = {
    CLUSTER_TYPE: frozenset({"Gateway"}),
}


def affected_types(kinds: frozenset[str] | None, *, router: bool = True) -> tuple[str, ...]:
    """The types, in push order, that changes of these kinds can affect (None: everything changed); with
    ``router`` False, for a sidecar (gateways read more)."""
    if kinds is None:
        return PUSH_ORDER
    if router:
        return tuple(t for t in PUSH_ORDER if not kinds <= UNAFFECTED_BY.get(t, frozenset()))
    return tuple(
        t
        for t in PUSH_ORDER
        if not kinds <= UNAFFECTED_BY.get(t, frozenset()) | UNAFFECTED_SIDECARS_BY.get(t, frozenset())
    )


SHORT_TYPE = {CLUSTER_TYPE: "cds", ENDPOINT_TYPE: "eds", LISTENER_TYPE: "lds", ROUTE_TYPE: "rds", SECRET_TYPE: "sds"}

# The bootstrap's clusters for pilot itself (pilot bootstrap writes them). Proxies not on ADS name them again in
# the EDS and RDS config sources pilot generates for them: Envoy does not implement the "self" config source.
XDS_GRPC_CLUSTER = "xds-grpc"
# The certificate provider instance of proxyless gRPC (its bootstrap's, istio-agent's name): certificate
# "default" is the workload's, "ROOTCA" the mesh root.
GRPC_CERTIFICATE_PROVIDER = "default"
XDS_REST_CLUSTER = "xds-rest"
REST_REFRESH_DELAY_S = 1

BLACKHOLE_CLUSTER = "BlackHoleCluster"
PASSTHROUGH_CLUSTER = "PassthroughCluster"
INBOUND_PASSTHROUGH_CLUSTER = "InboundPassthroughCluster"

VIRTUAL_OUTBOUND_LISTENER = "virtualOutbound"
VIRTUAL_OUTBOUND_PORT = 15001  # mesh proxyListenPort
VIRTUAL_INBOUND_LISTENER = "virtualInbound"
VIRTUAL_INBOUND_PORT = 15006  # mesh proxyInboundListenPort
VIRTUAL_INBOUND_BLACKHOLE_CHAIN = "virtualInbound-blackhole"
VIRTUAL_INBOUND_CATCHALL_HTTP_CHAIN = "virtualInbound-catchall-http"  # the passthrough chains' HTTP name
# Source address of the inbound clusters' connections, which the capture rules leave alone (istio-iptables'
# "-s 127.0.0.6/32 -o lo -j RETURN").
INBOUND_PASSTHROUGH_BIND_IPV4 = "127.0.0.6"

# Workload certificates, served to Envoy over SDS by the node agent (istio-agent) on a unix socket that the
# bootstrap's "sds-grpc" cluster names; istiod refers to them by these resource names.
SDS_CLUSTER = "sds-grpc"
SDS_DEFAULT_RESOURCE = "default"  # the workload's certificate chain and key
SDS_ROOT_RESOURCE = "ROOTCA"  # the mesh's root certificate
SDS_SOCKET = "./var/run/secrets/workload-spiffe-uds/socket"  # relative to the proxy's working directory
# EDS metadata that marks an endpoint as able to take Istio mTLS (auto-mTLS clusters match on it).
TRANSPORT_SOCKET_MATCH_METADATA = "envoy.transport_socket_match"
TLS_MODE_METADATA_KEY = "tlsMode"

# HTTP filter names; the HCM carries them in this order and routes refer to them in typed_per_filter_config.
FAULT_FILTER = "envoy.filters.http.fault"
CORS_FILTER = "envoy.filters.http.cors"
ROUTER_FILTER = "envoy.filters.http.router"
HCM_FILTER = "envoy.filters.network.http_connection_manager"

ALLOW_ANY_VHOST = "allow_any"
BLOCK_ALL_VHOST = "block_all"


class ClusterName(NamedTuple):
    direction: str  # "outbound" | "inbound"
    port: int
    subset: str
    host: str


def outbound_cluster(port: int, subset: str, host: str) -> str:
    """``outbound|<port>|<subset>|<fqdn>`` (Istio's BuildSubsetKey)."""
    return f"outbound|{port}|{subset}|{host}"


def inbound_cluster(port: int) -> str:
    """``inbound|<port>||`` (Istio's BuildInboundSubsetKey): the workload's own port."""
    return f"inbound|{port}||"


def dns_srv_name(port: int, subset: str, host: str) -> str:
    """``outbound_.<port>_.<subset>_.<fqdn>`` (Istio's BuildDNSSrvSubsetKey): the SNI of Istio mTLS."""
    return f"outbound_.{port}_.{subset}_.{host}"


def inbound_vhost_name(port: int) -> str:
    """The virtual host of an inbound HTTP chain's route: ``inbound|http|<port>``."""
    return f"inbound|http|{port}"


def parse_cluster_name(name: str) -> ClusterName | None:
    """``outbound|<port>|<subset>|<host>``, or the DNS-SRV form ``outbound_.<port>_.<subset>_.<host>`` of the
    SNI-DNAT clusters of AUTO_PASSTHROUGH gateways (istiod's ParseSubsetKey reads both)."""
    if name.startswith(("outbound_.", "inbound_.")):
        parts = name.split("_.", 3)
    else:
        parts = name.split("|")
    if len(parts) != 4 or parts[0] not in ("outbound", "inbound"):
        return None
    try:
        port = int(parts[1])
    except ValueError:
        return None
    return ClusterName(parts[0], port, parts[2], parts[3])


def listener_name(bind: str, port: int) -> str:
    """``<bind>_<port>``, e.g. ``0.0.0.0_8080``."""
    return f"{bind}_{port}"


def gateway_http_route_name(port: int, bind: str = "") -> str:
    """Gateway HTTP servers share RDS ``http.<port>[.<bind>]``."""
    return f"http.{port}.{bind}" if bind else f"http.{port}"


def sidecar_route_name(port: int) -> str:
    """Sidecar outbound HTTP routes are named after the port."""
    return str(port)


def vhost_name(host: str, port: int) -> str:
    return f"{host}:{port}"

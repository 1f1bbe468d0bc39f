"""Proxyless gRPC: istiod's ``grpc`` generator, for nodes whose metadata says ``GENERATOR: grpc``.

A gRPC client given ``xds:///host:port`` (and a GRPC_XDS_BOOTSTRAP naming pilot, see ``pilot bootstrap
--grpc``) walks LDS → RDS → CDS → EDS over one ADS stream, asking for every resource by name:

- LDS ``host:port`` (``pilot.xds.grpcgen_lds``): an API listener whose HttpConnectionManager has only the
  fault and router filters and takes its routes over ADS from RDS ``outbound|port||<fqdn>``;
- RDS ``outbound|port||<fqdn>`` (``pilot.xds.grpcgen_rds``): the sidecar virtual host of that service on
  that port, translated from its VirtualServices exactly as for Envoy (``pilot.xds.rds``), then adapted to
  what gRPC reads (timeouts as ``max_stream_duration``, only fault per-route configs);
- CDS ``outbound|port|subset|<fqdn>`` and EDS of the same names (``pilot.xds.grpcgen_cds``): EDS clusters
  over ADS with the load-balancing policies gRPC implements, and assignments whose localities all carry a
  ``locality`` and a ``load_balancing_weight`` (gRPC skips or rejects localities without them).

The output of each type is described as cache units whose keys start with ``grpc-``, so they never share a
cache entry with Envoy's; ``PushContext.view_of`` carries the generator, so grpc proxies never share a
snapshot with Envoy proxies either.

Wildcard requests (gRPC never sends them) are answered as istiod answers them: every service port's
listener for LDS, no cluster for CDS.

xDS-enabled gRPC servers ask for ``xds.istio.io/grpc/lds/inbound/<address>:<port>`` and get istiod's inbound
listener (``pilot.xds.grpcgen_lds.server_listener_units``): plaintext, or mTLS when the PeerAuthentication in
effect is STRICT. Mesh mTLS uses the bootstrap's ``default`` certificate provider (``pilot bootstrap --grpc
--cert --key --ca``): clusters with DestinationRule ISTIO_MUTUAL, server listeners under STRICT. Auto-mTLS is
off for gRPC clients, as in istiod.
"""

from __future__ import annotations

from collections.abc import Iterable

from pilot.model.proxy import Proxy
from pilot.push.context import PushContext
from pilot.push.scope import ProxyScope
from pilot.xds import grpcgen_cds, grpcgen_lds, grpcgen_rds
from pilot.xds.names import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from pilot.xds.rds import RouteParts
from pilot.xds.units import Unit

GENERATOR_METADATA_KEY = "GENERATOR"
GRPC_GENERATOR = "grpc"


def generator_of(proxy: Proxy) -> str:
    """The generator a node asks for in its metadata ("" for Envoy's)."""
    return str(proxy.metadata.get(GENERATOR_METADATA_KEY) or "")


def is_grpc(proxy: Proxy) -> bool:
    return generator_of(proxy) == GRPC_GENERATOR


def units(
    type_url: str,
    proxy: Proxy,
    push: PushContext,
    scope: ProxyScope,
    names: Iterable[str] | None,
    parts: RouteParts,
) -> list[Unit]:
    """The units of one type for a grpc node: the requested names (None: wildcard)."""
    if type_url == LISTENER_TYPE:
        return grpcgen_lds.listener_units(proxy, push, scope, names)
    if type_url == CLUSTER_TYPE:
        return grpcgen_cds.cluster_units(proxy, push, scope, names or ())
    if type_url == ROUTE_TYPE:
        found = (grpcgen_rds.route_unit(proxy, push, scope, name, parts) for name in sorted(names or ()))
        return [u for u in found if u is not None]
    if type_url == ENDPOINT_TYPE:
        found = (grpcgen_cds.endpoint_unit(proxy, push, name) for name in sorted(names or ()))
        return [u for u in found if u is not None]
    return []


def endpoint_unit(proxy: Proxy, push: PushContext, cluster_name: str) -> Unit | None:
    """One ClusterLoadAssignment for a grpc node (used when EDS snapshots are derived after endpoint pushes)."""
    return grpcgen_cds.endpoint_unit(proxy, push, cluster_name)

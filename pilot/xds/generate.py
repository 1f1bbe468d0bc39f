"""From (proxy, push) to encoded resources: units through the XdsCache, then snapshots per proxy class.

Two levels of sharing:

1. Per resource (``XdsCache``): a cluster, a ClusterLoadAssignment, a RouteConfiguration, a listener set,
   keyed by exactly its inputs, cleared by the configs it depends on. A cluster of one service is built
   once for every namespace whose proxies see it the same way.
2. Per proxy class (``Snapshot``): what every proxy of one view subscribing the same names should hold of
   one type, assembled once per push from cached resources and shared by those proxies, with the diffs and
   encoded responses memoized on it (see ``pilot.xds.snapshot``).

Snapshots are kept per type and invalidated by epoch: a full push that can affect a type starts a new
epoch for it and its snapshots are rebuilt on first use (from the cache: only what changed is generated).
An endpoint-only push starts a new EDS epoch that records the hosts it touched, and EDS snapshots are then
derived from the previous ones by regenerating only those hosts' assignments, so the push costs O(changed).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Hashable, Iterable
from dataclasses import dataclass

from google.protobuf.message import Message

from pilot.model.config import ConfigKey
from pilot.model.proxy import Proxy
from pilot.push.context import PushContext, View
from pilot.push.scope import scope_for
from pilot.xds import cds, cds_gateway, eds, grpcgen, grpcgen_lds, lds, rds, sds
from pilot.xds.cache import XdsCache
from pilot.xds.names import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, PUSH_ORDER, ROUTE_TYPE, SECRET_TYPE
from pilot.xds.resource import Resource
from pilot.xds.snapshot import NameSet, Snapshot
from pilot.xds.units import Unit

MAX_SNAPSHOTS = 4096  # proxy classes x types x subscriptions kept; the least recently used go first
EDS_LOG = 64  # endpoint-only epochs remembered for deriving EDS snapshots
MAX_ORIGINS = 500_000  # resource origins remembered (a few per resource name of the mesh)
_INBOUND_TYPES = frozenset({CLUSTER_TYPE, LISTENER_TYPE})  # the types a proxy's inbound side shapes


class _CachedParts:
    """Encoded pieces of resources (a VirtualService's routes, a default route) kept in the XdsCache beside
    whole resources, under the same dependency rules, so proxy classes that differ only in a few parts (the
    route configuration of each namespace) share the rest."""

    def __init__(self, cache: XdsCache, token: int) -> None:
        self._cache = cache
        self._token = token

    def get_or_build(self, key: Hashable, deps: Collection[ConfigKey], build: Callable[[], bytes]) -> bytes:
        found = self._cache.get(key)
        if found is not None:
            return found[0].value
        value = build()
        self._cache.add(key, (_Part(value),), deps, self._token)  # type: ignore[arg-type]
        return value


class _Part:
    """A cached encoded piece: not a resource of its own (no name, no version)."""

    __slots__ = ("value",)
    name = ""

    def __init__(self, value: bytes) -> None:
        self.value = value


def _name_of(message: Message) -> str:
    name = getattr(message, "name", "")
    return name or getattr(message, "cluster_name", "")


@dataclass(frozen=True, slots=True)
class Origin:
    """The config keys a resource was built from, its version, and the push (number) that changed it last."""

    deps: Collection[ConfigKey]
    version: str
    changed_at: int


@dataclass(slots=True)
class _Kept:
    epoch: int
    snapshot: Snapshot


class Generator:
    def __init__(self, cache: XdsCache) -> None:
        self.cache = cache
        self._snapshots: OrderedDict[Hashable, _Kept] = OrderedDict()
        self._epochs: dict[str, int] = dict.fromkeys(PUSH_ORDER, 0)
        # (EDS epoch, hosts it changed) for endpoint-only pushes, newest last
        self._eds_log: deque[tuple[int, frozenset[str]]] = deque(maxlen=EDS_LOG)
        self.generated = 0  # resources built (cache misses), for tests and debug
        # What each resource was last built from, by (type, name): what a NACK report blames.
        self.origins: dict[tuple[str, str], Origin] = {}

    # ----- invalidation -----

    def invalidate(self, types: Iterable[str]) -> None:
        """A full push changed what these types may hold: their snapshots are rebuilt on next use."""
        for type_url in types:
            self._epochs[type_url] = self._epochs.get(type_url, 0) + 1

    def endpoints_changed(self, hosts: Iterable[str]) -> None:
        """An endpoint-only push: EDS snapshots are derived by regenerating these hosts only."""
        epoch = self._epochs[ENDPOINT_TYPE] = self._epochs[ENDPOINT_TYPE] + 1
        self._eds_log.append((epoch, frozenset(hosts)))

    def _hosts_since(self, epoch: int) -> frozenset[str] | None:
        """Hosts changed by the endpoint-only epochs after ``epoch``; None if a full epoch came between."""
        current = self._epochs[ENDPOINT_TYPE]
        wanted = range(epoch + 1, current + 1)
        found = {e: hosts for e, hosts in self._eds_log if e in wanted}
        if len(found) != len(wanted):
            return None
        out: set[str] = set()
        for hosts in found.values():
            out |= hosts
        return frozenset(out)

    # ----- snapshots -----

    def snapshot(self, type_url: str, proxy: Proxy, push: PushContext, view: View, names: NameSet | None) -> Snapshot:
        """What a proxy of ``view`` subscribing ``names`` (None: wildcard) should hold of one type.

        Endpoints and routes are shared by the whole outbound class (the sidecars of every service of a
        namespace, typically). Listeners and clusters are the outbound class's shared snapshot plus the
        proxy's inbound ones, kept per full view; without an inbound side that is the shared snapshot itself.
        Endpoints and clusters are also kept per locality where locality load balancing reads it."""
        outbound = view.outbound
        if type_url == ENDPOINT_TYPE and view.locality:
            outbound = (outbound, view.locality)
        elif type_url == CLUSTER_TYPE and view.cluster_locality:
            outbound = (outbound, view.cluster_locality)
        if type_url not in _INBOUND_TYPES:
            return self._kept((type_url, outbound, names), type_url, proxy, push, names)
        shared = self._kept(("outbound", type_url, outbound, names), type_url, proxy, push, names)
        if not view.inbound:
            return shared
        return self._kept(
            (type_url, outbound, view.inbound, names),
            type_url,
            proxy,
            push,
            names,
            lambda: shared.extended(
                self._of_units(type_url, self.inbound_units(type_url, proxy, push, view, names), names, push.number)
            ),
        )

    def _kept(
        self,
        key: Hashable,
        type_url: str,
        proxy: Proxy,
        push: PushContext,
        names: NameSet | None,
        build: Callable[[], Snapshot] | None = None,
    ) -> Snapshot:
        """The snapshot under ``key`` for the current epoch of its type: kept, derived or built."""
        epoch = self._epochs[type_url]
        kept = self._snapshots.get(key)
        if kept is not None and kept.epoch == epoch:
            self._snapshots.move_to_end(key)
            return kept.snapshot
        snapshot = None
        if kept is not None and type_url == ENDPOINT_TYPE and names is not None:
            hosts = self._hosts_since(kept.epoch)
            if hosts is not None:
                snapshot = self._derive_endpoints(kept.snapshot, proxy, push, names, hosts)
        if snapshot is None:
            if build is not None:
                snapshot = build()
            else:
                units = self.units(type_url, proxy, push, names)
                snapshot = Snapshot(self._of_units(type_url, units, names, push.number))
        self._snapshots[key] = _Kept(epoch, snapshot)
        self._snapshots.move_to_end(key)
        while len(self._snapshots) > MAX_SNAPSHOTS:
            self._snapshots.popitem(last=False)
        return snapshot

    def _derive_endpoints(
        self, previous: Snapshot, proxy: Proxy, push: PushContext, names: NameSet, hosts: frozenset[str]
    ) -> Snapshot:
        regenerated: dict[str, Resource | None] = {}
        endpoint_unit = grpcgen.endpoint_unit if grpcgen.is_grpc(proxy) else eds.endpoint_unit  # proxyless gRPC
        for host in hosts:
            for name in names.by_host(host):
                unit = endpoint_unit(proxy, push, name)
                found = self._materialize(unit, push.number) if unit is not None else ()
                regenerated[name] = found[0] if found else None
        if not regenerated:
            return previous
        return previous.derive(regenerated)

    # ----- resources -----

    def resources(self, type_url: str, proxy: Proxy, push: PushContext, names: Iterable[str] | None) -> list[Resource]:
        """Every resource of one type for a proxy, both sides: all of them (names None) or the requested names."""
        units = [*self.units(type_url, proxy, push, names), *self.inbound_units(type_url, proxy, push, None, names)]
        return self._of_units(type_url, units, names, push.number)

    def _of_units(
        self, type_url: str, units: Iterable[Unit], names: Iterable[str] | None, token: int
    ) -> list[Resource]:
        """The resources of ``units`` (from the cache, or built and cached under the push's ``token``)."""
        out: list[Resource] = []
        for unit in units:
            out.extend(self._materialize(unit, token))
        if names is not None and type_url in (CLUSTER_TYPE, LISTENER_TYPE):
            wanted = set(names)
            out = [r for r in out if r.name in wanted]
        return out

    def units(self, type_url: str, proxy: Proxy, push: PushContext, names: Iterable[str] | None) -> list[Unit]:
        """The units of one type that a proxy's outbound view decides (all of them but its inbound side)."""
        scope = scope_for(push, proxy)
        if grpcgen.is_grpc(proxy):  # proxyless gRPC nodes (metadata GENERATOR: grpc): istiod's grpc generator
            return grpcgen.units(type_url, proxy, push, scope, names, _CachedParts(self.cache, push.number))
        if type_url == CLUSTER_TYPE:  # and a gateway's AUTO_PASSTHROUGH SNI-DNAT clusters
            return [*cds.cluster_units(proxy, push, scope), *cds_gateway.cluster_units(proxy, push, scope)]
        if type_url == LISTENER_TYPE:
            return lds.listener_units(proxy, push, scope)
        if type_url == SECRET_TYPE:  # gateway credentials, always asked for by name
            return sds.secret_units(proxy, push, names)
        if type_url == ENDPOINT_TYPE:
            units = (eds.endpoint_unit(proxy, push, n) for n in sorted(names or ()))
            return [u for u in units if u is not None]
        if type_url == ROUTE_TYPE:
            parts = _CachedParts(self.cache, push.number)
            return [rds.route_unit(proxy, push, scope, n, parts) for n in sorted(names or ())]
        return []

    def inbound_units(
        self,
        type_url: str,
        proxy: Proxy,
        push: PushContext,
        view: View | None = None,
        names: Iterable[str] | None = None,
    ) -> list[Unit]:
        """A sidecar's inbound listeners and clusters (its own service instances), none for other types; for a
        proxyless gRPC server, the server listeners it asks for by name."""
        if view is None:
            view = push.view_of(proxy)
        if not view.inbound:
            return []
        if grpcgen.is_grpc(proxy):
            return grpcgen_lds.server_listener_units(proxy, push, names or ()) if type_url == LISTENER_TYPE else []
        if type_url == CLUSTER_TYPE:
            return cds.inbound_cluster_units(proxy, push)
        if type_url == LISTENER_TYPE:
            return lds.inbound_listener_units(proxy, push, scope_for(push, proxy, view), view)
        return []

    def _materialize(self, unit: Unit, token: int) -> tuple[Resource, ...]:
        found = self.cache.get(unit.key)
        if found is not None:
            return found
        value = tuple(m if isinstance(m, Resource) else Resource.of(_name_of(m), m) for m in unit.build())
        self.generated += len(value)
        if len(self.origins) > MAX_ORIGINS:
            self.origins.clear()
        for resource in value:
            key = (resource.type_url, resource.name)
            previous = self.origins.get(key)
            changed_at = previous.changed_at if previous and previous.version == resource.version else token
            self.origins[key] = Origin(unit.deps, resource.version, changed_at)
        self.cache.add(unit.key, value, unit.deps, token)
        return value

    def clear(self) -> None:
        """Forget every snapshot (``/debug/config_cache?clear``); the next request rebuilds from scratch."""
        self._snapshots.clear()
        self.invalidate(list(self._epochs))

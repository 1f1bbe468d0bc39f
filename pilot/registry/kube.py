"""Kubernetes registry: Services, EndpointSlices and Pods (plain dicts) → the service model, per object.

- A Service is ``<name>.<namespace>.svc.<domain>``; its VIP is ``spec.clusterIP``. Headless services
  (clusterIP ``None``) resolve as NONE (passthrough), ``type: ExternalName`` as DNS with one endpoint at
  ``spec.externalName``.
- Port protocols follow Istio's naming convention (``appProtocol``, else the name prefix ``http-…``). UDP and
  SCTP ports are left out: pilot only builds TCP listeners and clusters.
- Endpoints come from the EndpointSlices labelled ``kubernetes.io/service-name: <service>`` in the same
  namespace; endpoints whose ``conditions.ready`` is false are left out. Each address of an endpoint is one
  ``Endpoint``; its labels are those of the Pod named by ``targetRef``.
- ``networking.istio.io/exportTo`` on the Service sets its visibility.
- Endpoint locality, as istiod: the Pod's ``istio-locality`` label (``region.zone.subzone``), else the
  ``topology.kubernetes.io/region`` / ``zone`` and ``topology.istio.io/subzone`` labels of the Pod's Node.

A Service change is a service change; an EndpointSlice change, a Pod change (its labels shape the
endpoints' labels) or a Node change (its topology shapes their locality) is an endpoint-only change of the
Services it concerns (istiod's EDSUpdate).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from pilot.model.config import ENDPOINT_SLICE, KUBE_SERVICE, NODE, POD, Config, ConfigKey
from pilot.model.endpoint_index import ByPort, EndpointIndex
from pilot.model.service import EMPTY_LABELS, Endpoint, Port, Protocol, Resolution, Service, ServiceEndpoints
from pilot.registry.base import Changes, RegistryUpdate

REGISTRY = "Kubernetes"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
EXPORT_TO_ANNOTATION = "networking.istio.io/exportTo"
LOCALITY_LABEL = "istio-locality"  # "region.zone.subzone" on a Pod
REGION_LABEL = "topology.kubernetes.io/region"
ZONE_LABEL = "topology.kubernetes.io/zone"
SUBZONE_LABEL = "topology.istio.io/subzone"
_NON_TCP = ("UDP", "SCTP")

ServiceRef = tuple[str, str]  # (namespace, name) of a Kubernetes Service
PodRef = tuple[str, str]


def convert_service(cfg: Config, domain_suffix: str) -> Service:
    spec = _mapping(cfg.spec.get("spec"))
    hostname = f"{cfg.name}.{cfg.namespace}.svc.{domain_suffix}"
    ports = tuple(
        Port(_str(p.get("name")), p["port"], Protocol.from_port_name(_str(p.get("name")), p.get("appProtocol")))
        for p in _list(spec.get("ports"))
        if isinstance(p, dict) and isinstance(p.get("port"), int) and _str(p.get("protocol")).upper() not in _NON_TCP
    )
    cluster_ip = spec.get("clusterIP")
    headless = cluster_ip == "None"
    external_name = _external_name(cfg)
    if external_name:
        resolution = Resolution.DNS
    elif headless:
        resolution = Resolution.NONE
    else:
        resolution = Resolution.STATIC
    addresses = (cluster_ip,) if isinstance(cluster_ip, str) and cluster_ip and not headless else ()
    if external_name:
        addresses = ()
    export_to = tuple(part.strip() for part in cfg.annotations.get(EXPORT_TO_ANNOTATION, "").split(",") if part.strip())
    return Service(
        hostname=hostname,
        namespace=cfg.namespace,
        ports=ports,
        resolution=resolution,
        addresses=addresses,
        mesh_external=bool(external_name),
        labels=_frozen(cfg.labels),
        export_to=export_to,
        origin=cfg.key,
        registry=REGISTRY,
    )


class KubernetesRegistry:
    name = REGISTRY
    kinds = frozenset({KUBE_SERVICE, ENDPOINT_SLICE, POD, NODE})

    def __init__(self, endpoints: EndpointIndex, domain_suffix: str, cluster_id: str = "Kubernetes") -> None:
        self._index = endpoints
        self._domain = domain_suffix
        self._shard = f"{REGISTRY}/{cluster_id}"
        self._service_objects: dict[ServiceRef, Config] = {}
        self._slices: dict[ConfigKey, Config] = {}
        self._slices_by_service: dict[ServiceRef, set[ConfigKey]] = {}
        self._pods: dict[PodRef, _PodInfo] = {}
        self._node_locality: dict[str, str] = {}  # node name -> "region/zone/subzone"
        self._pods_on_node: dict[str, set[PodRef]] = {}
        self._pods_of_service: dict[ServiceRef, frozenset[PodRef]] = {}
        self._services_of_pod: dict[PodRef, set[ServiceRef]] = {}
        self._services: dict[str, Service] = {}  # by hostname
        self._services_view: Mapping[str, Service] | None = None

    def services(self) -> Mapping[str, Service]:
        if self._services_view is None:
            self._services_view = MappingProxyType(dict(self._services))
        return self._services_view

    def apply(self, changes: Changes) -> RegistryUpdate:
        affected: set[ServiceRef] = set()
        for key, cfg in changes.items():
            if key.kind == KUBE_SERVICE:
                ref = (key.namespace, key.name)
                if cfg is None:
                    self._service_objects.pop(ref, None)
                else:
                    self._service_objects[ref] = cfg
                affected.add(ref)
            elif key.kind == ENDPOINT_SLICE:
                old = self._slices.pop(key, None)
                for slice_cfg in (old, cfg):
                    ref = _slice_service(slice_cfg)
                    if ref is not None:
                        affected.add(ref)
                if old is not None and (ref := _slice_service(old)) is not None:
                    self._slices_by_service.get(ref, set()).discard(key)
                if cfg is not None:
                    self._slices[key] = cfg
                    if (ref := _slice_service(cfg)) is not None:
                        self._slices_by_service.setdefault(ref, set()).add(key)
            elif key.kind == POD:
                pod = (key.namespace, key.name)
                old_info = self._pods.pop(pod, None)
                if old_info is not None and old_info.node:
                    self._pods_on_node.get(old_info.node, set()).discard(pod)
                if cfg is not None:
                    info = _PodInfo(_frozen(cfg.labels), _pod_node(cfg))
                    self._pods[pod] = info
                    if info.node:
                        self._pods_on_node.setdefault(info.node, set()).add(pod)
                affected.update(self._services_of_pod.get(pod, ()))
            elif key.kind == NODE:
                locality = _node_locality(cfg) if cfg is not None else ""
                if locality:
                    changed = self._node_locality.get(key.name) != locality
                    self._node_locality[key.name] = locality
                else:
                    changed = self._node_locality.pop(key.name, None) is not None
                if changed:
                    for pod in self._pods_on_node.get(key.name, ()):
                        affected.update(self._services_of_pod.get(pod, ()))
        update = RegistryUpdate()
        for ref in sorted(affected):
            self._settle(ref, update)
        return update

    def _settle(self, ref: ServiceRef, update: RegistryUpdate) -> None:
        namespace, name = ref
        hostname = f"{name}.{namespace}.svc.{self._domain}"
        cfg = self._service_objects.get(ref)
        old = self._services.get(hostname)
        if cfg is None:
            self._set_pods(ref, frozenset())
            if old is not None:
                del self._services[hostname]
                self._services_view = None
                update.service_changed(hostname, namespace)
            if self._index.delete(hostname, namespace, self._shard):
                update.endpoints_changed(hostname, namespace)
            return
        service = convert_service(cfg, self._domain)
        if old != service:
            self._services[hostname] = service
            self._services_view = None
            update.service_changed(hostname, namespace)
        external_name = _external_name(cfg)
        if external_name:
            by_port: ByPort = {
                p.name: (Endpoint(external_name, p.number, p.name, origin=REGISTRY),) for p in service.ports
            }
            self._set_pods(ref, frozenset())
        else:
            slices = [self._slices[k] for k in sorted(self._slices_by_service.get(ref, ()))]
            by_port, pods = _slice_endpoints(service.ports, slices, self._pod_view)
            self._set_pods(ref, pods)
        if self._index.update(hostname, namespace, self._shard, by_port):
            update.endpoints_changed(hostname, namespace)
            if service.resolution is Resolution.DNS:
                update.service_changed(hostname, namespace)

    def _pod_view(self, pod: PodRef) -> tuple[Mapping[str, str], str]:
        """A Pod's labels and locality (its own istio-locality label, else its Node's topology)."""
        info = self._pods.get(pod)
        if info is None:
            return EMPTY_LABELS, ""
        own = info.labels.get(LOCALITY_LABEL, "")
        if own:
            return info.labels, own.replace(".", "/")
        return info.labels, self._node_locality.get(info.node, "")

    def _set_pods(self, ref: ServiceRef, pods: frozenset[PodRef]) -> None:
        """Remember which Pods a Service's endpoints name, so a Pod change finds its Services."""
        old = self._pods_of_service.get(ref, frozenset())
        if old == pods:
            return
        for pod in old - pods:
            refs = self._services_of_pod.get(pod)
            if refs is not None:
                refs.discard(ref)
                if not refs:
                    del self._services_of_pod[pod]
        for pod in pods - old:
            self._services_of_pod.setdefault(pod, set()).add(ref)
        if pods:
            self._pods_of_service[ref] = pods
        else:
            self._pods_of_service.pop(ref, None)


def build(
    services: Iterable[Config],
    endpoint_slices: Iterable[Config],
    pods: Iterable[Config],
    domain_suffix: str,
    nodes: Iterable[Config] = (),
) -> tuple[list[Service], dict[str, ServiceEndpoints]]:
    """The services and endpoints of a set of objects at once (tests, benchmarks, offline tools)."""
    index = EndpointIndex()
    registry = KubernetesRegistry(index, domain_suffix)
    registry.apply({c.key: c for c in [*services, *endpoint_slices, *pods, *nodes]})
    out = [registry.services()[h] for h in sorted(registry.services())]
    return out, {s.hostname: index.get(s.hostname, s.namespace) for s in out}


@dataclass(frozen=True)
class _PodInfo:
    labels: Mapping[str, str]
    node: str


def _pod_node(cfg: Config) -> str:
    return _str(_mapping(cfg.spec.get("spec")).get("nodeName"))


def _node_locality(cfg: Config) -> str:
    region, zone, subzone = (cfg.labels.get(label, "") for label in (REGION_LABEL, ZONE_LABEL, SUBZONE_LABEL))
    if not (region or zone or subzone):
        return ""
    return "/".join((region, zone, subzone)).rstrip("/")


def _slice_service(cfg: Config | None) -> ServiceRef | None:
    if cfg is None:
        return None
    name = cfg.labels.get(SERVICE_NAME_LABEL)
    return (cfg.namespace, name) if name else None


def _external_name(cfg: Config) -> str:
    spec = _mapping(cfg.spec.get("spec"))
    return _str(spec.get("externalName")) if spec.get("type") == "ExternalName" else ""


def _slice_endpoints(
    ports: tuple[Port, ...],
    slices: list[Config],
    pod_view: Callable[[PodRef], tuple[Mapping[str, str], str]],
) -> tuple[dict[str, tuple[Endpoint, ...]], frozenset[PodRef]]:
    collected: dict[str, dict[tuple[str, int], Endpoint]] = {p.name: {} for p in ports}
    pods: set[PodRef] = set()
    for es in slices:
        obj = es.spec
        slice_ports = {
            _str(sp.get("name")): sp["port"]
            for sp in _list(obj.get("ports"))
            if isinstance(sp, dict) and isinstance(sp.get("port"), int)
        }
        for ep in _list(obj.get("endpoints")):
            if not isinstance(ep, dict):
                continue
            labels: Mapping[str, str] = EMPTY_LABELS
            locality = ""
            target = _mapping(ep.get("targetRef"))
            if target.get("kind") == "Pod":
                pod = (_str(target.get("namespace")) or es.namespace, _str(target.get("name")))
                pods.add(pod)  # watched even while not ready: its readiness comes back through the slice
                labels, locality = pod_view(pod)
            conditions = _mapping(ep.get("conditions"))
            if conditions.get("ready") is False:
                continue
            for address in _list(ep.get("addresses")):
                if not isinstance(address, str) or not address:
                    continue
                for port in ports:
                    number = slice_ports.get(port.name)
                    if number is None:
                        continue
                    collected[port.name].setdefault(
                        (address, number),
                        Endpoint(address, number, port.name, labels=labels, locality=locality, origin=REGISTRY),
                    )
    by_port = {name: tuple(eps[k] for k in sorted(eps)) for name, eps in collected.items()}
    return by_port, frozenset(pods)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _frozen(labels: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(labels)) if labels else EMPTY_LABELS

"""Kubernetes registry: Services + EndpointSlices + Pods (plain dicts) → the service model. Pure.

- A Service is ``<name>.<namespace>.svc.<domain>``; its VIP is ``spec.clusterIP``. Headless services
  (clusterIP ``None``) resolve as NONE (passthrough), ``type: ExternalName`` as DNS with one endpoint at
  ``spec.externalName``.
- Port protocols follow Istio's naming convention (``appProtocol``, else the name prefix ``http-…``). UDP and
  SCTP ports are left out: pilot only builds TCP listeners and clusters.
- Endpoints come from the EndpointSlices labelled ``kubernetes.io/service-name: <service>`` in the same
  namespace; endpoints whose ``conditions.ready`` is false are left out. Each address of an endpoint is one
  ``Endpoint``; its labels are those of the Pod named by ``targetRef``.
- ``networking.istio.io/exportTo`` on the Service sets its visibility.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from pilot.config.model import Config
from pilot.registry.model import EMPTY_LABELS, Endpoint, Port, Protocol, Resolution, Service, ServiceEndpoints

REGISTRY = "Kubernetes"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
EXPORT_TO_ANNOTATION = "networking.istio.io/exportTo"
LOCALITY_LABEL = "istio-locality"  # "region.zone.subzone" on a Pod
_NON_TCP = ("UDP", "SCTP")


def build(
    services: list[Config], endpoint_slices: list[Config], pods: list[Config], domain_suffix: str
) -> tuple[list[Service], dict[str, ServiceEndpoints]]:
    pod_labels: dict[tuple[str, str], Mapping[str, str]] = {
        (pod.namespace, pod.name): _frozen(pod.labels) for pod in pods
    }
    slices_by_service: dict[tuple[str, str], list[Config]] = {}
    for es in sorted(endpoint_slices, key=lambda c: c.key):
        service_name = es.labels.get(SERVICE_NAME_LABEL)
        if service_name:
            slices_by_service.setdefault((es.namespace, service_name), []).append(es)

    out_services: list[Service] = []
    out_endpoints: dict[str, ServiceEndpoints] = {}
    for cfg in sorted(services, key=lambda c: c.key):
        spec = _mapping(cfg.spec.get("spec"))
        hostname = f"{cfg.name}.{cfg.namespace}.svc.{domain_suffix}"
        ports = tuple(
            Port(_str(p.get("name")), p["port"], Protocol.from_port_name(_str(p.get("name")), p.get("appProtocol")))
            for p in _list(spec.get("ports"))
            if isinstance(p, dict)
            and isinstance(p.get("port"), int)
            and _str(p.get("protocol")).upper() not in _NON_TCP
        )
        cluster_ip = spec.get("clusterIP")
        headless = cluster_ip == "None"
        external_name = _str(spec.get("externalName")) if spec.get("type") == "ExternalName" else ""
        if external_name:
            resolution = Resolution.DNS
        elif headless:
            resolution = Resolution.NONE
        else:
            resolution = Resolution.STATIC
        addresses = (cluster_ip,) if isinstance(cluster_ip, str) and cluster_ip and not headless else ()
        if external_name:
            addresses = ()
        export_to = tuple(
            part.strip() for part in cfg.annotations.get(EXPORT_TO_ANNOTATION, "").split(",") if part.strip()
        )
        out_services.append(
            Service(
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
        )
        if external_name:
            by_port = {p.name: (Endpoint(external_name, p.number, p.name, origin=REGISTRY),) for p in ports}
        else:
            by_port = _slice_endpoints(ports, slices_by_service.get((cfg.namespace, cfg.name), ()), pod_labels)
        out_endpoints[hostname] = ServiceEndpoints(hostname, MappingProxyType(by_port))
    return out_services, out_endpoints


def _slice_endpoints(
    ports: tuple[Port, ...],
    slices: list[Config] | tuple[()],
    pod_labels: Mapping[tuple[str, str], Mapping[str, str]],
) -> dict[str, tuple[Endpoint, ...]]:
    collected: dict[str, dict[tuple[str, int], Endpoint]] = {p.name: {} for p in ports}
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
            conditions = _mapping(ep.get("conditions"))
            if conditions.get("ready") is False:
                continue
            labels: Mapping[str, str] = EMPTY_LABELS
            target = _mapping(ep.get("targetRef"))
            if target.get("kind") == "Pod":
                labels = pod_labels.get(
                    (_str(target.get("namespace")) or es.namespace, _str(target.get("name"))), EMPTY_LABELS
                )
            locality = labels.get(LOCALITY_LABEL, "").replace(".", "/")
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
    return {name: tuple(eps[k] for k in sorted(eps)) for name, eps in collected.items()}


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _frozen(labels: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(labels)) if labels else EMPTY_LABELS

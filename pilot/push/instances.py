"""A proxy's own service instances (istiod's ServiceTargets): the service ports whose endpoints are the proxy.

istiod finds them through the registry by the proxy's IP addresses (the Pod, or WorkloadEntry, with that IP,
and the services selecting it); the endpoints carry the workload's labels and the port it listens on. Here
the same is read from the endpoint index: every endpoint whose address is one of the proxy's IPs. Like
istiod (which computes a proxy's targets on full pushes only), the index is built once per PushContext.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pilot.model.endpoint_index import EndpointIndex
from pilot.model.service import Endpoint, Port, Service


@dataclass(frozen=True)
class ServiceTarget:
    """One port of a service the proxy is an instance of."""

    service: Service
    port: Port  # the service port
    target_port: int  # the port the workload listens on (istiod's ServiceInstancePort.TargetPort)
    endpoint: Endpoint

    @property
    def signature(self) -> tuple[object, ...]:
        """What inbound config reads of the target (for proxy classes and cache keys)."""
        return (self.target_port, self.port.number, self.port.name, self.port.protocol.value, self.service.hostname)


# Per address, (service, port, endpoint) in service order then port number; plain tuples keep the index cheap
# to build (it covers every endpoint of the mesh), targets are made only for the addresses asked for.
AddressIndex = Mapping[str, list[tuple[Service, Port, Endpoint]]]


def targets_by_address(services: Iterable[Service], endpoints: EndpointIndex) -> AddressIndex:
    """Every endpoint address -> what is at it; services in the given order, ports by number."""
    index: dict[str, list[tuple[Service, Port, Endpoint]]] = {}
    for service in services:
        by_port = endpoints.get(service.hostname, service.namespace).by_port
        if not by_port:
            continue
        for port in sorted(service.ports, key=lambda p: p.number):
            for endpoint in by_port.get(port.name, ()):
                found = index.get(endpoint.address)
                if found is None:
                    index[endpoint.address] = [(service, port, endpoint)]
                else:
                    found.append((service, port, endpoint))
    return index


def targets_at(index: AddressIndex, addresses: Iterable[str]) -> tuple[ServiceTarget, ...]:
    """The targets at any of a proxy's addresses, without duplicates, in index order per address."""
    seen: dict[tuple[str, int, int], ServiceTarget] = {}
    for address in addresses:
        for service, port, endpoint in index.get(address, ()):
            key = (service.hostname, port.number, endpoint.port)
            if key not in seen:
                seen[key] = ServiceTarget(service, port, endpoint.port, endpoint)
    return tuple(seen.values())

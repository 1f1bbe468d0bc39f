"""What "converged" means for one change, checked against one proxy's held config.

An expectation says which proxies must see the change (from the mesh's visibility rules, not from what
pilot happened to send) and when a proxy's config shows it. The orchestrator builds one per change and
sends it to the client processes; proxies check it whenever a response of a relevant type arrives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pilot.loadtest.fleet import NodeSpec
from pilot.loadtest.mesh import MeshSpec
from pilot.loadtest.wire import EDS, RDS, TYPE_INDEX

# held[type index]: name -> decoded fact (see decode.py)
Held = Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class EndpointsExpectation:
    """Every ClusterLoadAssignment of the service that the proxy watches holds exactly the new endpoints."""

    mesh: MeshSpec
    service: int
    clusters: Mapping[str, frozenset[str]]  # cluster name -> "address:port" set
    label: str  # e.g. "add 10.0.3.11 to svc3.ns3.svc.cluster.local"

    types = frozenset({TYPE_INDEX[EDS]})

    def applies(self, node: NodeSpec) -> bool:
        return node.router or self.mesh.sidecar_sees_service(node.namespace, self.service)

    def met(self, held: Held, eds_names: frozenset[str]) -> bool:
        assignments = held[TYPE_INDEX[EDS]]
        watched = False
        for name, want in self.clusters.items():
            if name in eds_names:
                watched = True
                if assignments.get(name) != want:
                    return False
        return watched


@dataclass(frozen=True)
class RouteWeightExpectation:
    """Every RouteConfiguration of the proxy that routes to the service's v1 subset carries the new weight."""

    mesh: MeshSpec
    service: int
    cluster: str  # outbound|80|v1|<host>
    weight: int
    label: str

    types = frozenset({TYPE_INDEX[RDS]})

    def applies(self, node: NodeSpec) -> bool:
        if node.router:
            return self.mesh.router_sees_route(self.service)
        return self.mesh.has_virtual_service(self.service) and self.mesh.sidecar_sees_service(
            node.namespace, self.service
        )

    def met(self, held: Held, eds_names: frozenset[str]) -> bool:
        seen = False
        for weights in held[TYPE_INDEX[RDS]].values():
            weight = weights.get(self.cluster)
            if weight is None:
                continue
            if weight != self.weight:
                return False
            seen = True
        return seen


Expectation = EndpointsExpectation | RouteWeightExpectation

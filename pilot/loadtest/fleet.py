"""Who the simulated proxies are: Istio node ids, namespaces and labels.

Sidecars are spread round-robin over the mesh's namespaces and over ``label_sets`` distinct ``app`` labels;
the last ``routers`` proxies are ingress gateways (``router~…``, ``istio=ingressgateway``, in istio-system).
Proxy addresses come from 10.128.0.0/9, apart from the mesh's endpoints, so no proxy is mistaken for a
workload of a generated service.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from pilot.loadtest.mesh import DOMAIN, ROOT_NAMESPACE

PROXY_BASE = int(ipaddress.IPv4Address("10.128.0.0"))
MAX_PROXIES = 1 << 22


class FleetError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class NodeSpec:
    index: int
    node_id: str
    namespace: str
    labels: dict[str, str] = field(hash=False)
    router: bool = False

    @property
    def group(self) -> tuple[bool, str]:
        """Proxies of one group get the same config from pilot for the generated mesh."""
        return self.router, self.namespace

    @property
    def metadata(self) -> dict[str, object]:
        return {"LABELS": dict(self.labels), "NAMESPACE": self.namespace}


@dataclass(frozen=True)
class FleetSpec:
    proxies: int
    namespaces: tuple[str, ...]
    label_sets: int = 1
    routers: int = 0

    def check(self) -> None:
        if not 1 <= self.proxies <= MAX_PROXIES:
            raise FleetError(f"proxies: {self.proxies} is not within 1..{MAX_PROXIES}")
        if not 0 <= self.routers <= self.proxies:
            raise FleetError(f"routers: {self.routers} is not within 0..proxies ({self.proxies})")
        if self.label_sets < 1:
            raise FleetError(f"label sets: {self.label_sets} < 1")
        if not self.namespaces:
            raise FleetError("no namespaces to place sidecars in")

    def nodes(self) -> list[NodeSpec]:
        self.check()
        out = []
        sidecars = self.proxies - self.routers
        for i in range(self.proxies):
            ip = ipaddress.IPv4Address(PROXY_BASE + i + 1)
            if i < sidecars:
                ns = self.namespaces[i % len(self.namespaces)]
                out.append(
                    NodeSpec(i, f"sidecar~{ip}~pod-{i}.{ns}~{ns}.{DOMAIN}", ns, {"app": f"app-{i % self.label_sets}"})
                )
            else:
                ns = ROOT_NAMESPACE
                labels = {"istio": "ingressgateway", "app": "istio-ingressgateway"}
                out.append(NodeSpec(i, f"router~{ip}~ingress-{i}.{ns}~{ns}.{DOMAIN}", ns, labels, router=True))
        return out

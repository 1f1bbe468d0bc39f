"""The generated mesh: Istio YAML that pilot serves from a config dir, and who can see what in it.

Layout of the directory (``pilot loadtest mesh --out DIR``)::

    DIR/loadtest-mesh.json          the MeshSpec (pilot reads only *.yaml / *.yml, so it ignores this)
    DIR/ns<k>/svc<i>.yaml           one file per service: its ServiceEntry, DestinationRule, VirtualService
    DIR/ns<k>/sidecar.yaml          with sidecar isolation: egress ``./*`` and ``istio-system/*``
    DIR/istio-system/gateway.yaml   with a gateway: ``istio-system/ingress`` for istio=ingressgateway

Service i lives in namespace ``ns<i % namespaces>`` with host ``svc<i>.ns<k>.svc.cluster.local``: a
MESH_INTERNAL, STATIC ServiceEntry with HTTP port 80 (and TCP port 9000 with ``tcp_port``), its endpoints
inline, labelled ``version: v1`` / ``v2`` alternately. The first ``virtual_services`` services have a
VirtualService splitting 80/20 between subsets v1 and v2, which a DestinationRule defines: for every service
(``destination_rules="all"``), only for those with a VirtualService (``"vs"``, the default), or none. Scenarios edit one
service by re-rendering its file with a ``ServiceState`` and replacing it atomically (temp file + rename).
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

MANIFEST = "loadtest-mesh.json"
ROOT_NAMESPACE = "istio-system"
GATEWAY = "ingress"
GATEWAY_PORT = 8080
HTTP_PORT = 80
TCP_PORT = 9000
DEFAULT_V1_WEIGHT = 80
MAX_ENDPOINTS = 250  # endpoint j of service i is 10.0.0.0 + 256 i + j + 1; one more is added by churn
DR_POLICIES = ("all", "vs", "none")
MAX_SERVICES = 32_000  # keeps endpoints inside 10.0.0.0/9 (proxies use 10.128.0.0/9)
ENDPOINT_BASE = int(ipaddress.IPv4Address("10.0.0.0"))
VIP_BASE = int(ipaddress.IPv4Address("240.240.0.0"))
DOMAIN = "svc.cluster.local"


class MeshError(ValueError):
    pass


@dataclass(frozen=True)
class MeshSpec:
    services: int = 1000
    endpoints: int = 10
    namespaces: int = 20
    virtual_services: int = 100  # the first K services get one
    destination_rules: str = "vs"  # DR_POLICIES
    sidecar_isolation: bool = False
    tcp_port: bool = False
    gateway: bool = False

    def check(self) -> None:
        if not 1 <= self.services <= MAX_SERVICES:
            raise MeshError(f"services: {self.services} is not within 1..{MAX_SERVICES}")
        if not 1 <= self.endpoints <= MAX_ENDPOINTS:
            raise MeshError(f"endpoints: {self.endpoints} is not within 1..{MAX_ENDPOINTS}")
        if not 1 <= self.namespaces <= self.services:
            raise MeshError(f"namespaces: {self.namespaces} is not within 1..services ({self.services})")
        if not 0 <= self.virtual_services <= self.services:
            raise MeshError(f"virtual_services: {self.virtual_services} is not within 0..services")
        if self.destination_rules not in DR_POLICIES:
            raise MeshError(f"destination_rules: {self.destination_rules!r} is not one of {', '.join(DR_POLICIES)}")
        if self.virtual_services and self.destination_rules == "none":
            raise MeshError("virtual_services route to the subsets v1/v2 of the DestinationRules: keep them")

    # ----- names -----

    def namespace_of(self, i: int) -> str:
        return f"ns{i % self.namespaces}"

    @property
    def namespace_names(self) -> tuple[str, ...]:
        return tuple(f"ns{k}" for k in range(self.namespaces))

    def name_of(self, i: int) -> str:
        return f"svc{i}"

    def host_of(self, i: int) -> str:
        return f"svc{i}.{self.namespace_of(i)}.{DOMAIN}"

    def service_file(self, i: int) -> str:
        """The service's file, relative to the config dir."""
        return f"{self.namespace_of(i)}/svc{i}.yaml"

    def has_virtual_service(self, i: int) -> bool:
        return i < self.virtual_services

    def has_destination_rule(self, i: int) -> bool:
        return self.destination_rules == "all" or (self.destination_rules == "vs" and self.has_virtual_service(i))

    @property
    def ports(self) -> tuple[int, ...]:
        return (HTTP_PORT, TCP_PORT) if self.tcp_port else (HTTP_PORT,)

    @staticmethod
    def endpoint_address(i: int, j: int) -> str:
        return str(ipaddress.IPv4Address(ENDPOINT_BASE + 256 * i + j + 1))

    @staticmethod
    def endpoint_version(j: int) -> str:
        return "v1" if j % 2 == 0 else "v2"

    # ----- who sees what (the expectations of the scenarios) -----

    def sidecar_sees_service(self, proxy_namespace: str, i: int) -> bool:
        """A sidecar sees every service, or with isolation those of its own namespace and istio-system."""
        return not self.sidecar_isolation or self.namespace_of(i) in (proxy_namespace, ROOT_NAMESPACE)

    def router_sees_route(self, i: int) -> bool:
        """Routers (istio=ingressgateway) get the routes of VirtualServices bound to the gateway."""
        return self.gateway and self.has_virtual_service(i)

    def cluster_endpoints(self, i: int, state: ServiceState) -> dict[str, frozenset[str]]:
        """Every EDS cluster of service i with the ``address:port`` set its ClusterLoadAssignment must hold."""
        host = self.host_of(i)
        out = {}
        eps = [(self.endpoint_address(i, j), self.endpoint_version(j)) for j in range(self.endpoints + state.extra)]
        for port in self.ports:
            out[f"outbound|{port}||{host}"] = frozenset(f"{a}:{port}" for a, _ in eps)
            if self.has_destination_rule(i):
                for subset in ("v1", "v2"):
                    out[f"outbound|{port}|{subset}|{host}"] = frozenset(f"{a}:{port}" for a, v in eps if v == subset)
        return out

    def subset_cluster(self, i: int, subset: str) -> str:
        return f"outbound|{HTTP_PORT}|{subset}|{self.host_of(i)}"

    # ----- (de)serialisation -----

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, object]) -> MeshSpec:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise MeshError(f"{MANIFEST}: unknown fields {sorted(unknown)}")
        spec = cls(**data)  # type: ignore[arg-type]
        spec.check()
        return spec


@dataclass(frozen=True)
class ServiceState:
    """How a scenario changed one service: endpoints added beyond the spec's, the VirtualService's v1 weight."""

    extra: int = 0
    v1_weight: int = DEFAULT_V1_WEIGHT


PRISTINE = ServiceState()


# ----- YAML -----


def render_service(spec: MeshSpec, i: int, state: ServiceState = PRISTINE) -> str:
    name, ns, host = spec.name_of(i), spec.namespace_of(i), spec.host_of(i)
    ports = [f"  - {{number: {HTTP_PORT}, name: http, protocol: HTTP}}"]
    if spec.tcp_port:
        ports.append(f"  - {{number: {TCP_PORT}, name: tcp, protocol: TCP}}")
    endpoints = [
        f"  - {{address: {spec.endpoint_address(i, j)}, labels: {{app: {name}, version: {spec.endpoint_version(j)}}}}}"
        for j in range(spec.endpoints + state.extra)
    ]
    addresses = f"  addresses: [{ipaddress.IPv4Address(VIP_BASE + i)}]\n" if spec.tcp_port else ""
    docs = [
        f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: {ns}}}
spec:
  hosts: [{host}]
{addresses}  location: MESH_INTERNAL
  resolution: STATIC
  ports:
{chr(10).join(ports)}
  endpoints:
{chr(10).join(endpoints)}
"""
    ]
    if spec.has_destination_rule(i):
        docs.append(
            f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: {ns}}}
spec:
  host: {host}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
"""
        )
    if spec.has_virtual_service(i):
        gateways = f"[mesh, {ROOT_NAMESPACE}/{GATEWAY}]" if spec.gateway else "[mesh]"
        docs.append(
            f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: {ns}}}
spec:
  hosts: [{host}]
  gateways: {gateways}
  http:
  - route:
    - {{destination: {{host: {host}, subset: v1, port: {{number: {HTTP_PORT}}}}}, weight: {state.v1_weight}}}
    - {{destination: {{host: {host}, subset: v2, port: {{number: {HTTP_PORT}}}}}, weight: {100 - state.v1_weight}}}
"""
        )
    return "---\n".join(docs)


def render_sidecar(namespace: str) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: {namespace}}}
spec:
  egress:
  - hosts: ["./*", "{ROOT_NAMESPACE}/*"]
"""


def render_gateway() -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: {GATEWAY}, namespace: {ROOT_NAMESPACE}}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {GATEWAY_PORT}, name: http, protocol: HTTP}}
    hosts: ["*"]
"""


# ----- files -----


def atomic_write(path: Path, text: str) -> None:
    """Write a temporary file beside ``path`` (not *.yaml, so a watcher never reads it half-written), then
    rename it over ``path``: readers see the old content or the new, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.rename(tmp, path)


def write_mesh(spec: MeshSpec, out: Path) -> int:
    """Write the mesh into ``out`` (new, empty, or generated before); returns the number of YAML files."""
    spec.check()
    if out.exists():
        if not out.is_dir():
            raise MeshError(f"{out}: not a directory")
        if any(out.iterdir()) and not (out / MANIFEST).exists():
            raise MeshError(f"{out}: not empty and not a generated mesh (no {MANIFEST}); refusing to write there")
        for old in sorted(out.rglob("*.y*ml")):
            old.unlink()
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    for i in range(spec.services):
        files[spec.service_file(i)] = render_service(spec, i)
    if spec.sidecar_isolation:
        for ns in spec.namespace_names:
            files[f"{ns}/sidecar.yaml"] = render_sidecar(ns)
    if spec.gateway:
        files[f"{ROOT_NAMESPACE}/gateway.yaml"] = render_gateway()
    for rel, text in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, text)
    atomic_write(out / MANIFEST, json.dumps(spec.to_json(), indent=2) + "\n")
    return len(files)


def load_manifest(config_dir: Path) -> MeshSpec:
    path = config_dir / MANIFEST
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise MeshError(f"{path}: not found; generate the mesh with `pilot loadtest mesh --out {config_dir}`") from None
    except (OSError, ValueError) as exc:
        raise MeshError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise MeshError(f"{path}: expected a JSON object")
    return MeshSpec.from_json(data)


def check_pristine(spec: MeshSpec, config_dir: Path, services: list[int]) -> None:
    """The scenarios assume the files they edit hold what ``write_mesh`` wrote."""
    for i in services:
        path = config_dir / spec.service_file(i)
        try:
            text = path.read_text()
        except OSError as exc:
            raise MeshError(f"{path}: {exc.strerror}; regenerate the mesh") from None
        if text != render_service(spec, i):
            raise MeshError(f"{path}: changed since the mesh was generated; regenerate it")

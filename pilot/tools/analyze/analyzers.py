"""istioctl analyze's analyzers for the kinds pilot reads, with their exact rules (istio
``pkg/config/analysis/analyzers``), so the same files get the same findings.

Every analyzer takes the Context and returns Messages. Which istioctl analyzer each one mirrors is in its
docstring; analyzers of kinds pilot does not read (AuthorizationPolicy, Telemetry, EnvoyFilter, Kubernetes
Gateway API, injection and webhooks) are not here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pilot.model.host import matches as host_matches
from pilot.tools.analyze import messages as msg
from pilot.tools.analyze.messages import Message
from pilot.tools.analyze.resources import Context, Resource, schema_warnings

CLUSTER_DOMAIN = "svc.cluster.local"
EXPORT_ALL = "*"
EXPORT_LOCAL = "."
MESH_GATEWAY = "mesh"
_FQDN = re.compile(r"^(.+)\.(.+)\.svc\.cluster\.local$")


# ----- istioctl's helpers (analyzers/util) -----


def to_fqdn(namespace: str, host: str) -> str:
    """ConvertHostToFQDN: a name without a dot (and not a wildcard) is a Service of the namespace."""
    if not host.startswith("*") and "." not in host:
        return f"{host}.{namespace}.{CLUSTER_DOMAIN}"
    return host


def scoped(scope: str, namespace: str, host: str) -> str:
    return f"{scope}/{to_fqdn(namespace, host)}"


def resource_name_from_host(namespace: str, host: str) -> tuple[str, str]:
    """GetResourceNameFromHost: (namespace, name) of a Service FQDN, else (the default namespace, host)."""
    found = _FQDN.match(host)
    if found:
        return found.group(2), found.group(1)
    return namespace, host


def selector_string(labels: Mapping[str, str] | None) -> str:
    """klabels.SelectorFromSet(labels).String(): sorted ``k=v`` pairs joined with commas."""
    return ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items()))


def _first_label(selector: Mapping[str, str]) -> tuple[str, ...]:
    """The label istioctl points at for a selector: the first of its sorted keys (ExtractLabelFromSelectorString)."""
    return (min(selector),) if selector else ()


def selects(selector: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in (selector or {}).items())


@dataclass(frozen=True)
class ServiceView:
    """What istioctl's ServiceEntry host map keeps: a ServiceEntry, or a Kubernetes Service seen as one."""

    ports: tuple[tuple[int, str, str], ...]  # (number, name, protocol)
    workload_labels: Mapping[str, str]


def service_host_map(ctx: Context) -> dict[str, ServiceView]:
    """InitServiceEntryHostMap: scope/FQDN -> service, for ServiceEntries (by exportTo) and Services."""
    out: dict[str, ServiceView] = {}
    for r in ctx.of("ServiceEntry"):
        spec = r.spec
        view = ServiceView(
            tuple((p.number, p.name, p.protocol) for p in spec.ports),
            dict(spec.workload_selector.labels) if spec.workload_selector is not None else {},
        )
        export_all = False
        for host in spec.hosts:
            if not spec.export_to or export_all:
                out[scoped(EXPORT_ALL, r.namespace, host)] = view
                continue
            for ns in spec.export_to:
                if ns == EXPORT_ALL:
                    out[scoped(EXPORT_ALL, r.namespace, host)] = view
                    export_all = True
                elif ns == EXPORT_LOCAL:
                    out[scoped(r.namespace, r.namespace, host)] = view
                else:
                    out[scoped(ns, r.namespace, host)] = view
                if export_all:
                    break
    for r in ctx.of("Service"):
        spec = r.document.get("spec") or {}
        ports = tuple(
            (int(p.get("port") or 0), str(p.get("name") or ""), str(p.get("protocol") or ""))
            for p in spec.get("ports") or ()
            if isinstance(p, dict)
        )
        view = ServiceView(ports, {})
        annotation = r.annotations.get("networking.istio.io/exportTo", "")
        scopes = (
            [EXPORT_ALL]
            if not annotation
            else [r.namespace if ns.strip() == EXPORT_LOCAL else ns.strip() for ns in annotation.split(",")]
        )
        for scope in scopes:
            out[scoped(scope, r.namespace, r.name)] = view
    return out


def destination_service(
    namespace: str, export_to: list[str], host: str, services: Mapping[str, ServiceView]
) -> ServiceView | None:
    """GetDestinationHost: the service a destination host refers to, seen from ``namespace``."""
    found = services.get(scoped(EXPORT_ALL, namespace, host))
    if found is not None:
        return found
    if not export_to:
        found = services.get(scoped(namespace, namespace, host))
        if found is not None:
            return found
    else:
        for entry in export_to:
            found = services.get(scoped(namespace if entry == EXPORT_LOCAL else entry, namespace, host))
            if found is not None:
                return found
    for key, view in services.items():
        scope, _, service_host = key.partition("/")
        if not service_host.startswith("*") or scope not in (EXPORT_ALL, namespace):
            continue
        if host.removeprefix("*").endswith(service_host.removeprefix("*")):
            return view
    return None


@dataclass(frozen=True)
class Annotated:
    """A VirtualService destination and where it is (istioctl's AnnotatedDestination)."""

    rule: str  # "http", "tcp", "tls", "http.mirror", "http.mirrors"
    index: int
    destination_index: int
    destination: Any

    @property
    def path(self) -> tuple[str | int, ...]:
        if self.rule == "http.mirror":
            return ("spec", "http", self.index, "mirror", "host")
        if self.rule == "http.mirrors":
            return ("spec", "http", self.index, "mirrors", self.destination_index, "destination", "host")
        return ("spec", self.rule, self.index, "route", self.destination_index, "destination", "host")


def route_destinations(spec: Any) -> Iterator[Annotated]:
    from pilot.api.istio.networking import v1alpha3 as nw

    for rule, routes in (("tcp", spec.tcp), ("tls", spec.tls), ("http", spec.http)):
        for i, route in enumerate(routes):
            for j, destination in enumerate(route.route):
                # A route without a destination is a destination to host "" for istioctl (Go's nil getters).
                yield Annotated(rule, i, j, destination.destination or nw.Destination())


def mirror_destinations(spec: Any) -> Iterator[Annotated]:
    for i, http in enumerate(spec.http):
        if http.mirror is not None:
            yield Annotated("http.mirror", i, 0, http.mirror)
        for j, mirror in enumerate(http.mirrors):
            if mirror.destination is not None:
                yield Annotated("http.mirrors", i, j, mirror.destination)


def _message(kind: msg.MessageType, r: Resource, *params: Any, line: int = 0) -> Message:
    return Message(kind, r.origin, tuple(params), line)


def _pods(ctx: Context) -> list[Resource]:
    return ctx.of("Pod")


# ----- virtualservice.DestinationHostAnalyzer -----


def destination_hosts(ctx: Context) -> list[Message]:
    """IST0101 (host, mirror host, host:port not found), IST0112 (port required), IST0140 (subset on ingress)."""
    services = service_host_map(ctx)
    out: list[Message] = []
    subset_destinations = _subset_destinations(ctx)
    for r in ctx.of("VirtualService"):
        vs = r.spec
        for found in route_destinations(vs):
            service = destination_service(r.namespace, list(vs.export_to), found.destination.host, services)
            if service is None:
                out.append(
                    _message(
                        msg.REFERENCED_RESOURCE_NOT_FOUND, r, "host", found.destination.host, line=r.line(*found.path)
                    )
                )
                continue
            out.extend(_check_ports(r, found, service))
        for found in mirror_destinations(vs):
            service = destination_service(r.namespace, list(vs.export_to), found.destination.host, services)
            if service is None:
                out.append(
                    _message(
                        msg.REFERENCED_RESOURCE_NOT_FOUND,
                        r,
                        "mirror host",
                        found.destination.host,
                        line=r.line(*found.path),
                    )
                )
                continue
            out.extend(_check_ports(r, found, service))
        out.extend(_ingress_subsets(r, subset_destinations))
    return out


def _check_ports(r: Resource, found: Annotated, service: ServiceView) -> list[Message]:
    destination = found.destination
    line = r.line(*found.path)
    if destination.port is None:
        if len(service.ports) > 1:
            numbers = [number for number, _, _ in service.ports]
            return [_message(msg.VS_DESTINATION_PORT_SELECTOR_REQUIRED, r, destination.host, numbers, line=line)]
        return []
    if not any(number == destination.port.number for number, _, _ in service.ports):
        target = f"{destination.host}:{destination.port.number}"
        return [_message(msg.REFERENCED_RESOURCE_NOT_FOUND, r, "host:port", target, line=line)]
    return []


def _subset_destinations(ctx: Context) -> dict[str, list[Any]]:
    """initVirtualServiceDestinations: per VirtualService, its destinations with a subset to one of its hosts."""
    out: dict[str, list[Any]] = {}
    for r in ctx.of("VirtualService"):
        for http in r.spec.http:
            for destination in http.route:
                d = destination.destination
                if d is not None and d.subset and d.host in r.spec.hosts:
                    out.setdefault(r.full_name, []).append(d)
    return out


def _ingress_subsets(r: Resource, subset_destinations: Mapping[str, list[Any]]) -> list[Message]:
    """analyzeSubset: a gateway route without a subset to a host another VirtualService splits by subset."""
    if not r.spec.gateways:
        return []
    out = []
    for i, http in enumerate(r.spec.http):
        for j, destination in enumerate(http.route):
            d = destination.destination
            if d is None or d.subset:
                continue
            for name, destinations in sorted(subset_destinations.items()):
                for other in destinations:
                    if other.host == d.host:
                        line = r.line("spec", "http", i, "route", j, "destination", "host")
                        out.append(_message(msg.INGRESS_ROUTE_RULES_NOT_AFFECTED, r, name, r.full_name, line=line))
    return out


# ----- virtualservice.DestinationRuleAnalyzer -----


def destination_rule_subsets(ctx: Context) -> list[Message]:
    """IST0101: a route (or mirror) to a subset that no DestinationRule for that host defines."""
    defined = set()
    for r in ctx.of("DestinationRule"):
        host = resource_name_from_host(r.namespace, r.spec.host)
        for subset in r.spec.subsets:
            defined.add((host, subset.name))
    out: list[Message] = []
    for r in ctx.of("VirtualService"):
        for reftype, found_all in (
            ("host+subset in destinationrule", route_destinations(r.spec)),
            ("mirror+subset in destinationrule", mirror_destinations(r.spec)),
        ):
            for found in found_all:
                d = found.destination
                if not d.subset or (resource_name_from_host(r.namespace, d.host), d.subset) in defined:
                    continue
                out.append(
                    _message(
                        msg.REFERENCED_RESOURCE_NOT_FOUND, r, reftype, f"{d.host}+{d.subset}", line=r.line(*found.path)
                    )
                )
    return out


# ----- virtualservice.GatewayAnalyzer -----


def virtual_service_gateways(ctx: Context) -> list[Message]:
    """IST0101 (gateway not found) and IST0132 (no VirtualService host in the gateway)."""
    out: list[Message] = []
    for r in ctx.of("VirtualService"):
        vs = r.spec
        for i, name in enumerate(vs.gateways):
            if name == MESH_GATEWAY:
                continue
            line = r.line("spec", "gateways", i)
            if INTERNAL_GATEWAY_MARK in name.split("/", 1)[-1]:
                out.append(_message(msg.REFERENCED_INTERNAL_GATEWAY, r, r.full_name, name, line=line))
                continue
            namespace, _, gateway_name = name.rpartition("/")
            full = (namespace or r.namespace, gateway_name)
            gateway = ctx.find("Gateway", *full)
            kubernetes = ctx.find("KubernetesGateway", *full) if gateway is None else None
            if gateway is None and kubernetes is None:
                out.append(_message(msg.REFERENCED_RESOURCE_NOT_FOUND, r, "gateway", name, line=line))
            if kubernetes is not None:
                hosts_match = _vs_host_in_kubernetes_gateway(kubernetes, list(vs.hosts))
            else:
                hosts_match = _vs_host_in_gateway(gateway, list(vs.hosts), r.namespace)
            if not hosts_match:
                hosts = list(vs.hosts)
                out.append(_message(msg.VS_HOST_NOT_FOUND_IN_GATEWAY, r, hosts, r.full_name, "/".join(full), line=line))
    return out


def _vs_host_in_gateway(gateway: Resource | None, vs_hosts: list[str], vs_namespace: str) -> bool:
    if gateway is None:
        return False
    hosts: list[str] = []
    for server in gateway.spec.servers:
        hosts += _sanitized_hosts(list(server.hosts), gateway.namespace)
    names = []
    for host in hosts:
        namespace, slash, name = host.partition("/")
        if slash:
            if namespace not in (vs_namespace, "*"):
                continue
            host = name
        names.append(host)
    return any(host_matches(gh, vh) for gh in names for vh in vs_hosts)


INTERNAL_GATEWAY_MARK = "~istio-autogenerated-k8s-gateway~"  # kube.IsInternalGatewayReference


def _vs_host_in_kubernetes_gateway(gateway: Resource, vs_hosts: list[str]) -> bool:
    """A Gateway API Gateway: a listener without hostname takes every host."""
    hosts = []
    for listener in (gateway.document.get("spec") or {}).get("listeners") or ():
        hostname = listener.get("hostname") if isinstance(listener, dict) else None
        if not hostname:
            return True
        hosts.append(str(hostname))
    return any(host_matches(gh, vh) for gh in hosts for vh in vs_hosts)


def _sanitized_hosts(hosts: list[str], namespace: str) -> list[str]:
    """sanitizeServerHostNamespace: ``./h`` is the gateway's namespace, ``*/h`` any, ``*/*`` everything."""
    out = list(hosts)
    for i, host in enumerate(out):
        if "/" in host:
            ns, _, name = host.partition("/")
            if ns == ".":
                out[i] = f"{namespace}/{name}"
            elif ns == "*":
                if name == "*":
                    return ["*"]
                out[i] = name
    return out


# ----- virtualservice.ConflictingMeshGatewayHostsAnalyzer -----


def conflicting_mesh_gateway_hosts(ctx: Context) -> list[Message]:
    """IST0109: several VirtualServices bound to the mesh gateway for one host."""
    by_host: dict[str, list[Resource]] = {}
    for r in ctx.of("VirtualService"):
        vs = r.spec
        if vs.gateways and MESH_GATEWAY not in vs.gateways:
            continue
        if not vs.export_to or EXPORT_ALL in vs.export_to:
            scopes = [EXPORT_ALL]
        else:
            scopes = sorted({r.namespace if e == EXPORT_LOCAL else e for e in vs.export_to})
        for scope in scopes:
            for host in vs.hosts:
                by_host.setdefault(scoped(scope, r.namespace, host), []).append(r)
    out: list[Message] = []
    reported: set[str] = set()
    for key, listed in sorted(by_host.items()):
        scope, _, host = key.partition("/")
        together = list(listed)
        if scope != EXPORT_ALL:
            for other_key, others in sorted(by_host.items()):
                other_scope, _, other_host = other_key.partition("/")
                if other_scope == EXPORT_ALL and host_matches(host, other_host):
                    together += others
        if len(together) < 2:
            continue
        names = ",".join(sorted(r.full_name for r in together))
        for r in together:
            if r.full_name in reported:
                continue
            reported.add(r.full_name)
            line = r.line("metadata", "name")
            out.append(_message(msg.CONFLICTING_MESH_GATEWAY_VS_HOSTS, r, names, key, line=line))
    return out


# ----- gateway.IngressGatewayPortAnalyzer -----


def gateway_ports(ctx: Context) -> list[Message]:
    """IST0101 (no pod matches the gateway's selector) and IST0162 (a server port the Service does not expose)."""
    out: list[Message] = []
    for r in ctx.of("Gateway"):
        selector = dict(r.spec.selector)
        service_ports: set[int] = set()
        port_mapping: dict[int, int] = {}
        matched = 0
        for pod in _pods(ctx):
            if not selects(selector, pod.labels):
                continue
            matched += 1
            for svc in ctx.of("Service"):
                if svc.namespace != pod.namespace:
                    continue
                spec = svc.document.get("spec") or {}
                if not selects(spec.get("selector") or {}, pod.labels):  # no selector: every pod (as klabels)
                    continue
                for port in spec.get("ports") or ():
                    # As read from a file, with no API server defaulting: only an explicit TCP counts.
                    if not isinstance(port, dict) or port.get("protocol") != "TCP":
                        continue
                    target = _int_value(port.get("targetPort"))
                    if target:
                        service_ports.add(target)
                        port_mapping.setdefault(int(port.get("port") or 0), target)
                    else:
                        service_ports.add(int(port.get("port") or 0))
        line = r.line("spec", "selector", *_first_label(selector))
        if matched == 0:
            out.append(_message(msg.REFERENCED_RESOURCE_NOT_FOUND, r, "selector", selector_string(selector), line=line))
            continue
        for server in r.spec.servers:
            if server.port is None:
                continue
            number = server.port.number
            if number not in service_ports and number not in port_mapping:
                out.append(
                    _message(msg.GATEWAY_PORT_NOT_DEFINED_ON_SERVICE, r, number, selector_string(selector), line=line)
                )
    return out


def _int_value(value: Any) -> int:
    """IntOrString.IntValue(): the number, or a string's number, else 0."""
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except ValueError:
        return 0


# ----- gateway.ConflictingGatewayAnalyzer -----


def conflicting_gateways(ctx: Context) -> list[Message]:
    """IST0145: two gateways on the same workloads and port claim the same host (with the same bind)."""
    by_selector_port: dict[tuple[str, int], dict[str, dict[str, str]]] = {}
    for r in ctx.of("Gateway"):
        selector = selector_string(dict(r.spec.selector))
        for server in r.spec.servers:
            port = server.port.number if server.port is not None else 0
            by_selector_port.setdefault((selector, port), {})[r.full_name] = dict.fromkeys(server.hosts, server.bind)
    out: list[Message] = []
    for r in ctx.of("Gateway"):
        selector_map = dict(r.spec.selector)
        selector = selector_string(selector_map)
        hits: dict[tuple[str, int], dict[str, dict[str, str]]] = {}
        for (other_selector, port), gateways in by_selector_port.items():
            same = other_selector == selector
            if not same and (other_selector in selector or selector in other_selector):
                other_map = dict(pair.split("=", 1) for pair in other_selector.split(",") if "=" in pair)
                same = any(selects(selector_map, p.labels) and selects(other_map, p.labels) for p in _pods(ctx))
            if same:
                hits[(other_selector, port)] = gateways
        if selector and not hits:
            line = r.line("spec", "selector", *_first_label(selector_map))
            out.append(_message(msg.REFERENCED_RESOURCE_NOT_FOUND, r, "selector", selector, line=line))
            continue
        for server in r.spec.servers:
            port = server.port.number if server.port is not None else 0
            conflicting = []
            for (_, other_port), gateways in hits.items():
                if other_port != port:
                    continue
                for name, known in gateways.items():
                    if name != r.full_name and _duplicates(list(server.hosts), server.bind, known):
                        conflicting.append(name)
            if conflicting:
                out.append(
                    _message(
                        msg.CONFLICTING_GATEWAYS,
                        r,
                        ",".join(sorted(conflicting)),
                        selector,
                        str(port),
                        ",".join(server.hosts),
                    )
                )
    return out


def _duplicates(hosts: list[str], bind: str, known: dict[str, str]) -> bool:
    """model.CheckDuplicates: a host already bound with the same bind address (the known map is then
    extended with these hosts when there was none, as istiod's function does)."""
    duplicate = any(h in known and known[h] == bind for h in hosts)
    if not duplicate:
        for h in hosts:
            known[h] = bind
    return duplicate


# ----- destinationrule.CaCertificateAnalyzer -----

_TLS_CHECKED = ("SIMPLE", "MUTUAL")


def ca_certificates(ctx: Context) -> list[Message]:
    """IST0128 / IST0129: SIMPLE or MUTUAL TLS to a host without caCertificates to check its certificate."""
    from pilot.config.convert import enum_name

    out: list[Message] = []
    for r in ctx.of("DestinationRule"):
        dr = r.spec
        policy = dr.traffic_policy
        selector = dr.workload_selector is not None
        if policy is not None and policy.tls is not None:
            mode = enum_name(policy.tls.mode)
            if (
                mode in _TLS_CHECKED
                and not policy.tls.ca_certificates
                and not (policy.tls.credential_name and selector)
            ):
                line = r.line("spec", "trafficPolicy", "tls", "caCertificates")
                out.append(
                    _message(
                        msg.NO_SERVER_CERT_VERIFICATION_DESTINATION,
                        r,
                        r.full_name,
                        r.namespace,
                        mode,
                        dr.host,
                        line=line,
                    )
                )
        for i, port_policy in enumerate(policy.port_level_settings if policy is not None else ()):
            if port_policy.tls is None:
                continue
            mode = enum_name(port_policy.tls.mode)
            tls = port_policy.tls
            if mode in _TLS_CHECKED and not tls.ca_certificates and not (tls.credential_name and selector):
                port = _port_selector_text(port_policy.port)
                line = r.line("spec", "trafficPolicy", "portLevelSettings", i, "tls", "caCertificates")
                out.append(
                    _message(
                        msg.NO_SERVER_CERT_VERIFICATION_PORT,
                        r,
                        r.full_name,
                        r.namespace,
                        mode,
                        dr.host,
                        port,
                        line=line,
                    )
                )
    return out


def _port_selector_text(port: Any) -> str:
    """Go's prototext String() of a PortSelector, as istioctl prints it: ``number:9080``."""
    return f"number:{port.number}" if port is not None and port.number else ""


# ----- destinationrule.SubsetSelectPodAnalyzer -----


def subsets_select_pods(ctx: Context) -> list[Message]:
    """IST0174 (a DestinationRule host no service has) and IST0173 (a subset no pod's labels match)."""
    services = service_host_map(ctx)
    pods = _pods(ctx)
    node_labels = {n.name: n.labels for n in ctx.of("Node")}
    out: list[Message] = []
    for r in ctx.of("DestinationRule"):
        dr = r.spec
        service = destination_service(r.namespace, list(dr.export_to), dr.host, services)
        if service is None:
            out.append(_message(msg.UNKNOWN_DESTINATION_RULE_HOST, r, dr.host))
            continue
        for subset in dr.subsets:
            selector = {**service.workload_labels, **subset.labels}
            if not any(selects(selector, _augmented_labels(pod, node_labels)) for pod in pods):
                out.append(_message(msg.DESTINATION_RULE_SUBSET_NOT_SELECT_PODS, r, subset.name))
    return out


def _augmented_labels(pod: Resource, node_labels: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """label.AugmentLabels: the pod's labels plus the topology labels Istio adds to endpoints."""
    labels = dict(pod.labels)
    node_name = str((pod.document.get("spec") or {}).get("nodeName") or "")
    node = node_labels.get(node_name, {})
    region = node.get("topology.kubernetes.io/region", "")
    zone = node.get("topology.kubernetes.io/zone", "")
    subzone = node.get("topology.istio.io/subzone", "")
    if region:
        labels["topology.kubernetes.io/region"] = region
    if zone:
        labels["topology.kubernetes.io/zone"] = zone
    if subzone:
        labels["topology.istio.io/subzone"] = subzone
    if node_name:
        labels["kubernetes.io/hostname"] = node_name
    return labels


# ----- sidecar.SelectorAnalyzer -----


def sidecar_selectors(ctx: Context) -> list[Message]:
    """IST0101 (a Sidecar selector matching no pod), IST0110 (two Sidecars select one pod), IST0111 (several
    Sidecars without selector in one namespace)."""
    out: list[Message] = []
    pods_to_sidecars: dict[tuple[str, str], list[Resource]] = {}
    without_selector: dict[str, list[Resource]] = {}
    for r in ctx.of("Sidecar"):
        selector = dict(r.spec.workload_selector.labels) if r.spec.workload_selector is not None else {}
        if not selector:
            without_selector.setdefault(r.namespace, []).append(r)
            continue
        found = False
        for pod in _pods(ctx):
            if pod.namespace == r.namespace and selects(selector, pod.labels):
                found = True
                pods_to_sidecars.setdefault((pod.namespace, pod.name), []).append(r)
        if not found:
            line = r.line("spec", "workloadSelector", "labels", *_first_label(selector))
            out.append(_message(msg.REFERENCED_RESOURCE_NOT_FOUND, r, "selector", selector_string(selector), line=line))
    reported: set[str] = set()
    pods = {(p.namespace, p.name): p for p in _pods(ctx)}
    for (namespace, pod), sidecars in sorted(pods_to_sidecars.items()):
        ambient = _pod_in_ambient(pods[(namespace, pod)])
        if len(sidecars) < 2 and not ambient:
            continue
        names = _go_list(s.full_name for s in sidecars)
        for r in sidecars:
            if ambient:
                if r.full_name not in reported:
                    reported.add(r.full_name)
                    reason = "selected workload is in ambient mode, the policy has no impact"
                    out.append(_message(msg.INEFFECTIVE_POLICY, r, reason))
                continue
            line = r.line("metadata", "name")
            out.append(_message(msg.CONFLICTING_SIDECAR_WORKLOAD_SELECTORS, r, names, namespace, pod, line=line))
    for namespace, sidecars in sorted(without_selector.items()):
        namespace_object = ctx.find("Namespace", "", namespace)
        if namespace_object is not None and _namespace_in_ambient(namespace_object):
            for r in sidecars:
                if r.full_name not in reported:
                    reported.add(r.full_name)
                    reason = "namespace is in ambient mode, the policy has no impact"
                    out.append(_message(msg.INEFFECTIVE_POLICY, r, reason))
            continue
        if len(sidecars) > 1:
            names = _go_list(s.full_name for s in sidecars)
            out.extend(_message(msg.MULTIPLE_SIDECARS_WITHOUT_SELECTORS, r, names, namespace) for r in sidecars)
    return out


def _pod_in_ambient(pod: Resource) -> bool:
    return pod.annotations.get("ambient.istio.io/redirection") == "enabled"


def _namespace_in_ambient(namespace: Resource) -> bool:
    labels = namespace.labels
    if labels.get("istio-injection") == "enabled" or labels.get("istio.io/rev"):
        return False
    return labels.get("istio.io/dataplane-mode") == "ambient"


def _go_list(items: Iterator[str] | Any) -> list[str]:
    return sorted(items)


# ----- serviceentry.Analyzer (protocol addresses) -----


def service_entry_addresses(ctx: Context) -> list[Message]:
    """IST0134: a TCP (or protocol-less) port of a ServiceEntry without addresses (none allocated either)."""
    metadata = ((ctx.mesh.get("defaultConfig") or {}).get("proxyMetadata") or {}) if ctx.mesh else {}
    auto_allocated = metadata.get("ISTIO_META_DNS_CAPTURE") == "true" and (
        metadata.get("ISTIO_META_DNS_AUTO_ALLOCATE") == "true" or metadata.get("PILOT_ENABLE_IP_AUTOALLOCATE") == "true"
    )
    out: list[Message] = []
    for r in ctx.of("ServiceEntry"):
        se = r.spec
        if se.addresses or _allocated(r) or auto_allocated:
            continue
        for i, port in enumerate(se.ports):
            if not port.protocol or port.protocol.upper() == "TCP":
                out.append(_message(msg.SERVICE_ENTRY_ADDRESSES_REQUIRED, r, line=r.line("spec", "ports", i, "name")))
    return out


def _allocated(r: Resource) -> bool:
    """Addresses the cluster allocated (status.addresses of an object exported from one)."""
    status = r.document.get("status")
    return isinstance(status, dict) and bool(status.get("addresses"))


# ----- serviceentry.ConflictingServiceEntryProtocolAnalyzer -----


def conflicting_service_entry_protocols(ctx: Context) -> list[Message]:
    """IST0177: ServiceEntries giving one host and port different protocols."""
    index: dict[tuple[str, str, int], list[tuple[str, Resource]]] = {}
    for r in ctx.of("ServiceEntry"):
        se = r.spec
        if not se.export_to or EXPORT_ALL in se.export_to:
            scopes = {EXPORT_ALL}
        else:
            scopes = {r.namespace if e == EXPORT_LOCAL else e for e in se.export_to}
        for scope in scopes:
            for host in se.hosts:
                for port in se.ports:
                    index.setdefault((scope, host, port.number), []).append((port.protocol, r))
    out: list[Message] = []
    reported: set[str] = set()
    for (scope, host, port), entries in sorted(index.items()):
        together = list(entries)
        if scope != EXPORT_ALL:
            together += index.get((EXPORT_ALL, host, port), [])
        protocols = sorted({protocol.upper() for protocol, _ in together})
        if len(protocols) < 2:
            continue
        names = ", ".join(sorted({r.full_name for _, r in together}))
        for _, r in together:
            if r.full_name in reported:
                continue
            reported.add(r.full_name)
            out.append(
                _message(
                    msg.CONFLICTING_SERVICE_ENTRY_PROTOCOL,
                    r,
                    names,
                    host,
                    port,
                    ", ".join(protocols),
                    line=r.line("metadata", "name"),
                )
            )
    return out


# ----- service.PortNameAnalyzer -----

_PROTOCOLS = {
    "tcp",
    "udp",
    "grpc",
    "grpc-web",
    "http",
    "http_proxy",
    "http2",
    "https",
    "tls",
    "mongo",
    "redis",
    "mysql",
}
_WELL_KNOWN_PORTS = {25, 53, 3306, 27017}  # SMTP, DNS, MySQL, MongoDB
_GATEWAY_MANAGED = {"istio.io-gateway-controller", "istio.io-mesh-controller", "istio.io-eastwest-controller"}


def port_protocol_supported(port: int, name: str, protocol: str, app_protocol: str | None) -> bool:
    """Not kube.ConvertProtocol(...).IsUnsupported(): the port name (or appProtocol) says the protocol."""
    if protocol == "UDP":
        return True
    text = name
    if app_protocol is not None:
        text = app_protocol
        if text in ("kubernetes.io/h2c", "kubernetes.io/ws", "kubernetes.io/wss"):
            return True
    if text[:8].lower() == "grpc-web":
        return True
    prefix = text.split("-", 1)[0].lower()
    return prefix in _PROTOCOLS or port in _WELL_KNOWN_PORTS


def service_port_names(ctx: Context) -> list[Message]:
    """IST0118 (a port name that names no protocol), IST0150 (ExternalName Services)."""
    out: list[Message] = []
    for r in ctx.of("Service"):
        if "istio" in r.labels or r.labels.get("release") == "istio":
            continue  # the control plane's own Services
        if r.labels.get("gateway.istio.io/managed") in _GATEWAY_MANAGED:
            continue
        spec = r.document.get("spec") or {}
        external = spec.get("type") == "ExternalName"
        for i, port in enumerate(spec.get("ports") or ()):
            if not isinstance(port, dict):
                continue
            name = str(port.get("name") or "")
            number = int(port.get("port") or 0)
            app_protocol = port.get("appProtocol")
            supported = port_protocol_supported(number, name, str(port.get("protocol") or ""), app_protocol)
            if supported and not (name == "tcp" and external):
                continue
            line = r.line("spec", "ports", i, "port")
            if external:
                out.append(_message(msg.EXTERNAL_NAME_INVALID_PORT_NAME, r, line=line))
            else:
                target = port.get("targetPort")
                target_text = str(target) if target not in (None, "") else "0"
                out.append(_message(msg.PORT_NAME_NOT_UNDER_NAMING_CONVENTION, r, name, number, target_text, line=line))
    return out


# ----- deprecation.DeprecationAnalyzer -----


def deprecations(ctx: Context) -> list[Message]:
    """IST0002: VirtualService fault.delay.percent; Sidecar outboundTrafficPolicy.egressProxy."""
    out: list[Message] = []
    for r in ctx.of("VirtualService"):
        for http in r.spec.http:
            if http.fault is not None and http.fault.delay is not None and http.fault.delay.percent > 0:
                out.append(
                    _message(
                        msg.DEPRECATED,
                        r,
                        "HTTPRoute.fault.delay.percent is deprecated; use HTTPRoute.fault.delay.percentage",
                    )
                )
    for r in ctx.of("Sidecar"):
        policy = r.spec.outbound_traffic_policy
        if policy is not None and policy.egress_proxy is not None:
            out.append(_message(msg.DEPRECATED, r, "OutboundTrafficPolicy.EgressProxy ignored"))
    return out


@dataclass(frozen=True)
class Analyzer:
    name: str  # istioctl's analyzer name
    description: str
    run: Callable[[Context], list[Message]]
    # The Kubernetes kinds it reads. istioctl skips an analyzer whose inputs are not in its snapshot; here
    # they are when the analyzed files hold objects of those kinds (Istio kinds are always there).
    inputs: frozenset[str] = frozenset()


ANALYZERS: tuple[Analyzer, ...] = (
    Analyzer(
        "schema.ValidationAnalyzer", "Runs schema validation as an analyzer on every Istio resource", schema_warnings
    ),
    Analyzer("deprecation.DeprecationAnalyzer", "Checks for deprecated Istio types and fields", deprecations),
    Analyzer(
        "destinationrule.CaCertificateAnalyzer",
        "Checks if caCertificates is set when TLS mode is SIMPLE/MUTUAL",
        ca_certificates,
    ),
    Analyzer(
        "destinationrule.SubsetSelectPodAnalyzer",
        "Checks if pods are selected by subsets in destination rules.",
        subsets_select_pods,
        frozenset({"Pod", "Service", "Node"}),
    ),
    Analyzer(
        "gateway.IngressGatewayPortAnalyzer",
        "Checks a gateway's ports against the gateway's Kubernetes service ports",
        gateway_ports,
        frozenset({"Pod", "Service"}),
    ),
    Analyzer(
        "gateway.ConflictingGatewayAnalyzer",
        "Checks a gateway's selector, port number and hosts",
        conflicting_gateways,
        frozenset({"Pod"}),
    ),
    Analyzer(
        "service.PortNameAnalyzer",
        "Checks the port names associated with each service",
        service_port_names,
        frozenset({"Service"}),
    ),
    Analyzer(
        "sidecar.SelectorAnalyzer",
        "Validates that sidecars that define a workload selector match at least one pod, and that there aren't "
        "multiple sidecar resources that select overlapping pods",
        sidecar_selectors,
        frozenset({"Pod", "Namespace"}),
    ),
    Analyzer(
        "virtualservice.ConflictingMeshGatewayHostsAnalyzer",
        "Checks if multiple virtual services associated with the mesh gateway have conflicting hosts",
        conflicting_mesh_gateway_hosts,
    ),
    Analyzer(
        "virtualservice.DestinationHostAnalyzer",
        "Checks the destination hosts associated with each virtual service",
        destination_hosts,
        frozenset({"Service"}),
    ),
    Analyzer(
        "virtualservice.DestinationRuleAnalyzer",
        "Checks the destination rules associated with each virtual service",
        destination_rule_subsets,
    ),
    Analyzer(
        "virtualservice.GatewayAnalyzer",
        "Checks the gateways associated with each virtual service",
        virtual_service_gateways,
    ),
    Analyzer("serviceentry.Analyzer", "Checks the validity of ServiceEntry", service_entry_addresses),
    Analyzer(
        "serviceentry.ConflictingServiceEntryProtocolAnalyzer",
        "Checks if multiple ServiceEntries define the same host and port with different protocols",
        conflicting_service_entry_protocols,
    ),
)


@dataclass
class Result:
    messages: list[Message]
    executed: list[str]
    skipped: list[str]


def analyze(ctx: Context) -> Result:
    result = Result([], [], [])
    for analyzer in ANALYZERS:
        if any(not ctx.of(kind) for kind in analyzer.inputs):
            result.skipped.append(analyzer.name)
            continue
        result.executed.append(analyzer.name)
        result.messages.extend(analyzer.run(ctx))
    return result

"""Kubernetes and Istio objects for the tests, as kubectl would send them."""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]


def namespace(name: str, **labels: str) -> JSON:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def node(name: str, **labels: str) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
        "status": {"conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-01-01T00:00:00Z"}]},
    }


def service(name: str, ns: str = "default", *, port: int = 80, target: int = 8080, ip: str = "10.96.0.10") -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {
            "clusterIP": ip,
            "selector": {"app": name},
            "ports": [{"name": "http", "port": port, "targetPort": target, "protocol": "TCP"}],
        },
    }


def pod(name: str, ns: str = "default", *, ip: str = "10.1.0.2", node_name: str = "", **labels: str) -> JSON:
    spec: JSON = {"containers": [{"name": "app", "image": "app:1"}]}
    if node_name:
        spec["nodeName"] = node_name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": spec,
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": None}],
            "containerStatuses": [{"name": "app", "ready": True, "restartCount": 0}],
        },
    }


def endpoint_slice(
    service_name: str,
    endpoints: list[tuple[str, bool] | tuple[str, bool, str]],
    ns: str = "default",
    *,
    port: int = 8080,
    suffix: str = "abc",
) -> JSON:
    """``endpoints``: (address, ready[, pod name])."""
    eps = []
    for entry in endpoints:
        ep: JSON = {"addresses": [entry[0]], "conditions": {"ready": entry[1]}}
        if len(entry) > 2:
            ep["targetRef"] = {"kind": "Pod", "name": entry[2], "namespace": ns}  # type: ignore[misc]
        eps.append(ep)
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service_name}-{suffix}",
            "namespace": ns,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": eps,
    }


def virtual_service(name: str, host: str, ns: str = "default", *, timeout: str = "5s", version: str = "v1") -> JSON:
    return {
        "apiVersion": f"networking.istio.io/{version}",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"hosts": [host], "http": [{"timeout": timeout, "route": [{"destination": {"host": host}}]}]},
    }


def destination_rule(name: str, host: str, ns: str = "default", *, lb: str = "ROUND_ROBIN") -> JSON:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"host": host, "trafficPolicy": {"loadBalancer": {"simple": lb}}},
    }


def service_entry(name: str, host: str, addresses: list[str], ns: str = "default") -> JSON:
    """Endpoints listed, or (no addresses) selected from WorkloadEntries labelled app: <name>."""
    where: JSON = (
        {"endpoints": [{"address": a} for a in addresses]}
        if addresses
        else {"workloadSelector": {"labels": {"app": name}}}
    )
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "hosts": [host],
            "location": "MESH_INTERNAL",
            "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
            "resolution": "STATIC",
            **where,
        },
    }


def workload_entry(name: str, address: str, app: str, ns: str = "default") -> JSON:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "WorkloadEntry",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"address": address, "labels": {"app": app}},
    }


def gateway(name: str, ns: str = "default", *, port: int = 8080, hosts: tuple[str, ...] = ("*",)) -> JSON:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "selector": {"istio": "ingressgateway"},
            "servers": [{"port": {"number": port, "name": "http", "protocol": "HTTP"}, "hosts": list(hosts)}],
        },
    }


def sidecar(ns: str = "default", *, hosts: tuple[str, ...] = ("./*",), name: str = "default") -> JSON:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Sidecar",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"egress": [{"hosts": list(hosts)}]},
    }


def peer_authentication(name: str, mode: str, ns: str = "default") -> JSON:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"mtls": {"mode": mode}},
    }

"""Host names as Istio compares and resolves them (its ``host.Name``), in one place.

A host is an FQDN (``reviews.default.svc.cluster.local``), a wildcard (``*.example.com``, or ``*`` for
everything) or, in config, a short name that resolves in the config's namespace.
"""

from __future__ import annotations

import ipaddress

MESH_GATEWAY = "mesh"


def is_wildcard(host: str) -> bool:
    return host.startswith("*")


def subset_of(a: str, b: str) -> bool:
    """Istio's ``SubsetOf``: every name ``a`` matches is matched by ``b``."""
    if is_wildcard(b):
        if is_wildcard(a):
            return a[1:].endswith(b[1:])
        return a.endswith(b[1:])
    if is_wildcard(a):
        return False
    return a == b


def matches(a: str, b: str) -> bool:
    """Istio's ``Matches``: some name is matched by both (equal, or one wildcard covers the other)."""
    return subset_of(a, b) or subset_of(b, a)


def resolve_short_name(host: str, namespace: str, domain_suffix: str) -> str:
    """Istio's ResolveShortnameToFQDN: a name without a dot becomes ``name.<namespace>.svc.<domain>``."""
    if not host or host == "*" or "." in host:
        return host
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    return f"{host}.{namespace}.svc.{domain_suffix}"


def resolve_gateway_name(name: str, namespace: str) -> str:
    """Istio's resolveGatewayName: ``mesh``, ``ns/name`` (``./name`` = own namespace), the legacy
    ``name.ns[.svc.cluster.local]``, or a bare name in the config's namespace."""
    if name == MESH_GATEWAY:
        return name
    if "/" in name:
        ns, _, gw = name.partition("/")
        return f"{namespace}/{gw}" if ns == "." else name
    if "." in name:
        gw, _, rest = name.partition(".")
        return f"{rest.split('.', 1)[0]}/{gw}"
    return f"{namespace}/{name}"

"""Secret material out of debug output.

Applied to every JSON answer of the debug endpoints, whoever asks (loopback included), after the endpoint has
built it, so an endpoint added later is covered too:

- ``env`` lists (a Pod's ``spec.containers[].env``): each entry's ``value`` becomes ``[redacted]``; names and
  ``valueFrom`` references stay (they say where a value comes from, not what it is);
- ``data``, ``stringData``, ``binaryData`` (Secrets, ConfigMaps): every value becomes ``[redacted]``, keys stay;
- Envoy TLS secrets in a config dump (``private_key`` / ``privateKey``, ``password``, ``generic_secret`` /
  ``genericSecret``): the value becomes ``[redacted]``, as istiod's config_dump redacts private keys;
- proxy metadata in ``/debug/adsz``: only the fields istiod's ``NodeMetadata`` shows that hold no free-form
  values (``PUBLIC_METADATA``); anything else a proxy sends (``ISTIO_META_*`` variables of its environment,
  ``PROXY_CONFIG`` with its ``proxyMetadata`` environment, annotations) is dropped, as istiod keeps unknown
  metadata out of its debug output.

The walk is iterative (a deep document cannot exhaust the stack) and an answer without any of these keys is
recognised from its bytes and left untouched, so most answers cost one substring scan.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

REDACTED = "[redacted]"
MAP_KEYS = frozenset({"data", "stringData", "binaryData"})
VALUE_KEYS = frozenset({"private_key", "privateKey", "password", "generic_secret", "genericSecret"})
ENV_KEY = "env"
# istiod NodeMetadata fields (JSON names) that carry no free-form values.
PUBLIC_METADATA = frozenset(
    {
        "NAMESPACE",
        "LABELS",
        "SERVICE_ACCOUNT",
        "CLUSTER_ID",
        "ISTIO_VERSION",
        "INSTANCE_IPS",
        "WORKLOAD_NAME",
        "OWNER",
        "MESH_ID",
        "NETWORK",
        "GENERATOR",
        "NODE_NAME",
        "INTERCEPTION_MODE",
        "POD_PORTS",
        "ENVOY_STATUS_PORT",
        "ENVOY_PROMETHEUS_PORT",
        "ISTIO_PROXY_SHA",
        "UNPRIVILEGED_POD",
        "DNS_CAPTURE",
        "DNS_AUTO_ALLOCATE",
        "AUTO_REGISTER_GROUP",
        "ENABLE_HBONE",
    }
)
_MARKERS = tuple(f'"{key}":'.encode() for key in (*MAP_KEYS, *VALUE_KEYS, ENV_KEY))


def may_need(body: bytes) -> bool:
    """Whether a JSON body has any key the redaction touches (a cheap pre-check before parsing)."""
    return any(marker in body for marker in _MARKERS)


def redact(value: Any) -> Any:
    """Redact ``value`` (parsed JSON) in place; returns it."""
    stack: list[Any] = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, child in node.items():
                if key in VALUE_KEYS and child is not None:
                    node[key] = REDACTED
                elif key in MAP_KEYS and isinstance(child, dict):
                    node[key] = dict.fromkeys(child, REDACTED)
                elif key in MAP_KEYS and isinstance(child, str | list):
                    node[key] = REDACTED
                elif key == ENV_KEY and isinstance(child, list):
                    for entry in child:
                        if isinstance(entry, dict) and "value" in entry:
                            entry["value"] = REDACTED
                    stack.extend(child)
                elif isinstance(child, dict | list):
                    stack.append(child)
        elif isinstance(node, list):
            stack.extend(child for child in node if isinstance(child, dict | list))
    return value


def public_metadata(metadata: Any) -> Any:
    if not isinstance(metadata, dict):
        return {}
    return {key: value for key, value in metadata.items() if key in PUBLIC_METADATA}


def adsz_clients(value: Any) -> Iterable[dict[str, Any]]:
    clients = value.get("clients") if isinstance(value, dict) else None
    return [c for c in clients if isinstance(c, dict)] if isinstance(clients, list) else []


def redact_adsz(value: Any) -> Any:
    for client in adsz_clients(value):
        if "metadata" in client:
            client["metadata"] = public_metadata(client["metadata"])
    return value

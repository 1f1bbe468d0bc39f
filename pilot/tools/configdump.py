"""Reading a ConfigDump (pilot's /debug/config_dump, or an Envoy admin /config_dump) into typed resources.

Both use protobuf JSON: pilot writes the JSON names (``dynamicActiveClusters``) as istiod does, Envoy the
proto field names (``dynamic_active_clusters``); both are accepted. Only the dynamic resources (what xDS
delivered) are read, plus, on request, the static ones of an Envoy bootstrap.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from pilot.tools import protos

ADMIN = "type.googleapis.com/envoy.admin.v3."


@dataclass
class Secret:
    name: str
    state: str  # ACTIVE or WARMING (Envoy); REFERENCED (what pilot's config points at)
    message: Message | None = None


@dataclass
class Dump:
    clusters: list[Message] = field(default_factory=list)
    listeners: list[Message] = field(default_factory=list)
    routes: list[Message] = field(default_factory=list)
    endpoints: list[Message] = field(default_factory=list)
    secrets: list[Secret] = field(default_factory=list)
    has_endpoints: bool = False
    routes_last_updated: str = ""  # the newest RDS update time Envoy reports, if any
    problems: list[str] = field(default_factory=list)  # resources that could not be decoded


def _get(obj: Mapping[str, Any], snake: str) -> Any:
    """A field by its proto name or its JSON (lowerCamel) name."""
    if snake in obj:
        return obj[snake]
    head, *rest = snake.split("_")
    return obj.get(head + "".join(part.title() for part in rest))


def sections(dump: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for config in dump.get("configs") or ():
        type_url = str(config.get("@type", ""))
        if type_url.startswith(ADMIN):
            yield type_url[len(ADMIN) :], config


def parse(dump: Mapping[str, Any], *, include_static: bool = False) -> Dump:
    protos.load()
    from envoy.config.cluster.v3 import cluster_pb2
    from envoy.config.endpoint.v3 import endpoint_pb2
    from envoy.config.listener.v3 import listener_pb2
    from envoy.config.route.v3 import route_pb2
    from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

    out = Dump()
    for kind, section in sections(dump):
        if kind == "ClustersConfigDump":
            entries = list(_get(section, "dynamic_active_clusters") or ())
            if include_static:
                entries += list(_get(section, "static_clusters") or ())
            out.clusters += _decode_all(out, (_get(e, "cluster") for e in entries), cluster_pb2.Cluster)
        elif kind == "ListenersConfigDump":
            found = []
            for entry in _get(section, "dynamic_listeners") or ():
                active = _get(entry, "active_state")
                if active:
                    found.append(_get(active, "listener"))
            if include_static:
                found += [_get(e, "listener") for e in _get(section, "static_listeners") or ()]
            out.listeners += _decode_all(out, found, listener_pb2.Listener)
        elif kind == "RoutesConfigDump":
            entries = list(_get(section, "dynamic_route_configs") or ())
            if include_static:
                entries += list(_get(section, "static_route_configs") or ())
            out.routes += _decode_all(out, (_get(e, "route_config") for e in entries), route_pb2.RouteConfiguration)
            times = [str(_get(e, "last_updated")) for e in entries if _get(e, "last_updated")]
            out.routes_last_updated = max(times, default="")
        elif kind == "EndpointsConfigDump":
            out.has_endpoints = True
            entries = list(_get(section, "dynamic_endpoint_configs") or ())
            if include_static:
                entries += list(_get(section, "static_endpoint_configs") or ())
            out.endpoints += _decode_all(
                out, (_get(e, "endpoint_config") for e in entries), endpoint_pb2.ClusterLoadAssignment
            )
        elif kind == "SecretsConfigDump":
            for state, key in (("ACTIVE", "dynamic_active_secrets"), ("WARMING", "dynamic_warming_secrets")):
                for entry in _get(section, key) or ():
                    message = _decode(out, _get(entry, "secret"), secret_pb2.Secret)
                    out.secrets.append(Secret(str(_get(entry, "name") or ""), state, message))
    return out


def _decode_all(out: Dump, values: Any, message_type: type[Message]) -> list[Message]:
    found = []
    for value in values:
        message = _decode(out, value, message_type)
        if message is not None:
            found.append(message)
    return found


def _decode(out: Dump, value: Any, message_type: type[Message]) -> Message | None:
    if not isinstance(value, Mapping):
        return None
    body = {k: v for k, v in value.items() if k != "@type"}
    message = message_type()
    try:
        json_format.ParseDict(body, message, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        name = body.get("name") or body.get("cluster_name") or body.get("clusterName") or "?"
        out.problems.append(f"{message_type.DESCRIPTOR.name} {name}: {exc}")
        return None
    return message


def to_dict(message: Message) -> dict[str, Any]:
    """A resource as protobuf JSON (istioctl's -o json)."""
    return json_format.MessageToDict(message)


def warn_problems(dump: Dump) -> None:
    for problem in dump.problems:
        print(f"warning: cannot decode {problem}", file=sys.stderr)

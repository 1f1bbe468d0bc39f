"""Pilot's config dump of a proxy against the proxy's own (Envoy admin /config_dump), as istioctl's
comparator does it: per section (clusters, listeners, routes), the dynamic resources sorted by name with
versions and update times left out (virtual hosts sorted too), printed as indented JSON and diffed.
Endpoints are compared by what Envoy keeps of them (cluster, address, port, locality), since Envoy's
endpoint dump is rebuilt from its load balancer state rather than echoed.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime

from google.protobuf import json_format
from google.protobuf.message import Message

from pilot.tools.configdump import Dump

CONTEXT_LINES = 7  # istioctl's


@dataclass(frozen=True)
class SectionDiff:
    title: str  # "Clusters", "Listeners", "Routes", "Endpoints"
    diff: str  # unified diff text, empty when they match
    note: str = ""  # e.g. " (RDS last loaded at ...)"

    @property
    def matches(self) -> bool:
        return not self.diff

    def render(self) -> str:
        if self.matches:
            return f"{self.title} Match{self.note}"
        return f"{self.title} Don't Match{self.note}\n{self.diff}"


def canonical(messages: list[Message], *, sort_virtual_hosts: bool = False) -> list[str]:
    """Indented JSON lines of ``messages`` sorted by name (istioctl's GetDynamic*Dump with stripVersions)."""
    items = []
    for message in messages:
        value = json_format.MessageToDict(message)
        if sort_virtual_hosts and "virtualHosts" in value:
            value["virtualHosts"] = sorted(value["virtualHosts"], key=lambda vh: vh.get("name", ""))
        items.append(value)
    items.sort(key=lambda v: str(v.get("name") or v.get("clusterName") or ""))
    return json.dumps(items, indent=4, sort_keys=True).splitlines(keepends=True)


def endpoint_lines(dump: Dump) -> list[str]:
    rows = set()
    for assignment in dump.endpoints:
        for group in assignment.endpoints:
            locality = "/".join(p for p in (group.locality.region, group.locality.zone, group.locality.sub_zone) if p)
            for lb_endpoint in group.lb_endpoints:
                address = lb_endpoint.endpoint.address.socket_address
                rows.add(f"{assignment.cluster_name} {address.address}:{address.port_value} {locality}\n")
    return sorted(rows)


def _diff(title: str, pilot: list[str], envoy: list[str]) -> str:
    return "".join(
        difflib.unified_diff(pilot, envoy, fromfile=f"Pilot {title}", tofile=f"Envoy {title}", n=CONTEXT_LINES)
    )


def compare(pilot: Dump, envoy: Dump, *, endpoints: bool = False) -> list[SectionDiff]:
    out = [
        SectionDiff("Clusters", _diff("Clusters", canonical(pilot.clusters), canonical(envoy.clusters))),
        SectionDiff("Listeners", _diff("Listeners", canonical(pilot.listeners), canonical(envoy.listeners))),
    ]
    routes_diff = _diff(
        "Routes",
        canonical(pilot.routes, sort_virtual_hosts=True),
        canonical(envoy.routes, sort_virtual_hosts=True),
    )
    out.append(SectionDiff("Routes", routes_diff, _rds_note(envoy.routes_last_updated)))
    if endpoints and pilot.has_endpoints and envoy.has_endpoints:
        out.append(SectionDiff("Endpoints", _diff("Endpoints", endpoint_lines(pilot), endpoint_lines(envoy))))
    return out


def _rds_note(last_updated: str) -> str:
    if not last_updated:
        return ""
    try:
        when = datetime.fromisoformat(last_updated.replace("Z", "+00:00"))
    except ValueError:
        return f" (RDS last loaded at {last_updated})"
    return f" (RDS last loaded at {format_datetime(when.astimezone(), usegmt=False)})"

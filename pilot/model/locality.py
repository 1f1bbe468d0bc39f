"""Localities (``region/zone/subzone``) and the labels that carry them, as Istio reads them.

A locality is written ``region/zone/subzone`` (Envoy's ``Locality``); Kubernetes labels cannot hold ``/``, so
the ``istio-locality`` label uses dots (``us-east1.us-east1-b.rack1``), which Istio turns back into slashes.
Nodes (and, through their Node, Pods) carry ``topology.kubernetes.io/region`` / ``zone`` and
``topology.istio.io/subzone``; istiod copies a workload's locality into these labels (its AugmentLabels), so
``failoverPriority`` can name them on both sides.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

REGION_LABEL = "topology.kubernetes.io/region"
ZONE_LABEL = "topology.kubernetes.io/zone"
SUBZONE_LABEL = "topology.istio.io/subzone"
LOCALITY_LABEL = "topology.istio.io/locality"  # "region.zone.subzone", read before the legacy label
LEGACY_LOCALITY_LABEL = "istio-locality"
TOPOLOGY_LABELS = (REGION_LABEL, ZONE_LABEL, SUBZONE_LABEL)


class Locality(NamedTuple):
    region: str = ""
    zone: str = ""
    sub_zone: str = ""

    @classmethod
    def parse(cls, text: str) -> Locality:
        """``region/zone/subzone`` (istiod's SplitLocalityLabel: missing parts are empty, extra parts ignored)."""
        if not text:
            return EMPTY_LOCALITY
        parts = text.split("/")
        return cls(parts[0], parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else "")

    def __str__(self) -> str:
        """``region/zone/subzone`` without trailing empty parts; ``parse`` reads it back unchanged."""
        return "/".join(self).rstrip("/")

    def __bool__(self) -> bool:
        return any(self)


EMPTY_LOCALITY = Locality()


def sanitize_locality_label(value: str) -> str:
    """istiod's SanitizeLocalityLabel: a label value in dot form becomes ``region/zone/subzone``."""
    return value if "/" in value else value.replace(".", "/")


def locality_from_labels(labels: Mapping[str, str]) -> str:
    """The locality a workload's own labels give it (``topology.istio.io/locality``, else ``istio-locality``),
    in slash form; "" when neither is set (istiod's GetLocalityLabel + SanitizeLocalityLabel)."""
    value = labels.get(LOCALITY_LABEL) or labels.get(LEGACY_LOCALITY_LABEL) or ""
    return sanitize_locality_label(value) if value else ""


def with_topology(labels: Mapping[str, str], locality: Locality) -> Mapping[str, str]:
    """``labels`` plus the topology labels of ``locality`` (its non-empty parts win, as istiod's AugmentLabels).

    Only region, zone and subzone: pilot's model has no cluster ID, network or node name for endpoints, so
    adding them on the proxy side alone would make every endpoint differ from the proxy."""
    if not locality:
        return labels
    out = dict(labels)
    for label, value in zip(TOPOLOGY_LABELS, locality, strict=True):
        if value:
            out[label] = value
    return MappingProxyType(out)

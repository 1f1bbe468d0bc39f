"""Locality load balancing of an assignment, relative to the proxy that receives it (istiod's loadbalancer
package: ApplyLocalityLoadBalancer, applyLocalityWeights, applyLocalityFailover, applyFailoverPriorities).

Endpoints are grouped by locality (``group_endpoints``); a ``Balancer`` (the cluster's ``LocalityLb`` and the
proxy's locality and labels) then sets the groups' weights or priorities:

* ``distribute``: the first entry whose ``from`` matches the proxy's locality (``*`` wildcards) gives each
  ``to`` locality its weight, split over the groups it matches in proportion to their own weights (rounded
  up); groups no ``to`` matches keep no endpoints. No entry matching: the assignment is left as it is.
* ``failoverPriority`` (with outlier detection): each group is split by how many of the listed labels, in
  order, the endpoints share with the proxy (``label=value`` compares with that value instead); all
  matching is priority 0, a first mismatch at position j gives ``len - j``; a mismatched network label
  (``topology.istio.io/network`` listed first) is skipped and costs ``len``. Then ``failover`` regions apply
  as below.
* failover (with outlier detection): priority 0 for the proxy's region/zone/subzone, 1 for its
  region/zone, 2 for its region, 3 for other regions, or 4 for other regions than a ``failover`` rule's ``to``
  when one applies to the proxy's region; combined with earlier priorities (``5 * earlier + this``).

Priorities are then renumbered 0..N without gaps, as Envoy requires.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from envoy.config.cluster.v3 import cluster_pb2

from pilot.model.locality import Locality, locality_from_labels, with_topology
from pilot.model.proxy import Proxy
from pilot.model.service import Endpoint
from pilot.push.locality import FAILOVER_PRIORITY_SEPARATOR, LocalityLb

NETWORK_LABEL = "topology.istio.io/network"


@dataclass(frozen=True)
class Group:
    """One ``LocalityLbEndpoints``: endpoints of one locality at one priority, with the group's weight."""

    locality: Locality
    endpoints: tuple[Endpoint, ...]
    weight: int
    priority: int = 0


def endpoint_locality(endpoint: Endpoint) -> str:
    """The endpoint's locality: the registry's, else its own locality label (a WorkloadEntry's, a Pod's
    ``topology.istio.io/locality``)."""
    return endpoint.locality or locality_from_labels(endpoint.labels)


def endpoint_weight(endpoint: Endpoint) -> int:
    return endpoint.weight or 1


def group_endpoints(endpoints: Iterable[Endpoint]) -> list[Group]:
    """Endpoints grouped by locality (sorted), each group sorted by address and port, weighted by the sum of
    its endpoints' weights (1 when unset). Spellings of one locality ("r/z", "r/z/") make one group: Envoy
    rejects a locality listed twice at one priority."""
    by_locality: dict[str, list[Endpoint]] = {}
    for ep in endpoints:
        by_locality.setdefault(str(Locality.parse(endpoint_locality(ep))), []).append(ep)
    groups = []
    for locality in sorted(by_locality):
        members = tuple(sorted(by_locality[locality], key=lambda e: (e.address, e.port, e.weight)))
        groups.append(Group(Locality.parse(locality), members, sum(endpoint_weight(e) for e in members)))
    return groups


def locality_matches(locality: Locality, rule: str) -> bool:
    """istiod's LocalityMatch: ``rule`` is ``region[/zone[/subzone]]``, ``*`` matching anything; parts the
    rule leaves out match anything."""
    region, zone, sub_zone = Locality.parse(rule)
    return (
        (region == "*" or locality.region == region)
        and (zone in ("*", "") or locality.zone == zone)
        and (sub_zone in ("*", "") or locality.sub_zone == sub_zone)
    )


def locality_priority(proxy: Locality, endpoints: Locality) -> int:
    """istiod's LbPriority: 0 same subzone, 1 same zone, 2 same region, 3 elsewhere."""
    if proxy.region != endpoints.region:
        return 3
    if proxy.zone != endpoints.zone:
        return 2
    return 0 if proxy.sub_zone == endpoints.sub_zone else 1


@dataclass(frozen=True)
class Balancer:
    """A cluster's locality load balancing for one proxy (its locality and labels)."""

    lb: LocalityLb
    proxy_locality: Locality
    proxy_labels: Mapping[str, str]

    @classmethod
    def of(cls, lb: LocalityLb | None, proxy: Proxy) -> Balancer | None:
        """None when the setting leaves the assignments as they are."""
        if lb is None or not lb.shapes_endpoints:
            return None
        labels = with_topology(proxy.labels, proxy.locality) if lb.failover_priority else {}
        return cls(lb, proxy.locality, labels)

    def apply(self, groups: list[Group]) -> list[Group]:
        lb = self.lb
        if lb.distribute:
            return self._distribute(groups)
        if not lb.outlier_detection:
            return groups  # failover without outlier detection would never leave priority 0
        if lb.failover_priority:
            groups = self._failover_priority(groups)
            if lb.failover:
                groups = self._failover(groups)
            return groups
        return self._failover(groups)

    # ----- distribute -----

    def _distribute(self, groups: list[Group]) -> list[Group]:
        for source, targets in self.lb.distribute:
            if not locality_matches(self.proxy_locality, source):
                continue
            weights: dict[int, int] = {}
            unmatched = set(range(len(groups)))
            for target, weight in targets:  # validation rejects overlapping targets: order does not matter
                matched = [i for i in sorted(unmatched) if locality_matches(groups[i].locality, target)]
                unmatched.difference_update(matched)
                total = sum(groups[i].weight for i in matched)
                for i in matched:
                    share = groups[i].weight * weight / total
                    if share > 0:
                        weights[i] = math.ceil(share)
            out = []
            for i, group in enumerate(groups):
                if i in unmatched:
                    group = replace(group, endpoints=())  # istiod keeps the group, without endpoints
                elif i in weights:
                    group = replace(group, weight=weights[i])
                out.append(group)
            return out
        return groups

    # ----- failover -----

    def _failover(self, groups: list[Group]) -> list[Group]:
        proxy = self.proxy_locality
        prioritized = []
        for group in groups:
            priority = locality_priority(proxy, group.locality)
            if priority == 3:
                for source, target in self.lb.failover:
                    if source == proxy.region:
                        if group.locality.region != target:
                            priority = 4
                        break
            prioritized.append(replace(group, priority=group.priority * 5 + priority))
        return _renumbered(prioritized)

    def _failover_priority(self, groups: list[Group]) -> list[Group]:
        if not self.proxy_labels or not groups:
            return groups
        labels: list[str] = []
        overrides: dict[str, str] = {}
        for entry in self.lb.failover_priority:
            name, sep, value = entry.partition(FAILOVER_PRIORITY_SEPARATOR)
            labels.append(name)
            if sep:
                overrides[name] = value
        lowest = len(labels)
        network_first = bool(labels) and labels[0] == NETWORK_LABEL
        out: list[Group] = []
        for group in groups:
            locality = group.locality
            by_priority: dict[int, list[Endpoint]] = {}
            for ep in group.endpoints:
                ep_labels = with_topology(ep.labels, locality)
                priority = adjust = 0
                for j, name in enumerate(labels):
                    wanted = overrides[name] if name in overrides else self.proxy_labels.get(name, "")
                    if wanted != ep_labels.get(name, ""):
                        if j == 0 and network_first:
                            adjust = lowest  # another network: not a reason to stop comparing
                            continue
                        priority = lowest - j
                        break
                by_priority.setdefault(priority + adjust, []).append(ep)
            for priority in sorted(by_priority):
                members = tuple(by_priority[priority])
                weight = sum(endpoint_weight(e) for e in members)
                out.append(replace(group, endpoints=members, weight=weight, priority=priority))
        return _renumbered(out)


def _renumbered(groups: list[Group]) -> list[Group]:
    """Priorities 0..N in the same order, without gaps (Envoy rejects skipped priorities)."""
    rank = {priority: i for i, priority in enumerate(sorted({g.priority for g in groups}))}
    return [g if rank[g.priority] == g.priority else replace(g, priority=rank[g.priority]) for g in groups]


def apply_cluster_config(cluster: cluster_pb2.Cluster, lb: LocalityLb | None) -> None:
    """istiod's LocalityLBSettings.ApplyToCluster: locality weighted load balancing on the cluster for
    ``distribute``, and for ``failover``/``failoverPriority`` when outlier detection is on (set otherwise, it
    would skew other load balancer policies, as istiod notes)."""
    if lb is not None and lb.weighted_cluster:
        cluster.common_lb_config.locality_weighted_lb_config.SetInParent()

"""Which locality load balancing applies to a cluster, and what of the proxy it reads (istiod's
GetEffectiveLbSetting and the EDS builder's locality inputs).

The setting is the DestinationRule's ``trafficPolicy.loadBalancer.localityLbSetting`` (merged for the port and
subset as every traffic policy block), else the mesh's: Istio's default mesh config enables locality load
balancing with no explicit rules (pilot has no mesh config, so that default always applies). ``enabled:
false`` turns it off for the rule. It then shapes a proxy's endpoints only:

* with ``distribute``: locality weights for the first ``from`` matching the proxy's locality (outlier
  detection not needed);
* otherwise with outlier detection on the cluster (without it Envoy would never leave a failed priority):
  ``failoverPriority`` priorities by the proxy's labels, then ``failover`` region pairs; or, without
  ``failoverPriority``, priorities by region/zone/subzone match with ``failover`` pairs.

So a cluster's endpoints depend on the proxy's locality and on the values of its ``failoverPriority`` labels
only where such a setting applies. ``LocalityNeeds`` sums that up for a proxy class: what of the proxy must
tell classes apart (``PushContext.view_of``) and must key a cached assignment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pilot.model.config import Config
from pilot.model.locality import with_topology
from pilot.model.proxy import Proxy

FAILOVER_PRIORITY_SEPARATOR = "="  # "label=value": the value stands for the proxy's own


@dataclass(frozen=True)
class LocalityLb:
    """The effective locality load balancing of one cluster (never the disabled case: that is None)."""

    distribute: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = ()  # (from, ((to, weight), ...))
    failover: tuple[tuple[str, str], ...] = ()  # (from region, to region)
    failover_priority: tuple[str, ...] = ()  # "label" or "label=value"
    outlier_detection: bool = False  # failover needs it (istiod's enableFailover)

    @property
    def shapes_endpoints(self) -> bool:
        """Whether the setting changes the proxy's assignments at all."""
        return bool(self.distribute) or self.outlier_detection

    @property
    def reads_locality(self) -> bool:
        """Whether the assignments depend on the proxy's locality (distribute or locality failover)."""
        if self.distribute:
            return True
        return self.outlier_detection and (bool(self.failover) or not self.failover_priority)

    @property
    def priority_labels(self) -> tuple[str, ...]:
        """The proxy labels whose values the assignments depend on (``failoverPriority`` without overrides)."""
        if self.distribute or not self.outlier_detection:
            return ()
        return tuple(label for label in self.failover_priority if FAILOVER_PRIORITY_SEPARATOR not in label)

    @property
    def weighted_cluster(self) -> bool:
        """istiod sets the cluster's ``locality_weighted_lb_config`` for distribute, and for explicit failover
        rules when failover is on."""
        return bool(self.distribute) or (self.outlier_detection and bool(self.failover or self.failover_priority))

    @property
    def needs(self) -> LocalityNeeds:
        if not self.shapes_endpoints:
            return NO_NEEDS
        return LocalityNeeds(self.reads_locality, frozenset(self.priority_labels), bool(self.failover_priority))


def locality_lb(load_balancer: Any, outlier_detection: Any) -> LocalityLb | None:
    """The locality load balancing of a cluster with these merged traffic policy blocks; None when disabled."""
    setting = getattr(load_balancer, "locality_lb_setting", None) if load_balancer is not None else None
    outlier = outlier_detection is not None
    if setting is None:
        return LocalityLb(outlier_detection=outlier)  # the mesh default: enabled, no explicit rules
    if setting.enabled is False:
        return None
    return LocalityLb(
        distribute=tuple(
            (d.from_, tuple(sorted((str(k), int(v)) for k, v in (d.to or {}).items())))
            for d in setting.distribute or ()
        ),
        failover=tuple((f.from_, f.to) for f in setting.failover or ()),
        failover_priority=tuple(setting.failover_priority or ()),
        outlier_detection=outlier,
    )


@dataclass(frozen=True)
class LocalityNeeds:
    """What of a proxy some clusters' assignments read: its locality, and its values of some labels."""

    locality: bool = False
    labels: frozenset[str] = frozenset()
    # failoverPriority is used: istiod skips it for a proxy without any label, so that matters too
    any_labels: bool = False

    def __bool__(self) -> bool:
        return self.locality or self.any_labels

    def __or__(self, other: LocalityNeeds) -> LocalityNeeds:
        return LocalityNeeds(
            self.locality or other.locality, self.labels | other.labels, self.any_labels or other.any_labels
        )

    def of(self, proxy: Proxy) -> tuple[object, ...]:
        """The proxy's values for these needs: equal values give equal assignments."""
        if not self:
            return ()
        out: list[object] = [str(proxy.locality) if self.locality else None]
        if self.any_labels:
            labels = with_topology(proxy.labels, proxy.locality)
            out.append(bool(labels))
            out.extend((label, labels.get(label, "")) for label in sorted(self.labels))
        return tuple(out)


NO_NEEDS = LocalityNeeds()


def _port_level(policy: Any, port: int) -> Any:
    for settings in getattr(policy, "port_level_settings", None) or ():
        selector = getattr(settings, "port", None)
        if selector is not None and selector.number == port:
            return settings
    return None


def _blocks(policy: Any, port: int, base: tuple[Any, Any]) -> tuple[Any, Any]:
    """(load balancer, outlier detection) of ``policy`` over ``base``; port-level settings replace both
    (the same merge as ``pilot.xds.cds.effective_policy``)."""
    if policy is None:
        return base
    lb = policy.load_balancer if policy.load_balancer is not None else base[0]
    outlier = policy.outlier_detection if policy.outlier_detection is not None else base[1]
    per_port = _port_level(policy, port)
    if per_port is not None:
        return per_port.load_balancer, per_port.outlier_detection
    return lb, outlier


def rule_needs(rule: Config) -> LocalityNeeds:
    """What of a proxy the assignments of any cluster of this DestinationRule's host can read: every subset
    (and none) on every port its policies name (and any other port)."""
    spec = rule.spec
    policies = [spec.traffic_policy, *(s.traffic_policy for s in spec.subsets or ())]
    ports = {0} | {
        settings.port.number
        for policy in policies
        if policy is not None
        for settings in policy.port_level_settings or ()
        if settings.port is not None
    }
    subsets: list[Any] = [None, *(spec.subsets or ())]
    needs = NO_NEEDS
    for port in ports:
        top = _blocks(spec.traffic_policy, port, (None, None))
        for subset in subsets:
            lb, outlier = _blocks(subset.traffic_policy, port, top) if subset is not None else top
            found = locality_lb(lb, outlier)
            if found is not None:
                needs |= found.needs
    return needs

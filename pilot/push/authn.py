"""PeerAuthentication policies as istiod indexes and composes them (AuthenticationPolicies, ComposePeerAuthentication).

Three questions are answered:

* the mTLS mode of a namespace (``namespace_mode``): its namespace-level policy, else the mesh-level one (the
  root namespace's policy without selector), else UNKNOWN; an UNSET namespace policy inherits the mesh mode,
  or PERMISSIVE without one. Outbound auto-mTLS reads this for the destination service's namespace.
* the policy in effect for one workload (``effective``): mesh, then namespace, then the workload-level policy
  (a selector matching the workload's labels, in the workload's own namespace; selectors in the root
  namespace are ignored, as in istiod), each overriding the mode unless UNSET; port-level settings of the
  workload policy override the mode for their (target) port, UNSET ones inheriting the workload's mode.
  Without any policy the mode is PERMISSIVE. The inbound filter chains and EDS ``tlsMode`` metadata read it.
* which policies can change a proxy's config (``keys_in``), for push scopes and cache dependencies.

Whether a proxy can take part in mTLS at all (``has_workload_certificates``) is decided here too: Istio's node
agent serves every proxy its certificate over SDS, but a proxy bootstrapped without one (``pilot bootstrap``
without an SDS socket) would wait forever for secrets that never come, and keep the clusters and listeners
that name them warming. So pilot sends mTLS config only to proxies that show they have the agent: labelled
``security.istio.io/tlsMode: istio`` (Istio's injector labels every injected pod so; istiod's grpc generator
reads the label the same way) or sending the agent's ``ISTIO_VERSION`` metadata.

Among several namespace-level (or mesh-level) policies of one namespace, and several workload policies that
select one workload, istiod keeps the oldest; config keys stand for creation order here (as for merged
DestinationRules), so the first in key order wins.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pilot.config.convert import enum_name
from pilot.model.config import Config, ConfigKey
from pilot.model.proxy import Proxy
from pilot.model.service import labels_match

# The label Istio's injector puts on pods with a sidecar; endpoints carry it to their clients (auto-mTLS).
TLS_MODE_LABEL = "security.istio.io/tlsMode"
TLS_MODE_ISTIO = "istio"
AGENT_METADATA = "ISTIO_VERSION"  # every istio-agent sends it


def has_workload_certificates(proxy: Proxy) -> bool:
    """Whether the proxy gets Istio's workload certificates (SDS ``default`` and ``ROOTCA``) from an agent."""
    return proxy.labels.get(TLS_MODE_LABEL) == TLS_MODE_ISTIO or bool(proxy.metadata.get(AGENT_METADATA))


class MtlsMode(enum.IntEnum):
    """istiod's model.MutualTLSMode."""

    UNKNOWN = 0
    DISABLE = 1
    PERMISSIVE = 2
    STRICT = 3


_BY_NAME = {"DISABLE": MtlsMode.DISABLE, "PERMISSIVE": MtlsMode.PERMISSIVE, "STRICT": MtlsMode.STRICT}


def spec_mode(mtls: object) -> MtlsMode:
    """A PeerAuthentication ``MutualTLS`` message's mode; UNKNOWN for unset or UNSET."""
    if mtls is None:
        return MtlsMode.UNKNOWN
    return _BY_NAME.get(enum_name(getattr(mtls, "mode", None)), MtlsMode.UNKNOWN)


@dataclass(frozen=True)
class MergedPeerAuthentication:
    """The policy in effect for one workload: a mode, overridden per workload port."""

    mode: MtlsMode = MtlsMode.PERMISSIVE
    per_port: tuple[tuple[int, MtlsMode], ...] = ()  # sorted by port

    def mode_for_port(self, port: int) -> MtlsMode:
        for number, mode in self.per_port:
            if number == port:
                return mode
        return self.mode


def _has_selector(cfg: Config) -> bool:
    selector = cfg.spec.selector
    return selector is not None and bool(selector.match_labels)


_MEMO_LIMIT = 4096  # namespace sets remembered; the index outlives pushes while no policy changes


@dataclass(eq=False)
class AuthnPolicies:
    """Every PeerAuthentication, indexed by namespace (istiod's AuthenticationPolicies)."""

    root_namespace: str
    by_namespace: Mapping[str, tuple[Config, ...]]
    namespace_modes: Mapping[str, MtlsMode]  # from namespace-level policies only
    global_mode: MtlsMode  # from the mesh-level policy; UNKNOWN without one
    _effective_memo: dict[tuple[str, tuple[tuple[str, str], ...]], MergedPeerAuthentication] = field(
        default_factory=dict
    )
    # Per namespace set (cluster units ask once per service): the index is immutable, so answers never change.
    _keys_memo: dict[frozenset[str], frozenset[ConfigKey]] = field(default_factory=dict)
    _version_memo: dict[frozenset[str], tuple[tuple[ConfigKey, int], ...]] = field(default_factory=dict)

    @classmethod
    def build(cls, configs: Sequence[Config], root_namespace: str) -> AuthnPolicies:
        """From the PeerAuthentications in key order (which stands for creation order)."""
        by_namespace: dict[str, list[Config]] = {}
        seen_namespace_level: set[str] = set()
        namespace_raw: dict[str, MtlsMode] = {}
        global_mode = MtlsMode.UNKNOWN
        for cfg in configs:
            if not _has_selector(cfg):
                if cfg.namespace in seen_namespace_level:
                    continue  # istiod keeps only the oldest namespace/mesh-level policy of a namespace
                seen_namespace_level.add(cfg.namespace)
                mode = spec_mode(cfg.spec.mtls)
                if cfg.namespace == root_namespace:
                    global_mode = MtlsMode.PERMISSIVE if mode is MtlsMode.UNKNOWN else mode
                else:
                    namespace_raw[cfg.namespace] = mode
            by_namespace.setdefault(cfg.namespace, []).append(cfg)
        inherited = MtlsMode.PERMISSIVE if global_mode is MtlsMode.UNKNOWN else global_mode
        namespace_modes = {ns: inherited if m is MtlsMode.UNKNOWN else m for ns, m in namespace_raw.items()}
        return cls(root_namespace, {k: tuple(v) for k, v in by_namespace.items()}, namespace_modes, global_mode)

    def namespace_mode(self, namespace: str) -> MtlsMode:
        """istiod's GetNamespaceMutualTLSMode: namespace-level, else mesh-level, else UNKNOWN."""
        return self.namespace_modes.get(namespace, self.global_mode)

    def for_workload(self, namespace: str, labels: Mapping[str, str]) -> list[Config]:
        """The policies that may apply to a workload: those of its namespace and of the root namespace whose
        selector (if any) its labels satisfy (istiod's GetPeerAuthenticationsForWorkload)."""
        out: list[Config] = []
        for ns in dict.fromkeys((namespace, self.root_namespace)):
            for cfg in self.by_namespace.get(ns, ()):
                selector = cfg.spec.selector
                if selector is None or labels_match(selector.match_labels, labels):
                    out.append(cfg)
        return out

    def effective(self, namespace: str, labels: Mapping[str, str]) -> MergedPeerAuthentication:
        """The composed policy for a workload (istiod's ComposePeerAuthentication), memoized per labels."""
        key = (namespace, tuple(sorted(labels.items())))
        found = self._effective_memo.get(key)
        if found is None:
            if len(self._effective_memo) >= _MEMO_LIMIT:
                self._effective_memo.clear()
            found = self._effective_memo[key] = compose(self.root_namespace, self.for_workload(namespace, labels))
        return found

    def keys_in(self, namespaces: Iterable[str]) -> frozenset[ConfigKey]:
        """The policies of these namespaces (those that can change config built for them)."""
        wanted = frozenset(namespaces)
        found = self._keys_memo.get(wanted)
        if found is None:
            found = frozenset(cfg.key for ns in wanted for cfg in self.by_namespace.get(ns, ()))
            if len(self._keys_memo) >= _MEMO_LIMIT:
                self._keys_memo.clear()
            self._keys_memo[wanted] = found
        return found

    def version_of(self, namespaces: Iterable[str]) -> tuple[tuple[ConfigKey, int], ...]:
        """Identity and content of the policies of these namespaces: a cache key part (istiod's authn version)."""
        wanted = frozenset(namespaces)
        found = self._version_memo.get(wanted)
        if found is None:
            found = tuple(sorted((cfg.key, cfg.content_hash) for ns in wanted for cfg in self.by_namespace.get(ns, ())))
            if len(self._version_memo) >= _MEMO_LIMIT:
                self._version_memo.clear()
            self._version_memo[wanted] = found
        return found


def compose(root_namespace: str, configs: Iterable[Config]) -> MergedPeerAuthentication:
    """istiod's ComposePeerAuthentication over the policies applying to one workload (in creation order)."""
    mesh: Config | None = None
    namespace: Config | None = None
    workload: Config | None = None
    for cfg in configs:
        if not _has_selector(cfg):
            if cfg.namespace == root_namespace:
                mesh = mesh or cfg
            else:
                namespace = namespace or cfg
        elif cfg.namespace != root_namespace:
            workload = workload or cfg
    mode = MtlsMode.PERMISSIVE
    for chosen in (mesh, namespace, workload):
        if chosen is not None and spec_mode(chosen.spec.mtls) is not MtlsMode.UNKNOWN:
            mode = spec_mode(chosen.spec.mtls)
    per_port: list[tuple[int, MtlsMode]] = []
    if workload is not None:
        for port, mtls in sorted(workload.spec.port_level_mtls.items()):
            port_mode = spec_mode(mtls)
            per_port.append((int(port), mode if port_mode is MtlsMode.UNKNOWN else port_mode))
    return MergedPeerAuthentication(mode, tuple(per_port))

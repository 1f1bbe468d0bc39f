"""Delegate VirtualServices merged into their roots, with istiod's rules (pilot/pkg/model/virtualservice.go and
virtualservice_controller.go ``mergeVirtualServices``).

A root VirtualService (one with hosts) may replace an HTTP route by ``delegate: {name, namespace}``: the route is
then the delegate's routes, each match being the root's match AND the delegate's (``merge_matches``); a delegate
route whose matches cannot all be narrowed from some root match is dropped with a warning (``has_conflict``).
Fields a delegate route leaves unset come from the root route (``merge_route``). A delegate is a VirtualService
without hosts (validation forbids gateways, tcp and tls on it, and delegation inside it), looked up in the
root's namespace unless the reference names one, and used only if its exportTo lets the root's namespace see it.

Pure functions over the Istio API messages; nothing here mutates its inputs (configs are shared).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pilot.api.istio.networking.v1alpha3 import Destination, HttpMatchRequest, HttpRoute, StringMatch
from pilot.model.config import VIRTUAL_SERVICE, Config, ConfigKey
from pilot.model.host import resolve_gateway_name, resolve_short_name


@dataclass(frozen=True)
class MergedVirtualService:
    """A root VirtualService with its delegate routes merged in.

    ``delegates`` lists every delegate the root names, found or not: a change to any of them (creating a missing
    one, fixing its exportTo) can change the merged routes. ``problems`` are the warnings of the merge.
    """

    config: Config
    delegates: tuple[ConfigKey, ...] = ()
    problems: tuple[str, ...] = ()


def is_delegate(cfg: Config) -> bool:
    """A VirtualService without hosts only serves as a delegate; it never routes on its own."""
    return not cfg.spec.hosts


def merge_virtual_service(
    root: Config, find: Callable[[ConfigKey], Config | None], domain_suffix: str
) -> MergedVirtualService:
    """istiod's mergeVirtualServices for one root: delegate routes replace the routes that name them.

    ``find`` looks up any VirtualService by key. A missing delegate, one with hosts (a root, so no delegate),
    one not exported to the root's namespace, and conflicting matches drop those routes and are reported.
    """
    spec = root.spec
    if not any(http.delegate is not None for http in spec.http):
        return MergedVirtualService(root)
    root_name = f"{root.namespace}/{root.name}"
    routes: list[HttpRoute] = []
    delegates: list[ConfigKey] = []
    problems: list[str] = []
    content = [root.content_hash]  # the merged object changes with every delegate merged into it
    for index, http in enumerate(spec.http):
        if http.delegate is None:
            routes.append(http)
            continue
        key = ConfigKey(VIRTUAL_SERVICE, http.delegate.namespace or root.namespace, http.delegate.name)
        if key not in delegates:
            delegates.append(key)
        delegate_name = f"{key.namespace}/{key.name}"
        found = find(key)
        if found is None:
            problems.append(f"delegate virtual service {delegate_name} of {root_name} not found")
            continue
        if not is_delegate(found):
            problems.append(
                f"delegate virtual service {delegate_name} of {root_name} not found: "
                "a VirtualService with hosts is a root, not a delegate"
            )
            continue
        if not _exported_to(found, root.namespace):
            problems.append(
                f"delegate virtual service {delegate_name} of {root_name} is not exported to {root.namespace}"
            )
            continue
        content.append(found.content_hash)
        root_route = _with_resolved_gateways(http, root.namespace)
        for sub_index, sub in enumerate(found.spec.http):
            if sub.delegate is not None:  # validation rejects this; only one level of delegation exists
                problems.append(f"delegate virtual service {delegate_name} http[{sub_index}] delegates again: dropped")
                continue
            merged = merge_route(root_route, resolve_delegate_route(sub, key.namespace, domain_suffix))
            if merged is None:
                problems.append(
                    f"HTTPMatchRequests conflict: root route {_route_label(http, index)} of {root_name}, "
                    f"delegate route {_route_label(sub, sub_index)} of {delegate_name}: the delegate route is dropped"
                )
                continue
            routes.append(merged)
    merged_root = dataclasses.replace(
        root, spec=dataclasses.replace(spec, http=routes), content_hash=hash(tuple(content))
    )
    return MergedVirtualService(merged_root, tuple(delegates), tuple(problems))


def _route_label(http: HttpRoute, index: int) -> str:
    return f"http[{index}] {http.name!r}" if http.name else f"http[{index}]"


def _exported_to(cfg: Config, namespace: str) -> bool:
    """exportTo as istiod's convertExportToSet reads it: unset or '*' for all, '.' for its own namespace."""
    export_to: Sequence[str] = cfg.spec.export_to or ()
    if not export_to:
        return True
    return any(t == "*" or t == namespace or (t == "." and cfg.namespace == namespace) for t in export_to)


# ----- resolution (istiod's ResolveVirtualServiceShortnames, for delegate routes) -----


def resolve_delegate_route(http: HttpRoute, namespace: str, domain_suffix: str) -> HttpRoute:
    """A delegate route with its short destination hosts and match gateways resolved in the delegate's own
    namespace, so that the merged route means the same inside the root (which may live elsewhere)."""

    def host(dest: Destination | None) -> Destination | None:
        if dest is None or not dest.host:
            return dest
        return dataclasses.replace(dest, host=resolve_short_name(dest.host, namespace, domain_suffix))

    resolved = _with_resolved_gateways(http, namespace)
    return dataclasses.replace(
        resolved,
        route=[dataclasses.replace(d, destination=host(d.destination)) for d in http.route],
        mirror=host(http.mirror),
        mirrors=[dataclasses.replace(m, destination=host(m.destination)) for m in http.mirrors],
    )


def _with_resolved_gateways(http: HttpRoute, namespace: str) -> HttpRoute:
    if not any(m.gateways for m in http.match):
        return http
    matches = [
        dataclasses.replace(m, gateways=[resolve_gateway_name(g, namespace) for g in m.gateways]) if m.gateways else m
        for m in http.match
    ]
    return dataclasses.replace(http, match=matches)


# ----- merging (istiod's mergeHTTPRoute, mergeHTTPMatchRequests, mergeHTTPMatchRequest) -----

# HTTPRoute fields a delegate route inherits from the root route when it leaves them unset.
_INHERITED_ROUTE_FIELDS = (
    "rewrite",
    "direct_response",
    "timeout",
    "retries",
    "fault",
    "mirror",
    "mirror_percent",
    "mirror_percentage",
    "cors_policy",
    "headers",
)


def merge_route(root: HttpRoute, delegate: HttpRoute) -> HttpRoute | None:
    """One delegate route under its root route, or None when their matches conflict."""
    matches = merge_matches(root.match, delegate.match)
    if matches is None:
        return None
    changes: dict[str, object] = {"match": matches, "name": _joined_name(root.name, delegate.name)}
    for name in _INHERITED_ROUTE_FIELDS:
        if getattr(delegate, name) is None:
            changes[name] = getattr(root, name)
    if not delegate.mirrors:
        changes["mirrors"] = list(root.mirrors)
    return dataclasses.replace(delegate, **changes)  # type: ignore[arg-type]


def _joined_name(root: str, delegate: str) -> str:
    if not delegate:
        return root
    return f"{root}-{delegate}" if root else delegate


def merge_matches(
    root: Sequence[HttpMatchRequest], delegate: Sequence[HttpMatchRequest]
) -> list[HttpMatchRequest] | None:
    """Every delegate match ANDed with every root match it does not conflict with; None (a conflict) when some
    delegate match conflicts with all root matches. No matches on either side means the other side's."""
    if not root:
        return list(delegate)
    if not delegate:
        return list(root)
    out: list[HttpMatchRequest] = []
    for sub in delegate:
        narrowed = [merge_match(parent, sub) for parent in root if not has_conflict(parent, sub)]
        if not narrowed:
            return None
        out.extend(narrowed)
    return out


def merge_match(root: HttpMatchRequest, delegate: HttpMatchRequest) -> HttpMatchRequest:
    """The delegate match with what it leaves unset taken from the root; maps are joined, the delegate's
    entries winning."""
    return dataclasses.replace(
        delegate,
        name=_joined_name(root.name, delegate.name),
        uri=delegate.uri if delegate.uri is not None else root.uri,
        scheme=delegate.scheme if delegate.scheme is not None else root.scheme,
        method=delegate.method if delegate.method is not None else root.method,
        authority=delegate.authority if delegate.authority is not None else root.authority,
        headers={**root.headers, **delegate.headers},
        without_headers={**root.without_headers, **delegate.without_headers},
        query_params={**root.query_params, **delegate.query_params},
        port=delegate.port or root.port,
        source_labels={**root.source_labels, **delegate.source_labels},
        source_namespace=delegate.source_namespace or root.source_namespace,
        gateways=list(delegate.gateways or root.gateways),
        stat_prefix=delegate.stat_prefix or root.stat_prefix,
    )


def has_conflict(root: HttpMatchRequest, leaf: HttpMatchRequest) -> bool:
    """istiod's hasConflict: whether the delegate match ``leaf`` cannot narrow the root match."""
    for attr in ("uri", "scheme", "method", "authority"):
        if string_match_conflict(getattr(root, attr), getattr(leaf, attr)):
            return True
    for attr in ("headers", "without_headers", "query_params"):
        parents: Mapping[str, StringMatch] = getattr(root, attr)
        for key, value in getattr(leaf, attr).items():
            if string_match_conflict(parents.get(key), value):
                return True
    if root.ignore_uri_case != leaf.ignore_uri_case:
        return True
    if root.port and leaf.port and root.port != leaf.port:
        return True
    if root.source_namespace and leaf.source_namespace != root.source_namespace:
        return True
    for key, value in leaf.source_labels.items():
        if key in root.source_labels and root.source_labels[key] != value:
            return True
    if root.gateways and leaf.gateways:
        # The root must allow every gateway the delegate names.
        if len(root.gateways) < len(leaf.gateways) or not set(leaf.gateways) <= set(root.gateways):
            return True
    return False


def string_match_conflict(root: StringMatch | None, leaf: StringMatch | None) -> bool:
    """istiod's stringMatchConflict: a regex on either side admits nothing else on the other; an exact root
    admits only the same exact value; a prefix root admits prefixes and exact values under it."""
    if root is None or leaf is None:
        return False
    root_exact, root_prefix, root_regex = root.exact or "", root.prefix or "", root.regex or ""
    leaf_exact, leaf_prefix, leaf_regex = leaf.exact or "", leaf.prefix or "", leaf.regex or ""
    if root_regex and (leaf_regex or leaf_prefix or leaf_exact):
        return True
    if leaf_regex and (root_regex or root_prefix or root_exact):
        return True
    if root_exact:
        return bool(leaf_prefix) or leaf_exact != root_exact
    if root_prefix:
        if leaf_prefix:
            return not leaf_prefix.startswith(root_prefix)
        if leaf_exact:
            return not leaf_exact.startswith(root_prefix)
    return True

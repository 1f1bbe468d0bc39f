"""Incremental (Delta) xDS on one stream, with no I/O (shared/notes/xds-protocol-and-peers.md §1.6, §6).

* Subscriptions: ``resource_names_subscribe`` / ``_unsubscribe``; LDS and CDS are wildcard with ``*`` or when
  the first request of the type subscribes nothing (legacy), and stay wildcard across reconnects.
* Subscription changes apply even when the request's nonce is stale; the nonce only correlates ACKs.
* ``initial_resource_versions`` (first request per type on a reconnected stream) is what the client holds:
  unchanged resources are not resent, resources that no longer exist are listed in ``removed_resources``.
* Every newly subscribed name is sent, even when the client seems to hold its latest version.
* ``removed_resources`` only ever names a resource the client held: never a name that simply does not exist
  (yet), such as an EDS cluster whose service has no endpoints or has not been seen (go-control-plane #488).
* Responses carry only what changed; a NACK is recorded and not answered by resending: what the client
  refused is quarantined and the rest sent again (``pilot.xds.quarantine``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection
from types import MappingProxyType

from envoy.service.discovery.v3 import discovery_pb2

from pilot.xds.names import WILDCARD_TYPES
from pilot.xds.protocol import Decision, Outgoing, RequestKind, StreamMachine, TypeState
from pilot.xds.resource import delta_response
from pilot.xds.snapshot import EMPTY_VERSIONS, NameSet, Snapshot, Versions

PROTOCOL = "delta"


class DeltaStream(StreamMachine):
    protocol = PROTOCOL

    # ----- inbound -----

    def on_request(self, request: discovery_pb2.DeltaDiscoveryRequest) -> Decision:
        type_url = request.type_url
        state = self.types.get(type_url)
        first = state is None or not state.requested
        if state is None:
            state = self.types[type_url] = TypeState()
        subscribe = list(request.resource_names_subscribe)
        unsubscribe = list(request.resource_names_unsubscribe)
        respond = False

        if first:
            state.requested = True
            state.holds = _initial_versions(request)
            if type_url in WILDCARD_TYPES and ("*" in subscribe or not (subscribe or unsubscribe)):
                state.wildcard = True
            respond = True
        changed = self._apply_subscription(state, subscribe, unsubscribe, first)
        respond = respond or changed
        if first:
            # Versions listed for names outside a named subscription are not ours to update or remove.
            state.restrict_holds()

        nonce = request.response_nonce
        if not nonce:
            kind = RequestKind.INITIAL if first else RequestKind.SUBSCRIBE
            return Decision(kind, type_url, respond=respond)
        if nonce != state.sent_nonce:
            return Decision(RequestKind.STALE, type_url, respond=respond)
        state.acked_nonce = nonce
        if request.HasField("error_detail"):
            message = request.error_detail.message or f"code {request.error_detail.code}"
            state.last_error = message
            state.nacks += 1
            held_back, owed = self._rejected(state, message)
            respond = respond or owed
            return Decision(RequestKind.NACK, type_url, respond=respond, error=message, quarantined=held_back)
        state.acked_version = state.sent_version
        state.last_error = ""
        self._accepted(state)
        return Decision(RequestKind.ACK, type_url, respond=respond)

    @staticmethod
    def _apply_subscription(state: TypeState, subscribe: list[str], unsubscribe: list[str], first: bool) -> bool:
        """Apply (un)subscriptions; returns whether a response is owed."""
        if not subscribe and not unsubscribe:
            return False  # the common ACK
        owed = False
        if "*" in subscribe and not state.wildcard:
            state.wildcard = True
            owed = True
        if "*" in unsubscribe and state.wildcard:
            state.wildcard = False
        added = [n for n in subscribe if n != "*"]
        removed = [n for n in unsubscribe if n != "*"]
        if added:
            owed = True
            if not first and any(name in state.holds for name in added):
                # The client may have dropped what it asks for again: send it even if it seems current.
                holds = dict(state.holds)
                for name in added:
                    holds.pop(name, None)
                state.holds = holds
        if removed:
            if any(name in state.holds for name in removed):
                holds = dict(state.holds)
                for name in removed:
                    holds.pop(name, None)
                state.holds = holds
            if state.wildcard:
                owed = True  # unsubscribing a name the wildcard still covers needs a reply with it
        if added or removed:
            names = set(state.names.names)
            names.update(added)
            names.difference_update(removed)
            state.names = NameSet.of(names)
        if "*" in unsubscribe and not state.wildcard:
            state.holds = state.names.restrict(state.holds)
        return owed

    # ----- outbound -----

    def respond(
        self,
        type_url: str,
        snapshot: Snapshot,
        version: str,
        *,
        force: bool = False,
        force_names: Collection[str] = (),
        now: float = 0.0,
    ) -> Outgoing | None:
        """The changes that bring the client from what it holds to ``snapshot``, or None when none.

        ``force`` answers even with nothing to send (a first wildcard request); ``force_names`` resends
        those names although unchanged.
        """
        state = self.types.setdefault(type_url, TypeState())
        snapshot = self._effective(state, snapshot)
        diff = snapshot.diff(state.holds)
        extra = self._forced(snapshot, force_names)
        changed = diff.changed
        if extra:
            have = {r.name for r in changed}
            changed = changed + tuple(r for r in extra if r.name not in have)
        if not (changed or diff.removed or force):
            return None
        memo = diff.encoded.get(PROTOCOL) if not extra else None
        (nonce, _, body), new = self._encoded(
            state, memo, version, lambda n: delta_response(type_url, version, n, changed, diff.removed)
        )
        if new and not extra:
            diff.encoded[PROTOCOL] = (nonce, version, body)
        self._sent(state, snapshot, nonce, version, now)
        return Outgoing(type_url, body, nonce, version, changed, diff.removed, tuple(r.name for r in diff.changed))


# Reconnecting proxies of one class send identical initial_resource_versions (thousands of entries): build the
# mapping once per distinct request content and share it, so a reconnect storm costs one conversion per class,
# one diff per class (memoized on the snapshot) and no per-proxy copy of thousands of versions.
_INTERNED_MAX = 256
_interned: OrderedDict[int, Versions] = OrderedDict()


def _initial_versions(request: discovery_pb2.DeltaDiscoveryRequest) -> Versions:
    if not request.initial_resource_versions:
        return EMPTY_VERSIONS
    key = _content_digest(request)
    found = _interned.get(key)
    if found is None:
        found = MappingProxyType(dict(request.initial_resource_versions))
        _interned[key] = found
        if len(_interned) > _INTERNED_MAX:
            _interned.popitem(last=False)
    else:
        _interned.move_to_end(key)
    return found


def _content_digest(request: discovery_pb2.DeltaDiscoveryRequest) -> int:
    """A digest of the request's type, subscriptions and versions (not its node or nonce)."""
    copy = discovery_pb2.DeltaDiscoveryRequest(
        type_url=request.type_url,
        resource_names_subscribe=request.resource_names_subscribe,
        initial_resource_versions=request.initial_resource_versions,
    )
    return hash(copy.SerializeToString(deterministic=True))

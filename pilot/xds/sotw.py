"""State-of-the-world xDS on one stream (ADS, or one type per stream), with no I/O.

Rules followed (shared/notes/xds-protocol-and-peers.md §1 and §6):

* a NACK is recognised by ``error_detail``; it is recorded and never answered by resending the same
  resources: what the client refused is quarantined (``pilot.xds.quarantine``) and the rest of the update
  is sent again without it; a quarantined resource is retried when its content changes;
* a request whose ``response_nonce`` is not the last nonce sent for that type is stale and ignored,
  including any subscription change it carries: the client repeats its full name list in the next request;
* an empty nonce (first request for a type, or after reconnect) is always answered;
* an ACK is answered only if it subscribes to names the client did not have;
* LDS and CDS are wildcard when the client asks for ``*`` or has never named a resource; RDS and EDS are
  always by name; names asked for before they exist stay subscribed and are sent once they appear;
* LDS and CDS responses carry the complete set (absence deletes); RDS and EDS responses carry only what
  changed or was newly subscribed (SotW has no deletion for them);
* a push sends a type only if what the client should hold differs from what it was sent, except names
  forced (EDS of clusters just updated by CDS: Envoy keeps an updated cluster warming until it gets its
  endpoints again, even if unchanged).
"""

from __future__ import annotations

from collections.abc import Collection

from envoy.service.discovery.v3 import discovery_pb2

from pilot.xds.names import WILDCARD_TYPES
from pilot.xds.protocol import Decision, Outgoing, RequestKind, StreamMachine, TypeState
from pilot.xds.resource import sotw_response
from pilot.xds.snapshot import EMPTY_VERSIONS, NameSet, Snapshot

PROTOCOL = "sotw"


class SotwStream(StreamMachine):
    protocol = PROTOCOL

    # ----- inbound -----

    def on_request(self, request: discovery_pb2.DiscoveryRequest) -> Decision:
        type_url = request.type_url
        state = self.types.setdefault(type_url, TypeState())
        nonce = request.response_nonce

        if nonce and nonce != state.sent_nonce:
            return Decision(RequestKind.STALE, type_url, respond=False)

        if request.HasField("error_detail"):
            message = request.error_detail.message or f"code {request.error_detail.code}"
            state.last_error = message
            state.acked_nonce = nonce  # the client answered this nonce, with a rejection
            state.nacks += 1
            # The rest of the rejected update is sent again without what the client refused.
            held_back, owed = self._rejected(state, message) if nonce else ((), False)
            return Decision(RequestKind.NACK, type_url, respond=owed, error=message, quarantined=held_back)

        was_wildcard, previous = state.wildcard, state.names
        self._update_subscription(type_url, state, request)
        state.requested = True
        if not nonce:
            state.holds = EMPTY_VERSIONS  # a new stream or a restarted type: the client holds nothing of ours
            return Decision(RequestKind.INITIAL, type_url, respond=True)
        state.acked_nonce = nonce
        state.acked_version = request.version_info
        state.last_error = ""
        self._accepted(state)
        if state.wildcard:
            return Decision(RequestKind.ACK, type_url, respond=not was_wildcard)  # widened to everything
        added = was_wildcard or (state.names is not previous and bool(state.names.names - previous.names))
        return Decision(RequestKind.ACK, type_url, respond=added)

    def _update_subscription(self, type_url: str, state: TypeState, request: discovery_pb2.DiscoveryRequest) -> None:
        names = request.resource_names
        if type_url in WILDCARD_TYPES and ("*" in names or (not names and not state.extra.get("ever_named"))):
            state.wildcard = True
            state.names = NameSet.of(n for n in names if n != "*")
            if state.names.names:
                state.extra["ever_named"] = True
            return
        if names:
            state.extra["ever_named"] = True
        if not state.wildcard and len(names) == len(state.names):
            # Envoy repeats its whole name list in every ACK (thousands of EDS names). Comparing a digest of
            # the encoded list costs a fraction of turning every name into a Python string.
            signature = _names_signature(request)
            if signature == state.extra.get("names_signature"):
                return
        else:
            signature = _names_signature(request)
        state.extra["names_signature"] = signature
        new_names = _by_signature.get(signature)
        if new_names is None:
            new_names = NameSet.of(names)
            _by_signature[signature] = new_names
            if len(_by_signature) > _BY_SIGNATURE_MAX:
                _by_signature.pop(next(iter(_by_signature)))
        if not state.wildcard and new_names is state.names:
            return  # same set in another order or encoding
        state.wildcard = False
        state.names = new_names
        state.restrict_holds()

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
        """What to send for one type given what the client should hold, or None when it has it already.

        ``force`` sends everything (answering an initial wildcard request, even when empty);
        ``force_names`` resends those names although unchanged.
        """
        state = self.types.setdefault(type_url, TypeState())
        snapshot = self._effective(state, snapshot)
        diff = snapshot.diff(state.holds)
        extra = self._forced(snapshot, force_names)
        if type_url in WILDCARD_TYPES or force:
            # The complete set: LDS/CDS always (absence deletes), or everything when forced.
            if not (force or diff or extra):
                state.holds = snapshot.versions
                return None
            blob = snapshot.blob
            (nonce, _, body), new = self._encoded(
                state, snapshot.full_encoded(PROTOCOL), version, lambda n: sotw_response(type_url, version, n, blob())
            )
            if new:
                snapshot.remember_full(PROTOCOL, (nonce, version, body))
            sent = tuple(snapshot.resources.values())
        else:
            sent = diff.changed
            if extra:
                have = {r.name for r in sent}
                sent = sent + tuple(r for r in extra if r.name not in have)
            if not sent:
                state.holds = snapshot.versions
                return None
            memo = diff.encoded.get(PROTOCOL) if not extra else None
            chosen = sent
            (nonce, _, body), new = self._encoded(
                state,
                memo,
                version,
                lambda n: sotw_response(type_url, version, n, b"".join(r.sotw_field for r in chosen)),
            )
            if new and not extra:
                diff.encoded[PROTOCOL] = (nonce, version, body)
        self._sent(state, snapshot, nonce, version, now)
        return Outgoing(type_url, body, nonce, version, sent, changed=tuple(r.name for r in diff.changed))


# Name lists seen lately, by signature: the streams of one proxy class send the same list, and its set (and
# host index) is then built once instead of once per stream.
_BY_SIGNATURE_MAX = 1024
_by_signature: dict[int, NameSet] = {}


def _names_signature(request: discovery_pb2.DiscoveryRequest) -> int:
    """A digest of the request's name list (and type): the request encoded without its per-ACK fields."""
    nonce, version = request.response_nonce, request.version_info
    request.response_nonce = request.version_info = ""
    has_node = request.HasField("node")
    node = None
    if has_node:
        node = discovery_pb2.DiscoveryRequest(node=request.node).node
        request.ClearField("node")
    try:
        return hash(request.SerializeToString(deterministic=True))
    finally:
        request.response_nonce, request.version_info = nonce, version
        if node is not None:
            request.node.CopyFrom(node)

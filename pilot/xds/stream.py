"""Per-stream state of an ADS (state-of-the-world) stream, with no I/O.

The grpclib handler feeds every ``DiscoveryRequest`` to :meth:`StreamState.on_request` and asks
:meth:`StreamState.prepare_response` for what to send; tests drive this object directly.

Rules followed (see shared/notes/xds-protocol-and-peers.md §1 and §6):

* a NACK is recognised by ``error_detail``; it is recorded and never answered by resending the same
  resources (the client keeps its last good version until the config changes);
* a request whose ``response_nonce`` is not the last nonce sent for that type is stale and ignored,
  including any subscription change it carries: the client repeats its full name list in the next request;
* an empty nonce (first request for a type, or after reconnect) is always answered;
* an ACK is answered only if it subscribes to names the client did not ask for before;
* LDS and CDS are wildcard when the client asks for ``*`` or has never named a resource; RDS and EDS are
  always by name; names asked for before they exist stay subscribed and are sent once they appear;
* a push sends a type only if its resources differ from what this stream last sent, except when forced
  (EDS after any CDS change, since Envoy keeps updated clusters warming until it gets endpoints again).
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from pilot.xds.names import WILDCARD_TYPES


class RequestKind(enum.Enum):
    INITIAL = "initial"  # empty nonce: first request of this type on the stream
    ACK = "ack"
    NACK = "nack"
    STALE = "stale"  # nonce does not match the last one sent: ignored


@dataclass(frozen=True)
class Decision:
    kind: RequestKind
    type_url: str
    respond: bool
    # Names that became subscribed with this request (for named types); an initial request lists all.
    added: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Resource:
    """One generated resource, already packed; ``digest`` identifies its content."""

    name: str
    packed: any_pb2.Any
    digest: int

    @classmethod
    def of(cls, name: str, message: object) -> Resource:
        packed = any_pb2.Any()
        packed.Pack(message)  # type: ignore[arg-type]
        return cls(name, packed, hash(packed.value))


@dataclass
class TypeState:
    """What one xDS type on this stream subscribes to, was sent and has acknowledged."""

    wildcard: bool = False
    names: frozenset[str] = frozenset()
    ever_named: bool = False  # legacy rule: empty list means wildcard until names were ever given
    sent_nonce: str = ""
    sent_version: str = ""
    sent_time: float = 0.0
    acked_nonce: str = ""
    acked_version: str = ""
    last_error: str = ""  # error_detail of the last NACK, cleared by the next ACK
    # Content the client was last sent, by resource name (what it holds, if it accepted it).
    sent: dict[str, int] = field(default_factory=dict)
    requested: bool = False  # the client has sent at least one request of this type

    def wants(self, name: str) -> bool:
        return self.wildcard or name in self.names


class StreamState:
    def __init__(self, nonce_prefix: str = "") -> None:
        self.types: dict[str, TypeState] = {}
        self._nonces = itertools.count(1)
        self._nonce_prefix = nonce_prefix

    # ----- inbound -----

    def on_request(self, request: discovery_pb2.DiscoveryRequest) -> Decision:
        type_url = request.type_url
        state = self.types.setdefault(type_url, TypeState())
        nonce = request.response_nonce

        if nonce and nonce != state.sent_nonce:
            return Decision(RequestKind.STALE, type_url, respond=False)

        if request.HasField("error_detail"):
            state.last_error = request.error_detail.message or f"code {request.error_detail.code}"
            state.acked_nonce = nonce  # the client answered this nonce, with a rejection
            return Decision(RequestKind.NACK, type_url, respond=False)

        previous = state.names if not state.wildcard else None
        self._update_subscription(type_url, state, request.resource_names)
        state.requested = True

        if not nonce:
            return Decision(RequestKind.INITIAL, type_url, respond=True, added=state.names)

        state.acked_nonce = nonce
        state.acked_version = request.version_info
        state.last_error = ""
        if state.wildcard:
            # A switch to wildcard widens the subscription: send the full set.
            return Decision(RequestKind.ACK, type_url, respond=previous is not None)
        added = state.names - (previous or frozenset())
        if previous is None:
            added = state.names  # wildcard → named: resend what is named
        return Decision(RequestKind.ACK, type_url, respond=bool(added), added=added)

    def _update_subscription(self, type_url: str, state: TypeState, names: Iterable[str]) -> None:
        name_set = frozenset(names)
        if type_url in WILDCARD_TYPES:
            if "*" in name_set or (not name_set and not state.ever_named):
                state.wildcard = True
                state.names = name_set - {"*"}
                if state.names:
                    state.ever_named = True
                return
            state.ever_named = True
        state.wildcard = False
        state.names = name_set
        # Names the client dropped are no longer on its side (named types have no deletion signal).
        for gone in [n for n in state.sent if n not in name_set]:
            del state.sent[gone]

    # ----- outbound -----

    def watched(self, type_url: str) -> bool:
        state = self.types.get(type_url)
        return state is not None and state.requested and (state.wildcard or bool(state.names))

    def subscription(self, type_url: str) -> tuple[bool, frozenset[str]]:
        """(wildcard, names) currently subscribed for a type."""
        state = self.types.get(type_url)
        if state is None:
            return False, frozenset()
        return state.wildcard, state.names

    def prepare_response(
        self,
        type_url: str,
        resources: Iterable[Resource],
        version: str,
        *,
        only: Iterable[str] | None = None,
        force: bool = False,
        now: float = 0.0,
    ) -> discovery_pb2.DiscoveryResponse | None:
        """Build the response to send for one type, or None when the client already has it all.

        ``resources`` is everything that exists for the subscription (the generator's output).
        For wildcard types the full set is always sent when anything differs (SotW: absence deletes).
        For named types only changed resources are sent, or the names in ``only`` (newly subscribed),
        or all of them when ``force``.
        """
        state = self.types.setdefault(type_url, TypeState())
        current: Mapping[str, Resource] = {r.name: r for r in resources if state.wants(r.name)}
        if type_url in WILDCARD_TYPES:
            # LDS/CDS: every response carries the complete set (a missing name means deleted).
            digests = {n: r.digest for n, r in current.items()}
            if not (force or only is not None or digests != state.sent):
                return None
            to_send = list(current.values())
            state.sent = digests
        else:
            # Names that no longer exist must be sent again if they come back.
            for gone in [n for n in state.sent if n not in current]:
                del state.sent[gone]
            wanted = frozenset(only) if only is not None else frozenset()
            to_send = [r for r in current.values() if force or r.name in wanted or state.sent.get(r.name) != r.digest]
            if not to_send:
                return None
            for r in to_send:
                state.sent[r.name] = r.digest
        nonce = f"{self._nonce_prefix}{next(self._nonces)}"
        state.sent_nonce = nonce
        state.sent_version = version
        state.sent_time = now
        response = discovery_pb2.DiscoveryResponse(version_info=version, type_url=type_url, nonce=nonce)
        response.resources.extend(r.packed for r in sorted(to_send, key=lambda r: r.name))
        return response

"""What the SotW and Delta stream state machines share: request kinds, decisions, outgoing responses, the
per-type status the debug endpoints read, and nonces.

Both machines (``pilot.xds.sotw``, ``pilot.xds.delta``) do no I/O: ``on_request`` takes a parsed request and
returns a ``Decision``; ``respond`` takes the ``Snapshot`` a proxy should hold and returns the ``Outgoing``
bytes to send, or None. Transports (grpclib ADS, per-type gRPC services, REST) only read, call and write.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from pilot.xds import quarantine
from pilot.xds.resource import Resource
from pilot.xds.snapshot import EMPTY_NAMES, EMPTY_VERSIONS, Encoded, NameSet, Snapshot, Versions

# Nonces come from one counter per process: unique on every stream, and one response body (with its
# nonce) can be sent unchanged to every stream that needs exactly it.
_nonces = itertools.count(1)


def next_nonce() -> str:
    return format(next(_nonces), "x")


class RequestKind(enum.Enum):
    INITIAL = "initial"  # first request of this type on the stream
    ACK = "ack"
    NACK = "nack"
    STALE = "stale"  # nonce does not match the last one sent
    SUBSCRIBE = "subscribe"  # Delta: a subscription change without a nonce


@dataclass(frozen=True)
class Decision:
    kind: RequestKind
    type_url: str
    respond: bool
    error: str = ""  # a NACK's error_detail message
    quarantined: tuple[str, ...] = ()  # NACK: the resources now held back from this stream (see pilot.xds.quarantine)


@dataclass(frozen=True, eq=False)
class Outgoing:
    type_url: str
    body: bytes  # the serialised DiscoveryResponse / DeltaDiscoveryResponse
    nonce: str
    version: str
    resources: tuple[Resource, ...]
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()  # names whose content differs from what the client held

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.resources]


@dataclass
class TypeState:
    """One type on one stream: its subscription, what the client was last sent, and its acknowledgements."""

    wildcard: bool = False
    names: NameSet = EMPTY_NAMES  # explicitly subscribed names
    requested: bool = False  # the client has sent at least one request of this type
    holds: Versions = field(
        default_factory=lambda: EMPTY_VERSIONS
    )  # name -> version of what the client was sent (or, Delta, told us it has)
    sent_nonce: str = ""
    sent_version: str = ""
    sent_time: float = 0.0
    acked_nonce: str = ""
    acked_version: str = ""
    last_error: str = ""  # error_detail of the last NACK, cleared by the next ACK
    nacks: int = 0
    sent: int = 0  # responses sent
    extra: dict[str, object] = field(default_factory=dict)
    # NACK quarantine (pilot.xds.quarantine): what the last response brought the client to and what it held
    # before it, the snapshot of the last response it accepted, and the resources it rejected (name -> the
    # version it refused), which the stream keeps serving at the version the client holds.
    sent_snapshot: Snapshot | None = None
    before_send: Versions = field(default_factory=lambda: EMPTY_VERSIONS)
    accepted: Snapshot | None = None
    quarantine: dict[str, str] = field(default_factory=dict)

    def subscribed(self, name: str) -> bool:
        return self.wildcard or name in self.names

    def restrict_holds(self) -> None:
        """Forget held resources the client no longer subscribes to, so re-subscribing resends them."""
        if not self.wildcard:
            self.holds = self.names.restrict(self.holds)


class StreamMachine:
    """What the SotW and Delta machines share: per-type state, subscriptions, and responses built once.

    A response body carries its nonce, so one encoded body (memoized on a snapshot or a diff) is sent as is to
    every stream in the same position, unless the stream was just sent that very nonce.
    """

    protocol = ""

    def __init__(self) -> None:
        self.types: dict[str, TypeState] = {}

    def watched(self, type_url: str) -> bool:
        state = self.types.get(type_url)
        return state is not None and state.requested and (state.wildcard or bool(state.names))

    def subscription(self, type_url: str) -> NameSet | None:
        """The names subscribed for a type, or None for a wildcard subscription."""
        state = self.types.get(type_url)
        if state is None or state.wildcard:
            return None
        return state.names

    @staticmethod
    def _forced(snapshot: Snapshot, force_names: Collection[str]) -> list[Resource]:
        return [snapshot.resources[n] for n in force_names if n in snapshot.resources] if force_names else []

    def _encoded(
        self, state: TypeState, memo: Encoded | None, version: str, build: Callable[[str], bytes]
    ) -> tuple[Encoded, bool]:
        """(nonce, version, body) to send: the memoized one if this stream can take it, else a new one
        (second value: whether it is new, so the caller can memoize it)."""
        if memo is not None and memo[0] != state.sent_nonce and memo[1] == version:
            return memo, False
        nonce = next_nonce()
        return (nonce, version, build(nonce)), True

    @staticmethod
    def _accepted(state: TypeState) -> None:
        """The client ACKed the last response: what it brought is what the client now runs."""
        state.accepted = state.sent_snapshot

    @staticmethod
    def _rejected(state: TypeState, message: str) -> tuple[tuple[str, ...], bool]:
        """The client NACKed the last response: it keeps what it held before. Quarantine what that response
        brought and the client refused; returns those names, and whether the rest of that response is owed
        to the client again (it held other changes)."""
        sent = state.sent_snapshot
        if sent is None:
            return (), False
        state.holds = state.before_send
        held_back, others = quarantine.culprits(message, sent.versions, state.before_send, state.quarantine)
        for name in held_back:
            state.quarantine[name] = sent.versions[name]
        return held_back, others

    @staticmethod
    def _effective(state: TypeState, snapshot: Snapshot) -> Snapshot:
        """``snapshot`` as this stream may send it: quarantined resources at the version the client holds."""
        if not state.quarantine:
            return snapshot
        sources = (state.sent_snapshot, state.accepted)
        return quarantine.patched(snapshot, state.quarantine, state.holds, sources, state.extra)

    @staticmethod
    def _sent(state: TypeState, snapshot: Snapshot, nonce: str, version: str, now: float) -> None:
        state.before_send = state.holds
        state.sent_snapshot = snapshot
        state.holds = snapshot.versions
        state.sent_nonce = nonce
        state.sent_version = version
        state.sent_time = now
        state.sent += 1

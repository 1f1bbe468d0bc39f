"""Generated resources as encoded bytes, and xDS responses assembled from them without re-encoding.

A ``Resource`` is serialised once, when it is generated: its ``google.protobuf.Any`` bytes, and from those
the field bytes it takes inside a SotW ``DiscoveryResponse`` (``resources``) and inside a Delta
``DeltaDiscoveryResponse`` (a ``Resource`` wrapper with name and version). Protobuf messages are
concatenations of fields, so a response is the concatenation of those pre-encoded fields plus a few short
per-response fields (version, type, nonce); the gRPC codec then passes the bytes through
(go-control-plane's RawResponse). Many proxies receive byte-identical responses built once.

``version`` is a digest of the resource's bytes (blake2b), so it is stable across processes and restarts:
a Delta client reconnecting to another worker with ``initial_resource_versions`` is recognised as up to date.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from google.protobuf.message import Message

# Field numbers (envoy/service/discovery/v3/discovery.proto, google/protobuf/any.proto).
_ANY_TYPE_URL, _ANY_VALUE = 1, 2
_SOTW_VERSION, _SOTW_RESOURCES, _SOTW_TYPE_URL, _SOTW_NONCE = 1, 2, 4, 5
_DELTA_SYSTEM_VERSION, _DELTA_RESOURCES, _DELTA_TYPE_URL, _DELTA_NONCE, _DELTA_REMOVED = 1, 2, 4, 5, 6
_RESOURCE_VERSION, _RESOURCE_BODY, _RESOURCE_NAME = 1, 2, 3


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_field(number: int, payload: bytes) -> bytes:
    """One length-delimited field (wire type 2): tag, length, payload."""
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def string_field(number: int, text: str) -> bytes:
    return length_field(number, text.encode()) if text else b""


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


class Resource:
    """One generated resource, encoded once and shared by every proxy that receives it."""

    __slots__ = ("_delta_field", "any_bytes", "name", "sotw_field", "type_url", "value", "version")

    def __init__(self, name: str, type_url: str, value: bytes) -> None:
        self.name = name
        self.type_url = type_url
        self.value = value
        self.version = digest(value)
        self.any_bytes = string_field(_ANY_TYPE_URL, type_url) + length_field(_ANY_VALUE, value)
        self.sotw_field = length_field(_SOTW_RESOURCES, self.any_bytes)
        self._delta_field: bytes | None = None

    @classmethod
    def of(cls, name: str, message: Message) -> Resource:
        return cls(name, "type.googleapis.com/" + message.DESCRIPTOR.full_name, message.SerializeToString())

    @property
    def delta_field(self) -> bytes:
        """This resource as one ``resources`` entry of a DeltaDiscoveryResponse (built on first use)."""
        if self._delta_field is None:
            wrapper = (
                string_field(_RESOURCE_VERSION, self.version)
                + length_field(_RESOURCE_BODY, self.any_bytes)
                + string_field(_RESOURCE_NAME, self.name)
            )
            self._delta_field = length_field(_DELTA_RESOURCES, wrapper)
        return self._delta_field

    def decode(self, message_type: type[Any]) -> Any:
        return message_type.FromString(self.value)

    def __repr__(self) -> str:
        return f"Resource({self.name!r}, {self.version})"


def sotw_response(type_url: str, version: str, nonce: str, resources_blob: bytes) -> bytes:
    """A serialised DiscoveryResponse whose ``resources`` are the pre-encoded ``resources_blob``."""
    return (
        string_field(_SOTW_VERSION, version)
        + resources_blob
        + string_field(_SOTW_TYPE_URL, type_url)
        + string_field(_SOTW_NONCE, nonce)
    )


def delta_response(
    type_url: str, system_version: str, nonce: str, resources: Iterable[Resource], removed: Iterable[str]
) -> bytes:
    """A serialised DeltaDiscoveryResponse."""
    parts = [string_field(_DELTA_SYSTEM_VERSION, system_version)]
    parts.extend(r.delta_field for r in resources)
    parts.append(string_field(_DELTA_TYPE_URL, type_url))
    parts.append(string_field(_DELTA_NONCE, nonce))
    parts.extend(length_field(_DELTA_REMOVED, name.encode()) for name in removed)
    return b"".join(parts)

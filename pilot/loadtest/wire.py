"""xDS names on the wire, the pass-through codec and the client's h2 trace fix."""

from __future__ import annotations

import binascii
from typing import Any

from grpclib.encoding.base import CodecBase

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
TYPES = (CDS, EDS, LDS, RDS)  # also the order Envoy asks for them and istiod pushes them
TYPE_INDEX = {t: i for i, t in enumerate(TYPES)}
SHORT = ("cds", "eds", "lds", "rds")  # by TYPE_INDEX
WILDCARD = "*"

SOTW_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
DELTA_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
PROTOCOLS = ("sotw", "delta")


class RawCodec(CodecBase):
    """Messages cross as bytes: received payloads are returned undecoded, and bytes are sent as they are.

    Clients decode responses themselves (once per distinct content, see ``decode``); the transport floor
    sends pre-encoded responses without encoding anything per send, as go-control-plane's RawResponse does.
    Protobuf messages handed to ``encode`` are serialised as usual.
    """

    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        if isinstance(message, bytes | bytearray | memoryview):
            return bytes(message)
        return message.SerializeToString()  # type: ignore[no-any-return]

    def decode(self, data: bytes, message_type: Any) -> bytes:
        return data


def _short_raw_data_repr(data: bytes | None) -> str:
    if not data:
        return "None"
    r = binascii.hexlify(data[:11]).decode("ascii")
    return "<hex:" + (r[:20] + "..." if len(r) > 20 else r) + ">"


def _data_frame_body_repr(frame: Any) -> str:
    return _short_raw_data_repr(frame.data[:11])


def quiet_h2_frame_repr() -> None:
    """Client processes only: h2 formats ``repr(frame)`` for a trace log on every received frame, logging
    on or off (``H2Connection._receive_frame``), and hyperframe's repr re-serialises a DATA frame's body (a
    copy of the payload) and hexlifies all of it only to keep its first 20 hex digits. The same string (less
    a padding-length byte, for padded frames) from the first 11 bytes of the data: ~15 % of a client's CPU.

    Not applied to the transport floor, which must pay what pilot pays.
    """
    import hyperframe.frame

    hyperframe.frame._raw_data_repr = _short_raw_data_repr  # type: ignore[attr-defined]
    hyperframe.frame.DataFrame._body_repr = _data_frame_body_repr  # type: ignore[method-assign]

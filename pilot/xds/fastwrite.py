"""Write a small gRPC message on a grpclib server stream at once, when that cannot block.

An endpoint change sends one small ClusterLoadAssignment to thousands of streams. Through grpclib's awaitable
``send_message`` each costs a task wake-up and a generic chunking loop; most can instead be written in one
step: the stream is open, the transport is not paused and the message fits in one DATA frame within the
stream's flow-control window. Anything else (and any surprise) returns False, and the caller takes the
normal awaitable path, so a slow proxy still only ever blocks its own stream.

This reads grpclib's stream internals (pinned to grpclib 0.4.x in pyproject.toml); tests exercise both paths.
"""

from __future__ import annotations

import struct
import time
from typing import Any

import h2.exceptions

_HEADER = struct.Struct(">?I")  # gRPC message prefix: compressed flag, length


def try_send(server_stream: Any, body: bytes) -> bool:
    """Send ``body`` (a serialised message) now if it cannot block; False means nothing was written."""
    try:
        if not server_stream._send_initial_metadata_done:
            return False
        stream = server_stream._stream
        connection = stream.connection
        if not connection.write_ready.is_set():
            return False
        h2_connection = stream._h2_connection
        size = _HEADER.size + len(body)
        if size > h2_connection.max_outbound_frame_size or size > h2_connection.local_flow_control_window(stream.id):
            return False
        h2_connection.send_data(stream.id, _HEADER.pack(False, len(body)) + body)
        stream._transport.write(h2_connection.data_to_send())
    except (AttributeError, h2.exceptions.H2Error):
        return False
    stream.data_sent += size
    connection.data_sent += size
    connection.data_send_process()
    server_stream._messages_sent += 1
    connection.messages_sent += 1
    connection.last_message_sent = time.monotonic()
    return True

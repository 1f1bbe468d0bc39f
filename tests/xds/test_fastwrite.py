"""fastwrite.try_send on a real grpclib stream: it writes only what cannot block, and what it writes is a
normal gRPC message to the client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpclib.client
import grpclib.const
import grpclib.server
import pytest
from envoy.service.discovery.v3 import discovery_pb2
from grpclib.config import Configuration

from pilot.xds import fastwrite
from pilot.xds.server import RawCodec

METHOD = "/test.Fast/Stream"


class FastService:
    """Answers the first request with try_send results for messages of the sizes it asks for."""

    def __init__(self) -> None:
        self.results: list[bool] = []
        self.done = asyncio.Event()
        self.release = asyncio.Event()

    async def handle(self, stream: grpclib.server.Stream) -> None:
        request = await stream.recv_message()
        assert request is not None
        await stream.send_initial_metadata()
        for size in (int(n) for n in request.resource_names):
            body = discovery_pb2.DiscoveryResponse(version_info="x" * size).SerializeToString()
            self.results.append(fastwrite.try_send(stream, body))
        self.done.set()
        await self.release.wait()

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return {
            METHOD: grpclib.const.Handler(
                self.handle,
                grpclib.const.Cardinality.STREAM_STREAM,
                discovery_pb2.DiscoveryRequest,
                discovery_pb2.DiscoveryResponse,
            )
        }


@pytest.fixture
async def served() -> AsyncIterator[tuple[FastService, int]]:
    service = FastService()
    server = grpclib.server.Server([service], codec=RawCodec())
    await server.start("127.0.0.1", 0)
    port = server._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield service, port
    finally:
        service.release.set()
        server.close()
        await server.wait_closed()


async def test_writes_what_fits_and_refuses_what_could_block(served: tuple[FastService, int]) -> None:
    service, port = served
    # The client's stream window is 65535 bytes (the HTTP/2 minimum); it reads nothing until the server is done.
    config = Configuration(http2_connection_window_size=1 << 20, http2_stream_window_size=65535)
    channel = grpclib.client.Channel("127.0.0.1", port, config=config)
    try:
        async with channel.request(
            METHOD,
            grpclib.const.Cardinality.STREAM_STREAM,
            discovery_pb2.DiscoveryRequest,
            discovery_pb2.DiscoveryResponse,
        ) as stream:
            # 16000 fits four times in the window, not a fifth; 20000 is more than one DATA frame (16384).
            sizes = ["16000", "16000", "16000", "16000", "16000", "100", "20000"]
            await stream.send_message(discovery_pb2.DiscoveryRequest(resource_names=sizes))
            await asyncio.wait_for(service.done.wait(), 5)
            assert service.results == [True, True, True, True, False, True, False]
            got = [await asyncio.wait_for(stream.recv_message(), 5) for _ in range(5)]
            assert [len(m.version_info) for m in got if m is not None] == [16000, 16000, 16000, 16000, 100]
            service.release.set()
            await stream.cancel()
    finally:
        channel.close()


def test_h2_tuning_keeps_frame_flags_and_repr_behaviour() -> None:
    from hyperframe.frame import DataFrame, HeadersFrame

    from pilot.xds import h2tuning

    h2tuning.install()
    frame = DataFrame(1, data=b"x" * 100)
    frame.flags.add("END_STREAM")
    assert "END_STREAM" in frame.flags and repr(frame).endswith("<hex:78787878787878787878...>")
    with pytest.raises(ValueError, match="Unexpected flag"):
        frame.flags.add("END_HEADERS")  # valid for HEADERS, not DATA: the per-class sets stay apart
    headers = HeadersFrame(1)
    headers.flags.add("END_HEADERS")
    assert list(headers.flags) == ["END_HEADERS"] and list(DataFrame(3).flags) == []

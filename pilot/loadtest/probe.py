"""Whether a server speaks Delta ADS, asked the way a proxy would (one stream, one wildcard CDS request)."""

from __future__ import annotations

import asyncio

import grpclib.client
import grpclib.const
import grpclib.exceptions
from envoy.service.discovery.v3 import discovery_pb2

from pilot.loadtest.wire import CDS, DELTA_METHOD, WILDCARD, RawCodec

PROBE_NODE = "sidecar~10.255.255.254~loadtest-probe.default~default.svc.cluster.local"


async def delta_unsupported(host: str, port: int, timeout: float = 5.0) -> str | None:
    """None when the server answers a Delta CDS request; otherwise why not (e.g. ``UNIMPLEMENTED: …``)."""
    channel = grpclib.client.Channel(host, port, codec=RawCodec())
    try:
        async with asyncio.timeout(timeout):
            async with channel.request(
                DELTA_METHOD,
                grpclib.const.Cardinality.STREAM_STREAM,
                discovery_pb2.DeltaDiscoveryRequest,
                discovery_pb2.DeltaDiscoveryResponse,
            ) as stream:
                request = discovery_pb2.DeltaDiscoveryRequest(type_url=CDS, resource_names_subscribe=[WILDCARD])
                request.node.id = PROBE_NODE
                await stream.send_message(request)
                if await stream.recv_message() is None:
                    return "the stream ended without a response"
                await stream.cancel()
                return None
    except grpclib.exceptions.GRPCError as exc:
        return f"{exc.status.name}: {exc.message}"
    except TimeoutError:
        return f"no Delta response within {timeout:g} s"
    except OSError as exc:
        return f"cannot connect: {exc}"
    finally:
        channel.close()

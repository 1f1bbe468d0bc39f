"""A minimal ADS client whose acknowledgements the test controls: it subscribes to every cluster (CDS
wildcard), records each response, and ACKs it only while ``acking`` is set, so a test can make pilot see a
proxy that stops acknowledging (STALE) and then catches up."""

from __future__ import annotations

import asyncio
import contextlib

import grpclib.client
import grpclib.const
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2

ADS_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"


class ManualAckProxy:
    def __init__(self, port: int, name: str, namespace: str = "default") -> None:
        self.port = port
        self.short_id = f"{name}.{namespace}"
        self.node = discovery_pb2.DiscoveryRequest().node
        self.node.id = f"sidecar~10.250.9.9~{name}.{namespace}~{namespace}.svc.cluster.local"
        self.node.metadata.CopyFrom(struct_pb2.Struct(fields={"NAMESPACE": struct_pb2.Value(string_value=namespace)}))
        self.acking = asyncio.Event()
        self.acking.set()
        self.responses: list[discovery_pb2.DiscoveryResponse] = []
        self._unacked: discovery_pb2.DiscoveryResponse | None = None
        self._stream: grpclib.client.Stream | None = None
        self._task: asyncio.Task[None] | None = None
        self._channel: grpclib.client.Channel | None = None

    async def start(self) -> None:
        self._channel = grpclib.client.Channel("127.0.0.1", self.port)
        self._task = asyncio.create_task(self._run(), name=f"manual-ack-{self.short_id}")

    async def _run(self) -> None:
        assert self._channel is not None
        request = self._channel.request(
            ADS_METHOD,
            grpclib.const.Cardinality.STREAM_STREAM,
            discovery_pb2.DiscoveryRequest,
            discovery_pb2.DiscoveryResponse,
        )
        async with request as stream:
            self._stream = stream
            await stream.send_message(discovery_pb2.DiscoveryRequest(node=self.node, type_url=CLUSTER_TYPE))
            while True:
                response = await stream.recv_message()
                if response is None:
                    return
                self.responses.append(response)
                self._unacked = response
                if self.acking.is_set():
                    await self.ack()

    async def ack(self) -> None:
        """ACK the newest response not yet acknowledged (if any)."""
        response, self._unacked = self._unacked, None
        if response is not None and self._stream is not None:
            await self._stream.send_message(
                discovery_pb2.DiscoveryRequest(
                    type_url=response.type_url, version_info=response.version_info, response_nonce=response.nonce
                )
            )

    async def resume(self) -> None:
        self.acking.set()
        await self.ack()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._channel is not None:
            self._channel.close()

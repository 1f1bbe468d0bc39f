"""A simulated Envoy for the Kubernetes tests: a grpclib SotW ADS client that subscribes as Envoy does
(CDS wildcard, then EDS for every EDS cluster it was given, LDS wildcard, then RDS for the given route
names), ACKs everything, keeps what it holds and records the type of every response in order."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import grpclib.client
import grpclib.exceptions
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2

from pilot.xds.names import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from tests.xds.test_ads_protocol import ads_request

SHORT = {CLUSTER_TYPE: "cds", ENDPOINT_TYPE: "eds", LISTENER_TYPE: "lds", ROUTE_TYPE: "rds"}


class Proxy:
    def __init__(
        self,
        port: int,
        *,
        name: str = "app-1",
        namespace: str = "default",
        routes: tuple[str, ...] = ("80",),
        node_type: str = "sidecar",
        labels: dict[str, str] | None = None,
        ip: str = "10.250.0.1",  # no endpoint of the tests has it: the proxy is a client only (no inbound)
    ) -> None:
        self.port = port
        self.node_id = f"{node_type}~{ip}~{name}.{namespace}~{namespace}.svc.cluster.local"
        self.labels = dict(labels or {})
        self.namespace = namespace
        self.route_names = routes
        self.clusters: dict[str, cluster_pb2.Cluster] = {}
        self.endpoints: dict[str, list[str]] = {}  # cluster -> "address:port" of healthy endpoints
        self.listeners: set[str] = set()
        self.listener_configs: dict[str, listener_pb2.Listener] = {}
        self.routes: dict[str, route_pb2.RouteConfiguration] = {}
        self.received: list[str] = []  # "cds" / "eds" / "lds" / "rds", in arrival order
        self.versions: dict[str, str] = {}  # type -> last version_info
        self.connected_to: list[int] = []  # ports, one per (re)connection
        self.streams = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stream: grpclib.client.Stream | None = None
        self._eds_names: tuple[str, ...] = ()
        self.error: BaseException | None = None

    # ----- lifecycle -----

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"proxy-{self.node_id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def reconnect_to(self, port: int) -> None:
        """Where the next connection goes (the current stream is left as it is)."""
        self.port = port

    async def _run(self) -> None:
        while True:
            channel = grpclib.client.Channel("127.0.0.1", self.port)
            try:
                await self._session(channel)
            except (grpclib.exceptions.GRPCError, grpclib.exceptions.StreamTerminatedError, OSError) as exc:
                self.error = exc
            except Exception as exc:  # a bug here must show in the test's failure message, not vanish
                self.error = exc
                raise
            finally:
                channel.close()
            await asyncio.sleep(0.05)  # as Envoy's reconnect backoff, bounded by the test's deadline

    async def _session(self, channel: grpclib.client.Channel) -> None:
        async with ads_request(channel) as stream:
            self._stream = stream
            self.streams += 1
            self.connected_to.append(self.port)
            self._eds_names = ()
            first = discovery_pb2.DiscoveryRequest(type_url=CLUSTER_TYPE)
            first.node.id = self.node_id
            first.node.metadata.update({"NAMESPACE": self.namespace, "LABELS": self.labels})
            await stream.send_message(first)
            await stream.send_message(discovery_pb2.DiscoveryRequest(type_url=LISTENER_TYPE))
            await stream.send_message(
                discovery_pb2.DiscoveryRequest(type_url=ROUTE_TYPE, resource_names=list(self.route_names))
            )
            while True:
                response = await stream.recv_message()
                if response is None:
                    return
                await self._apply(stream, response)

    async def _apply(self, stream: grpclib.client.Stream, response: discovery_pb2.DiscoveryResponse) -> None:
        short = SHORT[response.type_url]
        self.received.append(short)
        self.versions[short] = response.version_info
        names: tuple[str, ...] = ()
        if short == "cds":
            self.clusters = {}
            for any_msg in response.resources:
                cluster = cluster_pb2.Cluster()
                any_msg.Unpack(cluster)
                self.clusters[cluster.name] = cluster
            names = tuple(sorted(n for n, c in self.clusters.items() if c.type == cluster_pb2.Cluster.EDS))
        elif short == "eds":
            for any_msg in response.resources:
                cla = endpoint_pb2.ClusterLoadAssignment()
                any_msg.Unpack(cla)
                self.endpoints[cla.cluster_name] = sorted(
                    f"{lb.endpoint.address.socket_address.address}:{lb.endpoint.address.socket_address.port_value}"
                    for group in cla.endpoints
                    for lb in group.lb_endpoints
                )
            names = self._eds_names
        elif short == "lds":
            self.listeners = set()
            self.listener_configs = {}
            for any_msg in response.resources:
                listener = listener_pb2.Listener()
                any_msg.Unpack(listener)
                self.listeners.add(listener.name)
                self.listener_configs[listener.name] = listener
            names = ()
        else:
            for any_msg in response.resources:
                rc = route_pb2.RouteConfiguration()
                any_msg.Unpack(rc)
                self.routes[rc.name] = rc
            names = self.route_names
        ack = discovery_pb2.DiscoveryRequest(
            type_url=response.type_url,
            version_info=response.version_info,
            response_nonce=response.nonce,
            resource_names=list(names) if short in ("eds", "rds") else [],  # CDS and LDS stay wildcard
        )
        await stream.send_message(ack)
        if short == "cds" and names != self._eds_names:
            self._eds_names = names
            for gone in set(self.endpoints) - set(names):
                del self.endpoints[gone]
            request = discovery_pb2.DiscoveryRequest(type_url=ENDPOINT_TYPE, resource_names=list(names))
            await stream.send_message(request)
        self._changed.set()

    # ----- waiting -----

    async def wait(self, predicate: Callable[[Proxy], object], within: float = 5.0, what: str = "condition") -> None:
        """Until ``predicate(self)`` holds, with a deadline."""
        deadline = time.monotonic() + within
        while not predicate(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{self.node_id}: timed out after {within:g}s waiting for {what}; received {self.received[-12:]}, "
                    f"clusters {sorted(self.clusters)}, endpoints {self.endpoints}, last error {self.error!r}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):  # woken by a response; polled for predicates on pilot's state
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.02))

    def mark(self) -> int:
        return len(self.received)

    def since(self, mark: int) -> list[str]:
        return self.received[mark:]

    def route_timeout(self, route_name: str = "80", host: str = "") -> float | None:
        rc = self.routes.get(route_name)
        if rc is None:
            return None
        for vhost in rc.virtual_hosts:
            if host and not any(d.startswith(host) for d in vhost.domains):
                continue
            for route in vhost.routes:
                if route.route.HasField("timeout"):
                    return route.route.timeout.seconds + route.route.timeout.nanos / 1e9
        return None

    def eds(self, host: str, port: int = 80) -> list[str] | None:
        return self.endpoints.get(f"outbound|{port}||{host}")

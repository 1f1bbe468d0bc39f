"""Wires the pipeline on one event loop and owns every task it starts.

file source and/or Kubernetes source → config store → debouncer → DiscoveryServer (PushContext + push
queue) → ADS streams; the monitoring HTTP server only reads.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import grpclib.server
from aiohttp import web

from pilot import debug, httpserve
from pilot.config.store import ConfigStore
from pilot.model.endpoint_index import EndpointIndex
from pilot.model.environment import Environment
from pilot.push.debounce import DEFAULT_AFTER, DEFAULT_MAX, Debouncer
from pilot.push.triggers import ChangeHandler
from pilot.registry.aggregate import AggregateRegistry
from pilot.registry.kube import KubernetesRegistry
from pilot.registry.serviceentry import ServiceEntryRegistry
from pilot.sources.files import FileSource
from pilot.sources.kube.source import KubeOptions, KubeSource
from pilot.webhook import WebhookServer
from pilot.xds import limits, rest
from pilot.xds.server import DiscoveryServer, RawCodec

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 4096


def split_addr(addr: str, default_port: int) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep:
        return addr or "0.0.0.0", default_port
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


@dataclass
class ServerOptions:
    config_dir: Path | None  # None: no config directory (Kubernetes only)
    grpc_addr: str = "0.0.0.0:15010"
    monitoring_addr: str = "0.0.0.0:15014"
    domain_suffix: str = "cluster.local"
    debounce_after: float = DEFAULT_AFTER
    debounce_max: float = DEFAULT_MAX
    eds_debounce: bool = True  # PILOT_ENABLE_EDS_DEBOUNCE
    # Set for the worker processes of `pilot serve --workers N` (pilot/workers/): the xDS port is shared with
    # the other workers (SO_REUSEPORT) and monitoring is served on a private unix socket the supervisor reads.
    reuse_port: bool = False
    monitoring_socket: Path | None = None
    kube: KubeOptions | None = None  # Kubernetes sources (pilot/sources/kube/), beside or instead of the dir
    # Validating admission webhook (pilot/webhook.py): HTTPS, off unless a certificate and key are given.
    webhook_addr: str = "0.0.0.0:15017"
    webhook_cert: Path | None = None
    webhook_key: Path | None = None


class PilotServer:
    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.store = ConfigStore()
        self.source = FileSource(options.config_dir, self.store) if options.config_dir is not None else None
        endpoints = EndpointIndex()
        self.registry = AggregateRegistry(
            [
                KubernetesRegistry(endpoints, options.domain_suffix),
                ServiceEntryRegistry(endpoints, options.domain_suffix),
            ]
        )
        self.env = Environment(self.store, self.registry, endpoints, options.domain_suffix)
        self.discovery = DiscoveryServer(self.env)
        self.debouncer = Debouncer(
            self.discovery.push,
            after=options.debounce_after,
            max_delay=options.debounce_max,
            eds_debounce=options.eds_debounce,
            push_now=self.discovery.push_now,
        )
        self.triggers = ChangeHandler(self.store, self.registry, self.debouncer.update)
        self.kube = KubeSource(options.kube, self.store, self.discovery.counters) if options.kube else None
        self.webhook: WebhookServer | None = None
        self.ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._grpc: grpclib.server.Server | None = None
        self._http_runner: web.AppRunner | None = None
        self._monitoring: asyncio.AbstractServer | None = None
        self.monitoring_limit: httpserve.LimitedFactory | None = None
        self.grpc_port = 0
        self.monitoring_port = 0

    async def start(self) -> None:
        # Monitoring first, so /ready can answer 503 while the config loads.
        mon_host, mon_port = split_addr(self.options.monitoring_addr, 15014)
        app = debug.build_app(self)
        rest.add_routes(app, self.discovery)  # xDS over REST (Envoy's api_type: REST)
        limits.raise_fd_limit()  # thousands of proxies each hold a connection
        # aiohttp's keep-alive timer also bounds how long a request's headers may take (pilot.httpserve).
        self._http_runner = web.AppRunner(app, access_log=None, keepalive_timeout=httpserve.HEADER_TIMEOUT)
        await self._http_runner.setup()
        if self.options.monitoring_socket is not None:
            site = web.UnixSite(self._http_runner, str(self.options.monitoring_socket))
            await site.start()
        else:
            # Capped, so that idle HTTP clients cannot use up the descriptors xDS needs.
            self._monitoring, self.monitoring_limit = await httpserve.serve_tcp(
                self._http_runner, mon_host, mon_port, max_connections=httpserve.max_connections_from_env()
            )
            sockets = self._monitoring.sockets or ()
            self.monitoring_port = sockets[0].getsockname()[1] if sockets else mon_port
        if self.options.webhook_cert is not None and self.options.webhook_key is not None:
            # Before the config loads: a bad certificate fails start() at once.
            self.webhook = WebhookServer(
                self.options.webhook_addr,
                self.options.webhook_cert,
                self.options.webhook_key,
                reuse_port=self.options.reuse_port,
            )
            await self.webhook.start()

        if self.source is not None:
            await self.source.initial_load()
        if self.kube is not None:
            await self._kube_synced(self.kube)
        # The first snapshot covers the initial load; only later changes go through the debouncer.
        self.triggers.sync(self.store.snapshot().keys())
        self.discovery.rebuild()
        self.store.subscribe(self.triggers)

        grpc_host, grpc_port = split_addr(self.options.grpc_addr, 15010)
        limits.install_message_bound()  # requests over 4 MiB end their stream before they are read
        self._grpc = grpclib.server.Server([self.discovery], codec=RawCodec(), config=limits.grpc_configuration())
        # grpclib's default backlog (100) overflows when a fleet of proxies reconnects at once (measured with
        # benchmarks/bench_push.py: 191 of 1000 streams lost); the kernel caps this at somaxconn.
        await self._grpc.start(grpc_host, grpc_port, backlog=LISTEN_BACKLOG, reuse_port=self.options.reuse_port)
        sockets = self._grpc._server.sockets if self._grpc._server else ()
        self.grpc_port = sockets[0].getsockname()[1] if sockets else grpc_port

        if self.source is not None:
            self._spawn(self.source.run(), "config-source")
        self._spawn(self.debouncer.run(), "debounce")
        self._spawn(self.discovery.send_loop(), "push-sender")
        self._spawn(self.discovery.watchdog(), "send-watchdog")
        self.ready.set()
        log.info(
            "pilot ready: xDS gRPC on %s:%d, monitoring on %s:%d, config from %s",
            grpc_host,
            self.grpc_port,
            mon_host,
            self.monitoring_port,
            self._sources_text(),
        )

    async def _kube_synced(self, kube: KubeSource) -> None:
        """Start the Kubernetes source and wait until every informer has listed (xDS does not accept before,
        as istiod does not serve before its caches sync). A source that fails for good fails start()."""
        task = kube.start()
        synced = asyncio.ensure_future(kube.synced.wait())
        try:
            await asyncio.wait({task, synced}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            synced.cancel()
        if not kube.synced.is_set():
            exc = task.exception() if not task.cancelled() else None
            raise RuntimeError(f"Kubernetes source stopped before it synced: {exc}") from exc
        task.add_done_callback(self._task_done)

    def _sources_text(self) -> str:
        parts = [f"config dir {self.options.config_dir}"] if self.options.config_dir is not None else []
        if self.kube is not None and self.kube.api is not None:
            parts.append(f"Kubernetes API {self.kube.api.host}")
        return " and ".join(parts)

    def not_ready_reason(self) -> str:
        """Why /ready answers 503: the first source still loading, or the server starting or stopping."""
        if self.source is not None and not self.source.loaded.is_set():
            return "loading the config directory"
        if self.kube is not None:
            reason = self.kube.not_ready_reason()
            if reason:
                return reason
        return "xDS server starting" if self._grpc is None or not self._tasks else "stopping"

    def _spawn(self, coro: object, name: str) -> None:
        task = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())

    async def stop(self) -> None:
        self.ready.clear()
        if self.webhook is not None:
            await self.webhook.stop()
            self.webhook = None
        if self._grpc is not None:
            self._grpc.close()
        if self.kube is not None:
            await self.kube.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._grpc is not None:
            try:
                await asyncio.wait_for(self._grpc.wait_closed(), timeout=5)
            except TimeoutError:
                log.warning("gRPC server did not close within 5s")
            self._grpc = None
        if self._monitoring is not None:
            self._monitoring.close()
        if self._http_runner is not None:
            await self._http_runner.cleanup()
            self._http_runner = None
        if self._monitoring is not None:
            await self._monitoring.wait_closed()
            self._monitoring = None


async def serve(options: ServerOptions, stop: asyncio.Event) -> None:
    server = PilotServer(options)
    try:
        # start() can wait long (an API server that does not answer): a stop request must end it too.
        starting = asyncio.ensure_future(server.start())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not starting.done():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            return
        starting.result()
        await stop.wait()
    finally:
        log.info("shutting down")
        await server.stop()

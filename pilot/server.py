"""Wires the pipeline on one event loop and owns every task it starts.

file source → config store → debouncer → DiscoveryServer (PushContext + push queue) → ADS streams;
the monitoring HTTP server only reads.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import grpclib.server
from aiohttp import web

from pilot import debug
from pilot.config.store import ConfigStore
from pilot.model.endpoint_index import EndpointIndex
from pilot.model.environment import Environment
from pilot.push.debounce import DEFAULT_AFTER, DEFAULT_MAX, Debouncer
from pilot.push.triggers import ChangeHandler
from pilot.registry.aggregate import AggregateRegistry
from pilot.registry.kube import KubernetesRegistry
from pilot.registry.serviceentry import ServiceEntryRegistry
from pilot.sources.files import FileSource
from pilot.xds import rest
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
    config_dir: Path
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


class PilotServer:
    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.store = ConfigStore()
        self.source = FileSource(options.config_dir, self.store)
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
        self.ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._grpc: grpclib.server.Server | None = None
        self._http_runner: web.AppRunner | None = None
        self.grpc_port = 0
        self.monitoring_port = 0

    async def start(self) -> None:
        # Monitoring first, so /ready can answer 503 while the config loads.
        mon_host, mon_port = split_addr(self.options.monitoring_addr, 15014)
        app = debug.build_app(self)
        rest.add_routes(app, self.discovery)  # xDS over REST (Envoy's api_type: REST)
        self._http_runner = web.AppRunner(app, access_log=None)
        await self._http_runner.setup()
        if self.options.monitoring_socket is not None:
            site: web.BaseSite = web.UnixSite(self._http_runner, str(self.options.monitoring_socket))
        else:
            site = web.TCPSite(self._http_runner, mon_host, mon_port)
        await site.start()
        self.monitoring_port = _bound_port(site, mon_port) if isinstance(site, web.TCPSite) else 0

        await self.source.initial_load()
        # The first snapshot covers the initial load; only later changes go through the debouncer.
        self.triggers.sync(self.store.snapshot().keys())
        self.discovery.rebuild()
        self.store.subscribe(self.triggers)

        grpc_host, grpc_port = split_addr(self.options.grpc_addr, 15010)
        self._grpc = grpclib.server.Server([self.discovery], codec=RawCodec())
        # grpclib's default backlog (100) overflows when a fleet of proxies reconnects at once (measured with
        # benchmarks/bench_push.py: 191 of 1000 streams lost); the kernel caps this at somaxconn.
        await self._grpc.start(grpc_host, grpc_port, backlog=LISTEN_BACKLOG, reuse_port=self.options.reuse_port)
        sockets = self._grpc._server.sockets if self._grpc._server else ()
        self.grpc_port = sockets[0].getsockname()[1] if sockets else grpc_port

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
            self.options.config_dir,
        )

    def _spawn(self, coro: object, name: str) -> None:
        task = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())

    async def stop(self) -> None:
        self.ready.clear()
        if self._grpc is not None:
            self._grpc.close()
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
        if self._http_runner is not None:
            await self._http_runner.cleanup()
            self._http_runner = None


def _bound_port(site: web.TCPSite, fallback: int) -> int:
    server = site._server
    if server is not None and getattr(server, "sockets", None):
        return server.sockets[0].getsockname()[1]
    return fallback


async def serve(options: ServerOptions, stop: asyncio.Event) -> None:
    server = PilotServer(options)
    try:
        await server.start()
        await stop.wait()
    finally:
        log.info("shutting down")
        await server.stop()

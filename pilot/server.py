"""Wires the pipeline on one event loop and owns every task it starts.

file source and/or Kubernetes source → config store → debouncer → DiscoveryServer (PushContext + push
queue) → ADS streams; the monitoring HTTP server only reads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpclib.server
from aiohttp import web

from pilot import connlog, debug, httpserve
from pilot.config.store import ConfigStore
from pilot.introspect.rejections import RecordingConfigStore
from pilot.metrics import sources, tracing
from pilot.model.endpoint_index import EndpointIndex
from pilot.model.environment import Environment
from pilot.push.debounce import DEFAULT_AFTER, DEFAULT_MAX, Debouncer
from pilot.push.request import PushRequest
from pilot.push.triggers import ChangeHandler
from pilot.registry.aggregate import AggregateRegistry
from pilot.registry.kube import KubernetesRegistry
from pilot.registry.serviceentry import ServiceEntryRegistry
from pilot.security.options import Security, SecurityOptions
from pilot.security.tls import serve_https
from pilot.sources.files import FileSource
from pilot.sources.kube.source import KubeOptions, KubeSource
from pilot.tasks import INTERNAL_ERRORS, Supervisor, isolating
from pilot.webhook import WebhookServer
from pilot.xds import limits, rest
from pilot.xds.connage import ConnectionAge
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
    send_timeout: float | None = None  # PILOT_XDS_SEND_TIMEOUT (seconds; None: the server's default)
    push_throttle: int | None = None  # PILOT_PUSH_THROTTLE (None or 0: istiod's automatic value)
    max_connection_age: float | None = None  # PILOT_KEEPALIVE_MAX_SERVER_CONNECTION_AGE (seconds; None: no limit)
    # Set for the worker processes of `pilot serve --workers N` (pilot/workers/): the xDS port is shared with
    # the other workers (SO_REUSEPORT) and monitoring is served on a private unix socket the supervisor reads.
    reuse_port: bool = False
    monitoring_socket: Path | None = None
    kube: KubeOptions | None = None  # Kubernetes sources (pilot/sources/kube/), beside or instead of the dir
    # Validating admission webhook (pilot/webhook.py): HTTPS, off unless a certificate and key are given.
    webhook_addr: str = "0.0.0.0:15017"
    webhook_cert: Path | None = None
    webhook_key: Path | None = None
    # xDS over TLS (15012), identities, debug access (pilot/security). ``grpc_addr`` '' turns plaintext xDS off.
    security: SecurityOptions = field(default_factory=SecurityOptions)


class PilotServer:
    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.store: ConfigStore = RecordingConfigStore()  # keeps load errors for /debug/push_status
        self.source = FileSource(options.config_dir, self.store) if options.config_dir is not None else None
        endpoints = EndpointIndex()
        self.registry = AggregateRegistry(
            [
                KubernetesRegistry(endpoints, options.domain_suffix),
                ServiceEntryRegistry(endpoints, options.domain_suffix, trust_domain=options.security.trust_domain),
            ]
        )
        self.env = Environment(self.store, self.registry, endpoints, options.domain_suffix)
        self.discovery = DiscoveryServer(
            self.env, throttle=options.push_throttle or None, send_timeout=options.send_timeout
        )
        if self.source is not None:
            self.source.count_into(self.discovery.counters)
        # Pipeline tasks are supervised: a failure is logged, counted, reported by /ready and restarted.
        self.tasks = Supervisor(self.discovery.counters)
        self._unpushed: PushRequest | None = None  # a push that failed, retried with the next one
        self.debouncer = Debouncer(
            self._push,
            after=options.debounce_after,
            max_delay=options.debounce_max,
            eds_debounce=options.eds_debounce,
            push_now=self.discovery.push_now,
            metrics=self.discovery.metrics,
        )
        self.triggers = ChangeHandler(self.store, self.registry, self.debouncer.update)
        self.kube = KubeSource(options.kube, self.store, self.discovery.counters) if options.kube else None
        self.webhook: WebhookServer | None = None
        self.discovery.metrics.add_gauges(lambda: sources.webhook_values(self.webhook))
        # PILOT_KEEPALIVE_MAX_SERVER_CONNECTION_AGE: proxies rebalance over replicas (pilot.xds.connage)
        self.connection_age = ConnectionAge(options.max_connection_age) if options.max_connection_age else None
        self._owns_tracing = False  # this server turned tracing on (OTEL_* variables), so it flushes it at stop
        # Authentication and access control (pilot/security): the TLS xDS port and the debug endpoints.
        self.security = Security(
            options.security,
            root_namespace=self.env.root_namespace,
            plaintext_xds=bool(options.grpc_addr),
            kube_api=(lambda: self.kube.api if self.kube is not None else None) if options.kube else None,
            connections=lambda: list(self.discovery.connections.values()),
        )
        self.debug_access = self.security.debug  # read by debug.build_app
        self._secure_grpc: grpclib.server.Server | None = None
        self._secure_monitoring: asyncio.AbstractServer | None = None
        self.secure_grpc_port = 0
        self.secure_monitoring_port = 0
        self.ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._grpc: grpclib.server.Server | None = None
        self._http_runner: web.AppRunner | None = None
        self._monitoring: asyncio.AbstractServer | None = None
        self.monitoring_limit: httpserve.LimitedFactory | None = None
        self.grpc_port = 0
        self.monitoring_port = 0

    async def start(self) -> None:
        if tracing.TRACER is None:
            # OTLP export when OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set.
            self._owns_tracing = tracing.configure_from_env()
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
        if self.security.monitoring_tls is not None:  # the same app over TLS: client certificates authenticate
            secure_host, secure_port = split_addr(self.options.security.secure_monitoring_addr, 15014)
            self._secure_monitoring = await serve_https(
                self._http_runner,
                secure_host,
                secure_port,
                self.security.monitoring_tls.context,
                max_connections=httpserve.max_connections_from_env(),
            )
            sockets = self._secure_monitoring.sockets or ()
            self.secure_monitoring_port = sockets[0].getsockname()[1] if sockets else secure_port
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
        self.store.subscribe(isolating(self.triggers, "config change handler", self.discovery.counters))

        grpc_host, grpc_port = split_addr(self.options.grpc_addr, 15010)
        limits.install_message_bound()  # requests over 4 MiB end their stream before they are read
        if self.options.grpc_addr:  # '' turns plaintext xDS off, as istiod's empty --grpcAddr
            grpc_server = self._grpc_server(secure=False)
            # grpclib's default backlog (100) overflows when a fleet of proxies reconnects at once (measured with
            # benchmarks/bench_push.py: 191 of 1000 streams lost); the kernel caps this at somaxconn.
            await grpc_server.start(grpc_host, grpc_port, backlog=LISTEN_BACKLOG, reuse_port=self.options.reuse_port)
            self._grpc = grpc_server  # only once started: stop() must not close a server that never listened
            sockets = self._grpc._server.sockets if self._grpc._server else ()
            self.grpc_port = sockets[0].getsockname()[1] if sockets else grpc_port
        if self.security.grpc_tls is not None:  # authenticated xDS over TLS, the same handlers (istiod's 15012)
            secure_host, secure_port = split_addr(self.options.security.secure_grpc_addr, 15012)
            secure_server = self._grpc_server(secure=True)
            await secure_server.start(
                secure_host,
                secure_port,
                backlog=LISTEN_BACKLOG,
                reuse_port=self.options.reuse_port,
                ssl=self.security.grpc_tls.context,
            )
            self._secure_grpc = secure_server
            sockets = secure_server._server.sockets if secure_server._server else ()
            self.secure_grpc_port = sockets[0].getsockname()[1] if sockets else secure_port

        if self.source is not None:
            self._spawn(self.source.run, "config-source")
        self._spawn(self.debouncer.run, "debounce")
        self._spawn(self.discovery.send_loop, "push-sender")
        self._spawn(self.discovery.watchdog, "send-watchdog")
        self.ready.set()
        log.info(
            "pilot ready: xDS gRPC on %s, monitoring on %s:%d, config from %s",
            self._xds_text(),
            mon_host,
            self.monitoring_port,
            self._sources_text(),
        )

    def _grpc_server(self, *, secure: bool) -> grpclib.server.Server:
        # Authentication outermost (pilot.security.xdsauth): a stream that proves nothing is refused before it runs.
        service = self.security.xds.handlers(self.discovery, secure=secure)
        server = grpclib.server.Server([service], codec=RawCodec(), config=limits.grpc_configuration())
        if self.connection_age is not None:
            self.connection_age.apply(server)
        connlog.log_rejected_connections(server)  # unknown methods, non-HTTP/2 clients: one line each
        return server

    def _xds_text(self) -> str:
        parts = [f"{split_addr(self.options.grpc_addr, 15010)[0]}:{self.grpc_port} (plaintext)"] if self._grpc else []
        if self._secure_grpc is not None:
            host = split_addr(self.options.security.secure_grpc_addr, 15012)[0]
            parts.append(f"{host}:{self.secure_grpc_port} (TLS, authenticated)")
        return " and ".join(parts)

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
        self.tasks.adopt("kubernetes-source", task)  # if it ever dies, /ready says so

    def _sources_text(self) -> str:
        parts = [f"config dir {self.options.config_dir}"] if self.options.config_dir is not None else []
        if self.kube is not None and self.kube.api is not None:
            parts.append(f"Kubernetes API {self.kube.api.host}")
        return " and ".join(parts)

    def not_ready_reason(self) -> str:
        """Why /ready answers 503: a pipeline task down, the first source still loading, or the server
        starting or stopping."""
        down = self.tasks.problems()
        if down:
            return "; ".join(down)
        if self.source is not None and not self.source.loaded.is_set():
            return "loading the config directory"
        if self.kube is not None:
            reason = self.kube.not_ready_reason()
            if reason:
                return reason
        starting = self._grpc is None and self._secure_grpc is None
        return "xDS server starting" if starting or not self._tasks else "stopping"

    def source_problems(self) -> list[str]:
        """Why a source may be serving stale config (it keeps its last good objects meanwhile): /ready stays
        200, as istiod keeps serving, and lists these as warnings."""
        return self.source.problems() if self.source is not None else []

    def _spawn(self, factory: Callable[[], Awaitable[None]], name: str) -> None:
        self._tasks.append(self.tasks.spawn(name, factory))

    async def _push(self, request: PushRequest) -> None:
        """The debouncer's push: a failure keeps the last pushed config, is logged and counted, and the failed
        request is merged into the next one, so its changes are not lost."""
        if self._unpushed is not None:
            self._unpushed.merge(request)
            request, self._unpushed = self._unpushed, None
        try:
            await self.discovery.push(request)
        except Exception:
            self._unpushed = request
            self.discovery.counters[INTERNAL_ERRORS] += 1
            log.exception("push for %s failed; proxies keep the config they have", request.describe())

    async def stop(self) -> None:
        self.ready.clear()
        if self.webhook is not None:
            await self.webhook.stop()
            self.webhook = None
        if self._grpc is not None:
            self._grpc.close()
        if self._secure_grpc is not None:
            self._secure_grpc.close()
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
        if self._secure_grpc is not None:
            try:
                await asyncio.wait_for(self._secure_grpc.wait_closed(), timeout=5)
            except TimeoutError:
                log.warning("secure gRPC server did not close within 5s")
            self._secure_grpc = None
        if self._secure_monitoring is not None:
            self._secure_monitoring.close()
            await self._secure_monitoring.wait_closed()
            self._secure_monitoring = None
        if self._monitoring is not None:
            self._monitoring.close()
        if self._http_runner is not None:
            await self._http_runner.cleanup()
            self._http_runner = None
        if self._monitoring is not None:
            await self._monitoring.wait_closed()
            self._monitoring = None
        if self._owns_tracing:
            self._owns_tracing = False
            await asyncio.to_thread(tracing.shutdown)  # exports what is left (a blocking HTTP call)


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
        if server.ready.is_set():  # a start that failed is reported by the caller, in one line
            log.info("shutting down")
        await server.stop()

"""The supervisor of `pilot serve --workers N`: reserve the xDS port, run N workers, restart those that die.

- Port: before any worker starts, the supervisor binds (and never listens on) the xDS address with
  SO_REUSEPORT and holds that socket until it exits. That resolves port 0 to one concrete port for every
  worker, reports a port held by another program once and clearly instead of N times, and keeps the port
  ours while workers restart. A bound socket that does not listen takes no connections: the kernel spreads
  them over the listening workers only.
- Workers: ``python -m pilot serve ... --worker-index I --worker-socket PATH`` (worker.py), each with its
  monitoring socket in a private temp dir; the public monitoring port is served here (aggregate.py).
- Restarts follow RestartPolicy; SIGINT/SIGTERM stop every worker with SIGTERM (and EOF on its stdin), and
  SIGKILL whatever is left after ``stop_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from pilot.model.service import DEFAULT_TRUST_DOMAIN
from pilot.server import ServerOptions, split_addr
from pilot.workers import aggregate
from pilot.workers.handle import WorkerHandle, WorkerState
from pilot.workers.worker import READY_LINE

log = logging.getLogger(__name__)

START_TIMEOUT = 120.0  # a worker loads the whole config before it is ready
STOP_TIMEOUT = 8.0  # a worker's own stop waits up to 5 s for its gRPC server to close
MAX_STATUS_LINES = 100  # a worker prints one line on stdout; more means something else writes there

# (worker, xDS address every worker listens on) -> argv of the worker process
WorkerCommand = Callable[[WorkerHandle, str], list[str]]


@dataclass
class RestartPolicy:
    """When to restart a worker that exited, and when to give up (pure: times are passed in).

    Before the server first came up (every worker ready at once), any exit is fatal: the config, the
    environment or the installation is wrong, and retrying would only repeat the error. Afterwards a worker
    is restarted after base_delay * 2^(n-1) seconds, at most max_delay, n counting its exits since it last
    stayed up stable_after seconds; one that exits before becoming ready max_start_failures times in a row
    is given up on, and the server with it, as a control plane missing a worker for good should not look
    healthy.
    """

    base_delay: float = 0.1
    max_delay: float = 10.0
    stable_after: float = 30.0
    max_start_failures: int = 5
    _exits: int = 0
    _start_failures: int = 0
    _ready_at: float | None = None

    def on_ready(self, now: float) -> None:
        self._ready_at = now
        self._start_failures = 0

    def on_exit(self, now: float, *, server_up: bool) -> float | None:
        """The delay before restarting, or None to give up."""
        ready_at, self._ready_at = self._ready_at, None
        if not server_up:
            return None
        if ready_at is None:
            self._start_failures += 1
            if self._start_failures >= self.max_start_failures:
                return None
        elif now - ready_at >= self.stable_after:
            self._exits = 0
        self._exits += 1
        return min(self.max_delay, self.base_delay * 2 ** (self._exits - 1))


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


def _security_args(options: ServerOptions) -> list[str]:
    """TLS xDS and JWT flags for a worker: every worker serves the TLS port too (shared, SO_REUSEPORT, with the
    port the supervisor resolved), with the same certificate files, which each worker reloads on its own.
    istiod's environment settings (XDS_AUTH_PLAINTEXT, ...) reach workers through the environment."""
    security = options.security
    out = ["--trust-domain", security.trust_domain] if security.trust_domain != DEFAULT_TRUST_DOMAIN else []
    if security.tls is not None:
        out += ["--secure-grpc-addr", security.secure_grpc_addr]
        out += ["--tls-cert", str(security.tls.cert), "--tls-key", str(security.tls.key)]
        if security.tls.ca is not None:
            out += ["--ca-cert", str(security.tls.ca)]
    if security.jwt_jwks is not None:
        out += ["--jwt-jwks", str(security.jwt_jwks), "--jwt-issuer", security.jwt_issuer]
        for audience in security.jwt_audiences:
            out += ["--jwt-audience", audience]
    return out


def pilot_worker_command(options: ServerOptions, log_level: str) -> WorkerCommand:
    """The worker argv; PILOT_* settings (debounce, throttle, timeouts) reach workers through the environment."""

    def command(worker: WorkerHandle, grpc_address: str) -> list[str]:
        # Every worker serves the webhook too, on the shared port (SO_REUSEPORT), from the same certificate.
        webhook: list[str] = []
        if options.webhook_cert is not None:
            webhook += ["--webhook-addr", options.webhook_addr]
            webhook += ["--webhook-cert", str(options.webhook_cert), "--webhook-key", str(options.webhook_key)]
        return [
            sys.executable,
            "-m",
            "pilot",
            "--log-level",
            log_level,
            "serve",
            "--config-dir",
            str(options.config_dir),
            "--grpc-addr",
            grpc_address,
            "--domain-suffix",
            options.domain_suffix,
            "--worker-index",
            str(worker.index),
            "--worker-socket",
            str(worker.socket_path),
            *webhook,
            *_security_args(options),
        ]

    return command


class Supervisor:
    def __init__(
        self,
        options: ServerOptions,
        workers: int,
        *,
        log_level: str = "info",
        worker_command: WorkerCommand | None = None,
        policy: Callable[[], RestartPolicy] = RestartPolicy,
        start_timeout: float = START_TIMEOUT,
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self.options = options
        self._count = workers
        self._log_level = log_level
        self._custom_command = worker_command  # else built once the ports are reserved (run())
        self._command: WorkerCommand = worker_command or pilot_worker_command(options, log_level)
        self._policy = policy
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._handles: list[WorkerHandle] = []
        self._reserved: list[socket.socket] = []
        self._grpc_host = ""
        self._grpc_port = 0
        self.secure_grpc_port = 0
        self._up = False
        self._stopping = asyncio.Event()
        self._failed = asyncio.Event()
        self._failure = ""
        self._restarts = 0
        self._http_runner: web.AppRunner | None = None
        self.monitoring_port = 0

    # ----- what aggregate.Fleet reads -----

    @property
    def workers(self) -> Sequence[WorkerHandle]:
        return self._handles

    @property
    def grpc_address(self) -> str:
        host = f"[{self._grpc_host}]" if ":" in self._grpc_host else self._grpc_host
        return f"{host}:{self._grpc_port}"

    @property
    def restarts(self) -> int:
        return self._restarts

    # ----- lifecycle -----

    async def run(self, stop: asyncio.Event) -> int:
        """Serve until ``stop`` is set (exit status 0) or a worker cannot be kept running (1)."""
        try:
            self._grpc_host, self._grpc_port = await self._reserve(self.options.grpc_addr, 15010)
        except OSError as exc:
            log.error("cannot bind the xDS address %s: %s", self.options.grpc_addr, exc.strerror or exc)
            self._release()
            return 1
        if self.options.security.secure_xds:
            secure_addr = self.options.security.secure_grpc_addr
            try:
                host, self.secure_grpc_port = await self._reserve(secure_addr, 15012)
            except OSError as exc:
                log.error("cannot bind the TLS xDS address %s: %s", secure_addr, exc.strerror or exc)
                self._release()
                return 1
            # Port 0 becomes one port for every worker, as for plaintext xDS.
            resolved = f"[{host}]:{self.secure_grpc_port}" if ":" in host else f"{host}:{self.secure_grpc_port}"
            security = dataclasses.replace(self.options.security, secure_grpc_addr=resolved)
            self.options = dataclasses.replace(self.options, security=security)
            if self._custom_command is None:
                self._command = pilot_worker_command(self.options, self._log_level)
        try:
            try:
                await self._start_monitoring()
            except OSError as exc:
                log.error("cannot listen on the monitoring address %s: %s", self.options.monitoring_addr, exc)
                return 1
            # mkdtemp's directory is 0700: only this user can reach the workers' monitoring sockets.
            with tempfile.TemporaryDirectory(prefix="pilot-workers-") as private:
                self._handles = [WorkerHandle(i, Path(private) / f"w{i}.sock") for i in range(self._count)]
                tasks = [
                    asyncio.create_task(self._supervise(handle), name=f"supervise-worker-{handle.index}")
                    for handle in self._handles
                ]
                waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(self._failed.wait())]
                try:
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in waiters:
                        waiter.cancel()
                    await self._stop_workers(tasks)
        finally:
            if self._http_runner is not None:
                await self._http_runner.cleanup()
            self._release()
        if self._failure:
            log.error("%s", self._failure)
            return 1
        log.info("all workers stopped")
        return 0

    def _release(self) -> None:
        for sock in self._reserved:
            sock.close()
        self._reserved.clear()

    async def _reserve(self, address: str, default_port: int) -> tuple[str, int]:
        """Bind (without listening) ``address`` with SO_REUSEPORT and hold it; the host and concrete port."""
        host, port = split_addr(address, default_port)
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        seen: set[tuple[int, str]] = set()
        try:
            for family, kind, proto, _, sockaddr in infos:
                if (family, sockaddr[0]) in seen:
                    continue
                seen.add((family, sockaddr[0]))
                sock = socket.socket(family, kind, proto)
                self._reserved.append(sock)
                # The options asyncio's create_server sets for the workers; a bind conflict needs both sides' flags.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((sockaddr[0], port, *sockaddr[2:]))
                port = port or sock.getsockname()[1]
        except OSError:
            self._release()
            raise
        return host, port

    async def _start_monitoring(self) -> None:
        host, port = split_addr(self.options.monitoring_addr, 15014)
        self._http_runner = web.AppRunner(aggregate.build_app(self), access_log=None)
        await self._http_runner.setup()
        site = web.TCPSite(self._http_runner, host, port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or ()
        self.monitoring_port = sockets[0].getsockname()[1] if sockets else port

    async def _supervise(self, worker: WorkerHandle) -> None:
        policy = self._policy()
        loop = asyncio.get_running_loop()
        try:
            while not self._stopping.is_set():
                try:
                    returncode = await self._run_once(worker, policy)
                except OSError as exc:
                    self._fail(f"cannot start worker {worker.index}: {exc}")
                    return
                if self._stopping.is_set():
                    return
                worker.last_exit = describe_exit(returncode)
                who = f"worker {worker.index} (pid {worker.pid})"
                delay = policy.on_exit(loop.time(), server_up=self._up)
                if delay is None:
                    when = "before pilot was ready" if not self._up else "again before it was ready"
                    self._fail(f"{who} {worker.last_exit} {when}; giving up (see its error above)")
                    return
                log.warning("%s %s; restarting it in %.1fs", who, worker.last_exit, delay)
                worker.state = WorkerState.RESTARTING
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                if not self._stopping.is_set():
                    self._restarts += 1
        finally:
            worker.state = WorkerState.STOPPED

    async def _run_once(self, worker: WorkerHandle, policy: RestartPolicy) -> int:
        """Start the worker, wait until it is ready (or gives up), then until it exits; return its status."""
        worker.socket_path.unlink(missing_ok=True)
        argv = self._command(worker, self.grpc_address)
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        worker.attach(process)
        log.info("worker %d started (pid %d)", worker.index, process.pid)
        try:
            ready = await asyncio.wait_for(_wait_for_ready_line(process), self._start_timeout)
        except TimeoutError:
            log.error(
                "worker %d (pid %d) not ready after %.0fs; killing it", worker.index, process.pid, self._start_timeout
            )
            ready = False
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        if ready:
            worker.state = WorkerState.READY
            policy.on_ready(asyncio.get_running_loop().time())
            self._note_ready()
        return await process.wait()

    def _note_ready(self) -> None:
        if self._up or not all(w.state is WorkerState.READY for w in self._handles):
            return
        self._up = True
        log.info(
            "pilot ready: %d workers sharing xDS gRPC on %s, monitoring on %s:%d, config from %s",
            self._count,
            self.grpc_address,
            split_addr(self.options.monitoring_addr, 15014)[0],
            self.monitoring_port,
            self.options.config_dir,
        )

    def _fail(self, message: str) -> None:
        if not self._failure:
            self._failure = message
            self._failed.set()

    async def _stop_workers(self, tasks: list[asyncio.Task[None]]) -> None:
        self._stopping.set()
        for worker in self._handles:
            if worker.alive and worker.process is not None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.terminate()
                if worker.process.stdin is not None:
                    worker.process.stdin.close()
        _, pending = await asyncio.wait(tasks, timeout=self._stop_timeout) if tasks else (set(), set())
        if pending:
            for worker in self._handles:
                if worker.alive and worker.process is not None:
                    log.warning("worker %d (pid %d) did not stop in time; killing it", worker.index, worker.pid)
                    with contextlib.suppress(ProcessLookupError):
                        worker.process.kill()
            _, pending = await asyncio.wait(pending, timeout=self._stop_timeout)
            for task in pending:
                task.cancel()
        for worker in self._handles:
            await worker.close()


async def _wait_for_ready_line(process: asyncio.subprocess.Process) -> bool:
    """True once the worker prints its ready line; False if its stdout closes first (it exited)."""
    assert process.stdout is not None
    for _ in range(MAX_STATUS_LINES):
        line = await process.stdout.readline()
        if line == READY_LINE:
            return True
        if not line:
            return False
        log.debug("worker pid %d printed %r", process.pid, line[:200])
    return False


def run_supervisor(options: ServerOptions, workers: int, log_level: str) -> int:
    """`pilot serve --workers N` (N > 1): the supervisor process."""
    if not hasattr(socket, "SO_REUSEPORT"):
        print("pilot serve: --workers needs SO_REUSEPORT, which this platform lacks", file=sys.stderr)
        return 2
    import uvloop

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await Supervisor(options, workers, log_level=log_level).run(stop)

    return int(uvloop.run(main()))

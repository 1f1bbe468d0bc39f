"""Proxyless gRPC harness: real grpcio servers on loopback addresses and a real grpcio xDS client process.

- ``EchoServer``: a grpcio server on its own 127.0.0.x address answering ``/pilot.test.Echo/Call`` with its
  name (generic handler, raw bytes: no generated code), counting the calls it got.
- ``GrpcClient``: ``python -m tests.grpc.client`` with GRPC_XDS_BOOTSTRAP naming pilot (written by ``pilot
  bootstrap --grpc``) and GRPC_TRACE=xds_client, so its log names every resource gRPC parsed or rejected.
  Commands and answers are JSON lines; every read has a deadline.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from tests.e2e.harness import REPO_ROOT, _python_env, next_loopback_host, wait_until

SERVICE_NAME = "pilot.test.Echo"
STOP_GRACE = 0.5  # seconds a stopping server lets calls finish


class EchoServer:
    """A grpcio server on its own loopback address that answers every call with its name."""

    def __init__(self, name: str, host: str, labels: Mapping[str, str] | None = None, tls: Any = None) -> None:
        self.name = name
        self.host = host
        self.labels = dict(labels or {})
        self.tls = tls  # grpc.ServerCredentials: a TLS server (e.g. requiring client certificates)
        self.port = 0
        self._calls = 0
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None

    @property
    def hits(self) -> int:
        with self._lock:
            return self._calls

    def _call(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        with self._lock:
            self._calls += 1
        return self.name.encode()

    def start(self) -> None:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.method_handlers_generic_handler(
            SERVICE_NAME, {"Call": grpc.unary_unary_rpc_method_handler(self._call)}
        )
        server.add_generic_rpc_handlers((handler,))
        if self.tls is not None:
            self.port = server.add_secure_port(f"{self.host}:0", self.tls)
        else:
            self.port = server.add_insecure_port(f"{self.host}:0")
        server.start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(STOP_GRACE).wait(STOP_GRACE + 5)
            self._server = None

    def __repr__(self) -> str:
        return f"EchoServer({self.name}@{self.host}:{self.port})"


class EchoServers:
    """Starts servers on fresh loopback addresses; stops them all at teardown."""

    def __init__(self) -> None:
        self.started: list[EchoServer] = []

    def start(self, *names: str, tls: Any = None) -> list[EchoServer]:
        """One server per name; names like v1, v2 get the label ``version: <name>`` (DestinationRule subsets)."""
        out = []
        for name in names:
            labels = {"version": name} if re.fullmatch(r"v\d+", name) else {}
            server = EchoServer(name, next_loopback_host(), labels, tls)
            server.start()
            self.started.append(server)
            out.append(server)
        return out

    def stop_all(self) -> None:
        for server in self.started:
            server.stop()
        self.started.clear()


def write_grpc_bootstrap(
    path: Path, xds_port: int, node_id: str, labels: Mapping[str, str], extra_args: tuple[str, ...] = ()
) -> None:
    """The client's GRPC_XDS_BOOTSTRAP, written by the real command line."""
    cmd = [sys.executable, "-m", "pilot", "bootstrap", "--grpc", "--node-id", node_id, *extra_args]
    cmd += ["--xds-addr", f"127.0.0.1:{xds_port}", "--output", str(path)]
    for key, value in labels.items():
        cmd += ["--label", f"{key}={value}"]
    result = subprocess.run(cmd, cwd=REPO_ROOT, env=_python_env(), capture_output=True, timeout=30, check=False)
    assert result.returncode == 0, f"pilot bootstrap --grpc failed ({result.returncode}):\n{result.stderr.decode()}"


class GrpcClient:
    """One grpcio xDS client process; ``calls`` runs a batch of unary calls through it."""

    def __init__(self, bootstrap: Path, log_path: Path, env: Mapping[str, str] | None = None) -> None:
        self.bootstrap = bootstrap
        self.extra_env = dict(env or {})
        self.log_path = log_path
        self.last_details: dict[str, str] = {}  # status code -> details, from the last batch
        self._log = open(log_path, "ab")  # the client's stderr for its whole life; closed in stop()
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = _python_env()
        env.update({"GRPC_XDS_BOOTSTRAP": str(self.bootstrap), "GRPC_TRACE": "xds_client", "GRPC_VERBOSITY": "debug"})
        env.update(self.extra_env)
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.grpc.client",
            cwd=REPO_ROOT,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._log,
        )

    async def calls(
        self, target: str, count: int, *, metadata: Mapping[str, str] | None = None, timeout: float = 2.0
    ) -> Counter[str]:
        """``count`` calls to ``target``, one after the other; replies by server name or ``status:CODE``."""
        assert self._proc is not None and self._proc.stdin is not None and self._proc.stdout is not None
        command = {"target": target, "count": count, "timeout": timeout, "metadata": dict(metadata or {})}
        self._proc.stdin.write(json.dumps(command).encode() + b"\n")
        await self._proc.stdin.drain()
        line = await asyncio.wait_for(self._proc.stdout.readline(), timeout=count * timeout + 10)
        if not line:
            raise AssertionError(f"the gRPC client exited ({self._proc.returncode}):\n{self.log_tail()}")
        answer: dict[str, Any] = json.loads(line)
        self.last_details = answer["details"]
        return Counter(answer["replies"])

    async def wait_for(
        self,
        target: str,
        predicate: Callable[[Counter[str]], bool],
        *,
        within: float = 10.0,
        batch: int = 20,
        metadata: Mapping[str, str] | None = None,
        message: str = "",
    ) -> Counter[str]:
        """Repeat batches of calls until one satisfies ``predicate``; that batch's replies."""
        last: list[Counter[str]] = []

        async def attempt() -> Counter[str] | None:
            replies = await self.calls(target, batch, metadata=metadata)
            last[:] = [replies]
            return replies if predicate(replies) else None

        return await wait_until(
            attempt,
            within,
            interval=0.02,
            message=message or f"calls to {target} to satisfy the predicate",
            describe=lambda: f"last replies: {dict(last[0]) if last else None}\n{self.log_tail()}",
        )

    def log_tail(self, lines: int = 40) -> str:
        """The end of the client's xds_client trace, with what it parsed, rejected or found missing."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        interesting = [
            line
            for line in text.splitlines()
            if re.search(r"parsed |invalid |does not exist|error|NACK|rejected|Resource", line, re.IGNORECASE)
        ]
        return "--- gRPC client xds_client trace (filtered tail) ---\n" + "\n".join(interesting[-lines:])

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        try:
            if proc is None:
                return
            if proc.stdin is not None:
                proc.stdin.close()  # the client's end of input: it closes its channels and exits
            try:
                await asyncio.wait_for(proc.wait(), timeout=10)
            except TimeoutError:
                proc.kill()
                await asyncio.wait_for(proc.wait(), timeout=5)
        finally:
            self._log.close()

"""``pilot serve --kubeconfig`` as a real process, driven from a test's event loop (the fake API server runs
in that loop, so nothing here may block it: readiness is polled with aiohttp)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from tests.e2e.harness import REPO_ROOT, _python_env, _tail, free_port


class KubePilotProcess:
    def __init__(self, workdir: Path, kubeconfig: Path, *, name: str = "pilot", env: dict[str, str] | None = None):
        self.workdir = workdir
        self.kubeconfig = kubeconfig
        self.name = name
        self.env = {"POD_NAME": name, "POD_NAMESPACE": "istio-system", **(env or {})}
        self.log_path = workdir / f"{name}.log"
        self.grpc_port = 0
        self.monitoring_port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self, *extra: str, ready_within: float = 20.0) -> None:
        self.grpc_port = free_port()
        self.monitoring_port = free_port()
        env = _python_env()
        env.update(self.env)
        cmd = [sys.executable, "-m", "pilot", "serve", "--kubeconfig", str(self.kubeconfig)]
        cmd += ["--grpc-addr", f"127.0.0.1:{self.grpc_port}", "--monitoring-addr", f"127.0.0.1:{self.monitoring_port}"]
        cmd += list(extra)
        self.proc = self._spawn(cmd, env)
        deadline = time.monotonic() + ready_within
        async with aiohttp.ClientSession() as http:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{_tail(self.log_path)}")
                try:
                    async with http.get(f"http://127.0.0.1:{self.monitoring_port}/ready") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    await self.kill()
                    raise AssertionError(f"{self.name} not ready within {ready_within:g}s:\n{_tail(self.log_path)}")
                await asyncio.sleep(0.05)

    def _spawn(self, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with open(self.log_path, "ab") as log:  # appended: a restart keeps the earlier output
            return subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    async def kill(self) -> None:
        """SIGKILL: no Lease release, no goodbye to the proxies (their connections are reset)."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGKILL)
        await self._wait(5.0)
        self.proc = None

    async def stop(self, timeout: float = 8.0) -> int | None:
        """SIGTERM and wait; the exit status (None if it had to be killed)."""
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        code = await self._wait(timeout)
        if code is None:
            self.proc.kill()
            await self._wait(5.0)
        self.proc = None
        return code

    async def _wait(self, timeout: float) -> int | None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.02)
        return self.proc.returncode

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self) -> str:
        return _tail(self.log_path)


def pilot_env(**values: str) -> dict[str, str]:
    """PILOT_* settings for pilot processes in these tests: a short Lease so that hand-over fits a test."""
    return {"PILOT_LEADER_LEASE_DURATION": "1.5s", "PYTHONUNBUFFERED": "1", **values}

"""A real `pilot serve --workers N` process on loopback, and simulated proxies that behave like Envoy on ADS."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import grpclib.client
import grpclib.const
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import discovery_pb2

from pilot.xds.names import CLUSTER_TYPE
from pilot.xds.server import ADS_METHOD
from tests.e2e.harness import REPO_ROOT, free_port, wait_until

BOOKINFO = REPO_ROOT / "examples" / "bookinfo"


class SupervisorProcess:
    """``python -m pilot serve --workers N`` on a copy of examples/bookinfo; output in ``log_path``."""

    def __init__(
        self, workdir: Path, *, workers: int = 2, grpc_addr: str = "127.0.0.1:0", extra_args: tuple[str, ...] = ()
    ) -> None:
        self.config_dir = workdir / "config"
        if not self.config_dir.exists():
            shutil.copytree(BOOKINFO, self.config_dir)
        self.log_path = workdir / "supervisor.log"
        self.workers = workers
        self.grpc_addr = grpc_addr
        self.extra_args = extra_args
        self.monitoring_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.monitoring_port}"

    def start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1", PILOT_DEBOUNCE_AFTER="10ms")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        argv = [
            sys.executable,
            "-m",
            "pilot",
            "serve",
            "--workers",
            str(self.workers),
            "--config-dir",
            str(self.config_dir),
            "--grpc-addr",
            self.grpc_addr,
            "--monitoring-addr",
            f"127.0.0.1:{self.monitoring_port}",
            *self.extra_args,
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def wait_exit(self, within: float) -> int:
        assert self.proc is not None
        proc = self.proc
        await wait_until(lambda: proc.poll() is not None, within, message="supervisor exit", describe=self.log)
        return proc.returncode

    def kill(self) -> None:
        """Make sure nothing is left running, whatever the test did (SIGKILL the supervisor and its workers)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


class MonitoringClient:
    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.base_url = base_url

    async def get(self, path: str) -> tuple[int, str, dict[str, str]]:
        async with self.session.get(self.base_url + path, timeout=aiohttp.ClientTimeout(total=15)) as response:
            return response.status, await response.text(), dict(response.headers)

    async def json(self, path: str) -> Any:
        status, text, _ = await self.get(path)
        assert status == 200, f"{path}: {status} {text}"
        return json.loads(text)

    async def metrics(self) -> dict[str, float]:
        status, text, _ = await self.get("/metrics")
        assert status == 200, text
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    async def workers(self) -> list[dict[str, Any]]:
        return (await self.json("/debug/workerz"))["workers"]

    async def is_ready(self) -> bool:
        status, _, _ = await self.get("/ready")
        return status == 200


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, already dead but not yet reaped by its new parent, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


class SimulatedProxy:
    """A sidecar on one ADS stream: wildcard CDS, ACKs every response, reconnects with backoff like Envoy."""

    def __init__(self, number: int, port: int) -> None:
        self.short_id = f"pod-{number}.default"
        self.node_id = f"sidecar~10.0.0.{number}~{self.short_id}~default.svc.cluster.local"
        self.port = port
        self.connects = 0  # streams on which a response arrived
        self.synced_on = 0  # the stream (by count) that delivered the latest CDS
        self.clusters: frozenset[str] = frozenset()
        self.errors: list[str] = []

    def synced_since(self, connects: int, clusters: frozenset[str]) -> bool:
        return self.connects >= connects and self.synced_on == self.connects and self.clusters == clusters

    async def run(self) -> None:
        backoff = 0.05
        while True:
            channel = grpclib.client.Channel("127.0.0.1", self.port)
            try:
                async with channel.request(
                    ADS_METHOD,
                    grpclib.const.Cardinality.STREAM_STREAM,
                    discovery_pb2.DiscoveryRequest,
                    discovery_pb2.DiscoveryResponse,
                ) as stream:
                    request = discovery_pb2.DiscoveryRequest(type_url=CLUSTER_TYPE)
                    request.node.id = self.node_id
                    await stream.send_message(request)
                    first = True
                    while (response := await stream.recv_message()) is not None:
                        if first:
                            self.connects += 1
                            first = False
                        self.clusters = frozenset(cluster_names(response))
                        self.synced_on = self.connects
                        backoff = 0.05
                        ack = discovery_pb2.DiscoveryRequest(
                            type_url=CLUSTER_TYPE, response_nonce=response.nonce, version_info=response.version_info
                        )
                        await stream.send_message(ack)
            except Exception as exc:  # Envoy retries whatever ended the stream; so does this proxy
                self.errors.append(repr(exc))
            finally:
                channel.close()
            await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
            backoff = min(backoff * 2, 1.0)


def cluster_names(response: discovery_pb2.DiscoveryResponse) -> list[str]:
    names = []
    for packed in response.resources:
        cluster = cluster_pb2.Cluster()
        assert packed.Unpack(cluster)
        names.append(cluster.name)
    return names

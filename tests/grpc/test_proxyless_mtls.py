"""Proxyless gRPC mesh mTLS with real grpcio: ``pilot bootstrap --grpc --cert --key --ca`` gives the client
the ``default`` certificate provider; a DestinationRule ISTIO_MUTUAL makes pilot's cluster carry certificate
provider TLS checking the ServiceEntry's subjectAltNames; a client using xDS credentials then calls TLS servers
that require its certificate. A server presenting another identity is refused by the client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from tests.certs import TestCA
from tests.e2e.harness import PilotProcess, only
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

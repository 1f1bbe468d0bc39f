"""Fixtures for the proxyless gRPC suite: one pilot per module, gRPC servers and one gRPC client per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import PilotProcess
from tests.grpc.harness import EchoServers, GrpcClient, write_grpc_bootstrap

CLIENT_NODE = "sidecar~127.0.0.1~client-1.default~default.svc.cluster.local"


@pytest.fixture(scope="module")
def grpc_workdir(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    return tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture(scope="module")
def pilot(grpc_workdir: Path) -> Iterator[PilotProcess]:
    """A real ``pilot serve``; at teardown it must exit cleanly without a traceback."""
    process = PilotProcess(grpc_workdir / "pilot")
    process.start()
    try:
        yield process
    finally:
        process.stop(check=True)


@pytest.fixture(scope="module")
def grpc_bootstrap(pilot: PilotProcess, grpc_workdir: Path) -> Path:
    path = grpc_workdir / "grpc-bootstrap.json"
    write_grpc_bootstrap(path, pilot.grpc_port, CLIENT_NODE, {"app": "client"})
    return path


@pytest.fixture
def servers() -> Iterator[EchoServers]:
    pool = EchoServers()
    try:
        yield pool
    finally:
        pool.stop_all()


@pytest.fixture
async def client(grpc_bootstrap: Path, grpc_workdir: Path, request: pytest.FixtureRequest) -> AsyncIterator[GrpcClient]:
    grpc_client = GrpcClient(grpc_bootstrap, grpc_workdir / f"client-{request.node.name}.log")
    await grpc_client.start()
    try:
        yield grpc_client
    finally:
        await grpc_client.stop()


@pytest.fixture
def no_nacks(pilot: PilotProcess) -> Iterator[None]:
    """gRPC accepted everything pilot sent during the test (pilot logs each NACK as an ACK ERROR)."""
    mark = pilot.log_mark()
    yield
    rejected = [line for line in pilot.log_since(mark).splitlines() if "ACK ERROR" in line]
    assert not rejected, "gRPC rejected pilot's config:\n" + "\n".join(rejected)

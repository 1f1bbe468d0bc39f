"""One real ``pilot serve`` for the load-tester tests, serving a small generated mesh.

The mesh has Sidecar isolation (so a change is expected only at some proxies), a gateway for the routers,
subsets and a TCP port: every kind of expectation the scenarios compute is exercised.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pilot.loadtest.mesh import MeshSpec, write_mesh
from tests.e2e.harness import PilotProcess

SPEC = MeshSpec(
    services=12,
    endpoints=3,
    namespaces=3,
    virtual_services=6,
    sidecar_isolation=True,
    tcp_port=True,
    gateway=True,
)


@dataclass(frozen=True)
class ServedMesh:
    spec: MeshSpec
    config_dir: Path
    grpc_port: int
    monitoring_port: int
    pid: int

    @property
    def xds_addr(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def monitoring_addr(self) -> str:
        return f"127.0.0.1:{self.monitoring_port}"


@pytest.fixture(scope="session")
def served_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedMesh]:
    pilot = PilotProcess(tmp_path_factory.mktemp("loadtest"))
    write_mesh(SPEC, pilot.config_dir)
    pilot.start()
    try:
        assert pilot.proc is not None
        yield ServedMesh(SPEC, pilot.config_dir, pilot.grpc_port, pilot.monitoring_port, pilot.proc.pid)
    finally:
        pilot.stop()

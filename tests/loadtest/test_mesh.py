"""The mesh generator: what it writes loads cleanly, and the scenarios' edits stay valid."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pilot.loadtest.mesh import (
    MANIFEST,
    MeshError,
    MeshSpec,
    ServiceState,
    atomic_write,
    check_pristine,
    load_manifest,
    render_service,
    write_mesh,
)
from tests.e2e.harness import REPO_ROOT

FULL = MeshSpec(
    services=8,
    endpoints=3,
    namespaces=2,
    virtual_services=4,
    destination_rules="all",
    sidecar_isolation=True,
    tcp_port=True,
    gateway=True,
)


def _validate(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pilot", "validate", *map(str, paths)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )


def test_generated_mesh_and_edited_services_pass_pilot_validate(tmp_path: Path) -> None:
    out = tmp_path / "mesh"
    files = write_mesh(FULL, out)
    # Edits the scenarios make: an endpoint added, the split flipped.
    edited = tmp_path / "edited.yaml"
    edited.write_text(render_service(FULL, 1, ServiceState(extra=1, v1_weight=20)))
    paths = sorted(out.rglob("*.yaml"))
    assert len(paths) == files == 8 + 2 + 1  # services, one Sidecar per namespace, the Gateway
    result = _validate([*paths, edited])
    assert result.returncode == 0, result.stderr
    # 8 ServiceEntries + 8 DestinationRules + 4 VirtualServices + 2 Sidecars + 1 Gateway, + 3 in the edited file
    assert "26 object(s) in 12 file(s) valid" in result.stdout
    assert load_manifest(out) == FULL
    assert json.loads((out / MANIFEST).read_text())["services"] == 8


def test_cli_writes_the_mesh(tmp_path: Path) -> None:
    from pilot.cli import main

    out = tmp_path / "mesh"
    assert main(["loadtest", "mesh", "--out", str(out), "--services", "5", "--namespaces", "2", "--endpoints", "2",
                 "--virtual-services", "2"]) == 0  # fmt: skip
    spec = load_manifest(out)
    assert (spec.services, spec.namespaces, spec.virtual_services) == (5, 2, 2)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.yaml"))[:2] == ["ns0/svc0.yaml", "ns0/svc2.yaml"]


def test_regenerating_replaces_the_old_files_but_never_writes_into_a_foreign_dir(tmp_path: Path) -> None:
    out = tmp_path / "mesh"
    write_mesh(MeshSpec(services=6, endpoints=1, namespaces=3, virtual_services=0), out)
    write_mesh(MeshSpec(services=2, endpoints=1, namespaces=1, virtual_services=0), out)
    assert sorted(p.name for p in out.rglob("*.yaml")) == ["svc0.yaml", "svc1.yaml"]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "mine.yaml").write_text("x: 1\n")
    with pytest.raises(MeshError, match="not a generated mesh"):
        write_mesh(FULL, foreign)


def test_a_changed_service_file_is_refused_before_a_run(tmp_path: Path) -> None:
    out = tmp_path / "mesh"
    write_mesh(FULL, out)
    check_pristine(FULL, out, [0, 1])
    atomic_write(out / FULL.service_file(1), render_service(FULL, 1, ServiceState(extra=1)))
    with pytest.raises(MeshError, match=r"svc1\.yaml: changed since the mesh was generated"):
        check_pristine(FULL, out, [0, 1])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (MeshSpec(services=0), "services: 0"),
        (MeshSpec(services=4, endpoints=251), "endpoints: 251"),
        (MeshSpec(services=4, namespaces=5), "namespaces: 5"),
        (MeshSpec(services=4, namespaces=2, virtual_services=2, destination_rules="none"), "keep them"),
        (MeshSpec(services=4, namespaces=2, virtual_services=0, destination_rules="some"), "destination_rules: 'some'"),
    ],
)
def test_bad_specs_are_refused_by_name(spec: MeshSpec, message: str) -> None:
    with pytest.raises(MeshError, match=message):
        spec.check()


def test_expected_endpoint_sets_follow_subsets_and_ports() -> None:
    clusters = FULL.cluster_endpoints(1, ServiceState(extra=1))
    host = FULL.host_of(1)
    assert clusters[f"outbound|80||{host}"] == {"10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:80", "10.0.1.4:80"}
    assert clusters[f"outbound|80|v1|{host}"] == {"10.0.1.1:80", "10.0.1.3:80"}
    assert clusters[f"outbound|9000|v2|{host}"] == {"10.0.1.2:9000", "10.0.1.4:9000"}
    # By default only services with a VirtualService have subsets.
    default = MeshSpec(services=4, namespaces=2, virtual_services=1)
    assert len(default.cluster_endpoints(0, ServiceState())) == 3
    assert list(default.cluster_endpoints(1, ServiceState())) == [f"outbound|80||{default.host_of(1)}"]
    assert "DestinationRule" not in render_service(default, 1)

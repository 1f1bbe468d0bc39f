"""Fixtures for the webhook tests: a CA, a server certificate published as Kubernetes mounts a Secret, a running
WebhookServer on 127.0.0.1 and an aiohttp client over HTTPS that trusts only that CA."""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pilot.webhook import WebhookServer
from tests.webhook.pki import CertificateAuthority, ServerPair, cert_pem, key_pem


class FakeClock:
    """The webhook's certificate-check clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class SecretVolume:
    """A directory laid out as the kubelet mounts a Secret: ``tls.crt -> ..data/tls.crt``, ``..data`` a symlink to a
    timestamped directory that a rotation replaces atomically (write the new directory, swap the link)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.version = 0
        root.mkdir()
        for name in ("tls.crt", "tls.key"):
            (root / name).symlink_to(Path("..data") / name)

    @property
    def cert_file(self) -> Path:
        return self.root / "tls.crt"

    @property
    def key_file(self) -> Path:
        return self.root / "tls.key"

    def publish(self, cert_pem: bytes, key_pem: bytes) -> None:
        self.version += 1
        data_dir = self.root / f"..2026_01_01_00_00_{self.version:02d}"
        data_dir.mkdir()
        (data_dir / "tls.crt").write_bytes(cert_pem)
        (data_dir / "tls.key").write_bytes(key_pem)
        staging = self.root / "..data_tmp"
        staging.symlink_to(data_dir.name)
        os.replace(staging, self.root / "..data")

    def publish_pair(self, pair: ServerPair) -> None:
        self.publish(cert_pem(pair.cert), key_pem(pair.key))


@pytest.fixture(scope="session")
def ca() -> CertificateAuthority:
    return CertificateAuthority()


@pytest.fixture
def secret(tmp_path: Path, ca: CertificateAuthority) -> SecretVolume:
    volume = SecretVolume(tmp_path / "webhook-certs")
    volume.publish_pair(ca.issue_server())
    return volume


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def client_tls(ca: CertificateAuthority) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca.pem.decode())


StartWebhook = Callable[..., Awaitable[WebhookServer]]


@pytest.fixture
async def start_webhook(secret: SecretVolume, clock: FakeClock) -> AsyncIterator[StartWebhook]:
    """Starts WebhookServers on 127.0.0.1 (options as keyword arguments); stops them after the test."""
    servers: list[WebhookServer] = []

    async def start(**options: Any) -> WebhookServer:
        server = WebhookServer("127.0.0.1:0", secret.cert_file, secret.key_file, clock=clock, **options)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def webhook(start_webhook: StartWebhook) -> WebhookServer:
    return await start_webhook()


@pytest.fixture
async def client(client_tls: ssl.SSLContext) -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_tls), timeout=timeout) as session:
        yield session

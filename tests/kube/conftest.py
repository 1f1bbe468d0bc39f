"""Fixtures for the Kubernetes source tests: a FakeApiServer (kmock) over real HTTP on 127.0.0.1, a
kubeconfig pointing at it, and in-process pilots reading it."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from pilot.server import PilotServer, ServerOptions
from pilot.sources.kube.informer import InformerSettings
from pilot.sources.kube.leader import LeaseTiming
from pilot.sources.kube.source import KubeOptions
from tests.kube.ads import Proxy
from tests.kube.harness import FakeApiServer, serve_api, write_kubeconfig

# Fast retries, so that recovery shows within a test's deadlines; the defaults are those of production.
FAST = InformerSettings(backoff_initial=0.05, backoff_max=0.5)


@pytest.fixture
async def api() -> AsyncIterator[FakeApiServer]:
    async with serve_api() as (server, _url):
        yield server


@pytest.fixture
def kubeconfig(api: FakeApiServer, tmp_path: Path) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", str(api.url).rstrip("/"))


def kube_options(kubeconfig: Path, **overrides: Any) -> KubeOptions:
    options = KubeOptions(
        kubeconfig=kubeconfig,
        identity="pilot-test",
        lease_namespace="istio-system",
        informer=FAST,
        lease=LeaseTiming.scaled(1.5),
    )
    return dataclasses.replace(options, **overrides)


@pytest.fixture
async def start_pilot(kubeconfig: Path) -> AsyncIterator[Callable[..., Any]]:
    """Starts in-process pilots on the fake API server; stops them all at teardown."""
    started: list[PilotServer] = []

    async def start(
        config_dir: Path | None = None, *, wait: bool = True, kubeconfig_path: Path | None = None, **kube: Any
    ) -> PilotServer:
        server = PilotServer(
            ServerOptions(
                config_dir=config_dir,
                grpc_addr="127.0.0.1:0",
                monitoring_addr="127.0.0.1:0",
                debounce_after=0.01,
                kube=kube_options(kubeconfig_path or kubeconfig, **kube),
            )
        )
        started.append(server)
        if wait:
            await server.start()
        return server

    yield start
    for server in reversed(started):
        await server.stop()


@pytest.fixture
async def proxies() -> AsyncIterator[Callable[..., Proxy]]:
    """Simulated Envoys (tests.kube.ads.Proxy), stopped at teardown."""
    started: list[Proxy] = []

    def connect(port: int, **kwargs: Any) -> Proxy:
        proxy = Proxy(port, **kwargs)
        proxy.start()
        started.append(proxy)
        return proxy

    yield connect
    for proxy in started:
        with contextlib.suppress(Exception):
            await proxy.stop()


# EndpointSlice write (in the API server) -> Envoy routing by it, seconds; printed at the end of the run.
SLICE_TO_ROUTED: list[tuple[str, float]] = []


def record_slice_to_routed(label: str, seconds: float) -> None:
    SLICE_TO_ROUTED.append((label, seconds))
    print(f"KUBE EndpointSlice->routed [{label}]: {seconds:.2f}s")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    if not SLICE_TO_ROUTED:
        return
    terminalreporter.write_sep("-", "kubernetes to envoy propagation")
    all_times = " ".join(f"{label}: {seconds:.2f}s" for label, seconds in SLICE_TO_ROUTED)
    worst = max(seconds for _, seconds in SLICE_TO_ROUTED)
    terminalreporter.write_line(f"KUBE EndpointSlice->routed: {worst:.2f}s (max; {all_times})")

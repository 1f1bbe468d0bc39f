"""A config change as one OpenTelemetry trace, from a running pilot and a simulated Envoy: event -> debounce ->
push (PushContext build) -> the proxy's push -> its ACK. Spans go to the SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from pilot.metrics import tracing
from pilot.server import PilotServer, ServerOptions
from tests.kube.ads import Proxy
from tests.metrics.support import write_config


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    tracing.install(SimpleSpanProcessor(spans))
    try:
        yield spans
    finally:
        tracing.shutdown()


async def start_pilot(tmp_path: Path) -> PilotServer:
    config_dir = tmp_path / "config"
    config_dir.mkdir(exist_ok=True)
    write_config(config_dir)
    server = PilotServer(
        ServerOptions(
            config_dir=config_dir, grpc_addr="127.0.0.1:0", monitoring_addr="127.0.0.1:0", debounce_after=0.01
        )
    )
    await server.start()
    return server


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[PilotServer, Proxy]]:
    server = await start_pilot(tmp_path)
    envoy = Proxy(server.grpc_port)
    envoy.start()
    try:
        await envoy.wait(lambda p: p.route_timeout("80") == 5.0, what="RDS 80 with the 5s timeout")
        yield server, envoy
    finally:
        await envoy.stop()
        await server.stop()


async def wait_for_span(exporter: InMemorySpanExporter, name: str, within: float = 5.0) -> list[ReadableSpan]:
    deadline = time.monotonic() + within
    while not any(s.name == name for s in exporter.get_finished_spans()):
        assert time.monotonic() < deadline, f"no {name} span; have {[s.name for s in exporter.get_finished_spans()]}"
        await asyncio.sleep(0.01)
    return list(exporter.get_finished_spans())


async def test_a_config_change_is_one_trace_from_event_to_ack(
    exporter: InMemorySpanExporter, running: tuple[PilotServer, Proxy], tmp_path: Path
) -> None:
    _, envoy = running
    exporter.clear()
    write_config(tmp_path / "config", timeout="7s")
    await envoy.wait(lambda p: p.route_timeout("80") == 7.0, what="RDS 80 with the 7s timeout")
    spans = await wait_for_span(exporter, "xds.ack")

    by_name: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    (root,) = by_name["config change"]
    (debounce,) = by_name["debounce"]
    (push,) = by_name["push"]
    (init,) = by_name["push_context.init"]
    (proxy_push,) = by_name["xds.push"]
    (ack,) = by_name["xds.ack"]
    trace_id = root.context.trace_id
    assert {s.context.trace_id for s in spans} == {trace_id}, "the change is more than one trace"
    assert root.parent is None
    assert debounce.parent.span_id == root.context.span_id
    assert push.parent.span_id == root.context.span_id
    assert init.parent.span_id == push.context.span_id
    assert proxy_push.parent.span_id == push.context.span_id
    assert ack.parent.span_id == proxy_push.context.span_id
    # In time order: event, debounce, build, the proxy's send, its ACK.
    assert root.start_time <= debounce.start_time < debounce.end_time <= push.start_time
    assert push.start_time <= init.start_time < init.end_time <= push.end_time
    assert push.start_time <= proxy_push.start_time <= ack.start_time <= proxy_push.end_time < ack.end_time
    assert [e.name for e in root.events] and root.events[0].name == "event"
    assert "VirtualService/default/reviews" in str(root.attributes["pilot.configs"])
    assert proxy_push.attributes["pilot.proxy"].startswith("app-1.default")
    assert list(proxy_push.attributes["xds.types"]) == ["rds"]
    assert ack.attributes["xds.type"] == "rds" and ack.status.status_code is StatusCode.UNSET


async def test_tracing_off_creates_no_spans(running: tuple[PilotServer, Proxy], tmp_path: Path) -> None:
    server, envoy = running
    assert tracing.TRACER is None
    write_config(tmp_path / "config", timeout="7s")
    await envoy.wait(lambda p: p.route_timeout("80") == 7.0, what="RDS 80 with the 7s timeout")
    assert all(conn.trace is None for conn in server.discovery.connections.values())
    assert server.debouncer._trace is None
    assert len(tracing._push_spans) == 0 and tracing._latest_push is None


def test_otlp_export_only_when_configured() -> None:
    assert not tracing.configure_from_env({})
    assert not tracing.configure_from_env(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"}
    )
    assert not tracing.configure_from_env(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_EXPORTER": "none"}
    )
    assert tracing.TRACER is None
    try:
        assert tracing.configure_from_env({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"})
        assert tracing.TRACER is not None
    finally:
        tracing.shutdown()
    assert tracing.TRACER is None


async def test_spans_reach_an_otlp_http_collector(tmp_path: Path) -> None:
    """The real exporter (OTLP/HTTP, JSON encoding) to a collector stand-in on loopback."""
    received: list[dict[str, Any]] = []

    async def collect(request: web.Request) -> web.Response:
        assert request.content_type == "application/json"
        assert request.headers.get("x-tenant") == "mesh"  # OTEL_EXPORTER_OTLP_HEADERS
        received.append(await request.json())
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/v1/traces", collect)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=mesh"}
        assert tracing.configure_from_env(env)
        server = await start_pilot(tmp_path)
        envoy = Proxy(server.grpc_port)
        envoy.start()
        try:
            await envoy.wait(lambda p: p.route_timeout("80") == 5.0, what="RDS 80 with the 5s timeout")
            write_config(tmp_path / "config", timeout="7s")
            await envoy.wait(lambda p: p.route_timeout("80") == 7.0, what="RDS 80 with the 7s timeout")
        finally:
            await envoy.stop()
            await server.stop()
        # Flushing blocks on the export, which this loop serves: off the loop.
        await asyncio.to_thread(tracing.shutdown)
    finally:
        tracing.shutdown()
        await runner.cleanup()
    spans = [
        span
        for message in received
        for resource_spans in message["resourceSpans"]
        for scope_spans in resource_spans["scopeSpans"]
        for span in scope_spans["spans"]
    ]
    assert {"config change", "debounce", "push", "push_context.init", "xds.push"} <= {s["name"] for s in spans}
    by_id = {s["spanId"]: s for s in spans}
    assert all(len(s["traceId"]) == 32 and len(s["spanId"]) == 16 for s in spans)
    pushes = [s for s in spans if s["name"] == "xds.push"]
    assert pushes and all(s.get("parentSpanId") in by_id for s in pushes)  # children of spans that were sent
    service = received[0]["resourceSpans"][0]["resource"]["attributes"]
    assert {"key": "service.name", "value": {"stringValue": "pilot"}} in service

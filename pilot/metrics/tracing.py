"""A config change as one OpenTelemetry trace: event -> debounce -> push (PushContext build) -> each proxy's
push -> its ACK.

Spans (all in one trace per debounced batch of changes):

    config change                 root: first event of the batch until its push is enqueued; one span
                                  event per change event; attributes: configs, reasons, events, full
      debounce                    first event -> the push starts
      push                        PushContext build and enqueue (istiod's Push)
        push_context.init         the PushContext build (full pushes only)
        xds.push                  per proxy: from the push reaching it until everything is written
          xds.ack                 per response type sent: written -> the proxy's ACK (ERROR on a NACK)

Off unless configured: ``configure_from_env()`` installs an OTLP/HTTP (JSON, pilot.metrics.otlp_json) exporter when
``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (and ``OTEL_TRACES_EXPORTER``
is not ``none``, ``OTEL_SDK_DISABLED`` not ``true``); tests ``install`` an in-memory exporter. While off,
``TRACER`` is None and the hooks in the push path test only that: no span or context object is created.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.trace import Span, Tracer

    from pilot.push.request import PushRequest

log = logging.getLogger(__name__)

# The active tracer, or None when tracing is off (the hooks' only test).
TRACER: Tracer | None = None
_provider: TracerProvider | None = None
# The push span each request was pushed under (a merged copy in the push queue falls back to the latest).
_push_spans: weakref.WeakKeyDictionary[PushRequest, Span] = weakref.WeakKeyDictionary()
_latest_push: Span | None = None

# A batch of 2,000 proxies yields ~2 spans per proxy; the SDK's default queue (2048) would drop most.
MAX_QUEUE = 65536


def install(processor: SpanProcessor, service_name: str = "pilot") -> None:
    """Turn tracing on with ``processor`` (an OTLP batch processor, or a test's in-memory one)."""
    global TRACER, _provider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    shutdown()
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}), shutdown_on_exit=False)
    provider.add_span_processor(processor)
    _provider = provider
    TRACER = provider.get_tracer("pilot")


def shutdown() -> None:
    """Flush and turn tracing off."""
    global TRACER, _provider, _latest_push
    TRACER = None
    _latest_push = None
    _push_spans.clear()
    if _provider is not None:
        provider, _provider = _provider, None
        provider.shutdown()


def configure_from_env(environ: dict[str, str] | None = None) -> bool:
    """Install the OTLP/HTTP exporter if the standard OTel variables ask for it; True if tracing is on."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() in ("none", ""):
        return False
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if not endpoint and env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        endpoint = env["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"  # the spec's per-signal path
    if not endpoint:
        return False
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    if protocol and protocol != "http/json":
        log.warning("tracing: OTLP protocol %r is not supported, exporting over http/json", protocol)
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from pilot.metrics.otlp_json import OtlpJsonSpanExporter

    # Headers, timeout and certificate come from the same OTEL_EXPORTER_OTLP_* variables.
    install(
        BatchSpanProcessor(OtlpJsonSpanExporter(endpoint, env), max_queue_size=MAX_QUEUE),
        env.get("OTEL_SERVICE_NAME", "pilot"),
    )
    log.info("tracing: exporting spans over OTLP/HTTP (JSON) to %s", endpoint)
    return True


# ----- the change: root, debounce -----


class ChangeTrace:
    """One debounced batch: the root span and its debounce span, opened at the batch's first event."""

    __slots__ = ("debounce", "events", "root")

    def __init__(self, tracer: Tracer) -> None:
        from opentelemetry import trace

        start = time.time_ns()  # the batch's first event is now (the debouncer's clock may be a test's)
        self.root = tracer.start_span("config change", start_time=start)
        context = trace.set_span_in_context(self.root)
        self.debounce = tracer.start_span("debounce", context=context, start_time=start)
        self.events = 0

    def event(self, request: PushRequest) -> None:
        self.events += 1
        self.root.add_event("event", {"configs": request.describe(), "reasons": _reasons(request)})

    @contextmanager
    def pushing(self, request: PushRequest) -> Iterator[None]:
        """Around the push call: ends the debounce, makes the root the parent of what the push traces."""
        from opentelemetry import context, trace

        self.debounce.end()
        self.root.set_attributes(
            {
                "pilot.configs": request.describe(),
                "pilot.reasons": _reasons(request),
                "pilot.events": self.events,
                "pilot.full": request.full,
            }
        )
        token = context.attach(trace.set_span_in_context(self.root))
        try:
            yield
        finally:
            context.detach(token)
            self.root.end()


def start_change() -> ChangeTrace | None:
    return ChangeTrace(TRACER) if TRACER is not None else None


def _reasons(request: PushRequest) -> str:
    return ",".join(f"{reason}:{count}" for reason, count in sorted(request.reason.items()))


# ----- the push -----


@contextmanager
def push_span(request: PushRequest) -> Iterator[None]:
    """The push of ``request`` (a child of the current span: the change's root when debounced). Call only
    while ``TRACER`` is set."""
    global _latest_push
    assert TRACER is not None
    from opentelemetry import context, trace

    span = TRACER.start_span("push", attributes={"pilot.full": request.full, "pilot.forced": request.forced})
    _push_spans[request] = span
    _latest_push = span
    token = context.attach(trace.set_span_in_context(span))
    try:
        yield
    finally:
        context.detach(token)
        span.end()


def init_span() -> Any:
    """Span around the PushContext build (a no-op context manager when off)."""
    if TRACER is None:
        return _NULL
    return TRACER.start_as_current_span("push_context.init")


# ----- per proxy -----


class ProxyTrace:
    """One proxy's push and the ACKs it owes."""

    __slots__ = ("acks", "context", "span")

    def __init__(self, tracer: Tracer, request: PushRequest, proxy_id: str, start_ns: int) -> None:
        from opentelemetry import trace

        parent = _push_spans.get(request) or _latest_push
        parent_context = trace.set_span_in_context(parent) if parent is not None else None
        self.span = tracer.start_span(
            "xds.push", context=parent_context, attributes={"pilot.proxy": proxy_id}, start_time=start_ns
        )
        self.context = trace.set_span_in_context(self.span)
        self.acks: dict[str, tuple[str, Span]] = {}

    def sent(self, tracer: Tracer, type_url: str, short: str, nonce: str, size: int, at_ns: int) -> None:
        previous = self.acks.pop(type_url, None)
        if previous is not None:
            previous[1].set_attribute("pilot.superseded", True)
            previous[1].end()
        span = tracer.start_span(
            "xds.ack",
            context=self.context,
            attributes={"xds.type": short, "xds.nonce": nonce, "xds.bytes": size},
            start_time=at_ns,
        )
        self.acks[type_url] = (nonce, span)

    def done(self, types: list[str], end_ns: int | None) -> None:
        self.span.set_attribute("xds.types", types)
        self.span.end(end_time=end_ns)

    def answered(self, type_url: str, acked_nonce: str, error: str) -> bool:
        """An ACK or NACK for ``type_url``; True once no ACK is owed any more."""
        from opentelemetry.trace import Status, StatusCode

        pending = self.acks.get(type_url)
        if pending is not None and (error or pending[0] == acked_nonce):
            del self.acks[type_url]
            if error:
                pending[1].set_status(Status(StatusCode.ERROR, error[:512]))
            pending[1].end()
        return not self.acks

    def closed(self) -> None:
        for _, span in self.acks.values():
            span.set_attribute("pilot.connection_closed", True)
            span.end()
        self.acks.clear()


def start_proxy(request: PushRequest, proxy_id: str, start_ns: int) -> ProxyTrace | None:
    return ProxyTrace(TRACER, request, proxy_id, start_ns) if TRACER is not None else None


class _NullContext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NULL = _NullContext()

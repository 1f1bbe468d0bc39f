"""An OTLP/HTTP span exporter that speaks the protocol's JSON encoding (``http/json``), with no protobuf modules.

Why not opentelemetry-exporter-otlp-proto-http: it needs the ``opentelemetry-proto`` package, whose modules
(``opentelemetry/proto/...``) the ``xds-protos`` wheel pilot needs for Envoy's API also ships, in an older
version; whichever pip installs last wins, so the exporter worked or failed by install order. OTLP's JSON
encoding is part of the specification and every collector accepts it at ``/v1/traces``.

Runs in the BatchSpanProcessor's export thread, so the blocking HTTP request never touches the event loop.
Honours the standard variables: ``OTEL_EXPORTER_OTLP_(TRACES_)HEADERS`` (``k=v,k2=v2``),
``OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT`` (milliseconds, default 10000) and
``OTEL_EXPORTER_OTLP_(TRACES_)CERTIFICATE`` (a CA file for https).
"""

from __future__ import annotations

import json
import logging
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode

log = logging.getLogger(__name__)

_KINDS = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}
_STATUS = {StatusCode.UNSET: 0, StatusCode.OK: 1, StatusCode.ERROR: 2}


def _value(value: Any) -> dict[str, Any]:
    """An OTLP AnyValue (JSON mapping: 64-bit integers as strings)."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, Sequence):
        return {"arrayValue": {"values": [_value(v) for v in value]}}
    return {"stringValue": str(value)}


def _attributes(attributes: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    return [{"key": key, "value": _value(value)} for key, value in (attributes or {}).items()]


def _span(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    out: dict[str, Any] = {
        "traceId": format(context.trace_id, "032x"),
        "spanId": format(context.span_id, "016x"),
        "name": span.name,
        "kind": _KINDS.get(span.kind, 1),
        "startTimeUnixNano": str(span.start_time or 0),
        "endTimeUnixNano": str(span.end_time or 0),
        "attributes": _attributes(span.attributes),
        "status": {"code": _STATUS.get(span.status.status_code, 0)},
    }
    if span.parent is not None:
        out["parentSpanId"] = format(span.parent.span_id, "016x")
    if span.status.description:
        out["status"]["message"] = span.status.description
    if span.events:
        out["events"] = [
            {"timeUnixNano": str(e.timestamp), "name": e.name, "attributes": _attributes(e.attributes)}
            for e in span.events
        ]
    return out


def encode(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """An ExportTraceServiceRequest in OTLP's JSON encoding, spans grouped by resource and scope."""
    by_resource: dict[int, tuple[Any, dict[tuple[str, str], list[dict[str, Any]]]]] = {}
    for span in spans:
        resource = span.resource
        scopes = by_resource.setdefault(id(resource), (resource, {}))[1]
        scope = span.instrumentation_scope
        key = (scope.name, scope.version or "") if scope is not None else ("", "")
        scopes.setdefault(key, []).append(_span(span))
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": _attributes(resource.attributes if resource is not None else {})},
                "scopeSpans": [
                    {"scope": {"name": name, "version": version}, "spans": items}
                    for (name, version), items in scopes.items()
                ],
            }
            for resource, scopes in by_resource.values()
        ]
    }


def _headers(raw: str) -> dict[str, str]:
    out = {}
    for item in raw.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            out[urllib.parse.unquote(key.strip())] = urllib.parse.unquote(value.strip())
    return out


class OtlpJsonSpanExporter(SpanExporter):
    def __init__(self, endpoint: str, environ: Mapping[str, str]) -> None:
        def setting(name: str, default: str = "") -> str:
            specific = environ.get(f"OTEL_EXPORTER_OTLP_TRACES_{name}")
            return specific or environ.get(f"OTEL_EXPORTER_OTLP_{name}", default)

        self.endpoint = endpoint
        self.headers = {**_headers(setting("HEADERS")), "Content-Type": "application/json"}
        try:
            self.timeout = max(0.001, float(setting("TIMEOUT", "10000")) / 1000)
        except ValueError:
            self.timeout = 10.0
        certificate = setting("CERTIFICATE")
        self.context = ssl.create_default_context(cafile=certificate) if certificate else None
        self._shutdown = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        body = json.dumps(encode(spans), separators=(",", ":")).encode()
        request = urllib.request.Request(self.endpoint, data=body, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self.context) as response:
                response.read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            log.warning("tracing: exporting %d spans to %s failed: %s", len(spans), self.endpoint, exc)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._shutdown = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

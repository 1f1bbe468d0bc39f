"""OpenTelemetry SDK metric data -> Prometheus text exposition format 0.0.4.

Written as istiod's OTel Prometheus exporter writes it (``WithoutUnits``, ``WithoutCounterSuffixes``): metric
names unchanged, ``# HELP`` and ``# TYPE`` before each family, histograms as cumulative ``_bucket{le}``,
``_sum`` and ``_count``, numbers as Go's ``strconv.FormatFloat(v, 'g', -1, 64)``. A label with an empty value
is left out (Prometheus treats the two as the same series).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from opentelemetry.sdk.metrics.export import Gauge, Histogram, Metric, Sum

from pilot.metrics.definitions import MetricDef

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def format_float(value: float) -> str:
    """Go's shortest 'g' formatting: '0.01', '10000', '1e+06', '1.234567e+06', '5'."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    value = float(value)
    digits = 1
    while digits < 17 and float(f"{value:.{digits - 1}e}") != value:
        digits += 1
    mantissa_exp = f"{value:.{digits - 1}e}"
    exponent = int(mantissa_exp.rpartition("e")[2])
    if exponent < -4 or exponent >= 6:  # Go: shortest formatting switches to %e at these exponents
        return mantissa_exp
    return f"{value:.{max(digits - 1 - exponent, 0)}f}"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(attributes: Mapping[str, object] | None, extra: tuple[str, str] | None = None) -> str:
    pairs = [(k, str(v)) for k, v in sorted((attributes or {}).items()) if v != ""]
    if extra is not None:
        pairs.append(extra)
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape_value(v)}"' for k, v in pairs) + "}"


def _sort_key(point: object) -> tuple[tuple[str, str], ...]:
    attributes = getattr(point, "attributes", None) or {}
    return tuple(sorted((k, str(v)) for k, v in attributes.items()))


def render(metrics: Iterable[Metric], definitions: Mapping[str, MetricDef]) -> str:
    """The exposition of ``metrics``, in their order; help and type from the definition when there is one."""
    lines: list[str] = []
    for metric in metrics:
        definition = definitions.get(metric.name)
        data = metric.data
        if isinstance(data, Histogram):
            kind = "histogram"
        elif isinstance(data, Sum):
            kind = "counter" if data.is_monotonic else "gauge"
        elif isinstance(data, Gauge):
            kind = "gauge"
        else:
            continue
        if definition is not None:
            kind = definition.kind.value
        help_text = definition.help if definition is not None else (metric.description or metric.name)
        lines.append(f"# HELP {metric.name} {_escape_help(help_text)}")
        lines.append(f"# TYPE {metric.name} {kind}")
        if isinstance(data, Histogram):
            for point in sorted(data.data_points, key=_sort_key):
                cumulative = 0
                for bound, count in zip(point.explicit_bounds, point.bucket_counts, strict=False):
                    cumulative += count
                    labels = _labels(point.attributes, ("le", format_float(bound)))
                    lines.append(f"{metric.name}_bucket{labels} {cumulative}")
                labels = _labels(point.attributes, ("le", "+Inf"))
                lines.append(f"{metric.name}_bucket{labels} {point.count}")
                labels = _labels(point.attributes)
                lines.append(f"{metric.name}_sum{labels} {format_float(point.sum)}")
                lines.append(f"{metric.name}_count{labels} {point.count}")
        else:
            for point in sorted(data.data_points, key=_sort_key):
                lines.append(f"{metric.name}{_labels(point.attributes)} {format_float(point.value)}")
    return "\n".join(lines) + "\n" if lines else ""

"""Histograms cheap enough for the push path: one bisect and two additions per observation.

The OpenTelemetry SDK's synchronous ``Histogram.record`` costs about 3.4 µs per call on the project VM
(attribute hashing, locks, exemplar filter), ten times this; a push records several observations per proxy,
and the endpoint-only fast path spends only tens of µs per proxy in all. So observations pre-aggregate here
and reach the SDK's export pipeline at collection time (pilot.metrics.registry). Counters need no class: a
``collections.Counter`` keyed ``name{label=value,...}`` costs one dict update.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence


class Histogram:
    """One series: counts per bucket (Prometheus ``le`` semantics: a value equal to a bound is in its
    bucket), plus the +Inf bucket, the sum and (derived) the count."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)


class HistogramFamily:
    """Histograms of one metric by label values; ``labels(...)`` returns the series (create it once, keep it)."""

    __slots__ = ("bounds", "label_names", "series")

    def __init__(self, bounds: Sequence[float], label_names: Sequence[str] = ()) -> None:
        self.bounds = tuple(bounds)
        self.label_names = tuple(label_names)
        self.series: dict[tuple[str, ...], Histogram] = {}

    def labels(self, *values: str) -> Histogram:
        series = self.series.get(values)
        if series is None:
            if len(values) != len(self.label_names):
                raise ValueError(f"expected label values for {self.label_names}, got {values}")
            series = self.series[values] = Histogram(self.bounds)
        return series

    def items(self) -> Iterator[tuple[tuple[str, ...], Histogram]]:
        return iter(list(self.series.items()))

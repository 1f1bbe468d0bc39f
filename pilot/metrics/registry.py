"""One pilot process's metrics: cheap recording on the push path, collection through the OpenTelemetry SDK.

Recording:
* counters: ``metrics.counters["name{label=value,...}"] += n`` (a ``collections.Counter``; the key format is
  the one pilot's code and tests have always used);
* histograms: ``metrics.histogram(name, *label_values).observe(seconds)`` (pilot.metrics.instruments);
* gauges: read at collection from the sources the owner registers (``add_gauges``), e.g. connections.

Collection (each scrape): an SDK ``MeterProvider`` private to this registry has one asynchronous instrument
(ObservableCounter / ObservableGauge) per counter and gauge family, whose callbacks report the recorded
values; ``PilotMetricReader`` (an SDK ``MetricReader``) collects them, adds the pre-aggregated histograms as
SDK ``HistogramDataPoint``s (the SDK has no asynchronous histogram) and pilot.metrics.exposition renders the
Prometheus text. The SDK's global provider, its threads and prometheus_client's global registry are not
used, so several pilots (tests) in one process keep separate metrics.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from functools import partial

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    Metric,
    MetricReader,
    MetricsData,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.resources import Resource

from pilot.metrics import exposition, process
from pilot.metrics.definitions import BY_NAME, DEFINITIONS, INTERNAL_COUNTERS, Kind, Origin
from pilot.metrics.instruments import Histogram, HistogramFamily

log = logging.getLogger(__name__)

SUPERVISOR_ONLY = frozenset({"pilot_workers", "pilot_worker_restarts"})
WORKER_FAMILIES = frozenset(d.name for d in DEFINITIONS if d.name not in SUPERVISOR_ONLY)
SUPERVISOR_FAMILIES = frozenset(d.name for d in DEFINITIONS if d.origin is Origin.PROMETHEUS) | SUPERVISOR_ONLY

# A gauge source returns {family: {label values: value}}; called once per collection.
GaugeValues = Mapping[str, Mapping[tuple[str, ...], float]]
GaugeSource = Callable[[], GaugeValues]


def series_key(name: str, labels: Iterable[tuple[str, str]] = ()) -> str:
    """The counter key of a series: ``name`` or ``name{a=x,b=y}``."""
    pairs = ",".join(f"{k}={v}" for k, v in labels)
    return f"{name}{{{pairs}}}" if pairs else name


def parse_key(key: str) -> tuple[str, dict[str, str]]:
    """``name{a=x,b=y}`` -> (name, {a: x, b: y})."""
    name, brace, rest = key.partition("{")
    if not brace:
        return name, {}
    labels: dict[str, str] = {}
    for pair in rest.rstrip("}").split(","):
        label, _, value = pair.partition("=")
        if label:
            labels[label] = value
    return name, labels


class PilotMetricReader(MetricReader):
    """Pull reader: ``snapshot()`` collects from the SDK and returns its metrics plus pilot's histograms."""

    def __init__(self, histograms: Callable[[int], list[Metric]]) -> None:
        super().__init__()
        self._histograms = histograms
        self._latest: MetricsData | None = None

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: object) -> None:
        self._latest = metrics_data

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: object) -> None:
        self._latest = None

    def snapshot(self) -> list[Metric]:
        self._latest = None
        self.collect()
        out: list[Metric] = []
        if self._latest is not None:
            for resource_metrics in self._latest.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    out.extend(scope_metrics.metrics)
        out.extend(self._histograms(time.time_ns()))
        return out


class Metrics:
    def __init__(self, families: Iterable[str] = WORKER_FAMILIES) -> None:
        self.families = frozenset(families)
        self.start_time_ns = time.time_ns()
        self.counters: Counter[str] = Counter()
        self._histograms: dict[str, HistogramFamily] = {}
        self._sources: list[GaugeSource] = []
        self._gauge_values: dict[str, dict[tuple[str, ...], float]] = {}
        self._parsed: dict[str, tuple[str, dict[str, str]]] = {}
        self._counter_series: dict[str, list[tuple[float, dict[str, str]]]] = {}
        self._instruments: set[str] = set()
        for definition in DEFINITIONS:
            if definition.name not in self.families:
                continue
            if definition.kind is Kind.COUNTER:
                for values in definition.known:
                    self.counters[series_key(definition.name, zip(definition.labels, values, strict=True))] += 0
            elif definition.kind is Kind.HISTOGRAM:
                family = self._histograms[definition.name] = HistogramFamily(definition.buckets, definition.labels)
                for values in definition.known or ((),):
                    family.labels(*values)
        self._reader = PilotMetricReader(self._histogram_metrics)
        self._provider = MeterProvider(
            metric_readers=[self._reader],
            resource=Resource.create({"service.name": "pilot"}),
            shutdown_on_exit=False,
        )
        self._meter = self._provider.get_meter("pilot")
        for definition in DEFINITIONS:
            if definition.name in self.families and definition.kind is not Kind.HISTOGRAM:
                self._instrument(definition.name, definition.kind, definition.help)
        self.add_gauges(process.process_values)
        self.add_gauges(process.build_values)

    # ----- recording -----

    def histogram(self, name: str, *label_values: str) -> Histogram:
        """The series to ``observe`` into; look it up once and keep it where it is hot."""
        return self._histograms[name].labels(*label_values)

    def add_gauges(self, source: GaugeSource) -> None:
        """Register a callable read at each collection: {family: {label values: value}}."""
        self._sources.append(source)

    # ----- collection -----

    def _instrument(self, name: str, kind: Kind, description: str) -> None:
        self._instruments.add(name)
        if kind is Kind.COUNTER:
            self._meter.create_observable_counter(
                name, callbacks=[partial(self._observe_counter, name)], description=description
            )
        else:
            self._meter.create_observable_gauge(
                name, callbacks=[partial(self._observe_gauge, name)], description=description
            )

    def _observe_counter(self, family: str, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(value, labels) for value, labels in self._counter_series.get(family, ())]

    def _observe_gauge(self, family: str, options: CallbackOptions) -> Iterable[Observation]:
        definition = BY_NAME.get(family)
        labels = definition.labels if definition is not None else ()
        values = self._gauge_values.get(family)
        if values is None:
            # Present from start: 0 for the known label values (or the single unlabelled series).
            known = definition.known if definition is not None and definition.known else ((),) if not labels else ()
            values = dict.fromkeys(known, 0.0)
        return [Observation(v, dict(zip(labels, key, strict=False))) for key, v in values.items()]

    def _group_counters(self) -> dict[str, list[tuple[float, dict[str, str]]]]:
        grouped: dict[str, list[tuple[float, dict[str, str]]]] = {}
        for key, value in list(self.counters.items()):
            parsed = self._parsed.get(key)
            if parsed is None:
                parsed = self._parsed[key] = parse_key(key)
            name, labels = parsed
            if name in INTERNAL_COUNTERS:
                continue
            grouped.setdefault(name, []).append((value, labels))
        return grouped

    def _histogram_metrics(self, now_ns: int) -> list[Metric]:
        out = []
        for name, family in self._histograms.items():
            definition = BY_NAME[name]
            points = [
                HistogramDataPoint(
                    attributes=dict(zip(family.label_names, values, strict=True)),
                    start_time_unix_nano=self.start_time_ns,
                    time_unix_nano=now_ns,
                    count=sum(series.counts),
                    sum=series.sum,
                    bucket_counts=list(series.counts),
                    explicit_bounds=list(series.bounds),
                    min=float("nan"),
                    max=float("nan"),
                )
                for values, series in family.items()
            ]
            data = HistogramData(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE)
            out.append(Metric(name=name, description=definition.help, unit="", data=data))
        return out

    def collect(self) -> list[Metric]:
        """Every family this process exports, as SDK metric data, in the definitions' order."""
        values: dict[str, dict[tuple[str, ...], float]] = {}
        for source in self._sources:
            try:
                produced = source()
            except Exception:  # a broken source must not take /metrics down with it
                log.exception("metrics: gauge source %r failed", source)
                continue
            for family, series in produced.items():
                if family in self.families:
                    values.setdefault(family, {}).update(series)
        self._gauge_values = values
        self._counter_series = self._group_counters()
        for family, series in values.items():
            definition = BY_NAME[family]
            if definition.kind is Kind.COUNTER:  # a counter read from elsewhere (process CPU time)
                labelled = [(v, dict(zip(definition.labels, key, strict=False))) for key, v in series.items()]
                self._counter_series.setdefault(family, []).extend(labelled)
        for family in self._counter_series:
            if family not in self._instruments:
                # A counter someone added without a definition: exported all the same, as a counter.
                self._instrument(family, Kind.COUNTER, f"{family} (pilot counter without a definition)")
        collected = {metric.name: metric for metric in self._reader.snapshot()}
        order = {d.name: i for i, d in enumerate(DEFINITIONS)}
        return sorted(collected.values(), key=lambda m: (order.get(m.name, len(order)), m.name))

    def render(self) -> str:
        """The Prometheus text exposition of everything collected now."""
        return exposition.render(self.collect(), BY_NAME)

    def shutdown(self) -> None:
        self._provider.shutdown()

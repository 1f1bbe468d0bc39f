"""pilot.metrics without a server: histogram bucket semantics, Go's number format, escaping, and counters that
have no definition yet."""

from __future__ import annotations

import pytest

from pilot.metrics.exposition import format_float
from pilot.metrics.instruments import Histogram
from pilot.metrics.registry import Metrics, parse_key, series_key
from tests.metrics.support import families


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0"),
        (0.01, "0.01"),
        (5, "5"),
        (10000, "10000"),
        (123456.7, "123456.7"),
        (1e6, "1e+06"),
        (4e7, "4e+07"),
        (1234567, "1.234567e+06"),
        (5e-05, "5e-05"),
        (float("inf"), "+Inf"),
        (float("nan"), "NaN"),
    ],
)
def test_numbers_are_formatted_as_gos_shortest_g(value: float, text: str) -> None:
    assert format_float(value) == text


def test_a_value_on_a_bound_is_in_that_bucket() -> None:
    histogram = Histogram((0.1, 0.5, 1))
    for value in (0.1, 0.2, 0.5, 7.0):
        histogram.observe(value)
    assert histogram.counts == [1, 2, 0, 1]
    assert histogram.count == 4 and histogram.sum == pytest.approx(7.8)


def test_counter_keys_round_trip() -> None:
    key = series_key("pilot_k8s_cfg_events", [("type", "VirtualService"), ("event", "add")])
    assert key == "pilot_k8s_cfg_events{type=VirtualService,event=add}"
    assert parse_key(key) == ("pilot_k8s_cfg_events", {"type": "VirtualService", "event": "add"})
    assert parse_key("pilot_xds_write_timeout") == ("pilot_xds_write_timeout", {})


def test_undefined_counters_and_odd_label_values_are_still_exported_correctly() -> None:
    metrics = Metrics()
    metrics.counters["pilot_something_new{reason=a}"] += 2
    metrics.add_gauges(lambda: {"pilot_xds": {('1.2"beta\\1',): 1}})
    text = metrics.render()
    parsed = families(text)
    assert parsed["pilot_something_new"].type == "counter"
    assert parsed["pilot_something_new"].value(reason="a") == 2
    assert 'pilot_xds{version="1.2\\"beta\\\\1"} 1' in text
    # A source that fails does not take /metrics down.
    metrics.add_gauges(lambda: 1 / 0)  # type: ignore[arg-type,return-value]
    assert "pilot_xds_pushes" in metrics.render()
    metrics.shutdown()

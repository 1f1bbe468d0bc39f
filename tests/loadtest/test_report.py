"""The report's figures from raw per-proxy numbers."""

from __future__ import annotations

from pilot.loadtest.report import client_cpu, quantiles, traffic


def test_quantiles_are_nearest_rank() -> None:
    q = quantiles([float(v) for v in range(1, 101)])
    assert q == {"n": 100, "min": 1.0, "p50": 50.0, "p99": 99.0, "max": 100.0}
    assert quantiles([]) is None
    assert quantiles([0.3])["p99"] == 0.3  # type: ignore[index]


def test_client_share_of_a_core_is_over_the_whole_phase_per_process() -> None:
    storm = [{"cpu_s": 4.0, "wall_s": 8.0}, {"cpu_s": 2.0, "wall_s": 8.0}]
    # A settle that found the clients already quiet: tiny, and nearly all CPU. It must not read as saturation.
    settle = [{"cpu_s": 0.0009, "wall_s": 0.001}, {"cpu_s": 0.0009, "wall_s": 0.001}]
    phase = client_cpu(storm, settle)
    assert round(phase["cpu_s"], 4) == 6.0018
    assert 0.5 <= phase["max_core_fraction"] < 0.51
    assert phase["wall_s"] == 8.001


def test_traffic_counts_per_type_and_receivers() -> None:
    per = traffic([[1, 1, 1, 1], [0, 2, 0, 0]], [[10, 20, 30, 40], [0, 4, 0, 0]])
    assert per["messages"] == {"cds": 0.5, "eds": 1.5, "lds": 0.5, "rds": 0.5}
    assert per["bytes"]["eds"] == 12
    assert per["proxies_receiving"] == {"cds": 1, "eds": 2, "lds": 1, "rds": 1}
    assert per["max_messages_one_proxy"] == 4

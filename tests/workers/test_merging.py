"""Merging what workers answer: Prometheus text (pilot.workers.metrics) and per-connection debug JSON."""

from __future__ import annotations

from pilot.workers.aggregate import merge_per_connection
from pilot.workers.metrics import merge, parse


def samples(text: str) -> dict[str, float]:
    return {f"{s.name}{s.labels}": s.value for s in parse(text).samples}


# What pilot/debug.py emits today: `name{label="v"} value`, no HELP/TYPE.
WORKER_0 = """pilot_proxy_convergence 5
pilot_pushcontext_init 2
pilot_services 4
pilot_virt_services 3
pilot_xds 12
pilot_xds_pushes{type="cds"} 12
pilot_xds_pushes{type="eds"} 7
"""
WORKER_1 = """pilot_proxy_convergence 3
pilot_pushcontext_init 2
pilot_services 4
pilot_virt_services 3
pilot_total_xds_rejects{type="lds"} 1
pilot_xds 8
pilot_xds_pushes{type="cds"} 8
"""


def test_counters_and_connected_clients_are_summed_config_gauges_taken_once() -> None:
    merged = samples(merge([WORKER_0, WORKER_1]))
    assert merged["pilot_xds"] == 20
    assert merged["pilot_proxy_convergence"] == 8
    assert merged["pilot_pushcontext_init"] == 4
    assert merged['pilot_xds_pushes{type="cds"}'] == 20
    assert merged['pilot_xds_pushes{type="eds"}'] == 7  # only on one worker
    assert merged['pilot_total_xds_rejects{type="lds"}'] == 1
    assert merged["pilot_services"] == 4
    assert merged["pilot_virt_services"] == 3


def test_supervisor_lines_are_appended_and_output_parses_back() -> None:
    text = merge([WORKER_0], ["pilot_workers 2"])
    assert text.endswith("pilot_workers 2\n")
    assert samples(text)["pilot_xds"] == 12


def test_help_and_type_lines_are_kept_once_and_steer_the_merge() -> None:
    worker = """# HELP pilot_xds Number of endpoints connected to this pilot using XDS.
# TYPE pilot_xds gauge
pilot_xds{version="1.0"} 3
# HELP pilot_proxy_convergence_time Delay in seconds between config change and a proxy receiving it all.
# TYPE pilot_proxy_convergence_time histogram
pilot_proxy_convergence_time_bucket{le="0.1"} 2
pilot_proxy_convergence_time_bucket{le="+Inf"} 3
pilot_proxy_convergence_time_sum 0.25
pilot_proxy_convergence_time_count 3
# TYPE rpc_latency summary
rpc_latency{quantile="0.99"} 0.5
rpc_latency_sum 1.5
rpc_latency_count 4
# TYPE pilot_services gauge
pilot_services 7
"""
    other = worker.replace('{quantile="0.99"} 0.5', '{quantile="0.99"} 0.9')
    text = merge([worker, other])
    assert text.count("# TYPE pilot_xds gauge") == 1
    assert text.count("# HELP pilot_proxy_convergence_time ") == 1
    type_line = text.index("# TYPE pilot_proxy_convergence_time histogram")
    assert type_line < text.index("pilot_proxy_convergence_time_bucket")
    merged = samples(text)
    assert merged['pilot_xds{version="1.0"}'] == 6
    assert merged['pilot_proxy_convergence_time_bucket{le="+Inf"}'] == 6
    assert merged["pilot_proxy_convergence_time_sum"] == 0.5
    assert merged['rpc_latency{quantile="0.99"}'] == 0.5  # a quantile cannot be summed: the first worker's
    assert merged["rpc_latency_count"] == 8
    assert merged["pilot_services"] == 7


def test_label_values_with_quotes_commas_and_braces_identify_one_series() -> None:
    a = 'pilot_xds_cds_reject{node="a,b",err="bad \\"x\\" }"} 1 1700000000000\n'
    b = 'pilot_xds_cds_reject{err="bad \\"x\\" }",node="a,b"} 2\n'  # same series, labels in another order
    c = 'pilot_xds_cds_reject{node="a,b",err="other"} 5\n'
    text = merge([a, b + c])
    assert samples(text) == {
        'pilot_xds_cds_reject{node="a,b",err="bad \\"x\\" }"}': 3,
        'pilot_xds_cds_reject{node="a,b",err="other"}': 5,
    }


def test_lines_that_do_not_parse_are_skipped() -> None:
    text = merge(['pilot_xds 2\nnot a metric line\nbroken{x=1} 3\npilot_xds_pushes{type="cds" 4\n', "pilot_xds 1\n"])
    assert samples(text) == {"pilot_xds": 3}


def test_adsz_clients_are_concatenated_with_their_worker_and_totals_summed() -> None:
    merged = merge_per_connection(
        "adsz",
        [
            (0, {"totalClients": 2, "clients": [{"connectionId": "a-1"}, {"connectionId": "b-2"}]}),
            (1, {"totalClients": 1, "clients": [{"connectionId": "a-1"}]}),
        ],
    )
    assert merged == {
        "totalClients": 3,
        "clients": [
            {"worker": 0, "connectionId": "a-1"},
            {"worker": 0, "connectionId": "b-2"},
            {"worker": 1, "connectionId": "a-1"},
        ],
    }


def test_lists_of_per_connection_entries_are_concatenated_even_for_new_endpoints() -> None:
    assert merge_per_connection("syncz", [(0, [{"proxy": "a"}]), (1, [{"proxy": "b"}, {"proxy": "c"}])]) == [
        {"worker": 0, "proxy": "a"},
        {"worker": 1, "proxy": "b"},
        {"worker": 1, "proxy": "c"},
    ]
    assert merge_per_connection("connections", [(0, []), (1, [{"id": "x"}])]) == [{"worker": 1, "id": "x"}]


def test_an_unknown_object_endpoint_is_not_merged() -> None:
    assert merge_per_connection("pushcontext", [(0, {"a": 1}), (1, {"a": 1})]) is None

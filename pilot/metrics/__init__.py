"""Telemetry: metrics with istiod's names (OpenTelemetry SDK, Prometheus text at /metrics) and tracing.

definitions.py  every metric: name, type, help, labels, buckets, label values present from start
instruments.py  pre-aggregating histograms cheap enough for the push path
registry.py     a process's metrics: recording, gauge sources, collection through the OTel SDK
exposition.py   SDK metric data -> Prometheus text format (istiod's exporter options)
process.py      process_* and build-info series
sources.py      gauge sources for components that keep their own counts (the webhook)
tracing.py      a config change as one OpenTelemetry trace, exported over OTLP when configured
"""

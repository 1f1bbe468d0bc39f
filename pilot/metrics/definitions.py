"""Every metric pilot exports: name, type, help, labels, buckets, and the label values present from start.

Names, types, labels, help texts and buckets are istiod's (pilot/pkg/xds/monitoring.go, pkg/xds/monitoring.go,
pilot/pkg/model/push_context.go, pilot/pkg/model/typed_xds_cache.go, the Kubernetes controllers, the webhook,
pilot/pkg/bootstrap/monitoring.go, pkg/version/stats.go), exported as istiod's OTel Prometheus exporter does:
no ``_total`` and no unit suffix added. ``process_*`` are the Prometheus client's process collector series.
A few are pilot's own (``origin=PILOT``).

Series with known label values (``known``) are exported at 0 from start, so ``rate()`` and ``increase()``
see their first increment. Across ``--workers`` processes, series are summed unless ``merge`` says
otherwise (gauges that describe the config are the same on every worker and come from one).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pilot.push.request import (
    REASON_CONFIG,
    REASON_DEBUG,
    REASON_ENDPOINT,
    REASON_GLOBAL,
    REASON_PROXY_REQUEST,
    REASON_SECRET,
    REASON_SERVICE,
    REASON_UNKNOWN,
)
from pilot.xds.names import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE


class Kind(enum.Enum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


class Merge(enum.Enum):
    """How ``--workers`` processes' values combine into the supervisor's /metrics."""

    SUM = "sum"
    FIRST = "first"  # the same on every worker (config sizes, build info)
    MAX = "max"


class Origin(enum.Enum):
    ISTIOD = "istiod"
    PROMETHEUS = "prometheus"  # the Prometheus client's standard process collector, which istiod also serves
    PILOT = "pilot"  # pilot's own, no istiod counterpart


@dataclass(frozen=True)
class MetricDef:
    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    known: tuple[tuple[str, ...], ...] = ()  # label value tuples exported at 0 from start
    merge: Merge = Merge.SUM
    origin: Origin = Origin.ISTIOD


# istiod's bucket sets.
PUSH_BUCKETS = (0.01, 0.1, 0.5, 1, 3, 5, 10, 20, 30)  # pilot_xds_push_time, pilot_debounce_time
SEND_BUCKETS = (0.01, 0.1, 1, 3, 5, 10, 20, 30)  # pilot_xds_send_time
PROXY_BUCKETS = (0.1, 0.5, 1, 3, 5, 10, 20, 30)  # pilot_proxy_convergence_time, pilot_proxy_queue_time
INIT_BUCKETS = (0.01, 0.1, 0.5, 1, 3, 5)  # pilot_pushcontext_init_seconds
SIZE_BUCKETS = (1, 10000, 1000000, 4000000, 10000000, 40000000)  # pilot_xds_config_size_bytes

XDS_SHORT_TYPES = ("cds", "eds", "lds", "rds", "sds")  # istiod's GetMetricType for the types pilot serves
XDS_TYPE_URLS = (CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE)
# Push reasons pilot emits (pilot_push_triggers{type}); istiod has more (secret, networks, ...) for what pilot
# does not watch yet.
PUSH_REASONS = (
    REASON_CONFIG,
    REASON_DEBUG,
    REASON_ENDPOINT,
    REASON_GLOBAL,
    REASON_PROXY_REQUEST,
    REASON_SECRET,
    REASON_SERVICE,
    REASON_UNKNOWN,
)
INBOUND_UPDATE_TYPES = ("config", "eds", "svc", "svcdelete")

# ProxyStatus maps of the PushContext (/debug/push_status), exported as gauges of their size.
PUSH_STATUS_GAUGES: dict[str, str] = {
    "endpoint_no_pod": "Endpoints without an associated pod.",
    "pilot_no_ip": "Pods not found in the endpoint table, possibly invalid.",
    "pilot_endpoint_not_ready": "Endpoint found in unready state.",
    "pilot_conflict_outbound_listener_tcp_over_current_tcp": (
        "Number of conflicting tcp listeners with current tcp listener."
    ),
    "pilot_conflict_inbound_listener": "Number of conflicting inbound listeners.",
    "pilot_duplicate_envoy_clusters": "Duplicate envoy clusters caused by service entries with same hostname",
    "pilot_dns_cluster_without_endpoints": (
        "DNS clusters without endpoints caused by the endpoint field in STRICT_DNS type cluster is not set or "
        "the corresponding subset cannot select any endpoint"
    ),
    "pilot_eds_no_instances": "Number of clusters without instances.",
    "pilot_vservice_dup_domain": "Virtual services with dup domains.",
    "pilot_destrule_subsets": "Duplicate subsets across destination rules for same host",
}


def _one(values: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    return tuple((v,) for v in values)


_PUSHES_KNOWN = _one(XDS_SHORT_TYPES + tuple(f"{t}_senderr" for t in XDS_SHORT_TYPES))

DEFINITIONS: tuple[MetricDef, ...] = (
    # ----- xDS server (pilot/pkg/xds/monitoring.go, pkg/xds/monitoring.go) -----
    MetricDef(
        "pilot_xds",
        Kind.GAUGE,
        "Number of endpoints connected to this pilot using XDS.",
        ("version",),
        known=(("",),),
    ),
    MetricDef(
        "pilot_xds_pushes",
        Kind.COUNTER,
        "Pilot build and send errors for lds, rds, cds and eds.",
        ("type",),
        known=_PUSHES_KNOWN,
    ),
    MetricDef(
        "pilot_xds_push_time",
        Kind.HISTOGRAM,
        "Total time in seconds Pilot takes to push lds, rds, cds and eds.",
        ("type",),
        PUSH_BUCKETS,
        known=_one(XDS_SHORT_TYPES),
    ),
    MetricDef(
        "pilot_xds_send_time",
        Kind.HISTOGRAM,
        "Total time in seconds Pilot takes to send generated configuration.",
        buckets=SEND_BUCKETS,
    ),
    MetricDef(
        "pilot_proxy_convergence_time",
        Kind.HISTOGRAM,
        "Delay in seconds between config change and a proxy receiving all required configuration.",
        buckets=PROXY_BUCKETS,
    ),
    MetricDef(
        "pilot_proxy_queue_time",
        Kind.HISTOGRAM,
        "Time in seconds, a proxy is in the push queue before being dequeued.",
        buckets=PROXY_BUCKETS,
    ),
    MetricDef(
        "pilot_debounce_time",
        Kind.HISTOGRAM,
        "Delay in seconds between the first config enters debouncing and the merged push request is pushed "
        "into the push queue (includes pushcontext_init_seconds).",
        buckets=PUSH_BUCKETS,
    ),
    MetricDef(
        "pilot_pushcontext_init_seconds",
        Kind.HISTOGRAM,
        "Total time in seconds Pilot takes to init pushContext.",
        buckets=INIT_BUCKETS,
    ),
    MetricDef(
        "pilot_push_triggers",
        Kind.COUNTER,
        "Total number of times a push was triggered, labeled by reason for the push.",
        ("type",),
        known=_one(PUSH_REASONS),
    ),
    MetricDef(
        "pilot_inbound_updates",
        Kind.COUNTER,
        "Total number of updates received by pilot.",
        ("type",),
        known=_one(INBOUND_UPDATE_TYPES),
    ),
    MetricDef(
        "pilot_xds_config_size_bytes",
        Kind.HISTOGRAM,
        "Distribution of configuration sizes pushed to clients",
        ("type",),
        SIZE_BUCKETS,
        known=_one(XDS_TYPE_URLS),
    ),
    MetricDef(
        "pilot_total_xds_rejects",
        Kind.COUNTER,
        "Total number of XDS responses from pilot rejected by proxy.",
        ("type",),
        known=_one(XDS_SHORT_TYPES),
    ),
    MetricDef(
        "pilot_xds_expired_nonce",
        Kind.COUNTER,
        "Total number of XDS requests with an expired nonce.",
        ("type",),
        known=_one(XDS_SHORT_TYPES),
    ),
    MetricDef("pilot_xds_write_timeout", Kind.COUNTER, "Pilot XDS response write timeouts.", known=((),)),
    MetricDef(
        "pilot_total_xds_internal_errors",
        Kind.COUNTER,
        "Total number of internal XDS errors in pilot.",
        known=((),),
    ),
    MetricDef("pilot_services", Kind.GAUGE, "Total services known to pilot.", merge=Merge.FIRST),
    # ----- PushContext (pilot/pkg/model/push_context.go) -----
    MetricDef("pilot_virt_services", Kind.GAUGE, "Total virtual services known to pilot.", merge=Merge.FIRST),
    *(MetricDef(name, Kind.GAUGE, text, merge=Merge.FIRST) for name, text in PUSH_STATUS_GAUGES.items()),
    MetricDef(
        "pilot_total_rejected_configs",
        Kind.COUNTER,
        "Total number of configs that Pilot had to reject or ignore.",
        ("type", "name"),
    ),
    # ----- XdsCache (pilot/pkg/model/typed_xds_cache.go; istiod exports them with PILOT_XDS_CACHE_STATS) -----
    MetricDef(
        "xds_cache_reads",
        Kind.COUNTER,
        "Total number of xds cache xdsCacheReads.",
        ("type",),
        known=(("hit",), ("miss",)),
    ),
    MetricDef(
        "xds_cache_evictions",
        Kind.COUNTER,
        "Total number of xds cache evictions.",
        ("type",),
        known=(("clear",), ("size",)),
    ),
    MetricDef("xds_cache_size", Kind.GAUGE, "Current size of xds cache"),
    MetricDef("xds_cache_dependent_config_size", Kind.GAUGE, "Current size of dependent configs"),
    # ----- Kubernetes sources (crdclient/metrics.go, serviceregistry/kube/controller/controller.go) -----
    MetricDef("pilot_k8s_cfg_events", Kind.COUNTER, "Events from k8s config.", ("type", "event")),
    MetricDef("pilot_k8s_reg_events", Kind.COUNTER, "Events from k8s registry.", ("type", "event")),
    # ----- validating webhook (galley) -----
    MetricDef(
        "galley_validation_passed",
        Kind.COUNTER,
        "Resource is valid",
        ("group", "version", "resource"),
    ),
    MetricDef(
        "galley_validation_failed",
        Kind.COUNTER,
        "Resource validation failed",
        ("group", "version", "resource", "reason"),
    ),
    MetricDef(
        "galley_validation_http_error",
        Kind.COUNTER,
        "Resource validation http serve errors",
        ("status",),
    ),
    # ----- build and process (bootstrap/monitoring.go, version/stats.go, the Prometheus process collector) -----
    MetricDef("istiod_uptime_seconds", Kind.GAUGE, "Current istiod server uptime in seconds", merge=Merge.MAX),
    MetricDef("pilot_info", Kind.GAUGE, "Pilot version and build information.", ("version",), merge=Merge.FIRST),
    MetricDef("istio_build", Kind.GAUGE, "Istio component build info", ("component", "tag"), merge=Merge.FIRST),
    MetricDef(
        "process_cpu_seconds_total",
        Kind.COUNTER,
        "Total user and system CPU time spent in seconds.",
        origin=Origin.PROMETHEUS,
    ),
    MetricDef(
        "process_resident_memory_bytes",
        Kind.GAUGE,
        "Resident memory size in bytes.",
        origin=Origin.PROMETHEUS,
    ),
    MetricDef(
        "process_virtual_memory_bytes",
        Kind.GAUGE,
        "Virtual memory size in bytes.",
        origin=Origin.PROMETHEUS,
    ),
    MetricDef("process_open_fds", Kind.GAUGE, "Number of open file descriptors.", origin=Origin.PROMETHEUS),
    MetricDef(
        "process_max_fds",
        Kind.GAUGE,
        "Maximum number of open file descriptors.",
        merge=Merge.FIRST,
        origin=Origin.PROMETHEUS,
    ),
    MetricDef(
        "process_start_time_seconds",
        Kind.GAUGE,
        "Start time of the process since unix epoch in seconds.",
        merge=Merge.FIRST,
        origin=Origin.PROMETHEUS,
    ),
    # ----- pilot's own -----
    MetricDef(
        "pilot_xds_nack_quarantined",
        Kind.COUNTER,
        "Resources a proxy rejected and pilot now holds back from it at the version it accepted.",
        ("type",),
        origin=Origin.PILOT,
    ),
    MetricDef(
        "pilot_xds_refused_streams",
        Kind.COUNTER,
        "xDS streams refused before they became a proxy's connection (bad or oversized node, bad identity).",
        known=((),),
        origin=Origin.PILOT,
    ),
    MetricDef(
        "pilot_asyncio_tasks",
        Kind.GAUGE,
        "asyncio tasks alive in the process (one per connected stream and a few per server): Go's goroutines.",
        origin=Origin.PILOT,
    ),
    MetricDef(
        "pilot_config_source_errors",
        Kind.COUNTER,
        "Failed attempts to read a config source (the config directory: root, read, watcher), by reason.",
        ("source", "reason"),
        origin=Origin.PILOT,
    ),
    MetricDef(
        "pilot_task_failures",
        Kind.COUNTER,
        "Long-running pilot tasks (config source, debounce, push sender, ...) that failed and were restarted.",
        ("task",),
        origin=Origin.PILOT,
    ),
    MetricDef(
        "pilot_workers",
        Kind.GAUGE,
        "Worker processes running (pilot serve --workers).",
        merge=Merge.FIRST,
        origin=Origin.PILOT,
    ),
    MetricDef(
        "pilot_worker_restarts",
        Kind.COUNTER,
        "Worker processes restarted after they died (pilot serve --workers).",
        merge=Merge.FIRST,
        origin=Origin.PILOT,
    ),
)

BY_NAME: dict[str, MetricDef] = {d.name: d for d in DEFINITIONS}

# Counter keys pilot's code and tests read that duplicate an exported series (a histogram's _count) and are
# therefore not exported themselves.
INTERNAL_COUNTERS = frozenset({"pilot_pushcontext_init", "pilot_proxy_convergence"})

"""``pilot proxy-status [PROXY]``: istioctl's sync table, and one proxy's config against what it holds.

Without PROXY: one row per connected proxy from /debug/syncz, with istioctl's columns and states per type,
computed as istiod's statusgen does: ERROR (the last response was rejected), NOT SENT (nothing sent yet),
SYNCED (the last nonce sent was acknowledged), STALE (it was not, yet), IGNORED (the proxy does not watch
the type); with the age of the last send, as istioctl prints it.

With PROXY: for each type, whether the proxy holds what pilot would send it now (pilot's record of what it
sent and what was acknowledged: resources to add, change or remove, an unacknowledged or rejected response).
With ``--file`` (an Envoy config dump) or ``--envoy-admin`` (the proxy's admin address), pilot's config dump
is compared with Envoy's own instead, as istioctl does: "Clusters Match" or a unified diff.
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime
from typing import Any

from pilot.tools import common, render

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
ECDS = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
COLUMNS = (("CDS", CDS), ("LDS", LDS), ("EDS", EDS), ("RDS", RDS), ("ECDS", ECDS))
TITLES = ((CDS, "Clusters"), (LDS, "Listeners"), (RDS, "Routes"), (EDS, "Endpoints"))
IGNORED = "IGNORED"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "proxy-status",
        aliases=["ps"],
        help="sync status of every connected proxy, or one proxy's config against what it holds",
    )
    parser.add_argument("proxy", metavar="PROXY", nargs="?", help="pod.namespace (or node id) of one proxy")
    parser.add_argument("-n", "--namespace", default="", help="only proxies of this namespace")
    parser.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    parser.add_argument("-f", "--file", help="with PROXY: compare with this Envoy config dump JSON file")
    parser.add_argument(
        "--envoy-admin", metavar="HOST:PORT", help="with PROXY: compare with the config dump of this Envoy admin API"
    )
    common.add_pilot_flags(parser)
    parser.set_defaults(func=common.guarded("proxy-status", run))


def run(args: argparse.Namespace) -> int:
    if args.proxy:
        if args.file or args.envoy_admin:
            return _compare_with_envoy(args)
        return _one_proxy(args)
    if args.file or args.envoy_admin:
        raise common.ToolError("--file and --envoy-admin compare one proxy: give PROXY too")
    query = {"namespace": args.namespace} if args.namespace else None
    entries = common.get_json(args.pilot_addr, "/debug/syncz", query, timeout=args.timeout)
    if args.output != "table":
        print(common.dump_structured(entries, args.output))
        return 0
    headers = ["NAME", "CLUSTER", *(name for name, _ in COLUMNS), "ISTIOD", "VERSION"]
    render.table(headers, status_rows(entries, time.time()))
    return 0


def status_rows(entries: list[dict[str, Any]], now: float) -> list[list[str]]:
    rows = []
    for entry in sorted(entries, key=lambda e: str(e.get("proxy", ""))):
        resources = entry.get("resources") or {}
        states = [type_status(resources.get(type_url), now) for _, type_url in COLUMNS]
        istiod = str(entry.get("istiod", ""))
        if "worker" in entry:  # pilot serve --workers: which worker holds the stream
            istiod = f"{istiod}/worker-{entry['worker']}" if istiod else f"worker-{entry['worker']}"
        rows.append(
            [
                str(entry.get("proxy", "")),
                str(entry.get("cluster_id", "")),
                *states,
                istiod,
                str(entry.get("istio_version", "")),
            ]
        )
    return rows


def type_status(resource: dict[str, Any] | None, now: float) -> str:
    """istiod's debugSyncStatus, shown as istioctl shows it (with the age of the last send)."""
    if resource is None:
        return IGNORED
    if resource.get("lastError"):
        state = "ERROR"
    elif not resource.get("sent"):
        return "NOT SENT"
    elif resource.get("acked") == resource.get("sent"):
        state = "SYNCED"
    else:
        state = "STALE"
    sent_at = _epoch(str(resource.get("sentTime") or ""))
    return f"{state} ({human_duration(now - sent_at)})" if sent_at else state


def _epoch(iso: str) -> float:
    if not iso:
        return 0.0
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def human_duration(seconds: float) -> str:
    """Kubernetes' duration.HumanDuration (what istioctl uses): 45s, 3m20s, 4h12m, 2d3h, 1y30d."""
    total = int(seconds)
    if total < -1:
        return "<invalid>"
    if total < 0:
        return "0s"
    if total < 120:
        return f"{total}s"
    minutes = total // 60
    if minutes < 10:
        rest = total % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = total // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h" if rest == 0 else f"{hours}h{rest}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d" if rest == 0 else f"{hours // 24}d{rest}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        rest = (hours // 24) % 365
        return f"{hours // (24 * 365)}y" if rest == 0 else f"{hours // (24 * 365)}y{rest}d"
    return f"{hours // (24 * 365)}y"


# ----- one proxy -----


def _one_proxy(args: argparse.Namespace) -> int:
    entries = common.get_json(args.pilot_addr, "/debug/syncz", {"proxyID": args.proxy}, timeout=args.timeout)
    if not entries:
        raise common.ToolError(f"proxy {args.proxy} is not connected to pilot at {args.pilot_addr}")
    entry = entries[0]
    if args.output != "table":
        print(common.dump_structured(entry, args.output))
        return 0
    print(f"Proxy {entry.get('proxy')} (pilot {entry.get('istiod', '')}):")
    pending = entry.get("pending") or {}
    for type_url, title in TITLES:
        if type_url in pending:
            print(describe_type(title, pending[type_url]))
    return 0


def describe_type(title: str, state: dict[str, Any]) -> str:
    """One type of one proxy: does it hold what pilot would send now?"""
    added, changed, removed = state.get("added") or [], state.get("changed") or [], state.get("removed") or []
    lines = []
    if state.get("lastError"):
        head = f"{title} Don't Match: the proxy rejected version {state.get('sentVersion')}: {state['lastError']}"
    elif added or changed or removed:
        count = len(added) + len(changed) + len(removed)
        head = f"{title} Don't Match: pilot would send {count} change(s) the proxy does not have yet"
        lines += [f"  + {name}" for name in added]
        lines += [f"  ~ {name}" for name in changed]
        lines += [f"  - {name}" for name in removed]
    elif not state.get("acked"):
        age = state.get("sentSeconds")
        when = f" {human_duration(age)} ago" if isinstance(age, int | float) else ""
        head = f"{title} Don't Match: version {state.get('sentVersion')} sent{when}, not acknowledged"
    else:
        head = f"{title} Match ({state.get('resources', 0)} resources, version {state.get('ackedVersion')})"
    return "\n".join([head, *lines])


def _compare_with_envoy(args: argparse.Namespace) -> int:
    from pilot.tools.compare import compare
    from pilot.tools.configdump import parse, warn_problems

    pilot_raw = common.get_json(
        args.pilot_addr, "/debug/config_dump", {"proxyID": args.proxy, "include_eds": "true"}, timeout=args.timeout
    )
    if args.file:
        envoy_raw = common.read_json_file(args.file)
    else:
        envoy_raw = common.get_json(args.envoy_admin, "/config_dump", {"include_eds": "true"}, timeout=args.timeout)
    pilot_dump, envoy_dump = parse(pilot_raw), parse(envoy_raw)
    warn_problems(pilot_dump)
    warn_problems(envoy_dump)
    for section in compare(pilot_dump, envoy_dump, endpoints=True):
        print(section.render())
    return 0

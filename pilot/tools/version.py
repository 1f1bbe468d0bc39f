"""``pilot version``: this client's version and, when it answers, the running pilot's and its proxies'
(istioctl version's three lines)."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Any

from pilot.tools import common


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("version", help="print the version of pilot, the running pilot and its proxies")
    parser.add_argument(
        "--remote", action=argparse.BooleanOptionalAction, default=True, help="ask the running pilot too (default)"
    )
    parser.add_argument("-s", "--short", action="store_true", help="just the version numbers")
    parser.add_argument("-o", "--output", choices=("", "json", "yaml"), default="", help="structured output")
    common.add_pilot_flags(parser)
    parser.set_defaults(func=common.guarded("version", run))


def run(args: argparse.Namespace) -> int:
    from pilot.version import version, version_string

    info: dict[str, Any] = {"clientVersion": {"version": version(), "build": version_string()}}
    problem = ""
    if args.remote:
        try:
            remote = common.get(args.pilot_addr, "/version", timeout=min(args.timeout, 3.0)).decode().strip()
            info["controlPlaneVersion"] = {"build": remote, "version": _version_of(remote)}
            syncz = common.get_json(args.pilot_addr, "/debug/syncz", timeout=args.timeout)
            counts = Counter(str(entry.get("istio_version") or "unknown") for entry in syncz)
            info["dataPlaneVersion"] = [{"version": v, "proxies": n} for v, n in sorted(counts.items())]
        except common.ToolError as exc:
            problem = str(exc)
    if args.output:
        print(common.dump_structured(info, args.output))
    else:
        client = info["clientVersion"]
        print(f"client version: {client['version'] if args.short else client['build']}")
        if "controlPlaneVersion" in info:
            plane = info["controlPlaneVersion"]
            print(f"control plane version: {plane['version'] if args.short else plane['build']}")
            for entry in info["dataPlaneVersion"]:
                print(f"data plane version: {entry['version']} ({entry['proxies']} proxies)")
    if problem:
        print(f"pilot version: control plane: {problem}", file=sys.stderr)
    return 0


def _version_of(build: str) -> str:
    """``0.1.0-<revision>-<status>`` -> ``0.1.0``."""
    parts = build.split("-")
    return "-".join(parts[:-2]) if len(parts) >= 3 else build

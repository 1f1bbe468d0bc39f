"""A proxyless gRPC client process for the tests: ``python -m tests.grpc.client``.

It reads one JSON command per line on stdin and answers one JSON line on stdout, so one process (one gRPC
xDS client, one channel per target) lives through a whole test module and sees config changes as a real
client would. GRPC_XDS_BOOTSTRAP in its environment names pilot. With PILOT_TEST_XDS_CREDENTIALS=1 its channels use xDS
credentials (the TLS that the clusters' transport sockets configure, plaintext where they configure none), as
an application using Istio's proxyless mTLS does.

Command: ``{"target": "xds:///host:port", "count": N, "timeout": seconds, "metadata": {k: v}}``: N unary
calls of ``/pilot.test.Echo/Call`` one after the other, each with its own deadline. Answer:
``{"replies": {server name: n, "status:CODE": n}, "details": {"CODE": last details}}``.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from typing import Any

import grpc
import grpc.experimental

METHOD = "/pilot.test.Echo/Call"


def _calls(channel: grpc.Channel, command: dict[str, Any]) -> dict[str, Any]:
    call = channel.unary_unary(METHOD)  # no serializers: requests and replies are raw bytes
    metadata = tuple((str(k), str(v)) for k, v in (command.get("metadata") or {}).items())
    replies: Counter[str] = Counter()
    details: dict[str, str] = {}
    for _ in range(int(command["count"])):
        try:
            reply = call(b"", timeout=float(command["timeout"]), metadata=metadata)
            replies[reply.decode()] += 1
        except grpc.RpcError as exc:
            code = exc.code().name  # type: ignore[attr-defined]
            replies[f"status:{code}"] += 1
            details[code] = exc.details() or ""  # type: ignore[attr-defined]
    return {"replies": dict(replies), "details": details}


def main() -> int:
    channels: dict[str, grpc.Channel] = {}
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        target = command["target"]
        channel = channels.get(target)
        if channel is None:
            if os.environ.get("PILOT_TEST_XDS_CREDENTIALS") == "1":
                fallback = grpc.experimental.insecure_channel_credentials()  # where a cluster configures no TLS
                credentials = grpc.xds_channel_credentials(fallback)
                channel = channels[target] = grpc.secure_channel(target, credentials)
            else:
                channel = channels[target] = grpc.insecure_channel(target)
        sys.stdout.write(json.dumps(_calls(channel, command)) + "\n")
        sys.stdout.flush()
    for channel in channels.values():
        channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Push convergence benchmark: a real pilot process, P simulated proxies over ADS, E config edits.

    python benchmarks/bench_push.py --proxies 200 --services 100 [--edits 5]

1. The synthetic mesh of bench_generate.py (one file for Gateway, ServiceEntries and DestinationRules, one
   file per VirtualService) goes into a temporary config dir; ``python -m pilot serve`` starts on free
   loopback ports and is polled on /ready.
2. P proxies connect at once (the connect storm) from a separate client process (``--client-procs`` of them,
   uvloop, one HTTP/2 connection per proxy). Each behaves like Envoy over SotW ADS: CDS (wildcard), ACK,
   EDS for the EDS clusters received, LDS (wildcard) once EDS answered, RDS for the route names of the
   listeners' HTTP connection managers, and ACKs every response. A proxy has full config once all four
   types were received and ACKed and every subscribed EDS/RDS name arrived.
3. Each edit flips the 80/20 split of one VirtualService (atomic replace of its file). Latency is from
   just before the write until a proxy receives a RouteConfiguration whose virtual host for that service
   carries the new v1 weight; "all" is the last proxy. Messages and bytes (gRPC message payloads) received
   per proxy are counted per type from the arming of one edit until the next, after pilot went quiet.
4. /metrics and /debug/syncz are read at the end: every proxy must be SYNCED (sent nonce == acked nonce for
   each type it watches, no NACK error).
5. pilot gets SIGTERM while the proxies are still connected; the time it takes to exit is reported.

Proxies carry no labels by default, so they share one XdsCache view (one generation per type and push);
``--views K`` gives them K distinct ``app`` labels, which pilot's cache keys on (pilot/xds/generate.py).
A stream that fails is counted and retried like Envoy does; the kernel's listen-queue counters
(/proc/net/netstat) are reported for the storm, as a full accept queue is the usual cause.

CPU time is reported for pilot (from /proc) and for the client process(es) (time.process_time), per phase,
so a saturated client is visible: a client that uses close to a full core is what is measured, not pilot.
Identical resource bytes are decoded once per client process (clients cache the parse by content), which
keeps the client cheap without changing what is checked: every proxy's own message is inspected.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import multiprocessing.connection
import os
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from bench_generate import mesh_yaml

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
TYPES = (CDS, EDS, LDS, RDS)
SHORT = {CDS: "cds", EDS: "eds", LDS: "lds", RDS: "rds"}
ADS_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
ROUTE_PORT = 80


def host_of(i: int) -> str:
    return f"svc{i}.ns{i % 20}.example.com"  # as in bench_generate.mesh_yaml


# ======================================================================================================
# Client side (runs in the client process(es))
# ======================================================================================================


class Tally:
    """Counts proxies still to reach a state; ``done`` fires when none is left."""

    def __init__(self) -> None:
        self.remaining = 0
        self.done = asyncio.Event()

    def reset(self, n: int) -> None:
        self.remaining = n
        self.done.clear()
        if n <= 0:
            self.done.set()

    def mark(self) -> None:
        self.remaining -= 1
        if self.remaining <= 0:
            self.done.set()


class Shared:
    """What the proxies of one client process share: decode caches keyed by resource bytes, the edit."""

    def __init__(self) -> None:
        from envoy.config.cluster.v3 import cluster_pb2
        from envoy.config.endpoint.v3 import endpoint_pb2
        from envoy.config.listener.v3 import listener_pb2
        from envoy.config.route.v3 import route_pb2
        from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2

        self.cluster_pb2 = cluster_pb2
        self.endpoint_pb2 = endpoint_pb2
        self.listener_pb2 = listener_pb2
        self.route_pb2 = route_pb2
        self.hcm_pb2 = http_connection_manager_pb2
        self.eds_cluster: dict[bytes, str | None] = {}  # Cluster bytes -> its name if it is an EDS cluster
        self.cla_name: dict[bytes, str] = {}
        self.route_names: dict[bytes, tuple[str, ...]] = {}  # Listener bytes -> RDS names of its HCMs
        self.rc_name: dict[bytes, str] = {}
        self.rc_has_edit: dict[bytes, bool] = {}  # RouteConfiguration bytes -> carries the armed edit
        self.expect: tuple[int, str, int] | None = None  # (edit, host, v1 weight)
        self.give_up_at = 0.0  # proxies stop reconnecting after this (monotonic)
        self.ready = Tally()
        self.edited = Tally()

    def cluster(self, value: bytes) -> str | None:
        name = self.eds_cluster.get(value, "")
        if name == "":
            c = self.cluster_pb2.Cluster.FromString(value)
            is_eds = c.WhichOneof("cluster_discovery_type") == "type" and c.type == self.cluster_pb2.Cluster.EDS
            name = self.eds_cluster[value] = c.name if is_eds else None
        return name

    def cla(self, value: bytes) -> str:
        name = self.cla_name.get(value)
        if name is None:
            name = self.cla_name[value] = self.endpoint_pb2.ClusterLoadAssignment.FromString(value).cluster_name
        return name

    def listener_routes(self, value: bytes) -> tuple[str, ...]:
        names = self.route_names.get(value)
        if names is None:
            listener = self.listener_pb2.Listener.FromString(value)
            found = []
            chains = list(listener.filter_chains)
            if listener.HasField("default_filter_chain"):
                chains.append(listener.default_filter_chain)
            for chain in chains:
                for f in chain.filters:
                    if f.typed_config.type_url.endswith("HttpConnectionManager"):
                        hcm = self.hcm_pb2.HttpConnectionManager.FromString(f.typed_config.value)
                        if hcm.HasField("rds"):
                            found.append(hcm.rds.route_config_name)
            names = self.route_names[value] = tuple(found)
        return names

    def route(self, value: bytes) -> tuple[str, bool]:
        """(name, carries the armed edit) of one RouteConfiguration."""
        name = self.rc_name.get(value)
        if name is None:
            # Parsing only the name is not possible with protobuf; parse once, remember both answers.
            rc = self.route_pb2.RouteConfiguration.FromString(value)
            name = self.rc_name[value] = rc.name
            self.rc_has_edit[value] = self._has_edit(rc)
        has = self.rc_has_edit.get(value)
        if has is None:
            has = self.rc_has_edit[value] = self._has_edit(self.route_pb2.RouteConfiguration.FromString(value))
        return name, has

    def _has_edit(self, rc: Any) -> bool:
        if self.expect is None or rc.name != str(ROUTE_PORT):
            return False
        _, host, weight = self.expect
        vhost_name = f"{host}:{ROUTE_PORT}"
        v1 = f"outbound|{ROUTE_PORT}|v1|{host}"
        for vhost in rc.virtual_hosts:
            if vhost.name != vhost_name:
                continue
            for r in vhost.routes:
                if r.route.HasField("weighted_clusters"):
                    for c in r.route.weighted_clusters.clusters:
                        if c.name == v1:
                            return c.weight.value == weight
        return False

    def arm(self, expect: tuple[int, str, int]) -> None:
        self.expect = expect
        self.rc_has_edit.clear()


def _counting_codec() -> Any:
    from grpclib.encoding.proto import ProtoCodec

    class CountingCodec(ProtoCodec):
        """Records the payload size of the last decoded message (one codec per channel)."""

        last_size = 0

        def decode(self, data: bytes, message_type: Any) -> Any:
            self.last_size = len(data)
            return super().decode(data, message_type)

    return CountingCodec()


class SimProxy:
    """One Envoy-like ADS client. A lost stream is retried, as Envoy does, with jittered exponential backoff
    (0.5 s base, 30 s cap), until the phase deadline in ``Shared.give_up_at``."""

    def __init__(self, node_id: str, labels: dict[str, str] | None, host: str, port: int, shared: Shared) -> None:
        self.node_id = node_id
        self.labels = labels
        self.host = host
        self.port = port
        self.shared = shared
        self.codec = _counting_codec()
        self.stream: Any = None
        self.first_response_at: float | None = None
        self.ready_at: float | None = None
        self.edit_at: float | None = None
        self.msgs: Counter[str] = Counter()
        self.bytes: Counter[str] = Counter()
        self.stream_errors: Counter[str] = Counter()  # why streams ended (each one was retried)
        self.error = ""  # set when the proxy gave up
        self.closing = False
        self._new_stream_state()

    def _new_stream_state(self) -> None:
        self.nonce = dict.fromkeys(TYPES, "")
        self.version = dict.fromkeys(TYPES, "")
        self.acked: set[str] = set()
        self.eds_names: tuple[str, ...] = ()
        self.rds_names: tuple[str, ...] = ()
        self.lds_requested = False
        self.got: dict[str, set[str]] = {EDS: set(), RDS: set()}

    async def run(self) -> None:
        import grpclib.client

        attempt = 0
        try:
            while True:
                self._new_stream_state()
                channel = grpclib.client.Channel(self.host, self.port, codec=self.codec)
                try:
                    reason = await self._stream(channel)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                finally:
                    channel.close()
                if self.closing:
                    return
                self.stream_errors[reason] += 1
                backoff = random.uniform(0, min(0.5 * 2**attempt, 30.0))
                attempt += 1
                if time.monotonic() + backoff > self.shared.give_up_at:
                    self.error = reason
                    return
                await asyncio.sleep(backoff)
        finally:
            if self.error or not self.closing:
                if self.ready_at is None:
                    self.shared.ready.mark()  # a failed proxy does not hold up the storm
                if self.edit_at is None and self.shared.expect is not None:
                    self.shared.edited.mark()

    async def _stream(self, channel: Any) -> str:
        import grpclib.const
        from envoy.service.discovery.v3 import discovery_pb2

        async with channel.request(
            ADS_METHOD,
            grpclib.const.Cardinality.STREAM_STREAM,
            discovery_pb2.DiscoveryRequest,
            discovery_pb2.DiscoveryResponse,
        ) as stream:
            self.stream = stream
            first = discovery_pb2.DiscoveryRequest(type_url=CDS)
            first.node.id = self.node_id
            if self.labels:
                first.node.metadata.update({"LABELS": self.labels})
            await stream.send_message(first)
            while True:
                response = await stream.recv_message()
                if response is None:
                    return "stream closed by the server"
                await self.on_response(response, time.monotonic())

    async def send(self, type_url: str, names: tuple[str, ...] = ()) -> None:
        from envoy.service.discovery.v3 import discovery_pb2

        await self.stream.send_message(
            discovery_pb2.DiscoveryRequest(
                type_url=type_url,
                resource_names=list(names),
                version_info=self.version[type_url],
                response_nonce=self.nonce[type_url],
            )
        )

    async def on_response(self, response: Any, now: float) -> None:
        t = response.type_url
        if self.first_response_at is None:
            self.first_response_at = now
        self.msgs[t] += 1
        self.bytes[t] += self.codec.last_size
        self.nonce[t] = response.nonce
        self.version[t] = response.version_info  # every response is accepted
        shared = self.shared
        if t == CDS:
            eds = tuple(sorted(n for n in (shared.cluster(a.value) for a in response.resources) if n))
            await self.send(CDS)
            self.acked.add(CDS)
            if eds != self.eds_names:
                self.eds_names = eds
                await self.send(EDS, eds)  # a subscription change carries the last EDS nonce, as Envoy's does
            if not eds and not self.lds_requested:
                self.lds_requested = True
                await self.send(LDS)
        elif t == EDS:
            self.got[EDS].update(shared.cla(a.value) for a in response.resources)
            await self.send(EDS, self.eds_names)
            self.acked.add(EDS)
            if not self.lds_requested:  # Envoy asks for listeners once clusters have warmed
                self.lds_requested = True
                await self.send(LDS)
        elif t == LDS:
            routes = tuple(sorted({n for a in response.resources for n in shared.listener_routes(a.value)}))
            await self.send(LDS)
            self.acked.add(LDS)
            if routes != self.rds_names:
                self.rds_names = routes
                await self.send(RDS, routes)
        elif t == RDS:
            edited = False
            for a in response.resources:
                name, has_edit = shared.route(a.value)
                self.got[RDS].add(name)
                edited = edited or has_edit
            if edited and self.edit_at is None and shared.expect is not None:
                self.edit_at = now
                shared.edited.mark()
            await self.send(RDS, self.rds_names)
            self.acked.add(RDS)
        else:
            raise RuntimeError(f"unexpected type {t}")
        if self.ready_at is None and self._complete():
            self.ready_at = time.monotonic()
            shared.ready.mark()

    def _complete(self) -> bool:
        return (
            len(self.acked) == 4
            and bool(self.rds_names)
            and self.got[EDS].issuperset(self.eds_names)
            and self.got[RDS].issuperset(self.rds_names)
        )


def _take_stream_errors(proxies: list[SimProxy]) -> dict[str, int]:
    out: Counter[str] = Counter()
    for p in proxies:
        out.update(p.stream_errors)
        p.stream_errors.clear()
    return dict(out)


async def _client_main(pipe: multiprocessing.connection.Connection, spec: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[Any] = asyncio.Queue()

    def readable() -> None:
        try:
            inbox.put_nowait(pipe.recv())
        except EOFError:
            loop.remove_reader(pipe.fileno())
            inbox.put_nowait(("stop",))

    loop.add_reader(pipe.fileno(), readable)
    shared = Shared()
    proxies = [SimProxy(node_id, labels, spec["host"], spec["port"], shared) for node_id, labels in spec["nodes"]]
    pipe.send(("hello", os.getpid()))
    tasks: list[asyncio.Task[None]] = []
    while True:
        cmd = await inbox.get()
        kind = cmd[0]
        if kind == "storm":
            deadline = cmd[1]
            cpu = time.process_time()
            shared.give_up_at = deadline
            shared.ready.reset(len(proxies))
            tasks = [asyncio.create_task(p.run()) for p in proxies]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(shared.ready.done.wait(), max(deadline - time.monotonic(), 0))
            pipe.send(
                (
                    "storm",
                    {
                        "ready_at": [p.ready_at for p in proxies],
                        "first_at": [p.first_response_at for p in proxies],
                        "errors": [p.error for p in proxies if p.error],
                        "stream_errors": _take_stream_errors(proxies),
                        "cpu": time.process_time() - cpu,
                    },
                )
            )
        elif kind == "counters":
            pipe.send(
                (
                    "counters",
                    [({SHORT[t]: p.msgs[t] for t in TYPES}, {SHORT[t]: p.bytes[t] for t in TYPES}) for p in proxies],
                )
            )
            for p in proxies:
                p.msgs.clear()
                p.bytes.clear()
        elif kind == "arm":
            _, expect, deadline = cmd
            shared.arm(expect)
            shared.give_up_at = deadline
            live = [p for p in proxies if not p.error]
            for p in proxies:
                p.edit_at = None
            shared.edited.reset(len(live))
            cpu = time.process_time()
            pipe.send(("armed",))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(shared.edited.done.wait(), max(deadline - time.monotonic(), 0))
            pipe.send(
                (
                    "edit",
                    {
                        "edit_at": [p.edit_at for p in proxies],
                        "errors": [p.error for p in proxies if p.error],
                        "stream_errors": _take_stream_errors(proxies),
                        "cpu": time.process_time() - cpu,
                    },
                )
            )
        elif kind == "closing":  # pilot is about to stop: a stream end is expected, not retried
            for p in proxies:
                p.closing = True
            pipe.send(("closing",))
        elif kind == "stop":
            ended = sum(1 for task in tasks if task.done())  # streams pilot closed before we cancelled
            for p in proxies:
                p.closing = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                pipe.send(("stopped", {"ended_by_server": ended, "cpu_total": time.process_time()}))
            return


def _cheap_frame_repr() -> None:
    """Client-side only: h2 formats ``repr(frame)`` for a trace log on every received frame, logging on or
    off (h2.connection.H2Connection._receive_frame), and hyperframe's repr hexlifies the whole payload to
    show its first 20 hex digits. Same string from the first 11 bytes; about 15% of the client's CPU."""
    import binascii

    import hyperframe.frame

    def raw_data_repr(data: bytes | None) -> str:
        if not data:
            return "None"
        r = binascii.hexlify(data[:11]).decode("ascii")
        return "<hex:" + (r[:20] + "..." if len(r) > 20 else r) + ">"

    hyperframe.frame._raw_data_repr = raw_data_repr  # type: ignore[attr-defined]


def client_process(pipe: multiprocessing.connection.Connection, spec: dict[str, Any]) -> None:
    import uvloop

    _cheap_frame_repr()
    uvloop.run(_client_main(pipe, spec))


# ======================================================================================================
# Orchestration (this process)
# ======================================================================================================


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (all threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tcp_counters() -> dict[str, int]:
    """Kernel TCP counters that show a full listen queue (system-wide; the VM runs nothing else)."""
    wanted = ("ListenOverflows", "ListenDrops", "SyncookiesSent", "SyncookiesFailed", "TCPAbortOnData")
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for head, values in zip(lines[::2], lines[1::2], strict=False):
        if head.startswith("TcpExt:"):
            table = dict(zip(head.split()[1:], values.split()[1:], strict=True))
            return {k: int(table.get(k, 0)) for k in wanted}
    return {}


def parse_metrics(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def pushes(metrics: dict[str, float]) -> dict[str, float]:
    return {t: metrics.get(f'pilot_xds_pushes{{type="{t}"}}', 0.0) for t in SHORT.values()}


def recv(pipe: multiprocessing.connection.Connection, kind: str, deadline: float) -> Any:
    if not pipe.poll(max(deadline - time.monotonic(), 0)):
        raise TimeoutError(f"client process: no {kind!r} message before the deadline")
    msg = pipe.recv()
    if msg[0] != kind:
        raise RuntimeError(f"client process: expected {kind!r}, got {msg[0]!r}")
    return msg[1] if len(msg) > 1 else None


def quantiles(values: list[float]) -> tuple[float, float, float, float]:
    """min, median, p99, max."""
    s = sorted(values)
    return s[0], statistics.median(s), s[min(len(s) - 1, int(len(s) * 0.99))], s[-1]


def vs_text(original: str, v1_weight: int) -> str:
    text, n = re.subn(r"subset: v1\}, weight: \d+\}", f"subset: v1}}, weight: {v1_weight}}}", original)
    text, m = re.subn(r"subset: v2\}, weight: \d+\}", f"subset: v2}}, weight: {100 - v1_weight}}}", text)
    assert n == 1 and m == 1, "VirtualService template changed; update bench_push.vs_text"
    return text


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.rename(tmp, path)


def write_mesh(config_dir: Path, services: int, endpoints: int) -> dict[int, str]:
    """Everything but the VirtualServices in mesh.yaml, each VirtualService in vs-<i>.yaml."""
    docs = mesh_yaml(services, endpoints).split("\n---\n")
    others, vs = [], {}
    for doc in docs:
        if "kind: VirtualService" in doc:
            i = int(re.search(r"name: svc(\d+),", doc).group(1))  # type: ignore[union-attr]
            vs[i] = doc
        else:
            others.append(doc)
    atomic_write(config_dir / "mesh.yaml", "\n---\n".join(others) + "\n")
    for i, doc in vs.items():
        atomic_write(config_dir / f"vs-{i}.yaml", doc + "\n")
    return vs


def wait_quiet(mon_port: int, deadline: float, quiet: float = 0.5) -> dict[str, float]:
    """Wait until pilot's push counters stop moving for ``quiet`` seconds; returns the last /metrics."""
    last = parse_metrics(http_get(mon_port, "/metrics")[1].decode())
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = parse_metrics(http_get(mon_port, "/metrics")[1].decode())
        if pushes(now) != pushes(last) or now.get("pilot_pushcontext_init") != last.get("pilot_pushcontext_init"):
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since >= quiet:
            return now
    return last


def per_proxy_counts(parts: list[list[Any]]) -> tuple[dict[str, float], dict[str, float], float]:
    """Mean messages and bytes per proxy by type, and the max total messages of any proxy."""
    rows = [row for part in parts for row in part]
    msgs = {s: statistics.mean(r[0][s] for r in rows) for s in SHORT.values()}
    size = {s: statistics.mean(r[1][s] for r in rows) for s in SHORT.values()}
    worst = max(sum(r[0].values()) for r in rows)
    return msgs, size, worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxies", type=int, default=200)
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--edits", type=int, default=5)
    parser.add_argument("--views", type=int, default=1, help="distinct proxy label sets (XdsCache views)")
    parser.add_argument("--client-procs", type=int, default=1, help="client processes sharing the proxies")
    parser.add_argument("--timeout", type=float, default=120.0, help="deadline of each phase, seconds")
    parser.add_argument("--debounce", help="PILOT_DEBOUNCE_AFTER for pilot (default: pilot's own, 100ms)")
    parser.add_argument("--throttle", help="PILOT_PUSH_THROTTLE for pilot (default: pilot's own)")
    parser.add_argument("--log-level", default="info", help="pilot --log-level")
    parser.add_argument("--py-spy", metavar="PREFIX", help="record pilot with py-spy: PREFIX-{storm,edits}.txt")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--pilot-log", metavar="PATH", help="keep pilot's log here (default: a temp file)")
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 4 * args.proxies + 256)) if hard != resource.RLIM_INFINITY else 4 * args.proxies + 256
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # inherited by pilot and the clients

    results: dict[str, Any] = {"args": vars(args)}
    tmp = tempfile.TemporaryDirectory(prefix="bench-push-")
    config_dir = Path(tmp.name) / "config"
    config_dir.mkdir()
    vs_docs = write_mesh(config_dir, args.services, args.endpoints)
    v1_weight = dict.fromkeys(vs_docs, 80)
    grpc_port, mon_port = free_port(), free_port()
    env = dict(os.environ)
    if args.debounce:
        env["PILOT_DEBOUNCE_AFTER"] = args.debounce
    if args.throttle:
        env["PILOT_PUSH_THROTTLE"] = args.throttle
    log_path = Path(args.pilot_log) if args.pilot_log else Path(tmp.name) / "pilot.log"
    log_file = open(log_path, "wb")  # closed in finally
    cmd = [
        sys.executable,
        "-m",
        "pilot",
        "--log-level",
        args.log_level,
        "serve",
        "--config-dir",
        str(config_dir),
        "--grpc-addr",
        f"127.0.0.1:{grpc_port}",
        "--monitoring-addr",
        f"127.0.0.1:{mon_port}",
    ]
    started = time.monotonic()
    pilot = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    ctx = multiprocessing.get_context("spawn")
    workers: list[tuple[Any, multiprocessing.connection.Connection]] = []
    spy: subprocess.Popen[bytes] | None = None
    ok = False
    try:
        # ----- 1. pilot up -----
        deadline = started + args.timeout
        while True:
            if pilot.poll() is not None:
                raise RuntimeError(f"pilot exited with {pilot.returncode} before /ready")
            with contextlib.suppress(OSError):
                if http_get(mon_port, "/ready", timeout=1)[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("pilot not ready before the deadline")
            time.sleep(0.05)
        results["pilot_ready_s"] = time.monotonic() - started
        results["pilot_startup_cpu_s"] = proc_cpu(pilot.pid)

        # ----- 2. client processes, then the connect storm -----
        nodes = [
            (
                f"sidecar~10.0.{i // 250}.{i % 250 + 1}~app-{i}.default~default.svc.cluster.local",
                {"app": f"app-{i % args.views}"} if args.views > 1 else None,
            )
            for i in range(args.proxies)
        ]
        procs = max(1, min(args.client_procs, args.proxies))
        for k in range(procs):
            parent, child = ctx.Pipe()
            spec = {"host": "127.0.0.1", "port": grpc_port, "nodes": nodes[k::procs]}
            proc = ctx.Process(target=client_process, args=(child, spec), name=f"bench-client-{k}", daemon=True)
            proc.start()
            child.close()
            workers.append((proc, parent))
        for _, pipe in workers:
            recv(pipe, "hello", time.monotonic() + 60)

        spy_bin = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))

        def start_spy(phase: str) -> subprocess.Popen[bytes] | None:
            if not args.py_spy:
                return None
            out = f"{args.py_spy}-{phase}.txt"
            return subprocess.Popen(
                [
                    spy_bin,
                    "record",
                    "--pid",
                    str(pilot.pid),
                    "--format",
                    "raw",
                    "--nonblocking",
                    "-r",
                    "250",
                    "-o",
                    out,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

        def stop_spy(p: subprocess.Popen[bytes] | None) -> None:
            if p is not None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()

        spy = start_spy("storm")
        tcp_before = tcp_counters()
        pilot_cpu = proc_cpu(pilot.pid)
        t0 = time.monotonic()
        deadline = t0 + args.timeout
        for _, pipe in workers:
            pipe.send(("storm", deadline))
        storm = [recv(pipe, "storm", deadline + 30) for _, pipe in workers]
        ready_at = [t for part in storm for t in part["ready_at"]]
        first_at = [t for part in storm for t in part["first_at"]]
        errors = [e for part in storm for e in part["errors"]]
        done = [t - t0 for t in ready_at if t is not None]
        storm_wall = (max(done) if done else 0.0) if len(done) == len(ready_at) else time.monotonic() - t0
        storm_pilot_cpu = proc_cpu(pilot.pid) - pilot_cpu
        stop_spy(spy)
        spy = None
        tcp_after = tcp_counters()
        stream_errors: Counter[str] = Counter()
        for part in storm:
            stream_errors.update(part["stream_errors"])
        results["storm"] = {
            "stream_errors": dict(stream_errors),
            "tcp": {k: tcp_after[k] - tcp_before.get(k, 0) for k in tcp_after},
            "proxies_ready": len(done),
            "all_ready_s": storm_wall,
            "ready_s": quantiles(done) if done else None,
            "first_response_s": quantiles([t - t0 for t in first_at if t is not None]) if any(first_at) else None,
            "errors": sorted(Counter(errors).items())[:5],
            "pilot_cpu_s": storm_pilot_cpu,
            "client_cpu_s": sum(part["cpu"] for part in storm),
        }
        if len(done) != args.proxies:
            raise RuntimeError(f"connect storm: only {len(done)}/{args.proxies} proxies got full config; {errors[:3]}")
        metrics = wait_quiet(mon_port, time.monotonic() + args.timeout)
        for _, pipe in workers:
            pipe.send(("counters",))
        msgs, size, _ = per_proxy_counts([recv(pipe, "counters", time.monotonic() + 30) for _, pipe in workers])
        results["storm"]["per_proxy_msgs"] = msgs
        results["storm"]["per_proxy_bytes"] = size
        results["storm"]["pilot_pushes"] = pushes(metrics)

        # ----- 3. edits -----
        spy = start_spy("edits")
        edits = []
        for e in range(args.edits):
            i = e % len(vs_docs)
            v1_weight[i] = 100 - v1_weight[i]
            expect = (e, host_of(i), v1_weight[i])
            before = pushes(metrics)
            pilot_cpu = proc_cpu(pilot.pid)
            deadline = time.monotonic() + args.timeout
            for _, pipe in workers:
                pipe.send(("arm", expect, deadline))
            for _, pipe in workers:
                recv(pipe, "armed", deadline)
            t_write = time.monotonic()
            atomic_write(config_dir / f"vs-{i}.yaml", vs_text(vs_docs[i], v1_weight[i]) + "\n")
            reports = [recv(pipe, "edit", deadline + 30) for _, pipe in workers]
            seen = [t - t_write for part in reports for t in part["edit_at"] if t is not None]
            edit_pilot_cpu = proc_cpu(pilot.pid) - pilot_cpu
            metrics = wait_quiet(mon_port, time.monotonic() + args.timeout)
            for _, pipe in workers:
                pipe.send(("counters",))
            msgs, size, worst = per_proxy_counts([recv(pipe, "counters", time.monotonic() + 30) for _, pipe in workers])
            after = pushes(metrics)
            edit = {
                "service": i,
                "v1_weight": v1_weight[i],
                "proxies_updated": len(seen),
                "latency_s": quantiles(seen) if seen else None,
                "per_proxy_msgs": msgs,
                "per_proxy_bytes": size,
                "max_msgs_one_proxy": worst,
                "pilot_pushes": {t: after[t] - before[t] for t in after},
                "pilot_cpu_s": edit_pilot_cpu,
                "client_cpu_s": sum(part["cpu"] for part in reports),
                "errors": sorted(Counter(e for part in reports for e in part["errors"]).items())[:5],
                "stream_errors": sum(sum(part["stream_errors"].values()) for part in reports),
            }
            edits.append(edit)
            if len(seen) != args.proxies:
                raise RuntimeError(f"edit {e}: only {len(seen)}/{args.proxies} proxies saw the change")
        results["edits"] = edits
        stop_spy(spy)
        spy = None

        # ----- 4. pilot's view -----
        metrics = parse_metrics(http_get(mon_port, "/metrics")[1].decode())
        deadline = time.monotonic() + 10
        while True:
            syncz = json.loads(http_get(mon_port, "/debug/syncz")[1])
            unsynced = [
                entry["proxy"]
                for entry in syncz
                if not entry["resources"]
                or any(r["sent"] != r["acked"] or r["lastError"] for r in entry["resources"].values())
            ]
            if (not unsynced and len(syncz) == args.proxies) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        results["syncz"] = {"proxies": len(syncz), "synced": len(syncz) - len(unsynced), "unsynced": unsynced[:5]}
        results["metrics"] = {
            k: v
            for k, v in metrics.items()
            if k.startswith(("pilot_xds", "pilot_proxy", "pilot_pushcontext", "pilot_total_xds", "pilot_push_trig"))
        }

        # ----- 5. SIGTERM with the proxies connected -----
        for _, pipe in workers:
            pipe.send(("closing",))
        for _, pipe in workers:
            recv(pipe, "closing", time.monotonic() + 30)
        t_term = time.monotonic()
        pilot.send_signal(signal.SIGTERM)
        try:
            code = pilot.wait(timeout=60)
        except subprocess.TimeoutExpired:
            code = None
        results["shutdown"] = {"exit_code": code, "seconds": time.monotonic() - t_term}
        for _, pipe in workers:
            pipe.send(("stop",))
        ended = 0
        for _, pipe in workers:
            with contextlib.suppress(Exception):
                ended += recv(pipe, "stopped", time.monotonic() + 30)["ended_by_server"]
        results["shutdown"]["streams_ended_by_pilot"] = ended
        ok = results["syncz"]["synced"] == args.proxies and code == 0
    finally:
        if spy is not None:
            spy.kill()
            spy.wait()
        if pilot.poll() is None:
            pilot.kill()
            pilot.wait()
        for proc, pipe in workers:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()
            pipe.close()
        log_file.close()
        if not ok:
            tail = log_path.read_text(errors="replace").splitlines()[-15:]
            print("pilot log (tail):\n  " + "\n  ".join(tail), file=sys.stderr)
        warnings = [
            line
            for line in log_path.read_text(errors="replace").splitlines()
            if " WARNING " in line or " ERROR " in line
        ]
        results["pilot_log_warnings"] = warnings[:5]
        results["pilot_log_warning_count"] = len(warnings)
        tmp.cleanup()

    print_summary(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if ok else 1


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.0f}"


def print_summary(r: dict[str, Any], args: argparse.Namespace) -> None:
    s = r["storm"]
    procs = max(1, min(args.client_procs, args.proxies))
    print(
        f"proxies={args.proxies} services={args.services} endpoints={args.endpoints} edits={args.edits} "
        f"views={args.views} client-procs={args.client_procs} debounce={args.debounce or 'default'} "
        f"throttle={args.throttle or 'default'}"
    )
    print(f"pilot ready after {r['pilot_ready_s']:.2f} s (cpu {r['pilot_startup_cpu_s']:.2f} s)")
    lo, med, p99, hi = s["ready_s"]
    first = s["first_response_s"]
    print(
        f"connect storm: {s['proxies_ready']}/{args.proxies} full config in {s['all_ready_s']:.2f} s "
        f"(per proxy: median {ms(med)} ms, p99 {ms(p99)} ms, max {ms(hi)} ms; first response median "
        f"{ms(first[1])} ms)"
    )
    print(
        f"  cpu: pilot {s['pilot_cpu_s']:.2f} s ({s['pilot_cpu_s'] / s['all_ready_s']:.0%} of a core), "
        f"client {s['client_cpu_s']:.2f} s ({s['client_cpu_s'] / s['all_ready_s'] / procs:.0%} of a core per process)"
    )
    if s["stream_errors"]:
        print(f"  lost streams (retried with backoff): {s['stream_errors']}")
    if any(s["tcp"].values()):
        print(f"  kernel TCP counters during the storm: {s['tcp']}")
    print(
        "  per proxy: "
        + ", ".join(
            f"{t} {s['per_proxy_msgs'][t]:.1f} msg/{s['per_proxy_bytes'][t] / 1e3:.1f} kB" for t in SHORT.values()
        )
    )
    print(
        "edit  svc  first  median   p99    all | msg/proxy c/e/l/r | kB/proxy | pilot pushes c/e/l/r | "
        "cpu s (core %) pilot  client"
    )
    for n, e in enumerate(r["edits"]):
        lo, med, p99, hi = e["latency_s"]
        m = e["per_proxy_msgs"]
        p = e["pilot_pushes"]
        kb = sum(e["per_proxy_bytes"].values()) / 1e3
        print(
            f"{n:4d} {e['service']:4d} {ms(lo):>6s} {ms(med):>7s} {ms(p99):>6s} {ms(hi):>6s} | "
            f"{'/'.join(f'{m[t]:.0f}' if m[t] == int(m[t]) else f'{m[t]:.2f}' for t in SHORT.values()):>17s} | "
            f"{kb:8.1f} | {'/'.join(f'{p[t]:.0f}' for t in SHORT.values()):>20s} | "
            f"{e['pilot_cpu_s']:5.2f} ({e['pilot_cpu_s'] / hi:4.0%}) {e['client_cpu_s']:5.2f} "
            f"({e['client_cpu_s'] / hi / procs:4.0%})"
            + (f" | {e['stream_errors']} lost streams" if e["stream_errors"] else "")
        )
    alls = [e["latency_s"][3] for e in r["edits"]]
    if alls:
        print(
            f"edit → all {args.proxies} proxies updated: min {ms(min(alls))} ms, "
            f"median {ms(statistics.median(alls))} ms, max {ms(max(alls))} ms"
        )
    sz = r["syncz"]
    print(
        f"syncz: {sz['synced']}/{sz['proxies']} proxies SYNCED"
        + (f" (not: {sz['unsynced']})" if sz["unsynced"] else "")
    )
    mt = r["metrics"]
    print("metrics: " + ", ".join(f"{k}={v:.0f}" for k, v in sorted(mt.items())))
    sd = r["shutdown"]
    print(
        f"SIGTERM → exit code {sd['exit_code']} after {sd['seconds']:.2f} s; "
        f"{sd['streams_ended_by_pilot']}/{args.proxies} streams closed by pilot"
    )
    if r["pilot_log_warning_count"]:
        print(f"pilot log: {r['pilot_log_warning_count']} warning/error lines, e.g. {r['pilot_log_warnings'][:2]}")
    # The client is what is measured only if it is busier than pilot; pilot is one event loop (one core).
    phases = [("storm", s["client_cpu_s"], s["pilot_cpu_s"], s["all_ready_s"])]
    phases += [(f"edit {n}", e["client_cpu_s"], e["pilot_cpu_s"], e["latency_s"][3]) for n, e in enumerate(r["edits"])]
    hot = [name for name, client, pilot, wall in phases if client / wall / procs > 0.9 and client / procs > pilot]
    if hot:
        print(f"WARNING: the client processes were the busier side in {', '.join(hot)}; try --client-procs")


if __name__ == "__main__":
    sys.exit(main())

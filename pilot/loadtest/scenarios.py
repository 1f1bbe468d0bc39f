"""The scenarios, run in order against a pilot that serves the generated mesh, and the report they make.

1. Connect storm: every proxy connects at once. Time to full sync: until every proxy has all its types
   ACKed and every subscribed EDS/RDS name received. pilot's CPU is read once the clients went quiet.
2. Endpoint churn: change 2k adds one endpoint to a service, change 2k+1 removes it again. A proxy that can
   see the service has converged when every ClusterLoadAssignment of the service it watches holds the new
   endpoint set. Messages per proxy and type are counted from the write until no message arrived for
   ``settle`` seconds: the target is EDS only, and only to the proxies that watch the service.
3. VirtualService edits: flip a service's 80/20 split. A proxy that can see the route (sidecars within the
   Sidecar isolation, routers when the gateway binds it) has converged when its RouteConfigurations carry
   the new weight.
4. Reconnect storm: every proxy drops its stream and reconnects at once, SotW with the last versions, Delta
   with initial_resource_versions. The phase ends when every proxy got all its types again, or got some answer
   and then nothing arrived for ``settle`` seconds (a server that trusts the versions resends little), or
   nothing at all arrived for several seconds. Reported: how
   many proxies got any answer and how many got every type again, when the last response arrived, and
   what was resent, in messages and bytes per proxy and type.
5. Transport floor (``floor=True``): the storm's recorded responses replayed by a bare grpclib server to the
   same clients; pilot's storm CPU as a ratio to the floor's.

Latency is from just before the file's atomic replace to the proxy's receipt of the response that made it
converge (one monotonic clock for all processes on the machine). Every wait has a deadline (``timeout``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import random
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pilot.loadtest.driver import Driver
from pilot.loadtest.expect import EndpointsExpectation, Expectation, RouteWeightExpectation
from pilot.loadtest.fleet import FleetSpec
from pilot.loadtest.floor import Recording, build_script, floor_process
from pilot.loadtest.mesh import (
    PRISTINE,
    MeshSpec,
    ServiceState,
    atomic_write,
    check_pristine,
    load_manifest,
    render_service,
)
from pilot.loadtest.probe import delta_unsupported
from pilot.loadtest.procstat import ProcessTree
from pilot.loadtest.progress import Progress
from pilot.loadtest.report import SATURATED, SCHEMA, change_summary, client_cpu, quantiles, traffic
from pilot.loadtest.wire import PROTOCOLS, SHORT

SCENARIOS = ("storm", "churn", "vs", "reconnect")
TICK_INTERVAL = 0.5  # how often pilot's RSS is sampled while waiting
MIN_JUDGED_PHASE = 1.0  # seconds: shorter phases do not decide whether the client was saturated
FLOOR_PHASE = "transport floor"


class LoadtestError(RuntimeError):
    pass


@dataclass(frozen=True)
class RunOptions:
    config_dir: Path
    xds_addr: str = "127.0.0.1:15010"
    protocol: str = "sotw"
    proxies: int = 100
    routers: int = 0
    label_sets: int = 1
    client_procs: int = 1
    scenarios: tuple[str, ...] = SCENARIOS
    churn_changes: int = 4
    vs_edits: int = 4
    floor: bool = False
    pilot_pids: tuple[int, ...] = ()
    monitoring_addr: str | None = None
    timeout: float = 120.0  # deadline of each phase
    settle: float = 1.0  # quiet time that ends a change's message count
    seed: int = 1

    def check(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise LoadtestError(f"protocol {self.protocol!r}: expected one of {', '.join(PROTOCOLS)}")
        unknown = set(self.scenarios) - set(SCENARIOS)
        if unknown:
            raise LoadtestError(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
        if self.timeout <= 0 or self.settle < 0:
            raise LoadtestError("timeout must be > 0 and settle >= 0")
        if self.churn_changes < 0 or self.vs_edits < 0:
            raise LoadtestError("churn changes and VirtualService edits must be >= 0")


def split_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise LoadtestError(f"address {addr!r}: expected HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def run(options: RunOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Run the scenarios; returns the report (see report.py for its keys)."""
    return LoadTest(options, progress or Progress(enabled=False)).run()


class LoadTest:
    def __init__(self, options: RunOptions, progress: Progress) -> None:
        options.check()
        self.o = options
        self.progress = progress
        self.mesh: MeshSpec = load_manifest(options.config_dir)
        self.nodes = FleetSpec(options.proxies, self.mesh.namespace_names, options.label_sets, options.routers).nodes()
        self.host, self.port = split_addr(options.xds_addr)
        rng = random.Random(options.seed)
        pairs = (options.churn_changes + 1) // 2 if "churn" in options.scenarios else 0
        self.churn_services = rng.sample(range(self.mesh.services), min(pairs, self.mesh.services))
        if pairs > self.mesh.services:
            raise LoadtestError(f"{options.churn_changes} churn changes need {pairs} services; the mesh has fewer")
        vs_wanted = options.vs_edits if "vs" in options.scenarios else 0
        if vs_wanted and not self.mesh.virtual_services:
            raise LoadtestError("VirtualService edits: the mesh has no VirtualServices (--virtual-services 0)")
        self.vs_services = rng.sample(range(self.mesh.virtual_services), min(vs_wanted, self.mesh.virtual_services))
        self.states: dict[int, ServiceState] = {}
        self.pilot = ProcessTree(options.pilot_pids) if options.pilot_pids else None
        self.driver = Driver(self.host, self.port, options.protocol, self.nodes, options.client_procs)
        self.client_phases: list[tuple[str, dict[str, float]]] = []
        self.warnings: list[str] = []
        self._last_tick = 0.0

    # ----- the run -----

    def run(self) -> dict[str, Any]:
        started_at = datetime.now(UTC)
        t_start = time.monotonic()
        check_pristine(self.mesh, self.o.config_dir, sorted(set(self.churn_services) | set(self.vs_services)))
        if self.o.monitoring_addr:
            self._wait_ready()
        if self.o.protocol == "delta":
            reason = asyncio.run(delta_unsupported(self.host, self.port))
            if reason is not None:
                raise LoadtestError(f"{self.o.xds_addr} does not serve Delta ADS ({reason})")
        idle = self.pilot.sample(with_pss=True) if self.pilot else None
        report: dict[str, Any] = {
            "schema": SCHEMA,
            "started_at": started_at.isoformat(timespec="seconds"),
            "duration_s": None,
            "target": {
                "xds_addr": self.o.xds_addr,
                "protocol": self.o.protocol,
                "monitoring_addr": self.o.monitoring_addr,
            },
            "mesh": self.mesh.to_json(),
            "fleet": {
                "proxies": len(self.nodes),
                "sidecars": len(self.nodes) - self.o.routers,
                "routers": self.o.routers,
                "label_sets": self.o.label_sets,
                "client_procs": len(self.driver.specs),
            },
            "connect_storm": None,
            "endpoint_churn": None,
            "vs_edits": None,
            "reconnect_storm": None,
            "floor": None,
        }
        after_storm = end = None
        try:
            self.driver.start()
            report["connect_storm"] = self.connect_storm()
            after_storm = self.pilot.sample(with_pss=True) if self.pilot else None
            if self.churn_services and self.o.churn_changes:
                report["endpoint_churn"] = self.changes(self._churn_expectations())
            if self.vs_services and self.o.vs_edits:
                report["vs_edits"] = self.changes(self._vs_expectations())
            if "reconnect" in self.o.scenarios:
                report["reconnect_storm"] = self.reconnect_storm()
            end = self.pilot.sample(with_pss=True) if self.pilot else None
            if self.o.floor:
                report["floor"] = self.transport_floor(report["connect_storm"])
        finally:
            self.driver.stop()
            self._restore()
        report["pilot"] = self._pilot_section(idle, after_storm, end)
        report["client"] = self._client_section()
        report["warnings"] = self.warnings
        report["duration_s"] = time.monotonic() - t_start
        return report

    # ----- connect storm -----

    def connect_storm(self) -> dict[str, Any]:
        storm = self._storm("connect storm", self.pilot, record=self.o.floor)
        if storm["gave_up"]:
            self.warnings.append(f"connect storm: {len(storm['gave_up'])} proxies gave up, e.g. {storm['gave_up'][0]}")
        if storm["synced"] < storm["proxies"]:
            self.warnings.append(f"connect storm: only {storm['synced']}/{storm['proxies']} proxies got full config")
        if storm["stream_errors"]:
            self.warnings.append(f"connect storm: streams lost and retried: {storm['stream_errors']}")
        return storm

    def _storm(self, title: str, measured: ProcessTree | None, record: bool) -> dict[str, Any]:
        cpu0 = measured.cpu() if measured else None
        t0 = time.monotonic()
        deadline = t0 + self.o.timeout
        with self.progress.phase(title, len(self.nodes)) as update:
            answers = self.driver.command(("storm", deadline, record), "storm", deadline, update, self._tick)
        settled = self.driver.command(("settle", self.o.settle, deadline), "settled", deadline, tick=self._tick)
        cpu = measured.cpu() - cpu0 if measured and cpu0 is not None else None
        self._client_phase(title, answers, settled)
        ready = [t - t0 for t in self.driver.merge(answers, "ready_at") if t is not None]
        first = [t - t0 for t in self.driver.merge(answers, "first_response_at") if t is not None]
        errors: dict[str, int] = {}
        for a in answers:
            for reason, n in a["stream_errors"].items():
                errors[reason] = errors.get(reason, 0) + n
        return {
            "proxies": len(self.nodes),
            "synced": len(ready),
            "time_to_full_sync_s": max(ready) if len(ready) == len(self.nodes) else None,
            "sync_s": quantiles(ready),
            "first_response_s": quantiles(first),
            "per_proxy": traffic(self.driver.merge(answers, "msgs"), self.driver.merge(answers, "bytes")),
            "stream_errors": errors,
            "gave_up": [e for a in answers for e in a["gave_up"]],
            "pilot": {"cpu_s": cpu, "rss_bytes": measured.sample().rss_bytes} if measured and cpu is not None else None,
            "client": client_cpu(answers, settled),
        }

    # ----- changes -----

    def _churn_expectations(self) -> list[tuple[int, ServiceState, Expectation]]:
        out: list[tuple[int, ServiceState, Expectation]] = []
        states = dict(self.states)
        for c in range(self.o.churn_changes):
            svc = self.churn_services[c // 2]
            adding = c % 2 == 0
            state = replace(states.get(svc, PRISTINE), extra=1 if adding else 0)
            states[svc] = state
            address = self.mesh.endpoint_address(svc, self.mesh.endpoints)
            label = f"{'add' if adding else 'remove'} {address} {'to' if adding else 'from'} {self.mesh.host_of(svc)}"
            clusters = self.mesh.cluster_endpoints(svc, state)
            out.append((svc, state, EndpointsExpectation(self.mesh, svc, clusters, label)))
        return out

    def _vs_expectations(self) -> list[tuple[int, ServiceState, Expectation]]:
        out: list[tuple[int, ServiceState, Expectation]] = []
        states = dict(self.states)
        for c in range(self.o.vs_edits):
            svc = self.vs_services[c % len(self.vs_services)]
            old = states.get(svc, PRISTINE)
            state = replace(old, v1_weight=100 - old.v1_weight)
            states[svc] = state
            label = f"{self.mesh.host_of(svc)}: v1 weight {old.v1_weight} -> {state.v1_weight}"
            cluster = self.mesh.subset_cluster(svc, "v1")
            out.append((svc, state, RouteWeightExpectation(self.mesh, svc, cluster, state.v1_weight, label)))
        return out

    def changes(self, planned: list[tuple[int, ServiceState, Expectation]]) -> dict[str, Any]:
        changes = [self.change(svc, state, expectation) for svc, state, expectation in planned]
        summary = change_summary(changes)
        summary["proxies_receiving_per_change"] = {
            t: sum(c["per_proxy"]["proxies_receiving"][t] for c in changes) / max(len(changes), 1) for t in SHORT
        }
        return {"changes": changes, "summary": summary}

    def change(self, svc: int, state: ServiceState, expectation: Expectation) -> dict[str, Any]:
        deadline = time.monotonic() + self.o.timeout
        armed = self.driver.command(("arm", expectation), "armed", deadline)
        expected = sum(a["armed"] for a in armed)
        metrics0 = self._metrics()
        cpu0 = self.pilot.cpu() if self.pilot else None
        path = self.o.config_dir / self.mesh.service_file(svc)
        text = render_service(self.mesh, svc, state)
        t_write = time.monotonic()
        atomic_write(path, text)
        self.states[svc] = state
        with self.progress.phase(expectation.label[:28], expected) as update:
            answers = self.driver.command(("watch", deadline, self.o.settle), "watched", deadline, update, self._tick)
        cpu = self.pilot.cpu() - cpu0 if self.pilot and cpu0 is not None else None
        metrics1 = self._metrics()
        self._client_phase(expectation.label, answers)
        expected_mask = self.driver.merge(answers, "expected")
        converged_at = self.driver.merge(answers, "converged_at")
        latencies = [t - t_write for t, e in zip(converged_at, expected_mask, strict=True) if e and t is not None]
        per_proxy = traffic(self.driver.merge(answers, "msgs"), self.driver.merge(answers, "bytes"))
        if len(latencies) < expected:
            self.warnings.append(f"{expectation.label}: only {len(latencies)}/{expected} proxies converged")
        if isinstance(expectation, EndpointsExpectation):
            unwanted = {t: n for t, n in per_proxy["proxies_receiving"].items() if t != "eds" and n}
            if unwanted:
                self.warnings.append(f"{expectation.label}: proxies that got other types than EDS: {unwanted}")
        return {
            "label": expectation.label,
            "service": self.mesh.host_of(svc),
            "expected": expected,
            "converged": len(latencies),
            "latency_s": quantiles(latencies),
            "_latencies": latencies,
            "per_proxy": per_proxy,
            "pilot": {"cpu_s": cpu} if cpu is not None else None,
            "client": client_cpu(answers),
            "metrics": _delta(metrics0, metrics1),
        }

    # ----- reconnect storm -----

    def reconnect_storm(self) -> dict[str, Any]:
        cpu0 = self.pilot.cpu() if self.pilot else None
        t0 = time.monotonic()
        deadline = t0 + self.o.timeout
        with self.progress.phase("reconnect storm", len(self.nodes)) as update:
            answers = self.driver.command(
                ("reconnect", deadline, self.o.settle), "reconnected", deadline, update, self._tick
            )
        cpu = self.pilot.cpu() - cpu0 if self.pilot and cpu0 is not None else None
        self._client_phase("reconnect storm", answers)
        resent = [t - t0 for t in self.driver.merge(answers, "synced_at") if t is not None and t >= t0]
        last = [t - t0 for t in self.driver.merge(answers, "last_response_at") if t is not None and t >= t0]
        errors: dict[str, int] = {}
        for a in answers:
            for reason, n in a["stream_errors"].items():
                errors[reason] = errors.get(reason, 0) + n
        if errors:
            self.warnings.append(f"reconnect storm: streams lost and retried: {errors}")
        return {
            "proxies": len(self.nodes),
            "answered": len(last),
            "fully_resent": len(resent),
            "time_to_last_response_s": max(last) if last else None,
            "last_response_s": quantiles(last),
            "full_resend_s": quantiles(resent),
            "per_proxy": traffic(self.driver.merge(answers, "msgs"), self.driver.merge(answers, "bytes")),
            "stream_errors": errors,
            "pilot": {"cpu_s": cpu} if cpu is not None else None,
            "client": client_cpu(answers),
        }

    # ----- transport floor -----

    def transport_floor(self, storm: dict[str, Any]) -> dict[str, Any]:
        deadline = time.monotonic() + self.o.timeout
        recording: Recording = {}
        for answer in self.driver.command(("recording",), "recording", deadline):
            for group, responses in answer["groups"].items():
                recording.setdefault(group, responses)
        script = build_script(recording, self.o.protocol, self.o.protocol)
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=floor_process, args=(child, script, "127.0.0.1"), name="loadtest-floor")
        proc.daemon = True
        proc.start()
        child.close()
        try:
            if not parent.poll(60):
                raise LoadtestError("the transport floor did not start within 60 s")
            _, port, pid = parent.recv()
            self.driver.command(("retarget", "127.0.0.1", port), "retargeted", deadline)
            floor = self._storm(FLOOR_PHASE, ProcessTree([pid]), record=False)
        finally:
            with contextlib.suppress(OSError):
                parent.send(("stop",))
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
            parent.close()
        floor_cpu = floor["pilot"]["cpu_s"] if floor["pilot"] else None
        pilot_cpu = (storm.get("pilot") or {}).get("cpu_s")
        return {
            "protocol": self.o.protocol,
            "proxies": floor["proxies"],
            "synced": floor["synced"],
            "time_to_full_sync_s": floor["time_to_full_sync_s"],
            "sync_s": floor["sync_s"],
            "first_response_s": floor["first_response_s"],
            "per_proxy": floor["per_proxy"],
            "cpu_s": floor_cpu,
            "rss_bytes": floor["pilot"]["rss_bytes"] if floor["pilot"] else None,
            "client": floor["client"],
            "pilot_cpu_s": pilot_cpu,
            "pilot_to_floor_cpu": pilot_cpu / floor_cpu if pilot_cpu is not None and floor_cpu else None,
        }

    # ----- helpers -----

    def _tick(self) -> None:
        now = time.monotonic()
        if self.pilot is not None and now - self._last_tick >= TICK_INTERVAL:
            self._last_tick = now
            self.pilot.sample()

    def _client_phase(self, name: str, *commands: list[dict[str, Any]]) -> None:
        self.client_phases.append((name, client_cpu(*commands)))

    def _client_section(self) -> dict[str, Any]:
        # Against the floor the client is meant to be the busier side; a phase shorter than a second says
        # little (a 50 ms phase is "saturated" by one decode).
        judged = [(p["max_core_fraction"], name) for name, p in self.client_phases if p["wall_s"] >= MIN_JUDGED_PHASE]
        judged = [(f, name) for f, name in judged if name != FLOOR_PHASE]
        busiest, phase = max(judged, default=(0.0, None))
        saturated = busiest > SATURATED
        if saturated:
            self.warnings.append(
                f"a client process used {busiest:.0%} of a core during {phase}: the client, not pilot, may be what "
                "was measured there; use --client-procs or fewer proxies"
            )
        return {
            "procs": len(self.driver.specs),
            "cpu_s": sum(p["cpu_s"] for _, p in self.client_phases),
            "max_core_fraction": busiest,
            "busiest_phase": phase,
            "saturated": saturated,
        }

    def _pilot_section(self, idle: Any, after_storm: Any, end: Any) -> dict[str, Any] | None:
        if self.pilot is None or idle is None:
            return None
        final = end or after_storm or idle
        per_proxy = (after_storm.rss_bytes - idle.rss_bytes) / len(self.nodes) if after_storm else None
        return {
            "pids": list(self.pilot.roots),
            "processes": final.processes,
            "rss_idle_bytes": idle.rss_bytes,
            "rss_peak_bytes": self.pilot.peak_rss,
            "rss_end_bytes": final.rss_bytes,
            "pss_idle_bytes": idle.pss_bytes,
            "pss_end_bytes": final.pss_bytes,
            "rss_per_proxy_bytes": per_proxy,
            "cpu_s": final.cpu_s - idle.cpu_s,
        }

    def _restore(self) -> None:
        """Put every edited service file back as generated."""
        for svc, state in self.states.items():
            if state != PRISTINE:
                atomic_write(self.o.config_dir / self.mesh.service_file(svc), render_service(self.mesh, svc))
        self.states.clear()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.o.timeout
        while True:
            with contextlib.suppress(OSError):
                if _http_get(self.o.monitoring_addr or "", "/ready")[0] == 200:
                    return
            if time.monotonic() > deadline:
                raise LoadtestError(f"{self.o.monitoring_addr}/ready did not answer 200 within {self.o.timeout:g} s")
            time.sleep(0.1)

    def _metrics(self) -> dict[str, float] | None:
        if not self.o.monitoring_addr:
            return None
        try:
            status, body = _http_get(self.o.monitoring_addr, "/metrics")
        except OSError:
            return None
        if status != 200:
            return None
        out = {}
        for line in body.decode(errors="replace").splitlines():
            if line.startswith(("pilot_xds_pushes", "pilot_pushcontext_init")):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[name] = float(value)
        return out


def _delta(before: dict[str, float] | None, after: dict[str, float] | None) -> dict[str, float] | None:
    if before is None or after is None:
        return None
    return {k: v - before.get(k, 0.0) for k, v in sorted(after.items()) if v != before.get(k, 0.0)}


def _http_get(addr: str, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://{addr}{path}", timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def dumps(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, default=str)

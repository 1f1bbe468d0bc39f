"""A client process: many simulated proxies on one uvloop loop, driven by the orchestrator over a pipe.

Commands (tuples; the first item names it) and their answers:

- ``("storm", deadline, record)``: start every proxy; answer once all have full config or at the deadline.
  With ``record``, the first proxy of each group keeps its responses for the transport floor.
- ``("arm", expectation)``: the proxies the expectation applies to start waiting for it; answers their count.
- ``("watch", deadline, settle)``: answer once every armed proxy converged (or the deadline) and no message
  arrived for ``settle`` seconds.
- ``("reconnect", deadline, settle)``: every proxy drops its stream and reconnects at once; answer once all
  got every type again, or all got some answer and then nothing arrived for ``settle`` seconds, or nothing
  arrived for ``SILENT_SERVER`` seconds, or the deadline.
- ``("settle", settle, deadline)``: answer once no message arrived for ``settle`` seconds.
- ``("recording",)``: the recorded responses by group.
- ``("retarget", host, port)``: stop every proxy; later storms start fresh proxies against host:port.
- ``("stop",)``: stop every proxy and exit.

While waiting, the process sends ``("progress", n_done)`` about four times a second. Each answer carries the
process's CPU time for the phase, so a saturated client is visible in the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing.connection
import os
import resource
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from pilot.loadtest.expect import Expectation
from pilot.loadtest.fleet import NodeSpec
from pilot.loadtest.proxy import Shared, SimProxy, Tally
from pilot.loadtest.wire import quiet_h2_frame_repr

PROGRESS_INTERVAL = 0.25
SILENT_SERVER = 5.0  # seconds without any response after a reconnect storm: the server has nothing to send


@dataclass(frozen=True)
class ClientSpec:
    number: int
    host: str
    port: int
    protocol: str
    nodes: list[NodeSpec]


def client_process(pipe: multiprocessing.connection.Connection, spec: ClientSpec) -> None:
    """Entry point of a spawned client process."""
    import uvloop

    raise_fd_limit(len(spec.nodes) * 2 + 256)
    quiet_h2_frame_repr()
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(Client(pipe, spec).main())


def raise_fd_limit(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class Client:
    def __init__(self, pipe: multiprocessing.connection.Connection, spec: ClientSpec) -> None:
        self.pipe = pipe
        self.spec = spec
        self.shared = Shared(spec.host, spec.port, spec.protocol)
        self.proxies: list[SimProxy] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue(maxsize=16)
        self._baseline: list[tuple[list[int], list[int]]] = []

    async def main(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.pipe.fileno(), self._readable)
        # uvloop made the pipe non-blocking; answers can be megabytes (recordings) and the orchestrator is
        # waiting for them, so a blocking send is brief and simpler than a partial-write buffer.
        os.set_blocking(self.pipe.fileno(), True)
        self.pipe.send(("hello", os.getpid()))
        try:
            while True:
                command = await self.inbox.get()
                kind = command[0]
                if kind == "stop":
                    break
                handler = getattr(self, f"_cmd_{kind}", None)
                if handler is None:
                    self.pipe.send(("error", f"unknown command {kind!r}"))
                    continue
                cpu, wall = time.process_time(), time.monotonic()
                kind_out, result = await handler(*command[1:])
                result["cpu_s"] = time.process_time() - cpu
                result["wall_s"] = time.monotonic() - wall
                self.pipe.send((kind_out, result))
        finally:
            loop.remove_reader(self.pipe.fileno())
            await self._stop_proxies()
            with contextlib.suppress(OSError):
                self.pipe.send(
                    ("stopped", {"decoder_hits": self.shared.decoder.hits, "misses": self.shared.decoder.misses})
                )

    def _readable(self) -> None:
        try:
            command = self.pipe.recv()
        except (EOFError, OSError):
            command = ("stop",)
            asyncio.get_running_loop().remove_reader(self.pipe.fileno())
        # The orchestrator sends one command and waits for its answer, so the inbox never fills.
        self.inbox.put_nowait(command)

    # ----- commands -----

    async def _cmd_storm(self, deadline: float, record: bool) -> tuple[str, dict[str, Any]]:
        await self._stop_proxies()
        self.shared.give_up_at = deadline
        self.proxies = [SimProxy(node, self.shared) for node in self.spec.nodes]
        if record:
            seen: set[tuple[bool, str]] = set()
            for p in self.proxies:
                if p.node.group not in seen:
                    seen.add(p.node.group)
                    p.start_recording()
        for p in self.proxies:
            p.awaiting_sync = True
        self.shared.synced.reset(len(self.proxies))
        self.tasks = [asyncio.create_task(p.run(), name=f"proxy-{p.node.index}") for p in self.proxies]
        await self._wait(self.shared.synced, deadline)
        return "storm", {
            "ready_at": [p.ready_at for p in self.proxies],
            "first_response_at": [p.first_response_at for p in self.proxies],
            "msgs": [list(p.msgs) for p in self.proxies],
            "bytes": [list(p.bytes) for p in self.proxies],
            "stream_errors": self._take_stream_errors(),
            "gave_up": [p.error for p in self.proxies if p.error],
        }

    async def _cmd_arm(self, expectation: Expectation) -> tuple[str, dict[str, Any]]:
        self.shared.expectation = expectation
        armed = 0
        for p in self.proxies:
            p.converged_at = None
            p.awaiting_change = not p.error and expectation.applies(p.node)
            armed += p.awaiting_change
        self.shared.converged.reset(armed)
        self._baseline = [(list(p.msgs), list(p.bytes)) for p in self.proxies]
        return "armed", {"armed": armed}

    async def _cmd_watch(self, deadline: float, settle: float) -> tuple[str, dict[str, Any]]:
        self.shared.give_up_at = deadline  # a stream lost now is retried until the phase's deadline
        await self._wait(self.shared.converged, deadline)
        await self._quiet(settle, deadline)
        result = {
            "expected": [p.awaiting_change or p.converged_at is not None for p in self.proxies],
            "converged_at": [p.converged_at for p in self.proxies],
            **self._window(),
            "stream_errors": self._take_stream_errors(),
        }
        for p in self.proxies:
            p.awaiting_change = False
        self.shared.expectation = None
        return "watched", result

    async def _cmd_reconnect(self, deadline: float, settle: float) -> tuple[str, dict[str, Any]]:
        self.shared.give_up_at = deadline
        self._baseline = [(list(p.msgs), list(p.bytes)) for p in self.proxies]
        live = [p for p in self.proxies if not p.error]
        for p in live:
            p.awaiting_sync = p.awaiting_answer = True
        self.shared.synced.reset(len(live))
        self.shared.answered.reset(len(live))
        self.shared.last_message_at = time.monotonic()
        for p in live:
            p.drop_stream()
        served = asyncio.create_task(self._reconnect_served(settle, deadline))
        try:
            await self._wait_any(self.shared.synced, deadline, served)
        finally:
            served.cancel()
            await asyncio.gather(served, return_exceptions=True)
        for p in live:
            p.awaiting_sync = p.awaiting_answer = False
        return "reconnected", {
            "synced_at": [p.synced_at for p in self.proxies],
            "last_response_at": [p.last_response_at for p in self.proxies],
            **self._window(),
            "stream_errors": self._take_stream_errors(),
        }

    async def _reconnect_served(self, settle: float, deadline: float) -> None:
        """A server that trusts the versions resends little: once every proxy got something on its new stream,
        ``settle`` seconds of silence end the phase. A server that sends nothing at all is only recognised by a
        long silence (a busy one may take seconds to answer the first of thousands of new streams)."""
        answered = asyncio.ensure_future(self.shared.answered.done.wait())
        silent = asyncio.ensure_future(self._quiet(max(SILENT_SERVER, 5 * settle), deadline))
        try:
            done, _ = await asyncio.wait([answered, silent], return_when=asyncio.FIRST_COMPLETED)
            if answered in done:
                await self._quiet(settle, deadline)
        finally:
            for task in (answered, silent):
                task.cancel()
            await asyncio.gather(answered, silent, return_exceptions=True)

    async def _cmd_settle(self, settle: float, deadline: float) -> tuple[str, dict[str, Any]]:
        await self._quiet(settle, deadline)
        return "settled", {}

    async def _cmd_recording(self) -> tuple[str, dict[str, Any]]:
        groups = {p.node.group: p.recorded for p in self.proxies if p.recorded is not None}
        return "recording", {"groups": groups}

    async def _cmd_retarget(self, host: str, port: int) -> tuple[str, dict[str, Any]]:
        await self._stop_proxies()
        self.shared = Shared(host, port, self.shared.protocol)
        return "retargeted", {}

    # ----- helpers -----

    async def _wait(self, tally: Tally, deadline: float) -> None:
        await self._wait_any(tally, deadline, None)

    async def _wait_any(self, tally: Tally, deadline: float, other: asyncio.Task[None] | None) -> None:
        """Until the tally is done, ``other`` finished, or the deadline; reports progress meanwhile."""
        while not tally.done.is_set() and (other is None or not other.done()):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            waiters = [asyncio.ensure_future(tally.done.wait())]
            if other is not None:
                waiters.append(other)  # type: ignore[arg-type]
            await asyncio.wait(waiters, timeout=min(PROGRESS_INTERVAL, left), return_when=asyncio.FIRST_COMPLETED)
            waiters[0].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiters[0]
            self.pipe.send(("progress", tally.total - tally.remaining))

    async def _quiet(self, settle: float, deadline: float) -> None:
        """Until no response arrived for ``settle`` seconds (or the deadline)."""
        while True:
            now = time.monotonic()
            idle = now - self.shared.last_message_at
            if idle >= settle or now >= deadline:
                return
            await asyncio.sleep(min(settle - idle, deadline - now) + 0.001)

    def _window(self) -> dict[str, Any]:
        """Messages and bytes per proxy and type since the baseline."""
        msgs, size = [], []
        for p, (m0, b0) in zip(self.proxies, self._baseline, strict=True):
            msgs.append([a - b for a, b in zip(p.msgs, m0, strict=True)])
            size.append([a - b for a, b in zip(p.bytes, b0, strict=True)])
        return {"msgs": msgs, "bytes": size}

    def _take_stream_errors(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for p in self.proxies:
            out.update(p.stream_errors)
            p.stream_errors.clear()
        return dict(out)

    async def _stop_proxies(self) -> None:
        for p in self.proxies:
            p.stopping = True
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []

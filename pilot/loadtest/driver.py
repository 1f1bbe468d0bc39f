"""The orchestrator's side of the client processes: spawn them, send a command to all, gather the answers.

Proxies are dealt round-robin over ``procs`` processes (spawned, so each has its own clean interpreter
and uvloop loop). Answers that hold one value per proxy are merged back into fleet order.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import time
from collections.abc import Callable
from typing import Any

from pilot.loadtest.client import ClientSpec, client_process
from pilot.loadtest.fleet import NodeSpec

Progress = Callable[[int], None]
Tick = Callable[[], None]
ANSWER_GRACE = 30.0  # beyond a phase's deadline, how long to wait for a client's answer
POLL = 0.25


class ClientFailed(RuntimeError):
    pass


class Driver:
    def __init__(self, host: str, port: int, protocol: str, nodes: list[NodeSpec], procs: int) -> None:
        self.nodes = nodes
        procs = max(1, min(procs, len(nodes)))
        self.slices = [list(range(k, len(nodes), procs)) for k in range(procs)]
        self.specs = [
            ClientSpec(k, host, port, protocol, [nodes[i] for i in part]) for k, part in enumerate(self.slices)
        ]
        self.processes: list[tuple[Any, multiprocessing.connection.Connection]] = []
        self.pids: list[int] = []

    def start(self, timeout: float = 60.0) -> None:
        ctx = multiprocessing.get_context("spawn")
        for spec in self.specs:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=client_process, args=(child, spec), name=f"loadtest-client-{spec.number}")
            proc.daemon = True
            proc.start()
            child.close()
            self.processes.append((proc, parent))
        deadline = time.monotonic() + timeout
        for _, pipe in self.processes:
            self.pids.append(self._expect(pipe, "hello", deadline))

    def command(
        self,
        command: tuple[Any, ...],
        answer: str,
        deadline: float,
        progress: Progress | None = None,
        tick: Tick | None = None,
    ) -> list[dict[str, Any]]:
        """Send ``command`` to every client; return their answers (in client order)."""
        for _, pipe in self.processes:
            pipe.send(command)
        answers: dict[int, dict[str, Any]] = {}
        done_by: dict[int, int] = {}
        pipes = {id(pipe): k for k, (_, pipe) in enumerate(self.processes)}
        give_up = deadline + ANSWER_GRACE
        while len(answers) < len(self.processes):
            waiting = [pipe for k, (_, pipe) in enumerate(self.processes) if k not in answers]
            left = give_up - time.monotonic()
            if left <= 0:
                raise ClientFailed(f"client processes did not answer {command[0]!r} in time")
            for pipe in multiprocessing.connection.wait(waiting, timeout=min(POLL, left)):
                k = pipes[id(pipe)]
                kind, body = self._recv(pipe)
                if kind == "progress":
                    done_by[k] = body
                    if progress is not None:
                        progress(sum(done_by.values()))
                elif kind == answer:
                    answers[k] = body
                else:
                    raise ClientFailed(f"client {k}: expected {answer!r}, got {kind!r}: {body!r}")
            if tick is not None:
                tick()
        return [answers[k] for k in range(len(self.processes))]

    def merge(self, answers: list[dict[str, Any]], key: str) -> list[Any]:
        """One value per proxy, in fleet order, from the per-client lists under ``key``."""
        out: list[Any] = [None] * len(self.nodes)
        for part, answer in zip(self.slices, answers, strict=True):
            for i, value in zip(part, answer[key], strict=True):
                out[i] = value
        return out

    def stop(self, timeout: float = 10.0) -> None:
        for _, pipe in self.processes:
            with contextlib.suppress(OSError):
                pipe.send(("stop",))
        deadline = time.monotonic() + timeout
        for proc, pipe in self.processes:
            proc.join(timeout=max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
            pipe.close()
        self.processes = []

    def _recv(self, pipe: multiprocessing.connection.Connection) -> tuple[str, Any]:
        try:
            message = pipe.recv()
        except EOFError:
            raise ClientFailed("a client process exited unexpectedly") from None
        return message[0], message[1] if len(message) > 1 else None

    def _expect(self, pipe: multiprocessing.connection.Connection, kind: str, deadline: float) -> Any:
        if not pipe.poll(max(0.0, deadline - time.monotonic())):
            raise ClientFailed(f"client process: no {kind!r} before the deadline")
        got, body = self._recv(pipe)
        if got != kind:
            raise ClientFailed(f"client process: expected {kind!r}, got {got!r}")
        return body

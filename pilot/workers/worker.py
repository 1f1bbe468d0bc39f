"""One worker process of `pilot serve --workers N`: the whole PilotServer pipeline on its own uvloop loop.

- xDS: the listener shares the port with the other workers (SO_REUSEPORT); the kernel spreads new
  connections over the workers that listen, so when one dies its proxies reconnect to the others.
- Monitoring: a unix socket in the supervisor's private (0700) temp dir rather than 127.0.0.1:0, so no port
  is taken, nothing is reachable from the network or by other local users (config_cache?clear changes state),
  and the supervisor knows the address before the worker starts: nothing has to be reported back.
- Readiness: one line, ``ready``, on stdout (a pipe to the supervisor) once xDS accepts connections; then
  stdout is pointed at stderr, so nothing printed later can fill a pipe that is no longer read.
- Supervisor gone: stdin is a pipe from the supervisor (a socketpair under uvloop: same EOF); its EOF (the
  supervisor exited or was SIGKILLed, the kernel closes its end) stops the worker. Chosen over
  PR_SET_PDEATHSIG because it works on every POSIX system, has no race between fork and prctl, does not
  depend on which supervisor thread spawned the child (PDEATHSIG fires when that thread exits), and lets the
  worker close its streams cleanly so its proxies reconnect at once. Its limit: a worker whose loop is stuck
  notices late (the supervisor's own stop path SIGKILLs workers that overstay).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from pilot.server import PilotServer, ServerOptions

log = logging.getLogger(__name__)

READY_LINE = b"ready\n"


def run_worker(options: ServerOptions, index: int, socket_path: Path) -> int:
    import uvloop

    options = dataclasses.replace(options, reuse_port=True, monitoring_socket=socket_path)
    _label_logs(index)
    # Ctrl-C in a terminal reaches the whole process group; the supervisor alone decides how workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return int(uvloop.run(_main(options, index)))


async def _main(options: ServerOptions, index: int) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    parent, _ = await loop.connect_read_pipe(lambda: _ParentWatch(stop.set), sys.stdin)
    server = PilotServer(options)
    try:
        await server.start()
    except OSError as exc:
        # One line for the supervisor's log; the process exits, so the half-started server needs no stop().
        log.error("worker %d cannot start: %s", index, exc)
        return 1
    try:
        _announce_ready()
        log.info("worker %d (pid %d) ready; monitoring on %s", index, os.getpid(), options.monitoring_socket)
        await stop.wait()
        return 0
    finally:
        await server.stop()
        parent.close()


class _ParentWatch(asyncio.Protocol):
    """Calls ``on_gone`` when the supervisor's end of the stdin pipe closes."""

    def __init__(self, on_gone: Callable[[], None]) -> None:
        self._on_gone = on_gone

    def data_received(self, data: bytes) -> None:
        pass  # the supervisor sends nothing; the pipe exists for its EOF

    def eof_received(self) -> bool | None:
        log.info("stdin closed: the supervisor is stopping or gone; stopping")
        self._on_gone()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_gone()


def _announce_ready() -> None:
    stdout = sys.stdout.fileno()
    with contextlib.suppress(OSError):  # the supervisor is gone: stdin's EOF stops this worker anyway
        os.write(stdout, READY_LINE)
    os.dup2(sys.stderr.fileno(), stdout)


def _label_logs(index: int) -> None:
    # pilot.log's layout (text or JSON) with the worker named, as all workers share the supervisor's stderr.
    from pilot.log import set_label

    set_label(f"worker {index}")

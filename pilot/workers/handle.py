"""The supervisor's handle on one worker: its current process, lifecycle state and a private HTTP client.

The supervisor (supervisor.py) changes a handle; the public monitoring server (aggregate.py) only reads it.
"""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from yarl import URL


class WorkerState(enum.Enum):
    STARTING = "starting"  # process running, not yet reported ready
    READY = "ready"  # reported ready; serving xDS
    RESTARTING = "restarting"  # exited; waiting out the restart backoff
    STOPPED = "stopped"  # not started yet, or stopped for good


class WorkerUnavailable(Exception):
    """The worker's monitoring socket did not answer (not started, dead, or too slow)."""


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    charset: str | None
    body: bytes


@dataclass(eq=False)
class WorkerHandle:
    index: int
    socket_path: Path
    state: WorkerState = WorkerState.STOPPED
    process: asyncio.subprocess.Process | None = None
    starts: int = 0
    last_exit: str = ""
    started_at: float = 0.0  # wall clock, for display
    _session: aiohttp.ClientSession | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def attach(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.state = WorkerState.STARTING
        self.starts += 1
        self.started_at = time.time()

    async def get(self, path: str, query_string: str = "", timeout: float = 10.0) -> Reply:
        """GET ``path?query_string`` from the worker's private monitoring server."""
        return await self.request("GET", path, query_string, timeout=timeout)

    async def request(
        self, method: str, path: str, query_string: str = "", *, body: bytes = b"", timeout: float = 10.0
    ) -> Reply:
        if self._session is None:
            # force_close: a restarted worker listens on a fresh socket, so pooled connections would be stale.
            connector = aiohttp.UnixConnector(path=str(self.socket_path), force_close=True)
            self._session = aiohttp.ClientSession(connector=connector)
        url = URL.build(scheme="http", host="worker", path=path, query_string=query_string, encoded=True)
        try:
            async with self._session.request(
                method, url, data=body or None, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as response:
                body = await response.read()
                return Reply(response.status, response.content_type, response.charset, body)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise WorkerUnavailable(f"worker {self.index}: {exc!r}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

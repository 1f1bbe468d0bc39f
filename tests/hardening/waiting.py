"""Waiting on a condition with a deadline (never a sleep as synchronisation)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

TIMEOUT = 15.0  # a deadline, not a delay: generous for a loaded CI machine


async def wait_for(predicate: Callable[[], object], what: str, within: float = TIMEOUT) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {within}s")
        await asyncio.sleep(0.002)

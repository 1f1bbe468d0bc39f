"""Reading an HTTP request body with a size bound (REST xDS, the admission webhook)."""

from __future__ import annotations

from aiohttp import web


async def read_bounded(request: web.BaseRequest, limit: int) -> bytes | None:
    """The whole body, or None once it exceeds ``limit`` bytes (chunked bodies carry no length up front).

    ``request.content.read(n)`` would return only what has arrived so far; this reads to the end.
    """
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)

"""The supervisor's public monitoring server: /ready, /metrics and /debug/* covering every worker.

It relies only on what the workers answer over HTTP (their JSON and Prometheus text), never on their
internals, so a worker endpoint added later is served here too: a JSON list is taken to hold one entry per
connection and concatenated across workers (each entry tagged with its ``worker``); anything else comes from
one worker. Endpoints that describe the config (the same on every worker) always come from one worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from aiohttp import web

from pilot import httpserve
from pilot.metrics.exposition import CONTENT_TYPE
from pilot.metrics.registry import SUPERVISOR_FAMILIES, Metrics
from pilot.security import debugauth
from pilot.workers import metrics
from pilot.workers.handle import Reply, WorkerHandle, WorkerState, WorkerUnavailable

READY_TIMEOUT = 2.0
DEBUG_TIMEOUT = 10.0

# Whole-config endpoints, identical on every worker: answered by one.
WHOLE_CONFIG = frozenset({"configz", "registryz", "endpointShardz", "push_status", "config_cache", "cachez", "list"})
# Per-connection endpoints that answer an object rather than a list: lists concatenated, counts summed.
PER_CONNECTION_OBJECTS = frozenset({"adsz", "connections", "instancesz"})
# Query parameters that change a worker's state (config_cache?clear): every worker must get them.
BROADCAST_PARAMS = frozenset({"clear"})
# istiod's parameter for "about this one proxy": only the worker holding the proxy can answer.
PROXY_PARAM = "proxyID"
# Served by the supervisor itself.
WORKERZ = "workerz"


class Fleet(Protocol):
    """What the monitoring server needs from the supervisor."""

    @property
    def workers(self) -> Sequence[WorkerHandle]: ...

    @property
    def grpc_address(self) -> str: ...

    @property
    def restarts(self) -> int: ...


FLEET_KEY: web.AppKey[Fleet] = web.AppKey("fleet", object)  # type: ignore[arg-type]
_REST_TURN: web.AppKey[int] = web.AppKey("rest-turn", int)
_OWN_METRICS: web.AppKey[Metrics] = web.AppKey("own-metrics", Metrics)


def build_app(fleet: Fleet) -> web.Application:
    # The public monitoring port of --workers N: the same access rules as one process's (loopback sees all,
    # others need credentials, mutations by POST only; pilot.security.debugauth) and the same debug budget.
    access, answers = debugauth.middlewares(None)
    app = web.Application(middlewares=[access, httpserve.DebugBudget().middleware(), answers])
    app[FLEET_KEY] = fleet
    # The supervisor's own series: its process (added to the workers'), worker count and restarts.
    own = app[_OWN_METRICS] = Metrics(SUPERVISOR_FAMILIES)
    own.add_gauges(
        lambda: {
            "pilot_workers": {(): sum(w.alive for w in fleet.workers)},
            "pilot_worker_restarts": {(): fleet.restarts},
        }
    )
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get(f"/debug/{WORKERZ}", workerz)
    app.router.add_get("/debug/{name:.+}", debug)
    app.router.add_post("/debug/{name:.+}", debug_post)  # mutations (cachez?clear, adsz?push): every worker
    app.router.add_get("/debug", relay_to_one)  # the HTML index
    app.router.add_get("/version", relay_to_one)
    app.router.add_post("/v3/discovery:{type}", rest_discovery)
    return app


MAX_REST_BODY = 4 * 1024 * 1024


async def rest_discovery(request: web.Request) -> web.Response:
    """xDS over REST: any serving worker can answer (REST has no stream), so polls are spread round robin."""
    workers = serving(request.app[FLEET_KEY])
    if not workers:
        return web.Response(text="no worker is serving\n", status=503)
    body = await request.content.read(MAX_REST_BODY + 1)
    if len(body) > MAX_REST_BODY:
        return web.Response(text="request too large\n", status=413)
    turn = request.app.get(_REST_TURN, 0)
    request.app[_REST_TURN] = turn + 1
    worker = workers[turn % len(workers)]
    try:
        reply = await worker.request("POST", request.path, request.query_string, body=body, timeout=DEBUG_TIMEOUT)
    except WorkerUnavailable:
        return web.Response(text="worker unavailable\n", status=503)
    return _relay(reply, [worker.index])


def serving(fleet: Fleet) -> list[WorkerHandle]:
    """Workers that are running and have reported ready, in index order."""
    return [w for w in fleet.workers if w.alive and w.state is WorkerState.READY]


async def ready(request: web.Request) -> web.Response:
    fleet = request.app[FLEET_KEY]
    # A worker waiting out its restart backoff has no process: it is not live, so it does not hold readiness.
    live = [w for w in fleet.workers if w.alive]
    if not live:
        return web.Response(text="not ready: no worker is running\n", status=503)

    async def waiting_for(worker: WorkerHandle) -> str | None:
        who = f"worker {worker.index} (pid {worker.pid})"
        if worker.state is not WorkerState.READY:
            return f"{who}: {worker.state.value}"
        try:
            reply = await worker.get("/ready", timeout=READY_TIMEOUT)
        except WorkerUnavailable:
            return f"{who}: not answering"
        return None if reply.status == 200 else f"{who}: /ready {reply.status}"

    waiting = [w for w in await asyncio.gather(*(waiting_for(worker) for worker in live)) if w]
    if waiting:
        return web.Response(text=f"not ready: waiting for {'; '.join(waiting)}\n", status=503)
    return web.Response(text="ready\n")


async def metrics_handler(request: web.Request) -> web.Response:
    fleet = request.app[FLEET_KEY]
    replies = await fetch_all(serving(fleet), "/metrics", "")
    texts = [reply.body.decode("utf-8", "replace") for _, reply in replies if reply.status == 200]
    own = request.app[_OWN_METRICS].render()  # first: process_start_time_seconds is the supervisor's
    body = metrics.merge([own, *texts])
    return web.Response(body=body.encode(), headers={"Content-Type": CONTENT_TYPE})


async def workerz(request: web.Request) -> web.Response:
    fleet = request.app[FLEET_KEY]
    workers = [
        {
            "worker": w.index,
            "pid": w.pid if w.alive else None,
            "state": w.state.value,
            "starts": w.starts,
            "startedAt": datetime.fromtimestamp(w.started_at, UTC).isoformat() if w.started_at else "",
            "lastExit": w.last_exit,
        }
        for w in fleet.workers
    ]
    return _json(request, {"grpcAddress": fleet.grpc_address, "restarts": fleet.restarts, "workers": workers})


async def debug(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    path = request.rel_url.raw_path
    query_string = request.rel_url.raw_query_string
    workers = serving(request.app[FLEET_KEY])
    if not workers:
        return web.Response(text="no worker is ready\n", status=503)

    if PROXY_PARAM in request.query:
        replies = await fetch_all(workers, path, query_string)
        found = next((r for _, r in replies if 200 <= r.status < 300), None)
        return _relay(found or _first(replies), [w.index for w, r in replies if r is found])

    if name in WHOLE_CONFIG and not BROADCAST_PARAMS.intersection(request.query):
        for worker in workers:
            try:
                reply = await worker.get(path, query_string, timeout=DEBUG_TIMEOUT)
            except WorkerUnavailable:
                continue
            if name == "list" and reply.status == 200 and _is_json(reply):
                return _json(request, sorted({*orjson.loads(reply.body), WORKERZ}), [worker.index])
            return _relay(reply, [worker.index])
        return web.Response(text="no worker answered\n", status=503)

    replies = await fetch_all(workers, path, query_string)
    if name in WHOLE_CONFIG:  # a broadcast (config_cache?clear): every worker did it; one answer tells
        return _relay(_first(replies), [w.index for w, _ in replies])
    answers = [(w.index, orjson.loads(r.body)) for w, r in replies if r.status == 200 and _is_json(r)]
    merged = merge_per_connection(name, answers) if answers else None
    if merged is None:
        return _relay(_first(replies), [w.index for w, _ in replies[:1]])
    return _json(request, merged, [index for index, _ in answers])


def merge_per_connection(name: str, answers: Sequence[tuple[int, Any]]) -> Any | None:
    """Merge the JSON answers (worker index, value) of a per-connection endpoint; None if they are not such."""
    if all(isinstance(answer, list) for _, answer in answers):
        return [_tagged(entry, index) for index, answer in answers for entry in answer]
    if name not in PER_CONNECTION_OBJECTS or not all(isinstance(answer, dict) for _, answer in answers):
        return None
    out: dict[str, Any] = {}
    for index, answer in answers:
        for key, value in answer.items():
            if isinstance(value, list):
                out.setdefault(key, []).extend(_tagged(entry, index) for entry in value)
            elif isinstance(value, int | float) and not isinstance(value, bool):
                out[key] = out.get(key, 0) + value
            else:
                out.setdefault(key, value)
    return out


def _tagged(entry: Any, index: int) -> Any:
    return {"worker": index, **entry} if isinstance(entry, dict) else entry


async def fetch_all(workers: Sequence[WorkerHandle], path: str, query_string: str) -> list[tuple[WorkerHandle, Reply]]:
    """GET from every worker at once; workers that do not answer are left out."""

    async def one(worker: WorkerHandle) -> Reply | None:
        try:
            return await worker.get(path, query_string, timeout=DEBUG_TIMEOUT)
        except WorkerUnavailable:
            return None

    replies = await asyncio.gather(*(one(worker) for worker in workers))
    return [(worker, reply) for worker, reply in zip(workers, replies, strict=True) if reply is not None]


def _first(replies: list[tuple[WorkerHandle, Reply]]) -> Reply | None:
    return replies[0][1] if replies else None


def _is_json(reply: Reply) -> bool:
    return reply.content_type == "application/json"


def _workers_header(indexes: Sequence[int]) -> dict[str, str]:
    # Which workers the answer covers: a worker that is restarting is missing from merged lists.
    return {"X-Pilot-Workers": ",".join(str(i) for i in indexes)}


def _relay(reply: Reply | None, indexes: Sequence[int]) -> web.Response:
    if reply is None:
        return web.Response(text="no worker answered\n", status=503)
    return web.Response(
        body=reply.body,
        status=reply.status,
        content_type=reply.content_type,
        charset=reply.charset,
        headers=_workers_header(indexes),
    )


def _json(request: web.Request, value: Any, indexes: Sequence[int] = ()) -> web.Response:
    option = orjson.OPT_INDENT_2 if "pretty" in request.query else 0
    return web.Response(
        body=orjson.dumps(value, option=option),
        content_type="application/json",
        headers=_workers_header(indexes) if indexes else None,
    )


async def debug_post(request: web.Request) -> web.Response:
    """A mutating debug call: every serving worker does it; the first answer tells, naming them all."""
    workers = serving(request.app[FLEET_KEY])
    if not workers:
        return web.Response(text="no worker is ready\n", status=503)
    path, query_string = request.rel_url.raw_path, request.rel_url.raw_query_string

    async def one(worker: WorkerHandle) -> Reply | None:
        try:
            return await worker.request("POST", path, query_string, timeout=DEBUG_TIMEOUT)
        except WorkerUnavailable:
            return None

    replies = [(w, r) for w, r in zip(workers, await asyncio.gather(*map(one, workers)), strict=True) if r]
    return _relay(_first(replies), [w.index for w, _ in replies])


async def relay_to_one(request: web.Request) -> web.Response:
    """What every worker answers the same (the /debug index, /version): the first serving worker's answer."""
    for worker in serving(request.app[FLEET_KEY]):
        try:
            reply = await worker.get(request.rel_url.raw_path, request.rel_url.raw_query_string, timeout=DEBUG_TIMEOUT)
        except WorkerUnavailable:
            continue
        return _relay(reply, [worker.index])
    return web.Response(text="no worker answered\n", status=503)

"""Validation status on Istio config objects (PILOT_ENABLE_STATUS=true), written only by the leader.

The status has istiod's shape (``IstioStatus``): a ``PassedValidation`` condition (one of istiod's condition
types) whose message carries pilot's field-path errors, ``validationMessages`` as istiod's analysis writes
them (``AnalysisMessageBase``: ``type.code`` IST0106 SchemaValidationError for errors, IST0133 SchemaWarning
for warnings, ``level``, ``documentationUrl``), and ``observedGeneration``. Conditions of other types on the
object are kept. It goes to the ``status`` subresource as a JSON merge patch.

What each object should say is recorded for every add and update, leader or not; the leader writes the
objects whose cluster status differs (ignoring timestamps), and on becoming leader it checks them all.
Losing the Lease cancels an in-flight write at once; nothing is written until the Lease is held again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pilot.sources.kube.backoff import Backoff
from pilot.sources.kube.client import ApiError, KubeApi
from pilot.sources.kube.leader import LeaderElector
from pilot.sources.kube.resources import ServedResource

log = logging.getLogger(__name__)

CONDITION = "PassedValidation"
DOCS = "https://istio.io/latest/docs/reference/config/analysis"
SCHEMA_ERROR = ("SchemaValidationError", "IST0106", "ERROR")
SCHEMA_WARNING = ("SchemaWarning", "IST0133", "WARNING")
MAX_MESSAGE = 2048

Key = tuple[str, str, str]  # kind, namespace, name
Lookup = Callable[[ServedResource, str, str], "dict[str, Any] | None"]


@dataclass(frozen=True)
class Verdict:
    """What pilot concluded about one version of an object."""

    resource: ServedResource
    namespace: str
    name: str
    generation: int | None
    errors: tuple[str, ...]  # the object was rejected
    warnings: tuple[str, ...]  # accepted, with remarks


def _message(code: tuple[str, str, str]) -> dict[str, Any]:
    name, ist, level = code
    return {"documentationUrl": f"{DOCS}/{ist.lower()}/", "level": level, "type": {"name": name, "code": ist}}


def desired_status(verdict: Verdict, current: dict[str, Any] | None, now: str) -> dict[str, Any]:
    """The status to write, keeping the other conditions of ``current`` and our condition's transition time
    when its status did not change."""
    passed = not verdict.errors
    if verdict.errors:
        reason, message = "SchemaValidationError", "; ".join(verdict.errors)
    elif verdict.warnings:
        reason, message = "SchemaWarning", "; ".join(verdict.warnings)
    else:
        reason, message = "NoIssues", "the configuration is valid"
    condition = {
        "type": CONDITION,
        "status": "True" if passed else "False",
        "lastProbeTime": now,
        "lastTransitionTime": now,
        "reason": reason,
        "message": message[:MAX_MESSAGE],
    }
    others: list[dict[str, Any]] = []
    for existing in (current or {}).get("conditions") or []:
        if not isinstance(existing, dict):
            continue
        if existing.get("type") == CONDITION:
            if existing.get("status") == condition["status"] and existing.get("lastTransitionTime"):
                condition["lastTransitionTime"] = existing["lastTransitionTime"]
        else:
            others.append(existing)
    status: dict[str, Any] = {"conditions": [*others, condition]}
    messages = [_message(SCHEMA_ERROR) for _ in verdict.errors] + [_message(SCHEMA_WARNING) for _ in verdict.warnings]
    if messages:
        status["validationMessages"] = messages
    if verdict.generation is not None:
        status["observedGeneration"] = verdict.generation
    return status


def same_status(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Equal but for condition timestamps (and an absent vs an empty validationMessages list)."""
    return _normal(a) == _normal(b)


def _normal(status: dict[str, Any] | None) -> Any:
    if not isinstance(status, dict):
        return {}
    out = {k: v for k, v in status.items() if v not in (None, [])}
    conditions = out.get("conditions")
    if isinstance(conditions, list):
        timestamps = ("lastProbeTime", "lastTransitionTime")
        out["conditions"] = [
            {k: v for k, v in c.items() if k not in timestamps} if isinstance(c, dict) else c for c in conditions
        ]
    generation = out.get("observedGeneration")
    if isinstance(generation, str) and generation.isdigit():
        out["observedGeneration"] = int(generation)  # int-or-string in Istio's CRDs
    return out


class StatusWriter:
    def __init__(self, api: KubeApi, elector: LeaderElector, lookup: Lookup, backoff: Backoff | None = None) -> None:
        self.api = api
        self.elector = elector
        self._lookup = lookup
        self._backoff = backoff or Backoff(0.2, 10.0)
        self._verdicts: dict[Key, Verdict] = {}
        self._dirty: dict[Key, None] = {}  # insertion-ordered set
        self._wake = asyncio.Event()
        self._inflight: asyncio.Task[Any] | None = None
        self.writes = 0
        self.cancelled = 0
        elector.add_listener(self._leadership)

    def report(self, verdict: Verdict) -> None:
        key = (verdict.resource.kind, verdict.namespace, verdict.name)
        self._verdicts[key] = verdict
        self._dirty[key] = None
        self._wake.set()

    def forget(self, kind: str, namespace: str, name: str) -> None:
        key = (kind, namespace, name)
        self._verdicts.pop(key, None)
        self._dirty.pop(key, None)

    def _leadership(self, leader: bool) -> None:
        if leader:
            self._dirty.update(dict.fromkeys(self._verdicts))
            self._wake.set()
        elif self._inflight is not None and not self._inflight.done():
            self._inflight.cancel()  # stop writing at once

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            if not self.elector.is_leader or not self._dirty:
                self._wake.clear()
                continue
            key = next(iter(self._dirty))
            del self._dirty[key]
            verdict = self._verdicts.get(key)
            if verdict is None:
                continue
            obj = self._lookup(verdict.resource, verdict.namespace, verdict.name)
            if obj is None:
                continue
            current = obj.get("status") if isinstance(obj.get("status"), dict) else None
            try:
                status = desired_status(verdict, current, _now())
            except Exception:  # an odd status in the cluster must not stop the writer
                log.exception("status: %s %s/%s: cannot build the status", key[0], key[1], key[2])
                continue
            if same_status(status, current):
                continue
            path = verdict.resource.path(verdict.namespace, verdict.name, "status")
            self._inflight = asyncio.ensure_future(self.api.merge_patch(path, {"status": status}))
            try:
                await asyncio.wait({self._inflight})
            except asyncio.CancelledError:
                self._inflight.cancel()
                raise
            task, self._inflight = self._inflight, None
            if task.cancelled():
                self.cancelled += 1
                self._dirty.setdefault(key, None)  # the next leader term writes it
                continue
            exc = task.exception()
            if exc is None:
                self.writes += 1
                self._backoff.reset()
                continue
            if isinstance(exc, ApiError) and exc.status == 404:
                continue  # deleted meanwhile; its delete event forgets it
            log.warning("status: %s %s/%s: write failed: %s", key[0], key[1], key[2], exc)
            self._dirty.setdefault(key, None)
            await asyncio.sleep(self._backoff.next())


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

"""One resource's informer: list, then watch from the list's resourceVersion, with a local cache.

- The list is read in pages (``limit`` / ``continue``); its resourceVersion starts the watch. A relist is
  diffed against the cache: objects that vanished become deletions, new or changed ones upserts, unchanged
  ones nothing, so a relist neither loses nor repeats an event.
- The watch asks for bookmarks (``allowWatchBookmarks``) and remembers the resourceVersion of every event
  and bookmark, so a watch the server closes (its ``timeoutSeconds``, a restart, a load balancer) resumes
  where it stopped. ``410 Gone`` / ``Expired`` (the version was compacted away), as an ERROR event inside the
  stream or as the HTTP status, means relist.
- A watch silent for longer than ``silence_deadline`` (no event, no bookmark) is restarted from the last
  version: a half-open connection is otherwise never noticed.
- Errors (API statuses, connection failures, bad JSON) are retried with exponential backoff and jitter; a
  watch that closes without delivering anything also backs off, so no failure mode spins.
- Objects are trimmed (``ResourceType.trim``) before they are cached and compared: an update that changes
  nothing pilot reads is not delivered.

The handler runs synchronously on the event loop for every delivered event; an exception in it is logged
and never stops the informer.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import orjson

from pilot.sources.kube.backoff import Backoff
from pilot.sources.kube.client import ApiError, KubeApi
from pilot.sources.kube.resources import ServedResource

log = logging.getLogger(__name__)

Event = Literal["add", "update", "delete"]
# handler(informer, event, object, previous object or None)
Handler = Callable[["Informer", Event, dict[str, Any], "dict[str, Any] | None"], None]

_YIELD_EVERY = 256  # objects handled between yields to the event loop while a list is applied


@dataclass(frozen=True)
class InformerSettings:
    page_size: int = 500
    # Server-side watch timeout; each watch asks for a random value in [t, 2t] (as client-go) so that the
    # watches of many pilots do not all reconnect together.
    watch_timeout: float = 300.0
    # A watch with no event and no bookmark for this long is restarted (the API server bookmarks about once a
    # minute when asked to).
    silence_deadline: float = 120.0
    backoff_initial: float = 0.2
    backoff_max: float = 30.0


class Expired(Exception):
    """The resourceVersion is too old (410 Gone): relist."""


class WatchInterrupted(Exception):
    """The watch stream broke or went silent: resume from the last resourceVersion."""


class Informer:
    def __init__(
        self,
        api: KubeApi,
        resource: ServedResource,
        handler: Handler,
        settings: InformerSettings | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.api = api
        self.resource = resource
        self.handler = handler
        self.settings = settings or InformerSettings()
        self._rng = rng or random.Random()
        self._backoff = Backoff(self.settings.backoff_initial, self.settings.backoff_max, self._rng)
        self.cache: dict[str, dict[str, dict[str, Any]]] = {}  # namespace ("" if cluster-scoped) -> name -> object
        self.resource_version = ""
        self.synced = asyncio.Event()
        self.state = "not started"
        # For /debug and tests: how often each recovery path ran.
        self.lists = 0
        self.watches = 0
        self.expired = 0
        self.errors = 0
        self.last_error = ""

    # ----- reads -----

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.cache.get(namespace, {}).get(name)

    def objects(self, namespace: str | None = None) -> Iterator[dict[str, Any]]:
        """Cached objects, of one namespace or all."""
        if namespace is not None:
            yield from list(self.cache.get(namespace, {}).values())
            return
        for by_name in list(self.cache.values()):
            yield from list(by_name.values())

    def __len__(self) -> int:
        return sum(len(v) for v in self.cache.values())

    @property
    def label(self) -> str:
        return self.resource.label

    @property
    def _selector(self) -> dict[str, str]:
        selector = self.resource.type.field_selector
        return {"fieldSelector": selector} if selector else {}

    # ----- the loop -----

    async def run(self) -> None:
        """List and watch until cancelled."""
        relist = True
        relisted_at_once = False  # one immediate relist after a 410; another in a row waits its backoff
        while True:
            try:
                if relist:
                    self.state = "listing"
                    await self._list()
                    relist = False
                    self._backoff.reset()
                self.state = "watching"
                if await self._watch():
                    self._backoff.reset()
                    relisted_at_once = False
                    continue
                delay = self._backoff.next()
                self.state = f"watch closed with no event; reconnecting in {delay:.2f}s"
                log.debug("kubernetes: %s: %s", self.label, self.state)
            except Expired as exc:
                self.expired += 1
                relist = True
                log.info("kubernetes: %s: %s; relisting", self.label, exc)
                if not relisted_at_once:
                    relisted_at_once = True
                    continue
                delay = self._backoff.next()
                self.state = f"resourceVersion expired again; relisting in {delay:.2f}s"
            except (ApiError, WatchInterrupted) as exc:
                self.errors += 1
                self.last_error = str(exc)
                delay = self._backoff.next()
                doing = "list" if relist else "watch"
                self.state = f"{doing} failed: {exc}; retrying in {delay:.2f}s"
                log.warning("kubernetes: %s: %s", self.label, self.state)
            except Exception as exc:  # a response pilot cannot read must not end the informer
                self.errors += 1
                self.last_error = repr(exc)
                relist = True
                delay = self._backoff.next()
                self.state = f"unexpected error {exc!r}; relisting in {delay:.2f}s"
                log.exception("kubernetes: %s: unexpected error; relisting in %.2fs", self.label, delay)
            await asyncio.sleep(delay)

    async def _list(self) -> None:
        self.lists += 1
        path = self.resource.path()
        query: dict[str, str] = {"limit": str(self.settings.page_size), **self._selector}
        items: list[dict[str, Any]] = []
        version = ""
        while True:
            try:
                page = await self.api.get(path, query)
            except ApiError as exc:
                if exc.status == 410:  # the continue token expired mid-list: start over
                    raise Expired(f"list continuation expired: {exc}") from exc
                raise
            metadata = page.get("metadata") or {}
            if not version:
                version = str(metadata.get("resourceVersion") or "")
            page_items = page.get("items") or []
            if not isinstance(page_items, list):
                raise ApiError(200, "BadResponse", f"list {path}: items is not a list")
            items.extend(item for item in page_items if isinstance(item, dict))
            token = metadata.get("continue")
            if not token:
                break
            query = {"limit": str(self.settings.page_size), "continue": str(token), **self._selector}
        await self._replace(items)
        self.resource_version = version
        if not self.synced.is_set():
            log.info("kubernetes: %s synced: %d objects", self.label, len(self))
            self.synced.set()

    async def _replace(self, items: list[dict[str, Any]]) -> None:
        """Make the cache equal to a fresh list, delivering the difference."""
        seen: set[tuple[str, str]] = set()
        for count, item in enumerate(items, 1):
            obj = self._prepare(item)
            if obj is None:
                continue
            ref = _ref(obj)
            seen.add(ref)
            self._upsert(ref, obj)
            if count % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
        gone = [(ns, name) for ns, by_name in self.cache.items() for name in by_name if (ns, name) not in seen]
        for count, ref in enumerate(gone, 1):
            self._delete(ref)
            if count % _YIELD_EVERY == 0:
                await asyncio.sleep(0)

    async def _watch(self) -> bool:
        """One watch request from the current resourceVersion; whether it delivered anything."""
        self.watches += 1
        timeout = int(self.settings.watch_timeout * (1 + self._rng.random()))
        query = {
            "resourceVersion": self.resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(max(timeout, 1)),
            **self._selector,
        }
        progressed = False
        try:
            async with self.api.watch(self.resource.path(), query) as stream:
                while True:
                    try:
                        line = await asyncio.wait_for(stream.readline(), self.settings.silence_deadline)
                    except TimeoutError as exc:
                        raise WatchInterrupted(
                            f"watch silent for {self.settings.silence_deadline:g}s (no event or bookmark)"
                        ) from exc
                    if not line:
                        return progressed  # the server ended the stream: resume from resource_version
                    if line.strip():
                        self._handle_line(line)
                        progressed = True
        except ApiError as exc:
            if exc.status == 410:
                raise Expired(str(exc)) from exc
            raise
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            # ValueError: aiohttp's line limit; a broken or reset connection: resume from the last version.
            raise WatchInterrupted(f"watch stream broke: {type(exc).__name__}: {exc}") from exc

    def _handle_line(self, line: bytes) -> None:
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ApiError(200, "BadResponse", f"watch event is not JSON: {exc}") from exc
        if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
            raise ApiError(200, "BadResponse", "watch event without an object")
        kind = event.get("type")
        obj: dict[str, Any] = event["object"]
        if kind == "ERROR":
            code = obj.get("code")
            message = f"{obj.get('reason', '')}: {obj.get('message', '')}"
            if code == 410:
                raise Expired(f"410 {message}")
            raise ApiError(int(code) if isinstance(code, int) else 500, str(obj.get("reason") or "Error"), message)
        version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        if kind == "BOOKMARK":
            if version:
                self.resource_version = version
            return
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            log.warning("kubernetes: %s: unknown watch event type %r ignored", self.label, kind)
            return
        prepared = self._prepare(obj)
        if prepared is not None:
            if kind == "DELETED":
                self._delete(_ref(prepared))
            else:
                self._upsert(_ref(prepared), prepared)
        if version:
            self.resource_version = version

    # ----- cache -----

    def _prepare(self, item: dict[str, Any]) -> dict[str, Any] | None:
        """A listed or watched object, with apiVersion/kind (list items lack them) and trimmed."""
        metadata = item.get("metadata")
        if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
            log.warning("kubernetes: %s: object without metadata.name ignored", self.label)
            return None
        obj = dict(item)
        obj["apiVersion"] = self.resource.api_version
        obj["kind"] = self.resource.kind
        return self.resource.type.trim(obj)

    def _upsert(self, ref: tuple[str, str], obj: dict[str, Any]) -> None:
        namespace, name = ref
        by_name = self.cache.setdefault(namespace, {})
        old = by_name.get(name)
        by_name[name] = obj
        if old is None:
            self._deliver("add", obj, None)
        else:
            significant = self.resource.type.significant
            if significant(old) != significant(obj):
                self._deliver("update", obj, old)

    def _delete(self, ref: tuple[str, str]) -> None:
        namespace, name = ref
        by_name = self.cache.get(namespace)
        old = by_name.pop(name, None) if by_name is not None else None
        if by_name is not None and not by_name:
            del self.cache[namespace]
        if old is not None:
            self._deliver("delete", old, None)

    def _deliver(self, event: Event, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        try:
            self.handler(self, event, obj, old)
        except Exception:
            log.exception("kubernetes: %s: handler failed on %s of %s", self.label, event, _ref(obj))


def _ref(obj: dict[str, Any]) -> tuple[str, str]:
    metadata = obj.get("metadata") or {}
    namespace = metadata.get("namespace")
    return (namespace if isinstance(namespace, str) else "", str(metadata.get("name")))

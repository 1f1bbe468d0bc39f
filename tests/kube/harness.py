"""A Kubernetes API server for tests: kmock's emulator made to behave like a real API server where pilot's
informers, leader election and status writer depend on it.

kmock 0.8 (``KubernetesScaffold`` + ``Server``) supplies the aiohttp server on 127.0.0.1, the Status error
rendering and the error classes. Its own emulator lacks what an informer relies on (a placeholder
resourceVersion, watches that replay everything, no 410, no bookmarks, ``watch=True`` served as a list,
``/api/v1/namespaces`` answering 500, no PUT, one version per CRD), so ``FakeApiServer`` serves every
Kubernetes path itself and emulates:

- an object store with one cluster-wide, incrementing resourceVersion (etcd's revision): every write gets
  the next one, plus ``uid``, ``creationTimestamp``, ``generation`` (bumped when anything but metadata and
  status changes) and a ``managedFields`` entry that changes on every write (noise pilot must ignore);
- LIST with the collection's resourceVersion, ``limit`` / ``continue`` paging, items without
  ``apiVersion`` / ``kind`` for built-in types (as typed lists are served) and with them for CRDs;
- WATCH (``watch=true``, ``True`` or ``1``, as clients send it) streaming JSON lines: from a given
  resourceVersion every later event of that resource (namespace-filtered), without one the current objects
  as ADDED first; ``timeoutSeconds`` ends the stream; BOOKMARK events on demand (``bookmark()``) for watches
  that asked with ``allowWatchBookmarks``; after ``compact()`` a watch from an older version gets ``ERROR``
  ``410 Expired`` inside a 200 stream and a list continuation gets HTTP 410;
- dropped streams on demand (``drop_watches``: a clean end of the chunked response, or a reset connection);
- GET, POST (409 if it exists), PUT (409 when ``metadata.resourceVersion`` is stale), JSON merge PATCH and
  DELETE, with the ``status`` subresource for CRDs and Pods (writes to it change only ``status``, writes to
  the object leave ``status`` alone); Leases (coordination.k8s.io/v1) like any object;
- API discovery (``/api``, ``/api/v1``, ``/apis``, ``/apis/<group>``, ``/apis/<group>/<version>``) for the
  versions served: networking.istio.io at the versions given (``istio_versions``), security.istio.io at v1
  and v1beta1, one object visible at each of them, as CRD conversion does;
- faults: ``fail(plural, status, times)`` answers the next requests for a resource with an error Status;
- TokenReview (``POST /apis/authentication.k8s.io/v1/tokenreviews``) for tokens the test registers with
  ``add_token`` (a service account and its audiences), answered as the API server answers a review.

Tests write objects directly (``apply``, ``delete``, ``set_status``); every write reaches the watches over
HTTP like a kubectl write would. Field selectors: only ``type=`` / ``type!=`` terms (Secrets). Not emulated:
authentication, RBAC, other field selectors, label selectors, server-side
apply, strategic merge patch, admission, finalizers.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
import orjson
import yaml
from kmock import KubernetesError

JSON = dict[str, Any]
ISTIO = "networking.istio.io"
SECURITY = "security.istio.io"
SECURITY_VERSIONS = ("v1", "v1beta1")


@dataclass(frozen=True)
class Kind:
    kind: str
    group: str
    plural: str
    namespaced: bool
    status: bool = False  # has a status subresource

    @property
    def builtin(self) -> bool:
        return self.group not in (ISTIO, SECURITY)


KINDS = (
    Kind("Namespace", "", "namespaces", False),
    Kind("Node", "", "nodes", False),
    Kind("Service", "", "services", True),
    Kind("Pod", "", "pods", True, status=True),
    Kind("Secret", "", "secrets", True),
    Kind("EndpointSlice", "discovery.k8s.io", "endpointslices", True),
    Kind("Lease", "coordination.k8s.io", "leases", True),
    *(
        Kind(kind, ISTIO, plural, True, status=True)
        for kind, plural in (
            ("ServiceEntry", "serviceentries"),
            ("WorkloadEntry", "workloadentries"),
            ("VirtualService", "virtualservices"),
            ("DestinationRule", "destinationrules"),
            ("Gateway", "gateways"),
            ("Sidecar", "sidecars"),
        )
    ),
    Kind("PeerAuthentication", SECURITY, "peerauthentications", True, status=True),
)
BY_PLURAL = {(k.group, k.plural): k for k in KINDS}
BY_KIND = {k.kind: k for k in KINDS}
BUILTIN_VERSIONS = {"": "v1", "discovery.k8s.io": "v1", "coordination.k8s.io": "v1"}
_STOP = object()  # watch queue sentinels
_ABORT = object()


@dataclass(frozen=True)
class Route:
    """A parsed Kubernetes request path."""

    group: str
    version: str
    kind: Kind
    namespace: str | None
    name: str | None
    subresource: str | None


@dataclass(frozen=True)
class Logged:
    method: str
    path: str
    verb: str  # list, watch, get, create, update, patch, delete
    plural: str
    namespace: str | None
    name: str | None
    subresource: str | None
    query: dict[str, str]
    user_agent: str
    status: int = 0
    at: float = field(default_factory=time.monotonic)  # when it arrived


@dataclass
class _Watch:
    kind: Kind
    namespace: str | None
    version: str
    bookmarks: bool
    queue: asyncio.Queue[Any] = field(default_factory=lambda: asyncio.Queue(maxsize=10_000))


@attrs.define(kw_only=True)
class FakeApiServer(kmock.KubernetesScaffold):
    istio_versions: tuple[str, ...] = ("v1", "v1beta1", "v1alpha3")
    revision: int = attrs.field(default=0, init=False)
    compacted: int = attrs.field(default=0, init=False)
    store: dict[tuple[str, str], dict[tuple[str, str], JSON]] = attrs.field(factory=dict, init=False)
    history: list[tuple[int, Kind, str, JSON]] = attrs.field(factory=list, init=False)  # (rv, kind, type, obj)
    log: list[Logged] = attrs.field(factory=list, init=False)
    _watches: list[_Watch] = attrs.field(factory=list, init=False)
    _faults: dict[str, list[Any]] = attrs.field(factory=dict, init=False)  # plural -> [status, times left]
    tokens: dict[str, tuple[str, str, tuple[str, ...]]] = attrs.field(factory=dict, init=False)  # -> ns, sa, auds

    # ----- test-side writes (every one reaches the watches) -----

    def apply(self, obj: JSON) -> JSON:
        """Create or replace an object as ``kubectl apply`` would; status is kept unless given."""
        kind = BY_KIND[obj["kind"]]
        metadata = obj.get("metadata") or {}
        namespace = (metadata.get("namespace") or "default") if kind.namespaced else ""
        key = (namespace, metadata["name"])
        old = self._objects(kind).get(key)
        new = copy.deepcopy(obj)
        new.setdefault("metadata", {})
        if kind.namespaced:
            new["metadata"]["namespace"] = namespace
        if old is not None and "status" not in new and "status" in old:
            new["status"] = copy.deepcopy(old["status"])
        return self._write(kind, new, old)

    def delete(self, kind_name: str, name: str, namespace: str = "default") -> None:
        kind = BY_KIND[kind_name]
        key = (namespace if kind.namespaced else "", name)
        old = self._objects(kind).pop(key)
        self._record(kind, "DELETED", self._stamped(kind, old, old, bump=True))

    def set_status(self, kind_name: str, name: str, status: JSON, namespace: str = "default") -> JSON:
        kind = BY_KIND[kind_name]
        old = self.get(kind_name, name, namespace)
        assert old is not None, f"{kind_name} {namespace}/{name} does not exist"
        return self._write(kind, {**old, "status": status}, old)

    def get(self, kind_name: str, name: str, namespace: str = "default") -> JSON | None:
        kind = BY_KIND[kind_name]
        return self._objects(kind).get((namespace if kind.namespaced else "", name))

    # ----- test-side control -----

    def compact(self) -> None:
        """Forget the event history (etcd compaction): watches from an older version get 410 Expired."""
        self.compacted = self.revision
        self.history.clear()

    def bookmark(self) -> int:
        """Send a BOOKMARK with the current resourceVersion to every watch that asked for bookmarks."""
        sent = 0
        for watch in self._watches:
            if watch.bookmarks:
                api_version = _api_version(watch.kind, watch.version)
                event = {
                    "type": "BOOKMARK",
                    "object": {
                        "apiVersion": api_version,
                        "kind": watch.kind.kind,
                        "metadata": {"resourceVersion": str(self.revision)},
                    },
                }
                self._offer(watch, event)
                sent += 1
        return sent

    def drop_watches(self, plural: str | None = None, *, abort: bool = False) -> int:
        """End the open watches (of one resource, or all): cleanly, or by resetting the connection."""
        dropped = 0
        for watch in list(self._watches):
            if plural is None or watch.kind.plural == plural:
                self._offer(watch, _ABORT if abort else _STOP)
                dropped += 1
        return dropped

    def open_watches(self, plural: str | None = None) -> int:
        return sum(1 for w in self._watches if plural is None or w.kind.plural == plural)

    def fail(self, plural: str, status: int = 500, times: int | None = 1) -> None:
        """Answer the next ``times`` requests for ``plural`` (None: until ``heal``) with an error Status."""
        self._faults[plural] = [status, times]

    def heal(self, plural: str | None = None) -> None:
        if plural is None:
            self._faults.clear()
        else:
            self._faults.pop(plural, None)

    def requests(self, verb: str | None = None, plural: str | None = None) -> list[Logged]:
        return [r for r in self.log if (verb is None or r.verb == verb) and (plural is None or r.plural == plural)]

    def add_token(self, token: str, namespace: str, account: str, audiences: tuple[str, ...] = ("istio-ca",)) -> None:
        """A service-account token TokenReview accepts (for one of ``audiences``)."""
        self.tokens[token] = (namespace, account, audiences)

    def _token_review(self, method: str, path: str, body: bytes) -> aiohttp.web.Response:
        review = orjson.loads(body) if body else {}
        spec = review.get("spec") or {}
        self.log.append(Logged(method, path, "create", "tokenreviews", None, None, None, {}, "", 201))
        found = self.tokens.get(spec.get("token", ""))
        wanted = tuple(spec.get("audiences") or ())
        status: JSON = {"authenticated": False, "error": "invalid bearer token"}
        if found is not None and (not wanted or set(wanted) & set(found[2])):
            namespace, account, audiences = found
            status = {
                "authenticated": True,
                "user": {
                    "username": f"system:serviceaccount:{namespace}:{account}",
                    "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{namespace}/{account}")),
                    "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"],
                },
                "audiences": [a for a in wanted if a in audiences] or list(audiences),
            }
        elif found is not None:
            status = {"authenticated": False, "error": "token audiences do not match"}
        answer = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec, "status": status}
        return aiohttp.web.json_response(answer, status=201)

    # ----- HTTP -----

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if raw_request.path == "/apis/authentication.k8s.io/v1/tokenreviews" and raw_request.method == "POST":
            try:
                self._inject_fault("tokenreviews")
            except KubernetesError as exc:
                return await self._render_error(exc)
            return self._token_review(raw_request.method, raw_request.path, await raw_request.read())
        try:
            route = self._route(raw_request.path)
        except KubernetesError as exc:
            return await self._render_error(exc)
        if route is None:
            discovery = self._discovery(raw_request.path)
            if discovery is not None:
                return aiohttp.web.json_response(discovery)
            return await super().__call__(raw_request)
        body = await raw_request.read()
        query = dict(raw_request.query)
        verb = _verb(raw_request.method, route, query)
        entry = Logged(
            raw_request.method,
            raw_request.path,
            verb,
            route.kind.plural,
            route.namespace,
            route.name,
            route.subresource,
            query,
            raw_request.headers.get("User-Agent", ""),
        )
        try:
            self._inject_fault(route.kind.plural)
            data = orjson.loads(body) if body else None
            if verb == "watch":
                self.log.append(entry)
                return await self._watch(raw_request, route, query)
            response = self._serve(raw_request.method, verb, route, query, data)
        except KubernetesError as exc:
            self.log.append(_with_status(entry, exc.status))
            return await self._render_error(exc)
        except orjson.JSONDecodeError as exc:
            self.log.append(_with_status(entry, 400))
            return await self._render_error(KubernetesError(400, "BadRequest", f"body is not JSON: {exc}"))
        self.log.append(_with_status(entry, response.status))
        return response

    def _inject_fault(self, plural: str) -> None:
        fault = self._faults.get(plural)
        if fault is None:
            return
        status, times = fault
        if times is not None:
            fault[1] = times - 1
            if fault[1] <= 0:
                del self._faults[plural]
        raise KubernetesError(status, "InternalError" if status >= 500 else "Injected", f"injected fault {status}")

    def _route(self, path: str) -> Route | None:
        parts = [p for p in path.split("/") if p]
        if len(parts) >= 3 and parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        elif len(parts) >= 4 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        plural = rest[0]
        kind = BY_PLURAL.get((group, plural))
        if kind is None or not self._serves(kind, version):
            raise kmock.KubernetesResourceNotFoundError()
        name = rest[1] if len(rest) > 1 else None
        subresource = "/".join(rest[2:]) or None
        return Route(group, version, kind, namespace, name, subresource)

    def _serves(self, kind: Kind, version: str) -> bool:
        if kind.group == ISTIO:
            return version in self.istio_versions
        if kind.group == SECURITY:
            return version in SECURITY_VERSIONS
        return version == BUILTIN_VERSIONS[kind.group]

    def _serve(self, method: str, verb: str, route: Route, query: dict[str, str], data: Any) -> aiohttp.web.Response:
        kind = route.kind
        if verb == "list":
            return aiohttp.web.json_response(self._list(route, query))
        if verb == "create":
            if not isinstance(data, dict):
                raise KubernetesError(400, "BadRequest", "create needs an object")
            metadata = data.setdefault("metadata", {})
            namespace = (route.namespace or metadata.get("namespace") or "default") if kind.namespaced else ""
            if kind.namespaced:
                metadata["namespace"] = namespace
            if (namespace, metadata.get("name")) in self._objects(kind):
                raise KubernetesError(409, "AlreadyExists", f"{kind.plural} {metadata.get('name')!r} already exists")
            created = self._write(kind, data, None)
            return aiohttp.web.json_response(self._render(kind, created, route.version), status=201)
        key = ((route.namespace or "") if kind.namespaced else "", route.name or "")
        old = self._objects(kind).get(key)
        if old is None:
            raise KubernetesError(404, "NotFound", f"{kind.plural} {route.name!r} not found")
        if verb == "get":
            return aiohttp.web.json_response(self._render(kind, old, route.version))
        if verb == "delete":
            self.delete(kind.kind, key[1], key[0])
            return aiohttp.web.json_response(self._render(kind, old, route.version))
        if not isinstance(data, dict):
            raise KubernetesError(400, "BadRequest", f"{method} needs an object")
        if verb == "update":
            wanted = str((data.get("metadata") or {}).get("resourceVersion") or "")
            if wanted and wanted != old["metadata"]["resourceVersion"]:
                raise KubernetesError(
                    409, "Conflict", "the object has been modified; please apply your changes to the latest version"
                )
            new = copy.deepcopy(data)
        else:  # patch: JSON merge patch (RFC 7386)
            new = _merge_patch(old, data)
        if route.subresource == "status":
            new = {**copy.deepcopy(old), "status": new.get("status")}
        elif kind.status:
            new = {k: v for k, v in new.items() if k != "status"}
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
        new.setdefault("metadata", {})["name"] = key[1]
        if kind.namespaced:
            new["metadata"]["namespace"] = key[0]
        return aiohttp.web.json_response(self._render(kind, self._write(kind, new, old), route.version))

    def _list(self, route: Route, query: dict[str, str]) -> JSON:
        kind = route.kind
        token = query.get("continue", "")
        if token:
            revision, _, offset_text = token.partition(":")
            if int(revision) < self.compacted:
                raise KubernetesError(410, "Expired", "The provided continue parameter is too old")
            offset = int(offset_text)
        else:
            revision, offset = str(self.revision), 0
        selector = query.get("fieldSelector", "")
        items = sorted(
            (
                obj
                for (ns, _), obj in self._objects(kind).items()
                if route.namespace in (None, ns) and _field_selected(obj, selector)
            ),
            key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]),
        )
        limit = int(query.get("limit") or 0) or len(items) or 1
        page = items[offset : offset + limit]
        metadata: JSON = {"resourceVersion": revision}
        if offset + limit < len(items):
            metadata["continue"] = f"{revision}:{offset + limit}"
        rendered = [self._render(kind, obj, route.version, in_list=True) for obj in page]
        return {"apiVersion": _api_version(kind, route.version), "kind": f"{kind.kind}List", "metadata": metadata,
                "items": rendered}  # fmt: skip

    async def _watch(
        self, raw_request: aiohttp.web.BaseRequest, route: Route, query: dict[str, str]
    ) -> aiohttp.web.StreamResponse:
        kind = route.kind
        watch = _Watch(kind, route.namespace, route.version, query.get("allowWatchBookmarks") in ("true", "True"))
        since = query.get("resourceVersion", "")
        timeout = float(query.get("timeoutSeconds") or 0) or None
        selector = query.get("fieldSelector", "")
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(raw_request)
        # Registered before the backlog is read: nothing written meanwhile can fall between the two.
        self._watches.append(watch)
        try:
            if since not in ("", "0") and int(since) < self.compacted:
                message = f"too old resource version: {since} ({self.compacted})"
                status = {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure", "code": 410,
                          "reason": "Expired", "message": message}  # fmt: skip
                await response.write(orjson.dumps({"type": "ERROR", "object": status}) + b"\n")
                return response
            if since in ("", "0"):
                backlog = [{"type": "ADDED", "object": obj} for obj in self._objects(kind).values()]
                last = self.revision
            else:
                backlog = [
                    {"type": event, "object": obj}
                    for revision, k, event, obj in self.history
                    if k is kind and revision > int(since)
                ]
                last = self.revision
            for event in backlog:
                if self._visible(watch, event["object"]) and _field_selected(event["object"], selector):
                    await response.write(self._line(watch, event))
            deadline = asyncio.get_running_loop().time() + timeout if timeout else None
            while True:
                remaining = None if deadline is None else deadline - asyncio.get_running_loop().time()
                if remaining is not None and remaining <= 0:
                    return response
                try:
                    item = await asyncio.wait_for(watch.queue.get(), remaining)
                except TimeoutError:
                    return response
                if item is _STOP:
                    return response
                if item is _ABORT:
                    if raw_request.transport is not None:
                        raw_request.transport.abort()
                    return response
                revision = int(item["object"]["metadata"].get("resourceVersion") or 0)
                if item["type"] != "BOOKMARK" and revision <= last:
                    continue  # already sent from the backlog
                if item["type"] != "BOOKMARK" and not _field_selected(item["object"], selector):
                    continue
                await response.write(self._line(watch, item))
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            return response
        finally:
            self._watches.remove(watch)

    def _line(self, watch: _Watch, event: JSON) -> bytes:
        obj = event["object"]
        if event["type"] != "BOOKMARK":
            obj = self._render(watch.kind, obj, watch.version)
        return orjson.dumps({"type": event["type"], "object": obj}) + b"\n"

    @staticmethod
    def _visible(watch: _Watch, obj: JSON) -> bool:
        return watch.namespace is None or obj["metadata"].get("namespace") == watch.namespace

    def _offer(self, watch: _Watch, item: Any) -> None:
        try:
            watch.queue.put_nowait(item)
        except asyncio.QueueFull:  # a watcher that does not read: the API server closes it
            with contextlib.suppress(asyncio.QueueEmpty):
                watch.queue.get_nowait()
            watch.queue.put_nowait(_STOP)

    def close_watches(self) -> None:
        """End every watch (before the server stops, so that its shutdown does not wait for them)."""
        self.drop_watches()

    # ----- store -----

    def _objects(self, kind: Kind) -> dict[tuple[str, str], JSON]:
        return self.store.setdefault((kind.group, kind.plural), {})

    def _write(self, kind: Kind, new: JSON, old: JSON | None) -> JSON:
        stamped = self._stamped(kind, new, old, bump=True)
        metadata = stamped["metadata"]
        key = (metadata.get("namespace", "") if kind.namespaced else "", metadata["name"])
        self._objects(kind)[key] = stamped
        self._record(kind, "ADDED" if old is None else "MODIFIED", stamped)
        return stamped

    def _stamped(self, kind: Kind, new: JSON, old: JSON | None, *, bump: bool) -> JSON:
        obj = copy.deepcopy(new)
        metadata = obj.setdefault("metadata", {})
        if bump:
            self.revision += 1
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        old_meta = (old or {}).get("metadata") or {}
        metadata["resourceVersion"] = str(self.revision)
        metadata["uid"] = old_meta.get("uid") or str(uuid.uuid4())
        metadata["creationTimestamp"] = old_meta.get("creationTimestamp") or now
        generation = int(old_meta.get("generation") or 0)
        if old is None or _spec_of(old) != _spec_of(obj):
            generation += 1
        metadata["generation"] = generation
        metadata["managedFields"] = [
            {"manager": "kubectl", "operation": "Update", "apiVersion": "v1", "time": now, "rv": self.revision}
        ]
        if kind.group == ISTIO and not obj.get("apiVersion"):
            obj["apiVersion"] = f"{ISTIO}/{self.istio_versions[0]}"
        obj.setdefault("apiVersion", _api_version(kind, BUILTIN_VERSIONS.get(kind.group, "v1")))  # security: v1
        obj["kind"] = kind.kind
        return obj

    def _record(self, kind: Kind, event: str, obj: JSON) -> None:
        self.history.append((self.revision, kind, event, obj))
        for watch in list(self._watches):
            if watch.kind is kind and self._visible(watch, obj):
                self._offer(watch, {"type": event, "object": obj})

    @staticmethod
    def _render(kind: Kind, obj: JSON, version: str, *, in_list: bool = False) -> JSON:
        out = dict(obj)
        if in_list and kind.builtin:
            out.pop("apiVersion", None)  # typed lists do not repeat them per item
            out.pop("kind", None)
        else:
            out["apiVersion"] = _api_version(kind, version)
        return out

    # ----- discovery -----

    def _discovery(self, path: str) -> JSON | None:
        path = path.rstrip("/") or "/"
        groups = {
            "discovery.k8s.io": ("v1",),
            "coordination.k8s.io": ("v1",),
            ISTIO: self.istio_versions,
            SECURITY: SECURITY_VERSIONS,
        }
        if path == "/version":
            return {"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake"}
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if path == "/apis":
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group(g, v) for g, v in groups.items()]}
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["api"] and len(parts) == 2:
            return _resource_list("", parts[1]) if parts[1] == "v1" else None
        if parts[:1] == ["apis"] and len(parts) == 2:
            return _group(parts[1], groups[parts[1]]) if parts[1] in groups else None
        if parts[:1] == ["apis"] and len(parts) == 3 and parts[2] in groups.get(parts[1], ()):
            return _resource_list(parts[1], parts[2])
        return None


def _with_status(entry: Logged, status: int) -> Logged:
    return Logged(**{**entry.__dict__, "status": status})


def _field_selected(obj: JSON, selector: str) -> bool:
    """The ``type=X`` / ``type!=X`` terms of a fieldSelector (what pilot asks of Secrets); others pass."""
    for term in filter(None, selector.split(",")):
        if term.startswith("type!="):
            if obj.get("type") == term[len("type!=") :]:
                return False
        elif term.startswith("type=") and obj.get("type") != term[len("type=") :]:
            return False
    return True


def _verb(method: str, route: Route, query: dict[str, str]) -> str:
    if method == "GET":
        if query.get("watch", "").lower() in ("true", "1"):
            return "watch"
        return "get" if route.name else "list"
    return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, method.lower())


def _api_version(kind: Kind, version: str) -> str:
    return f"{kind.group}/{version}" if kind.group else version


def _spec_of(obj: JSON) -> JSON:
    """What bumps metadata.generation: everything but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge_patch(out.get(key), value)
    return out


def _group(name: str, versions: Iterable[str]) -> JSON:
    entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"kind": "APIGroup", "apiVersion": "v1", "name": name, "versions": entries, "preferredVersion": entries[0]}


def _resource_list(group: str, version: str) -> JSON:
    resources = []
    for kind in KINDS:
        if kind.group != group:
            continue
        verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
        resources.append({"name": kind.plural, "kind": kind.kind, "namespaced": kind.namespaced, "verbs": verbs})
        if kind.status:
            resources.append({"name": f"{kind.plural}/status", "kind": kind.kind, "namespaced": kind.namespaced,
                              "verbs": ["get", "patch", "update"]})  # fmt: skip
    group_version = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}


@contextlib.asynccontextmanager
async def serve_api(**kwargs: Any) -> AsyncIterator[tuple[FakeApiServer, str]]:
    """A FakeApiServer on 127.0.0.1:<free port>; yields it and its URL."""
    async with FakeApiServer(**kwargs) as api, kmock.Server(api) as server:
        try:
            yield api, str(server.url).rstrip("/")
        finally:
            api.close_watches()
            # Let the handlers see their sentinel before the server shuts their connections down.
            for _ in range(100):
                if not api.open_watches():
                    break
                await asyncio.sleep(0.01)


def write_kubeconfig(path: Path, url: str, *, token: str = "test-token") -> Path:
    """A kubeconfig whose current context points at ``url`` with a bearer token."""
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": url}}],
                "users": [{"name": "pilot", "user": {"token": token}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "pilot"}}],
                "current-context": "fake",
            }
        )
    )
    return path


_names = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"

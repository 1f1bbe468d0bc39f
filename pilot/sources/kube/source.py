"""KubeSource: the cluster as a config source, beside (or instead of) the config directory.

API discovery picks the version of each Istio kind the cluster serves; one informer per resource lists and
watches it (``informer.py``). Each delivered object is validated by ``pilot.config.loader.load_object``
exactly as a file's document would be and goes into the shared ConfigStore as source ``kubernetes``, one
object at a time (``upsert`` / ``delete``). An invalid object is logged with kind, namespace, name and field
path and keeps its last good version. Where a config file defines the same key, the file wins (the store
prefers the first source in sorted order, and paths sort before ``kubernetes``).

discoverySelectors: every informer still watches the whole cluster (as istiod does) and keeps its cache;
objects of namespaces no selector matches are not stored. A namespace whose labels start (or stop)
matching brings its cached objects into (or out of) the store at once.

Counters: ``pilot_k8s_cfg_events{type=<kind>,event=add|update|delete}`` for Istio kinds and
``pilot_k8s_reg_events{...}`` for Service, Pod, EndpointSlice, Node and Namespace, counting the events that
reach the store (selected namespaces, real changes).

Secrets are watched as gateway credentials (``resources.py``: without Helm release and service-account token
Secrets, trimmed to type and data); they are decoded by the loader and never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pilot.config.loader import load_object
from pilot.config.store import ConfigStore
from pilot.model.config import ConfigKey
from pilot.sources.kube.backoff import Backoff
from pilot.sources.kube.client import ApiError, KubeApi, default_identity, load_configuration
from pilot.sources.kube.informer import Event, Informer, InformerSettings
from pilot.sources.kube.leader import LeaderElector, LeaseTiming
from pilot.sources.kube.resources import ALL_TYPES, ServedResource
from pilot.sources.kube.selectors import DiscoverySelectors
from pilot.sources.kube.status import StatusWriter, Verdict

log = logging.getLogger(__name__)

SOURCE = "kubernetes"
NAMESPACE = "Namespace"


def _pod_namespace() -> str:
    return os.environ.get("POD_NAMESPACE") or "istio-system"


@dataclass(frozen=True)
class KubeOptions:
    kubeconfig: Path | None = None  # None: the in-cluster service account
    selectors: DiscoverySelectors = field(default_factory=lambda: DiscoverySelectors(()))
    enable_status: bool = False  # PILOT_ENABLE_STATUS
    identity: str = field(default_factory=default_identity)
    lease_namespace: str = field(default_factory=_pod_namespace)
    lease_name: str = "pilot-status-leader"
    lease: LeaseTiming = field(default_factory=LeaseTiming)
    informer: InformerSettings = field(default_factory=InformerSettings)
    default_namespace: str = "default"


class KubeSource:
    def __init__(self, options: KubeOptions, store: ConfigStore, counters: Counter[str]) -> None:
        self.options = options
        self.store = store
        self.counters = counters
        self.synced = asyncio.Event()
        self.state = "not started"
        self.api: KubeApi | None = None
        self.informers: dict[str, Informer] = {}  # by kind
        self.unserved: list[str] = []  # Istio kinds the cluster does not serve
        self.elector: LeaderElector | None = None
        self.status: StatusWriter | None = None
        # None: every namespace is selected (no discoverySelectors).
        self._selected: set[str] | None = set() if options.selectors.selectors else None
        self._task: asyncio.Task[None] | None = None

    # ----- lifecycle -----

    def start(self) -> asyncio.Task[None]:
        """Start connecting, discovering and watching in a task this source owns."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="kubernetes-source")
        return self._task

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    async def stop(self) -> None:
        """Give up the Lease (so another replica takes over at once), stop every task, close the client."""
        if self.elector is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.elector.release(), 2.0)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _run(self) -> None:
        try:
            self.state = "loading the client configuration"
            configuration = await load_configuration(self.options.kubeconfig)
            self.api = KubeApi(configuration, self.options.identity)
            served = await self._discover(self.api)
            for resource in sorted(served, key=lambda r: r.kind != NAMESPACE):  # Namespaces first
                self.informers[resource.kind] = Informer(self.api, resource, self._on_event, self.options.informer)
            if self.options.enable_status:
                self.elector = LeaderElector(
                    self.api,
                    self.options.lease_namespace,
                    self.options.lease_name,
                    self.options.identity,
                    self.options.lease,
                )
                self.status = StatusWriter(self.api, self.elector, self._lookup)
            self.state = "syncing"
            async with asyncio.TaskGroup() as tasks:
                for kind, informer in self.informers.items():
                    tasks.create_task(informer.run(), name=f"informer-{kind}")
                tasks.create_task(self._mark_synced(), name="kubernetes-synced")
                if self.elector is not None and self.status is not None:
                    tasks.create_task(self.elector.run(), name="leader-election")
                    tasks.create_task(self.status.run(), name="status-writer")
        finally:
            if self.api is not None:
                await self.api.close()

    async def _discover(self, api: KubeApi) -> list[ServedResource]:
        backoff = Backoff(self.options.informer.backoff_initial, self.options.informer.backoff_max)
        while True:
            self.state = "API discovery"
            try:
                served, missing = await api.served_resources(ALL_TYPES)
            except ApiError as exc:
                delay = backoff.next()
                self.state = f"API discovery failed: {exc}; retrying in {delay:.1f}s"
                log.warning("kubernetes: %s (%s)", self.state, api.host)
                await asyncio.sleep(delay)
                continue
            for rtype in missing:
                served_as = f"{rtype.group or 'core'} {'/'.join(rtype.versions)}"
                log.warning("kubernetes: %s (%s) is not served by the cluster; not watched", rtype.kind, served_as)
            self.unserved = [r.kind for r in missing]
            log.info("kubernetes: watching %s on %s", ", ".join(r.label for r in served), api.host)
            return served

    async def _mark_synced(self) -> None:
        for informer in self.informers.values():
            await informer.synced.wait()
        self.state = "synced"
        self.synced.set()

    # ----- readiness -----

    def not_ready_reason(self) -> str | None:
        """None once every informer has listed; otherwise what the source is waiting for."""
        if self.synced.is_set():
            return None
        waiting = [f"{i.label}: {i.state}" for i in self.informers.values() if not i.synced.is_set()]
        if waiting:
            return "Kubernetes informers not synced: " + "; ".join(waiting)
        return f"Kubernetes: {self.state}"

    # ----- events -----

    def _on_event(self, informer: Informer, event: Event, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        resource = informer.resource
        if resource.kind == NAMESPACE:
            self._namespace_event(resource, event, obj)
            return
        namespace = str((obj.get("metadata") or {}).get("namespace") or "") if resource.type.namespaced else ""
        if resource.type.namespaced and not self._is_selected(namespace):
            return
        self._count(resource, event)
        self._apply(resource, event, obj)

    def _is_selected(self, namespace: str) -> bool:
        return self._selected is None or namespace in self._selected

    def _count(self, resource: ServedResource, event: Event) -> None:
        self.counters[f"{resource.type.metric}{{type={resource.kind},event={event}}}"] += 1

    def _apply(self, resource: ServedResource, event: Event, obj: dict[str, Any]) -> None:
        metadata = obj.get("metadata") or {}
        name = str(metadata.get("name"))
        namespace = str(metadata.get("namespace") or self.options.default_namespace) if resource.type.namespaced else ""
        if event == "delete":
            self.store.delete(SOURCE, ConfigKey(resource.kind, namespace, name))
            if self.status is not None and resource.type.has_status_writer:
                self.status.forget(resource.kind, namespace, name)
            return
        result = load_object(SOURCE, obj, self.options.default_namespace)
        problems = tuple(e.message for e in result.errors)
        where = f"{resource.kind} {namespace}/{name}" if namespace else f"{resource.kind} {name}"
        if result.configs:
            for problem in problems:
                log.warning("kubernetes: %s: %s", where, problem)
            self.store.upsert(SOURCE, result.configs[0])
        else:
            kept = self.store.get(ConfigKey(resource.kind, namespace, name))
            outcome = "keeping its last good version" if kept is not None and kept.source == SOURCE else "not used"
            for problem in problems:
                log.warning("kubernetes: %s: %s (%s)", where, problem, outcome)
        if self.status is not None and resource.type.has_status_writer:
            generation = metadata.get("generation")
            self.status.report(
                Verdict(
                    resource,
                    namespace,
                    name,
                    generation if isinstance(generation, int) else None,
                    () if result.configs else problems,
                    problems if result.configs else (),
                )
            )

    def _namespace_event(self, resource: ServedResource, event: Event, obj: dict[str, Any]) -> None:
        """A Namespace was added, changed or deleted: store it if selected, and move its objects into or out
        of the store when its selection changes."""
        if self._selected is None:
            self._count(resource, event)
            self._apply(resource, event, obj)
            return
        metadata = obj.get("metadata") or {}
        name = str(metadata.get("name"))
        labels = metadata.get("labels") or {}
        was = name in self._selected
        now = event != "delete" and self.options.selectors.selects(
            {k: v for k, v in labels.items() if isinstance(k, str) and isinstance(v, str)}
        )
        if now:
            self._selected.add(name)
            self._count(resource, event if was else "add")
            self._apply(resource, "add", obj)
        else:
            self._selected.discard(name)
            if was:
                self._count(resource, "delete")
                self._apply(resource, "delete", obj)
        if was == now:
            return
        log.info("kubernetes: namespace %s %s by discoverySelectors", name, "selected" if now else "deselected")
        moved: Event = "add" if now else "delete"
        for informer in self.informers.values():
            if not informer.resource.type.namespaced:
                continue
            for member in informer.objects(name):
                self._count(informer.resource, moved)
                self._apply(informer.resource, moved, member)

    def _lookup(self, resource: ServedResource, namespace: str, name: str) -> dict[str, Any] | None:
        informer = self.informers.get(resource.kind)
        return informer.get(namespace, name) if informer is not None else None

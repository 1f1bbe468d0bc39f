"""Leader election with a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it.

- Every ``retry_period`` each candidate reads the Lease. Its holder keeps it by writing a new ``renewTime``
  (an update with the read ``resourceVersion``, so two writers cannot both win: the loser gets 409).
- Another candidate takes the Lease only when it is free (no holder, as a stepping-down leader leaves it)
  or expired: the record has not changed for ``leaseDurationSeconds`` as measured on this candidate's own
  monotonic clock since it first saw that record (no trust in the other machine's wall clock).
- A leader that has not renewed within ``renew_deadline`` (< the lease duration, so before anyone else may
  take over) steps down at once, and so does one that finds another holder or loses a write race.
  Listeners hear about every change synchronously, so writing stops in the same event-loop step.
- ``release()`` (on a clean shutdown) clears the holder so that another replica takes over at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pilot.sources.kube.client import ApiError, KubeApi

log = logging.getLogger(__name__)

LEASE_API = "/apis/coordination.k8s.io/v1"


@dataclass(frozen=True)
class LeaseTiming:
    duration: float = 15.0  # how long a Lease is valid after its last renewal (client-go's default)
    renew_deadline: float = 10.0  # a leader that could not renew for this long steps down
    retry_period: float = 2.0  # how often candidates try and the leader renews

    @classmethod
    def scaled(cls, duration: float) -> LeaseTiming:
        """client-go's proportions (15 / 10 / 2) for another lease duration."""
        return cls(duration, duration * 2 / 3, duration * 2 / 15)

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.duration:
            raise ValueError(
                f"lease timing: need 0 < retry period ({self.retry_period:g}s) < renew deadline "
                f"({self.renew_deadline:g}s) < duration ({self.duration:g}s)"
            )


def micro_time(now: datetime | None = None) -> str:
    """Kubernetes MicroTime: RFC 3339 with microseconds, UTC."""
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        name: str,
        identity: str,
        timing: LeaseTiming | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timing = timing or LeaseTiming()
        self._clock = clock
        self._rng = rng or random.Random()
        self.is_leader = False
        self.leading = asyncio.Event()
        self.holder = ""  # the identity last seen holding the Lease
        self.transitions = 0  # times this candidate became leader
        self._listeners: list[Callable[[bool], None]] = []
        self._last_renew = 0.0
        self._observed: tuple[Any, ...] = ()
        self._observed_at = 0.0
        self._released = False

    @property
    def path(self) -> str:
        return f"{LEASE_API}/namespaces/{self.namespace}/leases/{self.name}"

    def add_listener(self, listener: Callable[[bool], None]) -> None:
        """``listener(is_leader)`` on every change, synchronously."""
        self._listeners.append(listener)

    async def run(self) -> None:
        """Campaign and renew until cancelled."""
        while True:
            started = self._clock()
            if self.is_leader:
                timeout = max(self.timing.renew_deadline - (started - self._last_renew), 0.001)
            else:
                timeout = self.timing.retry_period
            if self._released:
                return
            try:
                won = await asyncio.wait_for(self._try_acquire_or_renew(), timeout)
            except (ApiError, TimeoutError) as exc:
                won = None
                log.warning("leader election: %s: %s", self.path, exc or "request timed out")
            except Exception:  # an unreadable Lease: keep campaigning, never crash the source
                won = None
                log.exception("leader election: %s: unexpected error", self.path)
            if won:
                self._last_renew = started
                self._set(True)
            elif won is False:
                self._set(False)  # someone else holds it, or won the race
            elif self.is_leader and self._clock() - self._last_renew >= self.timing.renew_deadline:
                log.warning(
                    "leader election: could not renew %s for %.1fs; stepping down",
                    self.path,
                    self._clock() - self._last_renew,
                )
                self._set(False)
            delay = self.timing.retry_period
            if not self.is_leader:
                delay *= 1 + 0.2 * self._rng.random()  # candidates spread out
            await asyncio.sleep(delay)

    async def release(self) -> None:
        """Give the Lease up (clean shutdown): another candidate takes it without waiting for expiry. The
        campaign stops: this candidate does not take the Lease again."""
        self._released = True
        if not self.is_leader:
            return
        self._set(False)
        try:
            lease = await self.api.get(self.path)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            spec = {**spec, "holderIdentity": "", "renewTime": micro_time(), "leaseDurationSeconds": 1}
            await self.api.replace(self.path, {**lease, "spec": spec})
            log.info("leader election: released %s", self.path)
        except ApiError as exc:
            log.warning("leader election: could not release %s: %s", self.path, exc)

    def _set(self, leader: bool) -> None:
        if leader == self.is_leader:
            return
        self.is_leader = leader
        if leader:
            self.transitions += 1
            self.holder = self.identity
            self.leading.set()
            log.info("leader election: %s now holds %s", self.identity, self.path)
        else:
            self.leading.clear()
            log.info("leader election: %s no longer holds %s", self.identity, self.path)
        for listener in list(self._listeners):
            try:
                listener(leader)
            except Exception:
                log.exception("leader election: listener %r failed", listener)

    async def _try_acquire_or_renew(self) -> bool:
        """True when this candidate holds the Lease after the attempt, False when another does."""
        now = micro_time()
        try:
            lease = await self.api.get(self.path)
        except ApiError as exc:
            if exc.status != 404:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(now, now, 0),
            }
            try:
                await self.api.create(f"{LEASE_API}/namespaces/{self.namespace}/leases", body)
            except ApiError as create_exc:
                if create_exc.status == 409:
                    return False
                raise
            return True
        spec = lease.get("spec") or {}
        metadata = lease.get("metadata") or {}
        holder = str(spec.get("holderIdentity") or "")
        self.holder = holder
        record = (holder, spec.get("renewTime"), metadata.get("resourceVersion"))
        if record != self._observed:
            self._observed = record
            self._observed_at = self._clock()
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder and holder != self.identity:
            duration = spec.get("leaseDurationSeconds")
            duration = float(duration) if isinstance(duration, int | float) else self.timing.duration
            if self._clock() - self._observed_at < duration:
                return False
            log.info("leader election: lease %s held by %s expired; taking over", self.path, holder)
        if holder == self.identity:
            new_spec = self._spec(str(spec.get("acquireTime") or now), now, transitions)
        else:
            new_spec = self._spec(now, now, transitions + 1)
        try:
            await self.api.replace(self.path, {**lease, "spec": new_spec})
        except ApiError as exc:
            if exc.status == 409:
                return False
            raise
        self.holder = self.identity
        return True

    def _spec(self, acquired: str, renewed: str, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(round(self.timing.duration), 1),
            "acquireTime": acquired,
            "renewTime": renewed,
            "leaseTransitions": transitions,
        }

"""Exponential backoff with jitter for retrying API requests."""

from __future__ import annotations

import random


class Backoff:
    """Delays that double from ``initial`` up to ``maximum``, each drawn uniformly from [d/2, d] ("equal
    jitter": never zero, so a fleet of pilots that failed together does not retry together)."""

    def __init__(self, initial: float = 0.2, maximum: float = 30.0, rng: random.Random | None = None) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError(f"backoff: need 0 < initial <= maximum, got {initial}, {maximum}")
        self.initial = initial
        self.maximum = maximum
        self._rng = rng or random.Random()
        self._next = initial
        self.failures = 0

    def next(self) -> float:
        """The delay before the next attempt; each call doubles the following one."""
        ceiling = self._next
        self._next = min(self._next * 2, self.maximum)
        self.failures += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self._next = self.initial
        self.failures = 0

"""Bounded logging of repeated failures: a hostile client must not be able to fill the log (used for NACKs,
refused streams and authentication failures).

``LogLimiter.allow(key)`` says whether a line about ``key`` may be written now: at most ``burst`` lines per
key per ``interval``; lines held back are counted and reported with the next line allowed for that key. Keys
are kept in a bounded table (the oldest go first), so many distinct keys cost bounded memory.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class LogLimiter:
    def __init__(
        self,
        interval: float = 10.0,
        burst: int = 5,
        max_keys: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self.burst = burst
        self.max_keys = max_keys
        self.clock = clock
        self._windows: OrderedDict[object, list[float | int]] = OrderedDict()  # key -> [window start, lines, held]

    def allow(self, key: object) -> tuple[bool, int]:
        """(write this line, lines held back since the last one written for this key)."""
        now = self.clock()
        window = self._windows.get(key)
        if window is None or now - window[0] >= self.interval:
            held = int(window[2]) if window is not None else 0
            self._windows[key] = [now, 1, 0]
            self._windows.move_to_end(key)
            while len(self._windows) > self.max_keys:
                self._windows.popitem(last=False)
            return True, held
        if window[1] < self.burst:
            window[1] += 1
            held, window[2] = int(window[2]), 0
            return True, held
        window[2] += 1
        return False, 0

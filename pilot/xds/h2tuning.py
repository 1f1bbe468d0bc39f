"""Two per-frame costs of h2/hyperframe that pilot pays for every one of thousands of streams.

- h2 logs every frame it receives at trace level with an eagerly built ``repr(frame)``, and hyperframe's repr
  of a DATA frame hexlifies the whole payload before cutting it to 20 characters. Proxies ACK every response
  with their full name list (SotW EDS: thousands of names), so that hexlify cost pilot ~8% of its CPU during
  endpoint churn (py-spy, 500 proxies). The repr keeps its form; only the first bytes are hexlified.
- Every frame object builds the set of its class's valid flag names anew (a set comprehension per frame,
  ~5% of pilot's CPU in an endpoint-change push to 2000 proxies). The set depends only on the class, so it
  is built once per class and shared (it is only ever read).
"""

from __future__ import annotations

import binascii
from collections.abc import Iterable

from hyperframe import flags as _flags
from hyperframe import frame as _frame

_REPR_BYTES = 10  # 20 hex characters, all hyperframe shows


def _short_data_repr(data: bytes | None) -> str:
    if not data:
        return "None"
    shown = binascii.hexlify(data[:_REPR_BYTES]).decode("ascii")
    return "<hex:" + shown + ("..." if len(data) > _REPR_BYTES else "") + ">"


# id(defined flags) -> (that object, kept alive so the id is never reused; its flag names)
_valid_flags: dict[int, tuple[object, frozenset[str]]] = {}


def _flags_init(self: _flags.Flags, defined_flags: Iterable[_flags.Flag]) -> None:
    known = _valid_flags.get(id(defined_flags))
    if known is not None and known[0] is defined_flags:
        valid = known[1]
    else:
        valid = frozenset(flag.name for flag in defined_flags)
        if isinstance(defined_flags, (list, tuple)) and len(_valid_flags) < 64:  # frame classes' attributes
            _valid_flags[id(defined_flags)] = (defined_flags, valid)
    self._valid_flags = valid  # type: ignore[assignment]
    self._flags = set()


def install() -> None:
    _frame._raw_data_repr = _short_data_repr  # type: ignore[attr-defined]
    _flags.Flags.__init__ = _flags_init  # type: ignore[method-assign]

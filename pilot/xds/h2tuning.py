"""Keep h2's per-frame trace logging cheap.

h2 logs every frame it receives at trace level with an eagerly built ``repr(frame)``, and hyperframe's repr of
a DATA frame hexlifies the whole payload before cutting it to 20 characters. Proxies ACK every response with
their full name list (SotW EDS: thousands of names), so that hexlify cost pilot ~8% of its CPU during
endpoint churn (py-spy, 500 proxies). The repr keeps its form; only the first bytes are hexlified.
"""

from __future__ import annotations

import binascii

from hyperframe import frame as _frame

_REPR_BYTES = 10  # 20 hex characters, all hyperframe shows


def _short_data_repr(data: bytes | None) -> str:
    if not data:
        return "None"
    shown = binascii.hexlify(data[:_REPR_BYTES]).decode("ascii")
    return "<hex:" + shown + ("..." if len(data) > _REPR_BYTES else "") + ">"


def install() -> None:
    _frame._raw_data_repr = _short_data_repr  # type: ignore[attr-defined]

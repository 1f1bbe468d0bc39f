"""The JSON answers of the monitoring port's debug endpoints: orjson, ``?pretty`` indents, and one conversion
for the model's values orjson does not know (enums, dataclasses, messages, sets, mappings)."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import orjson
from aiohttp import web


def json_response(request: web.Request, value: Any, status: int = 200) -> web.Response:
    option = orjson.OPT_INDENT_2 if "pretty" in request.query else 0
    body = orjson.dumps(value, option=option | orjson.OPT_NON_STR_KEYS, default=to_json)
    return web.Response(body=body, status=status, content_type="application/json")


def to_json(value: Any) -> Any:
    """orjson's ``default``: what a debug value that orjson cannot encode is written as."""
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, frozenset | set | tuple):
        return list(value)
    if hasattr(value, "items"):
        return dict(value.items())
    return str(value)

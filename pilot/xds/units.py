"""A unit of generation: one cacheable piece of a type's output, with the key and dependencies that govern it.

Generators (cds, eds, lds, rds) describe their output as units; ``pilot.xds.generate`` looks each key up in
the XdsCache and calls ``build`` only on a miss. ``key`` holds exactly the inputs that shape the output (its
first element is the type's short name: "cds", "eds", "lds", "rds"); ``deps`` the config keys whose change
must drop it. ``build`` is pure: the same inputs give the same messages, so encoded bytes can be shared.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Sequence
from dataclasses import dataclass

from google.protobuf.message import Message

from pilot.model.config import ConfigKey
from pilot.xds.resource import Resource


@dataclass(frozen=True, slots=True)
class Unit:
    key: Hashable
    deps: Collection[ConfigKey]
    # Messages, or resources already encoded (assembled from encoded parts)
    build: Callable[[], Sequence[Message | Resource]]

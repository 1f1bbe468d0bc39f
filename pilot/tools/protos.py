"""Makes every protobuf type pilot puts in its xDS resources known to this process, so config dumps
(``google.protobuf.Any`` with typed filter configs inside) can be decoded from JSON."""

from __future__ import annotations

import functools
import importlib

# The generators import the message modules of everything they build; the admin module has the dump sections.
_MODULES = (
    "envoy.admin.v3.config_dump_pb2",
    "envoy.extensions.transport_sockets.tls.v3.secret_pb2",
    "pilot.xds.cds",
    "pilot.xds.eds",
    "pilot.xds.lds",
    "pilot.xds.rds",
    "pilot.xds.inbound",
    "pilot.xds.mtls",
    "pilot.xds.grpcgen",
)


@functools.cache
def load() -> None:
    for name in _MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # a generator renamed or removed: its types come with the others, or not at all
            continue

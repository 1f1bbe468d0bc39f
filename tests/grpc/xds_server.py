"""An xDS-enabled grpcio server for the tests: ``python -m tests.grpc.xds_server NAME HOST PORT``.

GRPC_XDS_BOOTSTRAP in its environment names pilot; the server asks pilot for its listener
(``xds.istio.io/grpc/lds/inbound/HOST:PORT``) and serves, in plaintext or mTLS as that listener says, only once
it has it. It answers ``/pilot.test.Echo/Call`` with NAME, prints ``ready`` once started, and stops at EOF on
stdin.
"""

from __future__ import annotations

import sys
from concurrent import futures

import grpc

SERVICE_NAME = "pilot.test.Echo"


def main() -> int:
    name, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), xds=True)
    handler = grpc.method_handlers_generic_handler(
        SERVICE_NAME, {"Call": grpc.unary_unary_rpc_method_handler(lambda request, context: name.encode())}
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_secure_port(f"{host}:{port}", grpc.xds_server_credentials(grpc.insecure_server_credentials()))
    server.start()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.read()  # until the test closes our stdin
    server.stop(0.5).wait(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())

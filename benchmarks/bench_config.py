"""Config conversion and validation speed for one typical VirtualService.

python benchmarks/bench_config.py [--rounds 2000]
"""

from __future__ import annotations

import argparse
import time

from pilot.config.convert import convert_spec
from pilot.config.validation import check

TYPICAL_VIRTUAL_SERVICE = {
    "hosts": ["reviews.prod.svc.cluster.local"],
    "gateways": ["mesh", "istio-system/ingress"],
    "http": [
        {
            "name": "v2",
            "match": [{"headers": {"end-user": {"exact": "jason"}}, "uri": {"prefix": "/ratings"}}],
            "route": [
                {"destination": {"host": "reviews", "subset": "v2", "port": {"number": 9080}}, "weight": 75},
                {"destination": {"host": "reviews", "subset": "v1"}, "weight": 25},
            ],
            "timeout": "10s",
            "retries": {"attempts": 3, "perTryTimeout": "2s", "retryOn": "5xx,connect-failure"},
        },
        {"route": [{"destination": {"host": "reviews", "subset": "v1"}}]},
    ],
}


def per_call(fn, rounds: int) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for _ in range(rounds):
        fn()
    return (time.perf_counter() - start) / rounds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    assert check("VirtualService", TYPICAL_VIRTUAL_SERVICE, "default")[1] == []
    convert = per_call(lambda: convert_spec("VirtualService", TYPICAL_VIRTUAL_SERVICE), args.rounds)
    full = per_call(lambda: check("VirtualService", TYPICAL_VIRTUAL_SERVICE, "default"), args.rounds)
    print(f"convert_spec  {convert * 1e6:7.1f} us per VirtualService")
    print(f"check         {full * 1e6:7.1f} us per VirtualService (convert + validate)")


if __name__ == "__main__":
    main()

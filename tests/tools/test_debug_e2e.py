"""The debug endpoints and the operator commands against a running pilot with a real Envoy.

One pilot process and one Envoy (an ingress gateway) serve the module: the config dump pilot gives for the
proxy is checked against Envoy's own, proxy-status and proxy-config are read from it, a hand-driven ADS client
shows SYNCED -> STALE -> SYNCED, and the xDS port's rejections and push_status's problems are provoked."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpclib.client
import grpclib.const
import grpclib.exceptions
import pytest
from envoy.service.discovery.v3 import discovery_pb2

from pilot.cli import main
from pilot.tools.compare import compare
from pilot.tools.configdump import parse
from pilot.tools.proxy_status import CDS, type_status
from tests.e2e.harness import (
    EnvoyProcess,
    PilotProcess,
    destination_rule,
    free_port,
    route_to,
    virtual_service,
    wait_until,
)
from tests.tools.ads import ADS_METHOD, ManualAckProxy

pytestmark = pytest.mark.timeout(120)

ROUTER = "router~127.0.0.1~ingress-1.istio-system~istio-system.svc.cluster.local"
ROUTER_ID = "ingress-1.istio-system"
HOST = "shop.example.com"


def service_entry(name: str, host: str, port: int, addresses: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "hosts": [host],
            "location": "MESH_INTERNAL",
            "resolution": "STATIC",
            "ports": [{"number": port, "name": "http", "protocol": "HTTP"}],
            "endpoints": [{"address": a, "labels": {"version": f"v{i + 1}"}} for i, a in enumerate(addresses)],
        },
    }


@dataclass
class Env:
    pilot: PilotProcess
    envoy: EnvoyProcess
    port: int

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.pilot.monitoring_port}"


@pytest.fixture(scope="module")
def env(pilot_factory: Callable[..., PilotProcess], envoy_factory: Callable[..., EnvoyProcess]) -> Env:
    port = free_port("0.0.0.0")
    gateway = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "shop", "namespace": "istio-system"},
        "spec": {
            "selector": {"istio": "ingressgateway"},
            "servers": [{"port": {"number": port, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}],
        },
    }
    config = {
        "gateway.yaml": gateway,
        "shop.yaml": [
            service_entry("shop", HOST, 80, ["127.0.0.21", "127.0.0.22"]),
            destination_rule("shop", HOST, ["v1", "v2"]),
            virtual_service(
                "shop",
                [HOST],
                [
                    {"match": [{"uri": {"prefix": "/v2"}}], "route": [route_to(HOST, "v2")]},
                    {"route": [route_to(HOST, "v1", 90), route_to(HOST, "v2", 10)]},
                ],
                gateways=["istio-system/shop"],
            ),
        ],
    }
    pilot = pilot_factory(config, name="pilot-tools")
    envoy = envoy_factory(pilot, ROUTER, {"istio": "ingressgateway"}, "gateway-tools")
    envoy.wait_listener_sync(f"0.0.0.0_{port}", f"0.0.0.0:{port}")
    return Env(pilot, envoy, port)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def get(http: aiohttp.ClientSession, env: Env, path: str) -> tuple[int, str, str]:
    async with http.get(env.pilot.monitoring_url + path) as response:
        return response.status, response.content_type, await response.text()


async def get_json(http: aiohttp.ClientSession, env: Env, path: str) -> Any:
    status, _, text = await get(http, env, path)
    assert status == 200, (path, status, text)
    return json.loads(text)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """`pilot ...` in this process (the commands are synchronous HTTP clients of the running pilot)."""
    assert main(list(argv)) == 0, capsys.readouterr().err
    return capsys.readouterr().out


# ----- config_dump -----


async def test_config_dump_equals_what_envoy_holds(env: Env, http: aiohttp.ClientSession) -> None:
    async def pilot_dump() -> Any:
        return await get_json(http, env, f"/debug/config_dump?proxyID={ROUTER_ID}&include_eds")

    async def matches() -> bool:
        ours = parse(await pilot_dump())
        envoys = parse(env.envoy.admin_json("/config_dump?include_eds"))
        return all(section.matches for section in compare(ours, envoys, endpoints=True))

    await wait_until(matches, 10, message="pilot's config_dump equal to Envoy's", describe=env.envoy.diagnostics)
    dump = await pilot_dump()
    sections = [config["@type"].rpartition(".")[2] for config in dump["configs"]]
    assert sections == [
        "BootstrapConfigDump",
        "ClustersConfigDump",
        "EndpointsConfigDump",
        "ListenersConfigDump",
        "ScopedRoutesConfigDump",
        "RoutesConfigDump",
        "SecretsConfigDump",
        "EcdsConfigDump",
    ]
    parsed = parse(dump)
    assert {c.name for c in parsed.clusters} >= {f"outbound|80|v1|{HOST}", f"outbound|80|v2|{HOST}"}
    assert [r.name for r in parsed.routes] == [f"http.{env.port}"]

    # Without include_eds, no endpoints (as Envoy's and istiod's); types= gives the bare resources.
    plain = await get_json(http, env, f"/debug/config_dump?proxyID={ROUTER_ID}")
    assert "EndpointsConfigDump" not in json.dumps([c["@type"] for c in plain["configs"]])
    typed = await get_json(http, env, f"/debug/config_dump?proxyID={ROUTER_ID}&types=rds,lds")
    assert [c["@type"].rpartition(".")[2] for c in typed["configs"]] == ["Listener", "RouteConfiguration"]
    edsz = await get_json(http, env, f"/debug/edsz?proxyID={ROUTER_ID}")
    assert {c["clusterName"] for c in edsz["configs"]} >= {f"outbound|80|v1|{HOST}"}
    assert (await get(http, env, "/debug/config_dump"))[0] == 400
    assert (await get(http, env, "/debug/config_dump?proxyID=nobody.nowhere"))[0] == 404
    assert (await get(http, env, f"/debug/config_dump?proxyID={ROUTER_ID}&types=xds"))[0] == 400


# ----- proxy-status and proxy-config -----


async def test_proxy_status_and_proxy_config_of_the_gateway(
    env: Env, http: aiohttp.ClientSession, capsys: pytest.CaptureFixture[str]
) -> None:
    await wait_until(
        lambda: all(section.matches for section in compare(
            parse(env.envoy.admin_json("/config_dump?include_eds")),
            parse(env.envoy.admin_json("/config_dump?include_eds")),
        )),
        5,
    )  # fmt: skip
    table = run_cli(capsys, "proxy-status", "--pilot-addr", env.addr)
    header, *rows = table.splitlines()
    assert header.split() == ["NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "ECDS", "ISTIOD", "VERSION"]
    row = next(r for r in rows if r.startswith(ROUTER_ID))
    assert re.search(r"SYNCED \(\d+[smhd]\S*\)\s+" * 4 + r"IGNORED", row), row

    one = run_cli(capsys, "proxy-status", ROUTER_ID, "--pilot-addr", env.addr)
    for title in ("Clusters", "Listeners", "Routes", "Endpoints"):
        assert f"{title} Match" in one, one
    against_envoy = run_cli(
        capsys,
        "proxy-status",
        ROUTER_ID,
        "--pilot-addr",
        env.addr,
        "--envoy-admin",
        f"127.0.0.1:{env.envoy.admin_port}",
    )
    assert against_envoy.splitlines()[:2] == ["Clusters Match", "Listeners Match"], against_envoy
    assert against_envoy.splitlines()[2].startswith("Routes Match (RDS last loaded at ")

    routes = run_cli(capsys, "proxy-config", "routes", ROUTER_ID, "--pilot-addr", env.addr)
    lines = [line.split() for line in routes.splitlines()]
    assert lines[0] == ["NAME", "VHOST", "NAME", "DOMAINS", "MATCH", "VIRTUAL", "SERVICE"]
    assert [f"http.{env.port}", f"{HOST}:{env.port}", HOST, "/v2*", "shop.default"] in lines
    assert [f"http.{env.port}", f"{HOST}:{env.port}", HOST, "/*", "shop.default"] in lines

    clusters = run_cli(capsys, "pc", "clusters", ROUTER_ID, "--pilot-addr", env.addr, "--fqdn", HOST, "--subset", "v2")
    assert [line.split() for line in clusters.splitlines()[1:]] == [[HOST, "80", "v2", "outbound", "EDS"]]
    listeners = run_cli(capsys, "proxy-config", "listeners", ROUTER_ID, "--pilot-addr", env.addr)
    assert listeners.splitlines()[1].split() == ["0.0.0.0", str(env.port), "ALL", "Route:", f"http.{env.port}"]
    endpoints = run_cli(capsys, "pc", "endpoints", ROUTER_ID, "--pilot-addr", env.addr, "--cluster",
                        f"outbound|80|v2|{HOST}")  # fmt: skip
    assert [line.split()[0] for line in endpoints.splitlines()[1:]] == ["127.0.0.22:80"]
    as_json = json.loads(run_cli(capsys, "pc", "routes", ROUTER_ID, "--pilot-addr", env.addr, "-o", "json"))
    assert as_json[0]["name"] == f"http.{env.port}"
    # The same tables read from Envoy's own dump (istioctl's --file) agree with pilot's.
    dump_file = env.envoy.workdir / "tools-config-dump.json"
    dump_file.write_text(json.dumps(env.envoy.admin_json("/config_dump?include_eds")))
    assert run_cli(capsys, "pc", "routes", "-f", str(dump_file)) == routes
    print("\n$ pilot proxy-status\n" + table + f"\n$ pilot proxy-config routes {ROUTER_ID}\n" + routes)


async def test_a_proxy_that_stops_acking_is_stale_then_synced(
    env: Env, http: aiohttp.ClientSession, capsys: pytest.CaptureFixture[str]
) -> None:
    proxy = ManualAckProxy(env.pilot.grpc_port, "manual")
    await proxy.start()
    try:

        async def cds_status() -> str:
            entries = await get_json(http, env, "/debug/syncz?namespace=default")
            entry = next((e for e in entries if e["proxy"] == proxy.short_id), None)
            return type_status(entry["resources"].get(CDS), time.time()).split(" ")[0] if entry else "absent"

        await wait_until(lambda: _is(cds_status, "SYNCED"), 10, message="CDS SYNCED")
        proxy.acking.clear()
        env.pilot.write("late.yaml", service_entry("late", "late.example.com", 80, ["127.0.0.31"]))
        await wait_until(lambda: _is(cds_status, "STALE"), 10, message="CDS STALE while the proxy does not ACK")
        row = next(r for r in run_cli(capsys, "ps", "--pilot-addr", env.addr).splitlines() if "manual.default" in r)
        assert row.split()[2] == "STALE" and row.split()[-3] == "IGNORED", row  # LDS not watched: IGNORED
        pending = run_cli(capsys, "proxy-status", proxy.short_id, "--pilot-addr", env.addr)
        assert "Clusters Don't Match: version " in pending and "not acknowledged" in pending, pending

        await proxy.resume()
        await wait_until(lambda: _is(cds_status, "SYNCED"), 10, message="CDS SYNCED again after the ACK")
        assert "Clusters Match" in run_cli(capsys, "proxy-status", proxy.short_id, "--pilot-addr", env.addr)
    finally:
        await proxy.stop()
        (env.pilot.config_dir / "late.yaml").unlink(missing_ok=True)


async def _is(probe: Callable[[], Any], wanted: str) -> bool:
    return await probe() == wanted


# ----- push_status -----


async def test_push_status_names_rejected_config_and_missing_subsets(env: Env, http: aiohttp.ClientSession) -> None:
    bad = virtual_service("bad", ["bad.example.com"], [{"route": [route_to(HOST, "v1", -5)]}])
    lost = virtual_service("lost", ["lost.example.com"], [{"route": [route_to(HOST, "v9")]}], gateways=["mesh"])
    path = env.pilot.write("problems.yaml", [lost, bad])
    try:
        key = f"{path}[doc 1] VirtualService default/bad"

        async def status() -> Any:
            found = await get_json(http, env, "/debug/push_status")
            ready = key in found.get("pilot_rejected_configs", {}) and "pilot_vservice_missing_subset" in found
            return found if ready else None

        found = await wait_until(status, 10, message="the rejected VirtualService and the missing subset")
        assert found["pilot_rejected_configs"][key] == {
            "file": str(path),
            "document": 1,
            "kind": "VirtualService",
            "namespace": "default",
            "name": "bad",
            "field": "spec.http[0].route[0].weight",
            "message": "weight -5 < 0",
            "serving": "none",
        }
        missing = found["pilot_vservice_missing_subset"][f"outbound|80|v9|{HOST}"]["message"]
        assert missing.startswith(f"VirtualService default/lost routes to subset v9 of {HOST}, which no ")
    finally:
        env.pilot.remove("problems.yaml")
    await wait_until(lambda: _no_problems(http, env), 10, message="push_status clean again once the file is gone")


async def _no_problems(http: aiohttp.ClientSession, env: Env) -> bool:
    found = await get_json(http, env, "/debug/push_status")
    return "pilot_rejected_configs" not in found and "pilot_vservice_missing_subset" not in found


# ----- the endpoint index and the other endpoints -----


async def test_every_listed_endpoint_answers(env: Env, http: aiohttp.ClientSession) -> None:
    status, content_type, index = await get(http, env, "/debug")
    assert status == 200 and content_type == "text/html"
    listed = await get_json(http, env, "/debug/list")
    for name in listed:
        assert f"href='/debug/{name}'" in index, name
    for name in listed:
        if "clear" in name or "push" in name:
            continue  # mutations: POST only (below)
        path = f"/debug/{name}" + ("&" if "?" in name else "?") + f"proxyID={ROUTER_ID}&pretty"
        status, content_type, body = await get(http, env, path)
        assert status == 200, (name, status, body)
        if content_type == "application/json":
            json.loads(body)
    sidecarz = await get_json(http, env, f"/debug/sidecarz?proxyID={ROUTER_ID}")
    assert sidecarz["virtualServices"] == ["default/shop"]
    connections = await get_json(http, env, "/debug/connections")
    assert any(c["connectionId"].startswith(ROUTER_ID) for c in connections["clients"])
    adsz = await get_json(http, env, f"/debug/adsz?proxyID={ROUTER_ID}")
    assert adsz["totalClients"] == 1 and adsz["clients"][0]["labels"] == {"istio": "ingressgateway"}
    version = (await get(http, env, "/version"))[2]
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*-\S+-(Clean|Modified|unknown)\n", version), version


async def test_mutations_need_post(env: Env, http: aiohttp.ClientSession) -> None:
    for path in ("/debug/cachez?clear=true", "/debug/config_cache?clear=true", "/debug/adsz?push=true"):
        status, _, body = await get(http, env, path)
        assert status == 405 and "use POST" in body, (path, status, body)
    async with http.post(env.pilot.monitoring_url + "/debug/cachez?clear=true") as response:
        assert response.status == 200 and await response.text() == "Cache cleared\n"
    async with http.post(env.pilot.monitoring_url + "/debug/adsz?push=true") as response:
        assert response.status == 200 and re.fullmatch(r"Pushed to \d+ servers\n", await response.text())


# ----- rejected connections -----


async def test_each_rejected_connection_is_logged_once_with_its_reason(env: Env) -> None:
    mark = env.pilot.log_mark()
    port = env.pilot.grpc_port
    channel = grpclib.client.Channel("127.0.0.1", port)
    try:
        request = channel.request(
            ADS_METHOD,
            grpclib.const.Cardinality.STREAM_STREAM,
            discovery_pb2.DiscoveryRequest,
            discovery_pb2.DiscoveryResponse,
        )
        with pytest.raises(grpclib.exceptions.GRPCError) as bad_node:
            async with request as stream:
                node = discovery_pb2.DiscoveryRequest().node
                node.id = "not-an-istio-node-id"
                await stream.send_message(discovery_pb2.DiscoveryRequest(node=node, type_url=CDS))
                await stream.recv_message()
        assert bad_node.value.status is grpclib.const.Status.INVALID_ARGUMENT
        v2 = "/envoy.service.discovery.v2.AggregatedDiscoveryService/StreamAggregatedResources"
        request = channel.request(
            v2, grpclib.const.Cardinality.STREAM_STREAM, discovery_pb2.DiscoveryRequest, discovery_pb2.DiscoveryResponse
        )
        with pytest.raises(grpclib.exceptions.GRPCError) as unknown:
            async with request as stream:
                await stream.send_message(discovery_pb2.DiscoveryRequest(), end=True)
                await stream.recv_message()
        # grpclib answers an unknown method with a trailers-only UNIMPLEMENTED; its client reports the missing
        # content-type of that answer first (UNKNOWN). Either way the call is refused.
        assert unknown.value.status in (grpclib.const.Status.UNIMPLEMENTED, grpclib.const.Status.UNKNOWN)
    finally:
        channel.close()
    for first_bytes in (b"GET / HTTP/1.1\r\nHost: pilot\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"):
        await asyncio.to_thread(_send_and_close, port, first_bytes)

    expected = [
        r"refused a stream from 127\.0\.0\.1:\d+: node\.id 'not-an-istio-node-id'",
        r"rejected call to /envoy\.service\.discovery\.v2\.AggregatedDiscoveryService/StreamAggregatedResources: "
        r"not a method pilot serves",
        r"rejected connection from 127\.0\.0\.1:\d+: HTTP/1\.x",
        r"rejected connection from 127\.0\.0\.1:\d+: a TLS handshake",
    ]
    for pattern in expected:
        await env.pilot.wait_for_log(pattern, since=mark)
    rejected = [line for line in env.pilot.log_since(mark).splitlines() if " refused " in line or " rejected " in line]
    assert len(rejected) == len(expected), rejected  # once each
    assert all(" WARN ads: " in line for line in rejected), rejected


def _send_and_close(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        sock.settimeout(5)
        try:
            while sock.recv(4096):
                pass
        except OSError:
            pass

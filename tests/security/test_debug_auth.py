"""Debug endpoints: everything for loopback callers, otherwise authenticated and scoped to the caller's
namespace; mutations by POST only; no secret material in any answer.

"Local" is narrowed to 127.0.0.1 here (the default is all of 127.0.0.0/8 and ::1, as istiod's loopback check),
so a client bound to 127.0.0.3 is a real remote caller on a real socket.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from pilot.server import PilotServer
from tests.security.conftest import Pki, connected_proxy

REMOTE = "127.0.0.3"
SECRET_ENV = "hunter2-secret-value"
SECRET_META = "s3cret-metadata-value"
PROXY_METADATA = {
    "LABELS": {"app": "web"},
    "ISTIO_VERSION": "1.30.0",
    "ISTIO_META_DB_PASSWORD": SECRET_META,
    "PROXY_CONFIG": {"proxyMetadata": {"API_TOKEN": SECRET_META}},
}


@pytest.fixture
async def pilot(start_pilot: Any, pki: Pki) -> AsyncIterator[PilotServer]:
    server: PilotServer = await start_pilot(
        debug_local_networks=("127.0.0.1/32",), secure_monitoring_addr="127.0.0.1:0"
    )
    async with contextlib.AsyncExitStack() as stack:
        port = server.grpc_port
        await stack.enter_async_context(connected_proxy(port, "default", pod="web-1", metadata=PROXY_METADATA))
        await stack.enter_async_context(connected_proxy(port, "other", pod="billing-1", metadata=PROXY_METADATA))
        yield server


class Client:
    def __init__(self, session: aiohttp.ClientSession, base: str, headers: dict[str, str] | None = None) -> None:
        self.session, self.base, self.headers = session, base, headers or {}

    async def request(self, method: str, path: str) -> tuple[int, str]:
        async with self.session.request(method, self.base + path, headers=self.headers) as response:
            return response.status, await response.text()

    async def get(self, path: str) -> tuple[int, str]:
        return await self.request("GET", path)

    async def json(self, path: str) -> Any:
        status, text = await self.get(path)
        assert status == 200, (path, status, text)
        return json.loads(text)


@contextlib.asynccontextmanager
async def client(port: int, *, remote: bool, token: str | None = None, ssl: Any = None) -> AsyncIterator[Client]:
    connector = aiohttp.TCPConnector(local_addr=(REMOTE, 0) if remote else None, ssl=ssl if ssl else False)
    scheme = "https" if ssl else "http"
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield Client(session, f"{scheme}://127.0.0.1:{port}", headers)


def client_ids(adsz: Any) -> list[str]:
    return sorted(c["connectionId"].rsplit("-", 1)[0] for c in adsz["clients"])


async def test_loopback_sees_everything_but_no_secrets(pilot: PilotServer) -> None:
    async with client(pilot.monitoring_port, remote=False) as local:
        adsz = await local.json("/debug/adsz")
        assert client_ids(adsz) == ["billing-1.other", "web-1.default"]
        metadata = adsz["clients"][0]["metadata"]
        assert metadata["LABELS"] == {"app": "web"} and metadata["ISTIO_VERSION"] == "1.30.0"
        assert "ISTIO_META_DB_PASSWORD" not in metadata and "PROXY_CONFIG" not in metadata
        configz = await local.json("/debug/configz")
        assert {c["metadata"].get("namespace") for c in configz} >= {"default", "other"}
        pod = next(c for c in configz if c["kind"] == "Pod")
        env = pod["spec"]["containers"][0]["env"]
        assert env[0] == {"name": "DB_PASSWORD", "value": "[redacted]"}
        assert env[1]["valueFrom"]["secretKeyRef"]["name"] == "db"  # references say where, not what
        for path in ("/debug/adsz", "/debug/configz", "/debug/configz?pretty", "/debug/syncz", "/debug/instancesz"):
            status, text = await local.get(path)
            assert status == 200 and SECRET_ENV not in text and SECRET_META not in text, path


async def test_unauthenticated_remote_gets_401_but_probes_stay_open(pilot: PilotServer) -> None:
    async with client(pilot.monitoring_port, remote=True) as remote:
        for path in ("/debug/adsz", "/debug/configz", "/debug/syncz", "/debug/config_cache", "/debug", "/debug/x"):
            status, text = await remote.get(path)
            assert status == 401 and SECRET_ENV not in text, path
        assert (await remote.request("POST", "/debug/config_cache?clear=true"))[0] == 401
        assert (await remote.get("/ready"))[0] == 200
        assert (await remote.get("/metrics"))[0] == 200
    assert pilot.debug_access.unauthorized >= 7


async def test_bad_token_is_401(pilot: PilotServer, pki: Pki) -> None:
    for token in ("garbage", pki.signer.token("other", audience="not-istio"), pki.signer.token("other")[:-3] + "abc"):
        async with client(pilot.monitoring_port, remote=True, token=token) as remote:
            assert (await remote.get("/debug/adsz"))[0] == 401


async def test_authenticated_namespace_sees_only_its_own(pilot: PilotServer, pki: Pki) -> None:
    async with client(pilot.monitoring_port, remote=True, token=pki.signer.token("other")) as scoped:
        adsz = await scoped.json("/debug/adsz")
        assert client_ids(adsz) == ["billing-1.other"] and adsz["totalClients"] == 1
        connections = await scoped.json("/debug/connections")
        assert client_ids(connections) == ["billing-1.other"]
        assert [e["proxy"] for e in await scoped.json("/debug/syncz")] == ["billing-1.other"]
        configz = await scoped.json("/debug/configz")
        assert configz and {c["metadata"].get("namespace") for c in configz} == {"other"}
        assert SECRET_ENV not in json.dumps(configz)
        instances = await scoped.json("/debug/instancesz")
        assert list(instances) == ["sidecar~10.250.0.1~billing-1.other~other.svc.cluster.local"]
        # Per-proxy endpoints: its own proxies only; another namespace's proxy is "not connected" (istiod).
        status, _ = await scoped.get("/debug/config_dump?proxyID=billing-1.other")
        assert status == 200
        for path in (
            "/debug/config_dump?proxyID=web-1.default",
            "/debug/config_dump?proxyID=web-1",
            "/debug/adsz?proxyID=web-1",
        ):
            status, text = await scoped.get(path)
            assert status == 404 and "not connected" in text, path
        # Mesh-wide and mutating endpoints are not for it.
        for path in ("/debug/registryz", "/debug/endpointShardz", "/debug/push_status", "/debug/config_cache"):
            assert (await scoped.get(path))[0] == 403, path
        assert (await scoped.request("POST", "/debug/config_cache?clear=true"))[0] == 403


async def test_root_namespace_and_allowed_namespaces_see_everything(start_pilot: Any, pki: Pki) -> None:
    pilot = await start_pilot(
        debug_local_networks=("127.0.0.1/32",), env={"DEBUG_ENDPOINT_AUTH_ALLOWED_NAMESPACES": "ops, tools"}
    )
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(connected_proxy(pilot.grpc_port, "default", pod="web-1"))
        await stack.enter_async_context(connected_proxy(pilot.grpc_port, "other", pod="billing-1"))
        for namespace in ("istio-system", "ops"):
            async with client(pilot.monitoring_port, remote=True, token=pki.signer.token(namespace)) as full:
                assert client_ids(await full.json("/debug/adsz")) == ["billing-1.other", "web-1.default"]
                assert (await full.get("/debug/registryz"))[0] == 200


async def test_debug_endpoint_auth_off_gives_any_identity_everything(start_pilot: Any, pki: Pki) -> None:
    pilot = await start_pilot(debug_local_networks=("127.0.0.1/32",), env={"ENABLE_DEBUG_ENDPOINT_AUTH": "false"})
    async with client(pilot.monitoring_port, remote=True, token=pki.signer.token("other")) as caller:
        assert (await caller.get("/debug/registryz"))[0] == 200
    async with client(pilot.monitoring_port, remote=True) as anonymous:
        assert (await anonymous.get("/debug/registryz"))[0] == 401


async def test_client_certificate_on_the_tls_monitoring_listener(pilot: PilotServer, pki: Pki) -> None:
    port = pilot.secure_monitoring_port
    assert port > 0
    async with client(port, remote=True, ssl=pki.client("other")) as scoped:
        assert client_ids(await scoped.json("/debug/adsz")) == ["billing-1.other"]
        assert (await scoped.get("/debug/registryz"))[0] == 403
    async with client(port, remote=True, ssl=pki.client(None)) as anonymous:
        assert (await anonymous.get("/debug/adsz"))[0] == 401
        assert (await anonymous.get("/ready"))[0] == 200


async def test_mutations_take_post(pilot: PilotServer) -> None:
    cache = pilot.discovery.cache
    assert len(cache) > 0
    clears = cache.evictions["clear"]
    async with client(pilot.monitoring_port, remote=False) as local:
        for path in ("/debug/config_cache?clear=true", "/debug/config_cache?clear=false", "/debug/cachez?clear"):
            status, text = await local.get(path)
            assert status == 405 and "POST" in text, path
        status, _ = await local.get("/debug/adsz?push=true")
        assert status == 405
        assert cache.evictions["clear"] == clears and len(cache) > 0, "a GET cleared the cache"
        status, text = await local.request("POST", "/debug/config_cache?clear=true")
        assert status == 200 and "cleared" in text.lower()
        assert cache.evictions["clear"] > clears or len(cache) == 0


async def test_every_debug_route_is_scoped_or_refused(pilot: PilotServer, pki: Pki) -> None:
    """A guard for endpoints added later: nothing of namespace default reaches a caller of namespace other."""
    assert pilot._http_runner is not None
    app = pilot._http_runner.app
    paths = sorted({r.resource.canonical for r in app.router.routes() if r.method == "GET" and r.resource is not None})
    debug_paths = [p for p in paths if p.startswith("/debug")]
    assert len(debug_paths) > 5
    async with client(pilot.monitoring_port, remote=True, token=pki.signer.token("other")) as scoped:
        for path in debug_paths:
            for query in ("", "?proxyID=billing-1.other"):
                status, text = await scoped.get(path + query)
                assert status in (200, 400, 403, 404), (path, status, text[:200])
                for leak in ("web-1.default", "web.example.com", SECRET_ENV, SECRET_META):
                    assert leak not in text, (path + query, leak, text[:300])


async def test_rest_xds_follows_the_plaintext_port(start_pilot: Any, pki: Pki) -> None:
    poll = {"node": {"id": "sidecar~10.0.0.9~rest-1.other~other.svc.cluster.local"}}
    open_pilot = await start_pilot(debug_local_networks=("127.0.0.1/32",))
    closed_pilot = await start_pilot(grpc_addr="", debug_local_networks=("127.0.0.1/32",))
    async with client(open_pilot.monitoring_port, remote=True) as remote:
        async with remote.session.post(remote.base + "/v3/discovery:clusters", json=poll) as response:
            assert response.status == 200
    async with client(closed_pilot.monitoring_port, remote=True) as remote:
        async with remote.session.post(remote.base + "/v3/discovery:clusters", json=poll) as response:
            assert response.status == 401
    async with client(closed_pilot.monitoring_port, remote=False) as local:
        async with local.session.post(local.base + "/v3/discovery:clusters", json=poll) as response:
            assert response.status == 200

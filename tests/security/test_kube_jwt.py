"""Service-account JWTs checked by the Kubernetes API server (istiod's KubeJWTAuthenticator), against kmock's
API server with a TokenReview endpoint (tests/kube/harness.py), over real TLS xDS streams."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpclib.const
import grpclib.exceptions
import pytest

from pilot.security.options import SecurityOptions
from pilot.server import PilotServer, ServerOptions
from tests.kube.conftest import kube_options
from tests.kube.harness import FakeApiServer, serve_api, write_kubeconfig
from tests.security.conftest import Pki, ads_first_response

Status = grpclib.const.Status


@pytest.fixture
async def api() -> AsyncIterator[FakeApiServer]:
    async with serve_api() as (server, _url):
        yield server


@pytest.fixture
async def pilot(api: FakeApiServer, pki: Pki, config_dir: Path, tmp_path: Path) -> AsyncIterator[PilotServer]:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(api.url).rstrip("/"))
    server = PilotServer(
        ServerOptions(
            config_dir=config_dir,
            grpc_addr="",  # TLS only
            monitoring_addr="127.0.0.1:0",
            debounce_after=0.01,
            kube=kube_options(kubeconfig),
            security=SecurityOptions(tls=pki.tls(), secure_grpc_addr="127.0.0.1:0").with_env({}),
        )
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_token_reviewed_by_the_api_server(api: FakeApiServer, pilot: PilotServer, pki: Pki) -> None:
    api.add_token("token-of-default-reviews", "default", "reviews")
    port, context = pilot.secure_grpc_port, pki.client(None)
    ok = await ads_first_response(port, ssl=context, token="token-of-default-reviews", namespace="default")
    assert len(ok.resources) > 0
    reviews = api.requests("create", "tokenreviews")
    assert len(reviews) == 1

    # The same token again (a reconnect) is not reviewed again; acting as another namespace is refused.
    with pytest.raises(grpclib.exceptions.GRPCError) as err:
        await ads_first_response(port, ssl=context, token="token-of-default-reviews", namespace="other")
    assert err.value.status is Status.PERMISSION_DENIED
    assert len(api.requests("create", "tokenreviews")) == 1


@pytest.mark.parametrize(
    "token",
    ["not-a-known-token", "token-for-another-audience"],
)
async def test_tokens_the_api_server_rejects_are_unauthenticated(
    api: FakeApiServer, pilot: PilotServer, pki: Pki, token: str
) -> None:
    api.add_token("token-for-another-audience", "default", "reviews", audiences=("vault",))
    with pytest.raises(grpclib.exceptions.GRPCError) as err:
        await ads_first_response(pilot.secure_grpc_port, ssl=pki.client(None), token=token, namespace="default")
    assert err.value.status is Status.UNAUTHENTICATED
    assert len(api.requests("create", "tokenreviews")) == 1


async def test_api_server_failure_is_unauthenticated_not_a_crash(
    api: FakeApiServer, pilot: PilotServer, pki: Pki
) -> None:
    api.add_token("a-token", "default", "reviews")
    api.fail("tokenreviews", 500, times=None)
    with pytest.raises(grpclib.exceptions.GRPCError) as err:
        await ads_first_response(pilot.secure_grpc_port, ssl=pki.client(None), token="a-token", namespace="default")
    assert err.value.status is Status.UNAUTHENTICATED
    # A client certificate still works while the API is away.
    ok: Any = await ads_first_response(pilot.secure_grpc_port, ssl=pki.client("default"), namespace="default")
    assert len(ok.resources) > 0

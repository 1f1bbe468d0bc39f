"""Authenticated xDS over TLS (istiod's 15012) with real TLS and real grpclib streams.

A proxy is known by the SPIFFE identity in its client certificate or by a service-account JWT; with
PILOT_ENABLE_XDS_IDENTITY_CHECK (default on) it gets config only as a proxy of its identity's namespace.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

import grpclib.const
import grpclib.exceptions
import pytest

from pilot.xds.names import CLUSTER_TYPE
from tests.security.conftest import Pki, ads_first_response
from tests.security.pki import Authority, client_context

Status = grpclib.const.Status


async def refused(**kwargs: Any) -> grpclib.exceptions.GRPCError:
    with pytest.raises(grpclib.exceptions.GRPCError) as err:
        await ads_first_response(**kwargs)
    return err.value


async def test_client_certificate_proxy_of_its_namespace_gets_config(start_pilot: Any, pki: Pki) -> None:
    pilot = await start_pilot()
    for delta in (False, True):
        response = await ads_first_response(
            pilot.secure_grpc_port, ssl=pki.client("default"), namespace="default", delta=delta
        )
        assert response.type_url == CLUSTER_TYPE and len(response.resources) > 0


async def test_proxy_claiming_another_namespace_is_refused_with_one_log_line(
    start_pilot: Any, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    pilot = await start_pilot()
    caplog.set_level(logging.WARNING, logger="pilot.security.xdsauth")
    error = await refused(port=pilot.secure_grpc_port, ssl=pki.client("default"), namespace="other")
    assert error.status is Status.PERMISSION_DENIED
    assert "spiffe://cluster.local/ns/default/sa/default" in (error.message or "")
    lines = [r.getMessage() for r in caplog.records if r.name == "pilot.security.xdsauth"]
    assert len(lines) == 1 and "Unauthorized XDS" in lines[0] and "'other'" in lines[0], lines
    assert not pilot.discovery.connections, "a refused proxy must not be registered"


async def test_metadata_namespace_and_service_account_must_match_too(start_pilot: Any, pki: Pki) -> None:
    pilot = await start_pilot()
    port, client = pilot.secure_grpc_port, pki.client("default", "reviews")
    # The node id says default, the metadata (the namespace pilot would configure it as) says other.
    error = await refused(port=port, ssl=client, namespace="default", node_namespace="other")
    assert error.status is Status.PERMISSION_DENIED
    # The metadata says default, the node id says other.
    error = await refused(port=port, ssl=client, namespace="other", node_namespace="default")
    assert error.status is Status.PERMISSION_DENIED
    error = await refused(port=port, ssl=client, namespace="default", metadata={"SERVICE_ACCOUNT": "ratings"})
    assert error.status is Status.PERMISSION_DENIED and "ratings" in (error.message or "")
    ok = await ads_first_response(port, ssl=client, namespace="default", metadata={"SERVICE_ACCOUNT": "reviews"})
    assert len(ok.resources) > 0


async def test_tls_without_credentials_is_unauthenticated(start_pilot: Any, pki: Pki) -> None:
    pilot = await start_pilot()
    error = await refused(port=pilot.secure_grpc_port, ssl=pki.client(None), namespace="default")
    assert error.status is Status.UNAUTHENTICATED and error.message == "authentication failure"
    assert pilot.security.xds.failures == 1


async def test_certificate_of_another_root_or_trust_domain_is_not_an_identity(start_pilot: Any, pki: Pki) -> None:
    pilot = await start_pilot()
    stranger = Authority("another CA")
    cert, key = stranger.workload("default").write(pki.directory, "stranger")
    context = client_context(pki.ca_file, (cert, key))
    with pytest.raises((ssl.SSLError, ConnectionError, grpclib.exceptions.StreamTerminatedError, OSError)):
        await ads_first_response(pilot.secure_grpc_port, ssl=context, namespace="default")
    foreign = client_context(pki.ca_file, pki.workload("default", trust_domain="evil.example"))
    error = await refused(port=pilot.secure_grpc_port, ssl=foreign, namespace="default")
    assert error.status is Status.UNAUTHENTICATED


async def test_jwt_on_the_tls_port(start_pilot: Any, pki: Pki) -> None:
    pilot = await start_pilot()
    port, context = pilot.secure_grpc_port, pki.client(None)
    for alg in ("RS256", "ES256"):
        token = pki.signer.token("default", alg=alg)
        assert len((await ads_first_response(port, ssl=context, token=token, namespace="default")).resources) > 0
    error = await refused(port=port, ssl=context, token=pki.signer.token("default"), namespace="other")
    assert error.status is Status.PERMISSION_DENIED
    for bad in (
        pki.signer.token("default", issuer="https://elsewhere"),
        pki.signer.token("default", audience="someone-else"),
        pki.signer.token("default", expires_in=-3600),
        pki.signer.token("default", alg="none", kid=None),
        pki.signer.token("default")[:-4] + "AAAA",  # signature altered
    ):
        error = await refused(port=port, ssl=context, token=bad, namespace="default")
        assert error.status is Status.UNAUTHENTICATED


async def test_plaintext_port_stays_unauthenticated_as_istiod(start_pilot: Any, pki: Pki) -> None:
    pilot = await start_pilot()
    # No identity, any namespace: istiod serves it while the plaintext port is on (the check is for identities).
    response = await ads_first_response(pilot.grpc_port, namespace="other")
    assert len(response.resources) > 0


async def test_plaintext_can_be_turned_off(start_pilot: Any, pki: Pki) -> None:
    pilot = await start_pilot(grpc_addr="")
    assert pilot.grpc_port == 0 and pilot.secure_grpc_port > 0
    response = await ads_first_response(pilot.secure_grpc_port, ssl=pki.client("default"), namespace="default")
    assert len(response.resources) > 0


async def test_xds_auth_plaintext_authenticates_the_plaintext_port(start_pilot: Any, pki: Pki) -> None:
    pilot = await start_pilot(env={"XDS_AUTH_PLAINTEXT": "true"})
    error = await refused(port=pilot.grpc_port, namespace="default")
    assert error.status is Status.UNAUTHENTICATED
    token = pki.signer.token("default")
    assert len((await ads_first_response(pilot.grpc_port, token=token, namespace="default")).resources) > 0
    error = await refused(port=pilot.grpc_port, token=token, namespace="other")
    assert error.status is Status.PERMISSION_DENIED


async def test_identity_check_can_be_turned_off(start_pilot: Any, pki: Pki) -> None:
    pilot = await start_pilot(env={"PILOT_ENABLE_XDS_IDENTITY_CHECK": "false"})
    response = await ads_first_response(pilot.secure_grpc_port, ssl=pki.client("default"), namespace="other")
    assert len(response.resources) > 0


async def test_unary_fetch_is_checked_too(start_pilot: Any, pki: Pki) -> None:
    import grpclib.client
    from envoy.service.discovery.v3 import discovery_pb2

    from tests.security.conftest import node

    pilot = await start_pilot()
    channel = grpclib.client.Channel("127.0.0.1", pilot.secure_grpc_port, ssl=pki.client("default"))
    method = "/envoy.service.cluster.v3.ClusterDiscoveryService/FetchClusters"

    async def fetch(namespace: str) -> Any:
        request = discovery_pb2.DiscoveryRequest(type_url=CLUSTER_TYPE)
        request.node.CopyFrom(node(namespace))
        async with channel.request(
            method,
            grpclib.const.Cardinality.UNARY_UNARY,
            discovery_pb2.DiscoveryRequest,
            discovery_pb2.DiscoveryResponse,
            timeout=5,
        ) as stream:
            await stream.send_message(request, end=True)
            return await stream.recv_message()

    try:
        assert len((await fetch("default")).resources) > 0
        with pytest.raises(grpclib.exceptions.GRPCError) as err:
            await fetch("other")
        assert err.value.status is Status.PERMISSION_DENIED
    finally:
        channel.close()

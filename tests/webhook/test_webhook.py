"""The validating admission webhook over real HTTPS: AdmissionReviews posted by an aiohttp client that trusts
the test CA, answered by a running WebhookServer."""

from __future__ import annotations

import asyncio
import ssl
import threading
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from cryptography import x509

import pilot.webhook
from pilot import cli
from pilot.webhook import WebhookCertificateError, WebhookServer
from tests.webhook.conftest import FakeClock, SecretVolume, StartWebhook
from tests.webhook.pki import CertificateAuthority, cert_pem, key_pem

VS_RESOURCE = {"group": "networking.istio.io", "version": "v1", "resource": "virtualservices"}


def virtual_service(http: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {"hosts": ["reviews"], "http": http},
        **extra,
    }


VALID_VS = virtual_service([{"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}])


def admission_review(
    obj: Any,
    *,
    operation: str = "CREATE",
    old: Any = None,
    namespace: str = "default",
    resource: dict[str, str] = VS_RESOURCE,
    api_version: str = "admission.k8s.io/v1",
) -> dict[str, Any]:
    name = obj.get("metadata", {}).get("name", "") if isinstance(obj, dict) else ""
    return {
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": resource["group"], "version": resource["version"], "kind": "VirtualService"},
            "resource": resource,
            "namespace": namespace,
            "name": name,
            "operation": operation,
            "userInfo": {"username": "kubernetes-admin"},
            "object": obj,
            "oldObject": old,
            "dryRun": False,
        },
    }


def url(server: WebhookServer, path: str = "/validate") -> str:
    return f"https://127.0.0.1:{server.port}{path}"


async def post_review(client: aiohttp.ClientSession, server: WebhookServer, review: dict[str, Any]) -> dict[str, Any]:
    async with client.post(url(server), json=review) as resp:
        assert resp.status == 200, await resp.text()
        answer = await resp.json()
    assert answer["apiVersion"] == review["apiVersion"]
    assert answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == review["request"]["uid"]
    return answer["response"]


def cli_errors(tmp_path: Path, obj: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> list[str]:
    """What `pilot validate` prints for the object written to a file, less each line's FILE[doc 0] location."""
    path = tmp_path / "object.yaml"
    path.write_text(yaml.safe_dump(obj))
    capsys.readouterr()
    assert cli.main(["validate", str(path)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1] == f"{len(lines) - 1} error(s) in 1 file(s)"
    location = f"{path}[doc 0] "
    assert all(line.startswith(location) for line in lines[:-1]), lines
    return [line.removeprefix(location) for line in lines[:-1]]


# ----- verdicts ------------------------------------------------------------------------------------------------


async def test_valid_virtual_service_is_allowed(webhook: WebhookServer, client: aiohttp.ClientSession) -> None:
    response = await post_review(client, webhook, admission_review(VALID_VS))
    assert response == {"uid": response["uid"], "allowed": True}
    assert webhook.passed == {("networking.istio.io", "v1", "virtualservices"): 1}
    assert not webhook.failed and not webhook.http_errors


@pytest.mark.parametrize(
    "http",
    [
        pytest.param([{"route": [{"destination": {"host": "reviews"}, "weight": -1}]}], id="one-error"),
        pytest.param(
            [{"route": [{"destination": {"host": "reviews"}, "weight": -1}], "mirrorPercent": 150}], id="two-errors"
        ),
    ],
)
async def test_invalid_object_is_denied_with_the_cli_messages(
    webhook: WebhookServer,
    client: aiohttp.ClientSession,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    http: list[dict[str, Any]],
) -> None:
    obj = virtual_service(http)
    expected = cli_errors(tmp_path, obj, capsys)
    response = await post_review(client, webhook, admission_review(obj))
    assert response["allowed"] is False
    if len(expected) == 1:
        assert response["status"]["message"] == f"configuration is invalid: {expected[0]}"
    else:  # istiod's multi-error list
        bullets = "".join(f"\n\t* {line}" for line in expected)
        assert (
            response["status"]["message"] == f"configuration is invalid: {len(expected)} errors occurred:{bullets}\n\n"
        )
    assert "warnings" not in response
    assert webhook.failed == {("networking.istio.io", "v1", "virtualservices", "invalid_resource"): 1}


async def test_object_without_namespace_takes_the_requests(
    webhook: WebhookServer, client: aiohttp.ClientSession
) -> None:
    obj = virtual_service([{"route": [{"destination": {"host": "reviews"}, "weight": -1}]}])
    del obj["metadata"]["namespace"]
    response = await post_review(client, webhook, admission_review(obj, namespace="prod"))
    assert response["status"]["message"].startswith("configuration is invalid: VirtualService prod/reviews: ")


async def test_unknown_field_in_spec_is_denied_naming_its_path(
    webhook: WebhookServer, client: aiohttp.ClientSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    obj = virtual_service([{"route": [{"destination": {"host": "reviews"}}], "retires": {"attempts": 3}}])
    response = await post_review(client, webhook, admission_review(obj))
    assert response["allowed"] is False
    message = 'VirtualService default/reviews: spec.http[0].retires: unknown field "retires"'
    assert response["status"]["message"] == f"configuration is invalid: {message}"
    assert cli_errors(tmp_path, obj, capsys) == [message]


async def test_unknown_top_level_field_is_denied_as_istiod(
    webhook: WebhookServer, client: aiohttp.ClientSession
) -> None:
    obj = {**VALID_VS, "specs": {"hosts": ["x"]}}
    response = await post_review(client, webhook, admission_review(obj))
    assert response["allowed"] is False
    assert response["status"]["message"] == 'unknown field "specs" on VirtualService resource default/reviews'


async def test_warnings_come_back_separately(webhook: WebhookServer, client: aiohttp.ClientSession) -> None:
    obj = virtual_service(
        [{"route": [{"destination": {"host": "reviews"}}], "mirror": {"host": "shadow"}, "mirrorPercent": 10}]
    )
    response = await post_review(client, webhook, admission_review(obj))
    assert response["allowed"] is True
    assert "status" not in response
    assert response["warnings"] == [
        'VirtualService default/reviews: spec.http[0].mirrorPercent: using deprecated setting "mirrorPercent", '
        'use "mirrorPercentage" instead'
    ]
    assert sum(webhook.passed.values()) == 1


async def test_delete_is_allowed_without_validation(webhook: WebhookServer, client: aiohttp.ClientSession) -> None:
    invalid = virtual_service([{"route": [{"destination": {"host": "reviews"}, "weight": -1}]}])
    response = await post_review(client, webhook, admission_review(None, operation="DELETE", old=invalid))
    assert response == {"uid": response["uid"], "allowed": True}
    assert webhook.failed == {("networking.istio.io", "v1", "virtualservices", "unsupported_operation"): 1}


async def test_update_validates_the_new_object_only(webhook: WebhookServer, client: aiohttp.ClientSession) -> None:
    invalid = virtual_service([{"route": [{"destination": {"host": "reviews"}, "weight": -1}]}])
    fixed = await post_review(client, webhook, admission_review(VALID_VS, operation="UPDATE", old=invalid))
    assert fixed["allowed"] is True
    broken = await post_review(client, webhook, admission_review(invalid, operation="UPDATE", old=VALID_VS))
    assert broken["allowed"] is False


@pytest.mark.parametrize(
    ("obj", "resource"),
    [
        pytest.param(
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": "x"}},
            {"group": "apps", "version": "v1", "resource": "deployments"},
            id="apps-deployment",
        ),
        pytest.param(
            {"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter", "metadata": {"name": "f"}},
            {"group": "networking.istio.io", "version": "v1alpha3", "resource": "envoyfilters"},
            id="istio-envoyfilter",
        ),
    ],
)
async def test_kind_pilot_does_not_read_is_allowed(
    webhook: WebhookServer, client: aiohttp.ClientSession, obj: dict[str, Any], resource: dict[str, str]
) -> None:
    response = await post_review(client, webhook, admission_review(obj, resource=resource))
    assert response == {"uid": response["uid"], "allowed": True}
    assert webhook.failed == {(resource["group"], resource["version"], resource["resource"], "unknown_type"): 1}


async def test_v1beta1_review_is_answered_in_kind(webhook: WebhookServer, client: aiohttp.ClientSession) -> None:
    review = admission_review(VALID_VS, api_version="admission.k8s.io/v1beta1")
    assert (await post_review(client, webhook, review))["allowed"] is True


async def test_object_that_is_not_a_mapping_is_denied(webhook: WebhookServer, client: aiohttp.ClientSession) -> None:
    response = await post_review(client, webhook, admission_review(["not", "an", "object"]))
    assert response["allowed"] is False
    assert response["status"]["message"] == (
        "cannot decode configuration: request.object: expected a mapping, got list"
    )


async def test_validation_bug_is_a_500_without_a_traceback(
    webhook: WebhookServer, client: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(request: dict[str, Any]) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(pilot.webhook, "review_verdict", broken)
    async with client.post(url(webhook), json=admission_review(VALID_VS)) as resp:
        text = await resp.text()
    assert resp.status == 500
    assert text == "internal error while validating; see pilot's log\n"
    assert webhook.http_errors == {500: 1}


async def test_reviews_beyond_the_pending_bound_are_refused_while_the_loop_keeps_serving(
    start_webhook: StartWebhook, client: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await start_webhook(max_pending_reviews=1)
    entered, release = threading.Event(), threading.Event()
    real_verdict = pilot.webhook.review_verdict

    def slow(request: dict[str, Any]) -> pilot.webhook.Verdict:
        entered.set()
        assert release.wait(5)
        return real_verdict(request)

    monkeypatch.setattr(pilot.webhook, "review_verdict", slow)
    first = asyncio.create_task(post_review(client, server, admission_review(VALID_VS)))
    try:
        assert await asyncio.to_thread(entered.wait, 5)
        async with client.post(url(server), json=admission_review(VALID_VS)) as resp:
            assert resp.status == 503  # answered while the first review is still being validated
    finally:
        release.set()
    assert (await first)["allowed"] is True
    assert server.http_errors == {503: 1}


# ----- HTTP errors ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(
            b'{"apiVersion": "admission.k8s.io/v1", "kind": ', "invalid AdmissionReview: invalid JSON: ", id="truncated"
        ),
        pytest.param(
            b"[1, 2]", "invalid AdmissionReview: expected an AdmissionReview object, got a JSON list", id="list"
        ),
        pytest.param(
            b'{"apiVersion": "v1", "kind": "Pod"}',
            "invalid AdmissionReview: expected kind AdmissionReview with apiVersion admission.k8s.io/v1 or "
            "admission.k8s.io/v1beta1, got kind 'Pod' apiVersion 'v1'",
            id="not-a-review",
        ),
        pytest.param(
            b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"operation": "CREATE"}}',
            "invalid AdmissionReview: request.uid: required non-empty string",
            id="no-uid",
        ),
        pytest.param(b"", "no body found", id="empty"),
    ],
)
async def test_malformed_body_is_a_400_with_a_clear_message(
    webhook: WebhookServer, client: aiohttp.ClientSession, body: bytes, message: str
) -> None:
    async with client.post(url(webhook), data=body, headers={"Content-Type": "application/json"}) as resp:
        text = await resp.text()
    assert resp.status == 400
    assert text.startswith(message), text
    assert "Traceback" not in text
    assert webhook.http_errors == {400: 1}


async def test_wrong_path_method_and_content_type(webhook: WebhookServer, client: aiohttp.ClientSession) -> None:
    async with client.post(url(webhook, "/inject"), json={}) as resp:
        assert resp.status == 404
    async with client.get(url(webhook)) as resp:
        assert resp.status == 405
        assert resp.headers["Allow"] == "POST"
    async with client.post(url(webhook), data=b"{}", headers={"Content-Type": "text/plain"}) as resp:
        assert resp.status == 415
        assert "application/json" in await resp.text()
    assert webhook.http_errors == {404: 1, 405: 1, 415: 1}


async def raw_request(port: int, tls: ssl.SSLContext, head: bytes, body: bytes = b"") -> tuple[bytes, bytes]:
    """One HTTP/1.1 request written by hand over TLS: the response's status line and headers, and its body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
    try:
        writer.write(head + body)
        await writer.drain()
        async with asyncio.timeout(5):
            headers = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in headers.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            return headers, await reader.readexactly(length)
    finally:
        writer.close()
        async with asyncio.timeout(5):
            await writer.wait_closed()


async def test_declared_oversized_body_is_a_413_before_it_is_read(
    webhook: WebhookServer, client_tls: ssl.SSLContext
) -> None:
    head = (
        b"POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % (webhook.max_review_bytes + 1)
    )
    headers, body = await raw_request(webhook.port, client_tls, head)  # the body is never sent
    assert headers.startswith(b"HTTP/1.1 413 "), headers
    assert body == b"AdmissionReview larger than 6291456 bytes\n"
    assert webhook.http_errors == {413: 1}


async def test_chunked_body_over_the_limit_is_a_413(start_webhook: StartWebhook, client_tls: ssl.SSLContext) -> None:
    server = await start_webhook(max_review_bytes=32 * 1024)
    chunk = b"x" * 8192
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(5)) + b"0\r\n\r\n"
    head = (
        b"POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    headers, text = await raw_request(server.port, client_tls, head, body)
    assert headers.startswith(b"HTTP/1.1 413 "), headers
    assert text == b"AdmissionReview larger than 32768 bytes\n"
    assert server.http_errors == {413: 1}


async def test_client_that_never_finishes_its_headers_is_disconnected(
    start_webhook: StartWebhook, client_tls: ssl.SSLContext, client: aiohttp.ClientSession
) -> None:
    server = await start_webhook(header_read_timeout=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=client_tls)
    try:
        writer.write(b"POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line: headers never end
        async with asyncio.timeout(5):
            assert await reader.read() == b""  # closed by the server, without a response
    finally:
        writer.close()
    assert (await post_review(client, server, admission_review(VALID_VS)))["allowed"] is True


# ----- certificates --------------------------------------------------------------------------------------------


async def peer_serial(port: int, tls: ssl.SSLContext, server_name: str | None = None) -> int:
    """The serial number of the certificate a new TLS connection is served (with SNI when server_name is given:
    the API server sends the Service's name; an address sends none)."""
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls, server_hostname=server_name)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        async with asyncio.timeout(5):
            await writer.wait_closed()
    return x509.load_der_x509_certificate(der).serial_number


async def test_rotated_certificate_is_served_to_new_connections(
    webhook: WebhookServer,
    client_tls: ssl.SSLContext,
    client: aiohttp.ClientSession,
    secret: SecretVolume,
    ca: CertificateAuthority,
    clock: FakeClock,
) -> None:
    first = x509.load_pem_x509_certificate(webhook_cert_pem(secret)).serial_number
    assert await peer_serial(webhook.port, client_tls) == first

    rotated = ca.issue_server()
    secret.publish_pair(rotated)  # the kubelet's atomic ..data swap
    assert await peer_serial(webhook.port, client_tls) == first  # checked at most once per interval
    clock.advance(webhook.reload_interval)
    assert await peer_serial(webhook.port, client_tls) == rotated.serial
    assert await peer_serial(webhook.port, client_tls, "localhost") == rotated.serial
    assert webhook.certificates is not None and webhook.certificates.reloads == 1
    assert (await post_review(client, webhook, admission_review(VALID_VS)))["allowed"] is True


async def test_half_written_rotation_keeps_the_previous_certificate(
    webhook: WebhookServer, client_tls: ssl.SSLContext, secret: SecretVolume, ca: CertificateAuthority, clock: FakeClock
) -> None:
    first = x509.load_pem_x509_certificate(webhook_cert_pem(secret)).serial_number
    new, other = ca.issue_server(), ca.issue_server()
    secret.publish(cert_pem(new.cert), key_pem(other.key))  # certificate and key do not match
    clock.advance(webhook.reload_interval)
    assert await peer_serial(webhook.port, client_tls) == first
    secret.publish_pair(new)
    clock.advance(webhook.reload_interval)
    assert await peer_serial(webhook.port, client_tls) == new.serial


async def test_stop_closes_idle_keep_alive_connections(
    start_webhook: StartWebhook, client: aiohttp.ClientSession
) -> None:
    server = await start_webhook()
    assert (await post_review(client, server, admission_review(VALID_VS)))["allowed"] is True  # connection kept
    async with asyncio.timeout(3):
        await server.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        await post_review(client, server, admission_review(VALID_VS))


def webhook_cert_pem(secret: SecretVolume) -> bytes:
    return secret.cert_file.read_bytes()


async def test_missing_certificate_fails_start_naming_the_file(tmp_path: Path) -> None:
    server = WebhookServer("127.0.0.1:0", tmp_path / "tls.crt", tmp_path / "tls.key")
    with pytest.raises(WebhookCertificateError, match=r"tls\.crt"):
        await server.start()


async def test_counters_as_prometheus_lines(webhook: WebhookServer, client: aiohttp.ClientSession) -> None:
    await post_review(client, webhook, admission_review(VALID_VS))
    await post_review(client, webhook, admission_review(virtual_service([])))
    async with client.post(url(webhook), data=b"{", headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 400
    assert webhook.metric_lines() == [
        'galley_validation_passed{group="networking.istio.io",version="v1",resource="virtualservices"} 1',
        'galley_validation_failed{group="networking.istio.io",version="v1",resource="virtualservices",'
        'reason="invalid_resource"} 1',
        'galley_validation_http_error{status="400"} 1',
    ]


async def test_counter_labels_from_requests_are_escaped_and_bounded(
    webhook: WebhookServer, client: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pilot.webhook, "MAX_RESOURCE_LABELS", 2)
    for resource in ('virtual"services', "a", "b"):
        review = admission_review(VALID_VS, resource={**VS_RESOURCE, "resource": resource})
        await post_review(client, webhook, review)
    assert webhook.metric_lines() == [
        'galley_validation_passed{group="networking.istio.io",version="v1",resource="a"} 1',
        'galley_validation_passed{group="networking.istio.io",version="v1",resource="virtual\\"services"} 1',
        'galley_validation_passed{group="other",version="other",resource="other"} 1',
    ]


PA_RESOURCE = {"group": "security.istio.io", "version": "v1", "resource": "peerauthentications"}


async def test_peer_authentication_is_validated_like_the_networking_kinds(
    webhook: WebhookServer, client: aiohttp.ClientSession
) -> None:
    def peer_authentication(spec: dict[str, Any]) -> dict[str, Any]:
        metadata = {"name": "default", "namespace": "default"}
        return {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication", "metadata": metadata, "spec": spec}

    good = peer_authentication({"mtls": {"mode": "STRICT"}})
    assert (await post_review(client, webhook, admission_review(good, resource=PA_RESOURCE)))["allowed"] is True
    # A namespace-wide policy with port-level settings: istiod's message, by field path.
    bad = peer_authentication({"mtls": {"mode": "STRICT"}, "portLevelMtls": {"8080": {"mode": "DISABLE"}}})
    denied = await post_review(client, webhook, admission_review(bad, resource=PA_RESOURCE))
    assert denied["allowed"] is False
    assert denied["status"]["message"] == (
        "configuration is invalid: PeerAuthentication default/default: spec.portLevelMtls: "
        "mesh/namespace peer authentication cannot have port level mTLS"
    )
    odd = {**good, "specs": {}}
    assert (await post_review(client, webhook, admission_review(odd, resource=PA_RESOURCE)))["status"]["message"] == (
        'unknown field "specs" on PeerAuthentication resource default/default'
    )
    assert webhook.passed == {("security.istio.io", "v1", "peerauthentications"): 1}

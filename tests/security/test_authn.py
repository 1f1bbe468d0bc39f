"""Identities, JWT verification, the authenticators' rules, redaction, settings: the parts without a server."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pilot.ratelog import LogLimiter
from pilot.security import jwt, redact
from pilot.security.authn import (
    AuthenticationError,
    ClientCertAuthenticator,
    Credentials,
    Identity,
    JwtAuthenticator,
    KubeJwtAuthenticator,
)
from pilot.security.options import SecurityOptions
from pilot.security.tls import GRPC_ALPN, ReloadingContext, TlsFiles
from tests.security.conftest import Pki
from tests.security.pki import ISSUER, b64


def verify(pki: Pki, token: str, **kwargs: Any) -> dict[str, Any]:
    jwks = jwt.Jwks.from_bytes(pki.jwks_file.read_bytes())
    return jwt.verify(token, jwks, issuer=kwargs.pop("issuer", ISSUER), audiences=("istio-ca",), **kwargs)


def test_spiffe_identity_parse() -> None:
    identity = Identity.parse("spiffe://cluster.local/ns/default/sa/reviews")
    assert (identity.trust_domain, identity.namespace, identity.service_account) == (
        "cluster.local",
        "default",
        "reviews",
    )
    assert str(identity) == "spiffe://cluster.local/ns/default/sa/reviews"
    for bad in (
        "https://x/ns/a/sa/b",
        "spiffe://td/ns/a",
        "spiffe://td/ns//sa/b",
        "spiffe://td/ns/a/sa/b/c",
        "spiffe://td/x/a/sa/b",
    ):
        with pytest.raises(ValueError):
            Identity.parse(bad)


async def test_client_certificate_identities() -> None:
    authn = ClientCertAuthenticator("cluster.local")
    cert = {
        "subjectAltName": (
            ("DNS", "x"),
            ("URI", "spiffe://other.td/ns/a/sa/b"),
            ("URI", "spiffe://cluster.local/ns/a/sa/b"),
        )
    }
    caller = await authn.authenticate(Credentials(peer_cert=cert))
    assert [str(i) for i in caller.identities] == ["spiffe://cluster.local/ns/a/sa/b"] and caller.namespace == "a"
    for bad in (None, {}, {"subjectAltName": (("URI", "spiffe://other.td/ns/a/sa/b"),)}):
        with pytest.raises(AuthenticationError):
            await authn.authenticate(Credentials(peer_cert=bad))


def test_jwt_rs256_es256_and_audience_lists(pki: Pki) -> None:
    assert verify(pki, pki.signer.token("ns1", "sa1"))["sub"] == "system:serviceaccount:ns1:sa1"
    assert verify(pki, pki.signer.token("ns1", alg="ES256"))["sub"] == "system:serviceaccount:ns1:default"
    assert verify(pki, pki.signer.token("ns1", audience=["api", "istio-ca"]))
    assert verify(pki, pki.signer.token("ns1", kid=None))  # no kid: every key of the algorithm is tried


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda s: s.token("n", kid="unknown"), "no RS256 key"),
        (lambda s: s.token("n", alg="none", kid=None), "algorithm"),
        (lambda s: s.token("n", claims={"exp": None}), "no exp"),
        (lambda s: s.token("n", claims={"nbf": 4_000_000_000}), "not valid yet"),
        (lambda s: s.token("n", expires_in=-120), "expired"),
        (lambda s: s.token("n", issuer="https://evil"), "issuer"),
        (lambda s: s.token("n", audience="api"), "audiences"),
        (lambda s: s.token("n") + "x" * 20_000, "longer than"),
        (lambda s: "a.b", "compact"),
        (lambda s: "e30.e30.e30", "algorithm"),
        (lambda s: s.token("n", claims={"exp": "tomorrow"}), "not a number"),
    ],
)
def test_jwt_refusals(pki: Pki, make: Any, reason: str) -> None:
    with pytest.raises(jwt.JwtError, match=reason):
        verify(pki, make(pki.signer))


def test_jwt_hmac_with_the_public_key_as_secret_is_refused(pki: Pki) -> None:
    """The classic algorithm confusion: HS256 'signed' with the RSA public key bytes."""
    public = pki.signer.rsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64(json.dumps({"alg": "HS256", "kid": "rsa-1"}).encode())
    payload = b64(
        json.dumps({"iss": ISSUER, "aud": "istio-ca", "sub": "system:serviceaccount:a:b", "exp": 4e9}).encode()
    )
    mac = hmac.HMAC(public, hashes.SHA256())
    mac.update(f"{header}.{payload}".encode())
    with pytest.raises(jwt.JwtError, match="algorithm"):
        verify(pki, f"{header}.{payload}.{b64(mac.finalize())}")


def test_jwks_rules() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key().public_numbers()
    weak = {"keys": [{"kty": "RSA", "n": b64(small.n.to_bytes(128, "big")), "e": "AQAB"}]}
    with pytest.raises(jwt.JwksError, match="bits"):
        jwt.Jwks.from_bytes(json.dumps(weak).encode())
    for bad in (b"not json", b"[]", b'{"keys": []}', b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}'):
        with pytest.raises(jwt.JwksError):
            jwt.Jwks.from_bytes(bad)


async def test_jwt_authenticator_needs_a_service_account_subject(pki: Pki) -> None:
    authn = JwtAuthenticator(jwt.Jwks.from_bytes(pki.jwks_file.read_bytes()), ISSUER, ("istio-ca",))
    caller = await authn.authenticate(Credentials(authorization=f"Bearer {pki.signer.token('ns1', 'sa1')}"))
    assert str(caller.identities[0]) == "spiffe://cluster.local/ns/ns1/sa/sa1"
    for header in ("", "Basic abc", f"Bearer {pki.signer.token('x', claims={'sub': 'alice'})}"):
        with pytest.raises(AuthenticationError):
            await authn.authenticate(Credentials(authorization=header))


def test_token_review_answers() -> None:
    authn = KubeJwtAuthenticator(lambda: None)
    ok = {
        "status": {
            "authenticated": True,
            "user": {"username": "system:serviceaccount:ns:sa", "groups": ["system:serviceaccounts"]},
        }
    }
    assert str(authn._caller_of(ok).identities[0]) == "spiffe://cluster.local/ns/ns/sa/sa"
    for bad in (
        {"status": {"authenticated": False}},
        {"status": {"error": "boom", "authenticated": True}},
        {"status": {"authenticated": True, "user": {"username": "system:serviceaccount:ns:sa", "groups": []}}},
        {"status": {"authenticated": True, "user": {"username": "jane", "groups": ["system:serviceaccounts"]}}},
        {},
    ):
        with pytest.raises(AuthenticationError):
            authn._caller_of(bad)


async def test_token_review_refuses_another_cluster_and_a_missing_api() -> None:
    authn = KubeJwtAuthenticator(lambda: None)
    with pytest.raises(AuthenticationError, match="cluster"):
        await authn.authenticate(Credentials(authorization="Bearer t", cluster_id="remote-1"))
    with pytest.raises(AuthenticationError, match="not connected"):
        await authn.authenticate(Credentials(authorization="Bearer t"))


def test_redaction() -> None:
    value = {
        "kind": "Secret",
        "data": {"tls.key": "LS0t"},
        "stringData": {"password": "x"},
        "spec": {"containers": [{"env": [{"name": "A", "value": "secret"}, {"name": "B", "valueFrom": {}}]}]},
        "dynamicActiveSecrets": [{"secret": {"tlsCertificate": {"privateKey": {"inlineBytes": "QUJD"}}}}],
    }
    body = json.dumps(value).replace(" ", "").encode()
    assert redact.may_need(body) and not redact.may_need(b'{"kind":"VirtualService","spec":{}}')
    redact.redact(value)
    assert value["data"] == {"tls.key": "[redacted]"} and value["stringData"] == {"password": "[redacted]"}
    assert value["spec"]["containers"][0]["env"] == [
        {"name": "A", "value": "[redacted]"},
        {"name": "B", "valueFrom": {}},
    ]
    assert value["dynamicActiveSecrets"][0]["secret"]["tlsCertificate"]["privateKey"] == "[redacted]"
    deep: Any = {"env": [{"value": "x"}]}
    for _ in range(5000):  # no recursion: any depth is fine
        deep = {"a": [deep]}
    redact.redact(deep)


def test_log_limiter_bounds_lines_and_counts_the_rest() -> None:
    now = [0.0]
    limiter = LogLimiter(interval=10, burst=2, max_keys=2, clock=lambda: now[0])
    assert [limiter.allow("a")[0] for _ in range(5)] == [True, True, False, False, False]
    now[0] = 11
    assert limiter.allow("a") == (True, 3)
    for key in ("b", "c", "d"):
        limiter.allow(key)
    assert len(limiter._windows) == 2


def test_environment_settings() -> None:
    options = SecurityOptions().with_env(
        {"PILOT_ENABLE_XDS_IDENTITY_CHECK": "0", "XDS_AUTH_PLAINTEXT": "true", "TOKEN_AUDIENCES": "a,b"}
    )
    assert not options.identity_check and options.authenticate_plaintext and options.token_audiences == ("a", "b")
    with pytest.raises(ValueError, match="PILOT_ENABLE_XDS_IDENTITY_CHECK"):
        SecurityOptions().with_env({"PILOT_ENABLE_XDS_IDENTITY_CHECK": "maybe"})


async def test_serving_certificate_rotation_reaches_new_connections(pki: Pki, tmp_path: Path) -> None:
    cert, key = pki.authority.server().write(tmp_path, "serving")
    now = [0.0]
    reloading = ReloadingContext(TlsFiles(cert, key, pki.ca_file), GRPC_ALPN, interval=1.0, clock=lambda: now[0])
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=reloading.context)
    port = server.sockets[0].getsockname()[1]

    async def served_serial() -> int:
        _, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ssl.create_default_context(cafile=str(pki.ca_file))
        )
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        return x509.load_der_x509_certificate(der).serial_number

    try:
        first = await served_serial()
        rotated = pki.authority.server()
        rotated.write(tmp_path, "serving")
        assert await served_serial() == first  # within the check interval: not looked at yet
        now[0] = 2.0
        assert await served_serial() == rotated.cert.serial_number
        assert reloading.reloads == 1
        key.write_text("half-written")  # a rotation caught mid-write keeps the pair in service
        now[0] = 4.0
        assert await served_serial() == rotated.cert.serial_number
    finally:
        server.close()
        await server.wait_closed()

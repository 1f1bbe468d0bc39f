"""Test PKI and tokens made in the test: a CA, pilot's serving certificate, SPIFFE client certificates, and
JWTs (RS256, ES256) with the JWKS that verifies them. EC P-256 keys (a millisecond each); one RSA key."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ISSUER = "https://kubernetes.default.svc.cluster.local"


def _validity(builder: x509.CertificateBuilder, days: float = 1) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return builder.not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(
        now + datetime.timedelta(days=days)
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass
class Pair:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        cert_file, key_file = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return cert_file, key_file


class Authority:
    def __init__(self, common_name: str = "pilot security test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = _name(common_name)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
        )
        self.cert = _validity(builder, days=2).sign(self.key, hashes.SHA256())

    def write(self, path: Path) -> Path:
        path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        return path

    def _issue(self, names: list[x509.GeneralName], usage: x509.ObjectIdentifier, common_name: str) -> Pair:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name) if common_name else x509.Name([]))  # Istio's workload certs: empty
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        return Pair(_validity(builder).sign(self.key, hashes.SHA256()), key)

    def server(self) -> Pair:
        names: list[x509.GeneralName] = [
            x509.DNSName("localhost"),
            x509.DNSName("istiod.istio-system.svc"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
        return self._issue(names, ExtendedKeyUsageOID.SERVER_AUTH, "pilot")

    def workload(self, namespace: str, account: str = "default", trust_domain: str = "cluster.local") -> Pair:
        uri = f"spiffe://{trust_domain}/ns/{namespace}/sa/{account}"
        return self._issue([x509.UniformResourceIdentifier(uri)], ExtendedKeyUsageOID.CLIENT_AUTH, "")


def client_context(ca_file: Path, cert_key: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    """What a proxy uses: trusts pilot's root, offers h2, optionally presents a client certificate."""
    context = ssl.create_default_context(cafile=str(ca_file))
    context.set_alpn_protocols(["h2"])
    if cert_key is not None:
        context.load_cert_chain(str(cert_key[0]), str(cert_key[1]))
    return context


# ----- JWTs ---------------------------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int_b64(value: int) -> str:
    return b64(value.to_bytes((value.bit_length() + 7) // 8 or 1, "big"))


class Signer:
    """Signs JWTs with one RSA and one EC key; ``jwks()`` verifies both."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())

    def jwks(self) -> dict[str, Any]:
        rsa_numbers = self.rsa.public_key().public_numbers()
        ec_numbers = self.ec.public_key().public_numbers()
        return {
            "keys": [
                {
                    "kty": "RSA",
                    "kid": "rsa-1",
                    "use": "sig",
                    "alg": "RS256",
                    "n": _int_b64(rsa_numbers.n),
                    "e": _int_b64(rsa_numbers.e),
                },
                {
                    "kty": "EC",
                    "kid": "ec-1",
                    "crv": "P-256",
                    "x": b64(ec_numbers.x.to_bytes(32, "big")),
                    "y": b64(ec_numbers.y.to_bytes(32, "big")),
                },
            ]
        }

    def write_jwks(self, path: Path) -> Path:
        path.write_text(json.dumps(self.jwks()))
        return path

    def token(
        self,
        namespace: str,
        account: str = "default",
        *,
        alg: str = "RS256",
        issuer: str = ISSUER,
        audience: str | list[str] = "istio-ca",
        expires_in: float = 3600,
        kid: str | None = "default",
        claims: dict[str, Any] | None = None,
    ) -> str:
        header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
        if kid == "default":
            header["kid"] = "rsa-1" if alg == "RS256" else "ec-1"
        elif kid is not None:
            header["kid"] = kid
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": issuer,
            "aud": audience,
            "sub": f"system:serviceaccount:{namespace}:{account}",
            "iat": now,
            "exp": now + expires_in,
        }
        payload.update(claims or {})
        signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}".encode()
        if alg == "RS256":
            signature = self.rsa.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        elif alg == "ES256":
            r, s = decode_dss_signature(self.ec.sign(signing_input, ec.ECDSA(hashes.SHA256())))
            signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        else:
            signature = b""
        return f"{signing_input.decode()}.{b64(signature)}"

"""Kubernetes Secrets as the store holds them: decoded key material that never prints itself.

A Secret (``v1 Secret``, from a config file or the API server) becomes a ``SecretData``: its ``type`` and its
``data`` decoded from base64 (``stringData`` entries, which files may use, override ``data`` as the API server
does on write). Nothing here ever puts the material into a message: ``repr``, ``to_dict`` (what debug endpoints
serialise) and every problem text name keys and sizes only, and the change fingerprint is a digest keyed with a
per-process random key, so even it says nothing about the material outside this process.

TLS material is read the way istiod's credentials controller reads it (pilot/pkg/credentials/kube/secrets.go):

* a certificate and key: ``cert`` + ``key`` (istiod's generic Secret), else ``tls.crt`` + ``tls.key``;
* a CA bundle: ``cacert``, else ``ca.crt``.

``check_pem`` finds PEM problems (no certificate, an unparsable one, no private key) for the loader and for the
SDS generator; certificates are parsed with ``cryptography``.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pilot.model.config import yaml_type_name

TLS_SECRET_TYPE = "kubernetes.io/tls"
OPAQUE_SECRET_TYPE = "Opaque"

# Key names, as istiod's credentials controller reads them.
GENERIC_CERT, GENERIC_KEY, GENERIC_CA = "cert", "key", "cacert"
TLS_CERT, TLS_KEY, TLS_CA = "tls.crt", "tls.key", "ca.crt"
TLS_KEYS = (GENERIC_CERT, GENERIC_KEY, GENERIC_CA, TLS_CERT, TLS_KEY, TLS_CA)
CERT_KEYS = (GENERIC_CERT, TLS_CERT, GENERIC_CA, TLS_CA)  # hold certificates
PRIVATE_KEY_KEYS = (GENERIC_KEY, TLS_KEY)

_KEY_NAME = re.compile(r"^[-._a-zA-Z0-9]+$")  # Kubernetes' Secret key names
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
# Keyed digests: a fingerprint is comparable inside this process only.
_FINGERPRINT_KEY = os.urandom(32)


class SecretData:
    """A Secret's type and decoded data. Immutable; prints as key names and sizes only."""

    __slots__ = ("_data", "fingerprint", "type")

    def __init__(self, secret_type: str, data: Mapping[str, bytes]) -> None:
        self.type = secret_type
        self._data: dict[str, bytes] = dict(sorted(data.items()))
        digest = hashlib.blake2b(key=_FINGERPRINT_KEY, digest_size=8)
        digest.update(secret_type.encode())
        for key, value in self._data.items():
            digest.update(b"\0" + key.encode() + b"\0" + len(value).to_bytes(8, "big") + value)
        self.fingerprint = int.from_bytes(digest.digest(), "big")  # changes with the content

    def keys(self) -> list[str]:
        return list(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def value(self, key: str) -> bytes:
        """The material under ``key`` (b"" when absent). Callers must never log or echo it."""
        return self._data.get(key, b"")

    def sizes(self) -> dict[str, int]:
        return {key: len(value) for key, value in self._data.items()}

    def to_dict(self) -> dict[str, Any]:
        """The redacted view debug endpoints show: type, and per key only its size."""
        return {"type": self.type, "data": {key: f"<redacted: {size} bytes>" for key, size in self.sizes().items()}}

    def __repr__(self) -> str:
        sizes = ", ".join(f"{key}: {size} bytes" for key, size in self.sizes().items())
        return f"SecretData(type={self.type!r}, data={{{sizes}}} redacted)"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("SecretData is not serialisable")


def parse_secret(doc: Mapping[str, Any], problems: list[str]) -> SecretData | None:
    """A Secret object (parsed YAML or API JSON) as SecretData; problems name fields, never values."""
    secret_type = doc.get("type", OPAQUE_SECRET_TYPE)
    if secret_type is None:
        secret_type = OPAQUE_SECRET_TYPE
    if not isinstance(secret_type, str):
        problems.append(f"type: expected a string, got {yaml_type_name(secret_type)}")
        return None
    data: dict[str, bytes] = {}
    raw = doc.get("data")
    if raw is not None and not isinstance(raw, Mapping):
        problems.append(f"data: expected a mapping, got {yaml_type_name(raw)}")
    for key, value in _items(raw):
        if not isinstance(key, str) or not _KEY_NAME.match(key):
            problems.append("data: key names must consist of alphanumerics, '-', '_' or '.'")
            continue
        if value is None:
            data[key] = b""
            continue
        if not isinstance(value, str):
            problems.append(f"data.{key}: expected a base64 string, got {yaml_type_name(value)}")
            continue
        try:
            data[key] = base64.b64decode("".join(value.split()), validate=True)
        except (binascii.Error, ValueError):
            problems.append(f"data.{key}: not valid base64")
    string_data = doc.get("stringData")
    if string_data is not None and not isinstance(string_data, Mapping):
        problems.append(f"stringData: expected a mapping, got {yaml_type_name(string_data)}")
    for key, value in _items(string_data):
        if not isinstance(key, str) or not _KEY_NAME.match(key):
            problems.append("stringData: key names must consist of alphanumerics, '-', '_' or '.'")
            continue
        if not isinstance(value, str):
            problems.append(f"stringData.{key}: expected a string, got {yaml_type_name(value)}")
            continue
        data[key] = value.encode()
    if problems:
        return None
    secret = SecretData(secret_type, data)
    if secret_type == TLS_SECRET_TYPE:
        for key in (TLS_CERT, TLS_KEY):
            if key not in secret:
                problems.append(f"data.{key}: required for type {TLS_SECRET_TYPE}")
    if uses_tls_keys(secret):
        problems.extend(check_pem(secret))
    return None if problems else secret


def _items(value: Any) -> Iterator[tuple[Any, Any]]:
    if isinstance(value, Mapping):
        yield from value.items()


def uses_tls_keys(secret: SecretData) -> bool:
    """Whether a Secret holds TLS material as istiod reads it (so its PEM is checked on load): any Secret of
    type kubernetes.io/tls, and others with a certificate and key pair or a CA bundle under istiod's keys."""
    if secret.type == TLS_SECRET_TYPE:
        return True
    pairs = ((GENERIC_CERT, GENERIC_KEY), (TLS_CERT, TLS_KEY))
    return any(cert in secret and key in secret for cert, key in pairs) or any(
        ca in secret for ca in (GENERIC_CA, TLS_CA)
    )


def check_pem(secret: SecretData) -> list[str]:
    """PEM problems of the TLS keys a Secret has (empty values are left to the reader, as istiod does)."""
    out: list[str] = []
    for key in CERT_KEYS:
        value = secret.value(key)
        if value:
            problem = certificate_problem(value)
            if problem:
                out.append(f"data.{key}: {problem}")
    for key in PRIVATE_KEY_KEYS:
        value = secret.value(key)
        if value:
            problem = private_key_problem(value)
            if problem:
                out.append(f"data.{key}: {problem}")
    return out


def certificate_problem(pem: bytes) -> str | None:
    """Why ``pem`` is not a PEM certificate bundle, or None."""
    blocks = [m.group(1).decode() for m in _PEM_BLOCK.finditer(pem)]
    if not blocks:
        return "no PEM data found"
    if "CERTIFICATE" not in blocks:
        return "no PEM certificate found"
    try:
        x509.load_pem_x509_certificates(pem)
    except ValueError:
        return "a PEM certificate cannot be parsed"
    return None


def private_key_problem(pem: bytes) -> str | None:
    """Why ``pem`` is not a PEM private key, or None."""
    if not any("PRIVATE KEY" in m.group(1).decode() for m in _PEM_BLOCK.finditer(pem)):
        return "no PEM private key found"
    try:
        serialization.load_pem_private_key(pem, password=None, unsafe_skip_rsa_key_validation=True)
    except (ValueError, TypeError):
        return "the PEM private key cannot be parsed (or is encrypted)"
    except Exception:  # unsupported algorithms raise cryptography's own errors
        return "the PEM private key cannot be parsed"
    return None


def validity_problem(pem: bytes, now: datetime.datetime | None = None) -> str | None:
    """istiod's ValidateCertificate: a certificate of the chain expired or not yet valid (istiod still serves
    it, and only reports it)."""
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError:
        return "a PEM certificate cannot be parsed"
    moment = now or datetime.datetime.now(datetime.UTC)
    for cert in certificates:
        if moment > cert.not_valid_after_utc or moment < cert.not_valid_before_utc:
            return "certificate is expired or not yet valid"
    return None


# ----- reading TLS material (istiod's ExtractCertInfo / ExtractRoot) -----


@dataclass(frozen=True, repr=False)
class CertInfo:
    """A certificate chain and key, or (``key`` empty) a CA bundle, read from a Secret."""

    cert: bytes
    key: bytes = b""
    crl: bytes = b""
    staple: bytes = b""  # an OCSP staple (tls.ocsp-staple)

    def __repr__(self) -> str:
        return f"CertInfo(cert: {len(self.cert)} bytes, key: {len(self.key)} bytes, crl: {len(self.crl)} bytes)"


class MaterialError(ValueError):
    """A Secret lacks what it is used for; the message names keys only."""


def extract_cert_info(secret: SecretData) -> CertInfo:
    """Certificate chain and key: ``cert``/``key`` first, else ``tls.crt``/``tls.key``."""
    if secret.value(GENERIC_CERT) and secret.value(GENERIC_KEY):
        return CertInfo(secret.value(GENERIC_CERT), secret.value(GENERIC_KEY), secret.value("crl"))
    if secret.value(TLS_CERT) and secret.value(TLS_KEY):
        return CertInfo(
            secret.value(TLS_CERT), secret.value(TLS_KEY), secret.value("ca.crl"), secret.value("tls.ocsp-staple")
        )
    for cert, key in ((GENERIC_CERT, GENERIC_KEY), (TLS_CERT, TLS_KEY)):
        if cert in secret and key in secret:
            raise MaterialError(f'found keys "{cert}" and "{key}", but they were empty')
    raise MaterialError(
        f"found secret, but didn't have expected keys ({GENERIC_CERT} and {GENERIC_KEY}) or ({TLS_CERT} and "
        f"{TLS_KEY}); found: {_truncated_keys(secret)}"
    )


def extract_root(secret: SecretData) -> CertInfo:
    """A CA bundle: ``cacert`` first, else ``ca.crt``."""
    if secret.value(GENERIC_CA):
        return CertInfo(secret.value(GENERIC_CA), crl=secret.value("crl"))
    if secret.value(TLS_CA):
        return CertInfo(secret.value(TLS_CA), crl=secret.value("ca.crl"))
    for key in (GENERIC_CA, TLS_CA):
        if key in secret:
            raise MaterialError(f'found key "{key}", but it was empty')
    raise MaterialError(
        f"found secret, but didn't have expected keys {GENERIC_CA} or {TLS_CA}; found: {_truncated_keys(secret)}"
    )


def _truncated_keys(secret: SecretData) -> str:
    keys = secret.keys()
    if len(keys) < 3:
        return ", ".join(keys)
    return f"{', '.join(keys[:3])}, and {len(keys) - 3} more..."

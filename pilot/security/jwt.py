"""Verifying JSON Web Tokens (JWS compact form) against a local JWKS, with ``cryptography``.

Only what a service-account token needs: RS256 (RSA PKCS#1 v1.5, SHA-256) and ES256 (ECDSA P-256, SHA-256)
signatures, the ``iss``, ``aud``, ``exp`` and ``nbf`` claims. Everything else is refused: ``alg: none``, the
HMAC algorithms (a public key must never be usable as an HMAC secret), keys of the wrong type for the
algorithm, RSA keys below 2048 bits, tokens without ``exp``, and anything malformed. Sizes are bounded before
any decoding, so a hostile token costs at most a few kilobytes of work.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

MAX_TOKEN_BYTES = 16 * 1024  # Kubernetes tokens are ~1 KB; this bounds the work a hostile one can cause
MAX_JWKS_KEYS = 64
MIN_RSA_BITS = 2048
DEFAULT_LEEWAY = 60.0  # seconds of clock skew tolerated on exp / nbf (as most verifiers, e.g. go-oidc)
ALGORITHMS = ("RS256", "ES256")


class JwtError(ValueError):
    """A token that does not verify; the message says why (never the token itself)."""


class JwksError(ValueError):
    """A key set that cannot be used."""


def b64url_decode(text: str) -> bytes:
    if not text or any(c in text for c in "+/="):  # JWS uses the unpadded URL-safe alphabet only
        raise ValueError("not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"bad base64url: {exc}") from None


def _b64_int(value: Any, what: str) -> int:
    if not isinstance(value, str):
        raise JwksError(f"{what}: expected a base64url string")
    try:
        return int.from_bytes(b64url_decode(value), "big")
    except ValueError as exc:
        raise JwksError(f"{what}: {exc}") from None


@dataclass(frozen=True)
class Jwk:
    kid: str | None
    alg: str  # the algorithm this key verifies: RS256 or ES256
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Jwk | None:
        """A verification key, or None for a key this verifier does not use (encryption keys, other types)."""
        if raw.get("use", "sig") != "sig":
            return None
        kid = raw.get("kid")
        kid = kid if isinstance(kid, str) else None
        kty = raw.get("kty")
        if kty == "RSA":
            n, e = _b64_int(raw.get("n"), "RSA n"), _b64_int(raw.get("e"), "RSA e")
            if n.bit_length() < MIN_RSA_BITS:
                raise JwksError(f"RSA key {kid or ''}: {n.bit_length()} bits, at least {MIN_RSA_BITS} needed")
            try:
                key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey = rsa.RSAPublicNumbers(e, n).public_key()
            except ValueError as exc:
                raise JwksError(f"RSA key {kid or ''}: {exc}") from None
            alg = "RS256"
        elif kty == "EC":
            if raw.get("crv") != "P-256":
                return None
            x, y = _b64_int(raw.get("x"), "EC x"), _b64_int(raw.get("y"), "EC y")
            try:
                key = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
            except ValueError as exc:
                raise JwksError(f"EC key {kid or ''}: {exc}") from None
            alg = "ES256"
        else:
            return None
        declared = raw.get("alg")
        if declared is not None and declared != alg:
            return None  # e.g. an RSA key marked PS256: not one of ours
        return cls(kid, alg, key)


@dataclass(frozen=True)
class Jwks:
    keys: tuple[Jwk, ...]

    @classmethod
    def from_bytes(cls, data: bytes) -> Jwks:
        """Parse a JWKS document (``{"keys": [...]}``); raises JwksError when it has no usable key."""
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise JwksError(f"not JSON: {exc}") from None
        raw_keys = doc.get("keys") if isinstance(doc, dict) else None
        if not isinstance(raw_keys, list):
            raise JwksError('expected a JSON object with a "keys" list')
        if len(raw_keys) > MAX_JWKS_KEYS:
            raise JwksError(f"{len(raw_keys)} keys, at most {MAX_JWKS_KEYS}")
        keys = tuple(k for k in (Jwk.from_json(r) for r in raw_keys if isinstance(r, dict)) if k is not None)
        if not keys:
            raise JwksError("no RS256 (RSA) or ES256 (EC P-256) signing key")
        return cls(keys)

    def candidates(self, alg: str, kid: str | None) -> list[Jwk]:
        keys = [k for k in self.keys if k.alg == alg]
        if kid is not None:
            keys = [k for k in keys if k.kid == kid]  # a token naming a key is checked against that key only
        return keys


def _json_segment(segment: str, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(b64url_decode(segment))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise JwtError(f"malformed {what}: {exc}") from None
    if not isinstance(value, dict):
        raise JwtError(f"malformed {what}: not a JSON object")
    return value


def _verify_signature(key: Jwk, signing_input: bytes, signature: bytes) -> bool:
    try:
        if isinstance(key.key, rsa.RSAPublicKey):
            key.key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
        else:
            if len(signature) != 64:  # JWS ES256: r || s, 32 bytes each (not DER)
                return False
            r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            key.key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def _audiences(claims: Mapping[str, Any]) -> list[str]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list):
        return [a for a in aud if isinstance(a, str)]
    return []


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise JwtError(f"claim {name} is not a number")
    return float(value)


def verify(
    token: str,
    jwks: Jwks,
    *,
    issuer: str,
    audiences: Iterable[str],
    now: float | None = None,
    leeway: float = DEFAULT_LEEWAY,
) -> dict[str, Any]:
    """The claims of ``token`` once its signature, issuer, audience and validity period check out."""
    if len(token) > MAX_TOKEN_BYTES:
        raise JwtError(f"token longer than {MAX_TOKEN_BYTES} bytes")
    parts = token.split(".")
    if len(parts) != 3:
        raise JwtError("not a JWS compact token (expected header.payload.signature)")
    header = _json_segment(parts[0], "header")
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise JwtError(f"algorithm {alg!r} not accepted (only {', '.join(ALGORITHMS)})")
    if "crit" in header:
        raise JwtError("critical header parameters are not supported")
    kid = header.get("kid")
    keys = jwks.candidates(str(alg), kid if isinstance(kid, str) else None)
    if not keys:
        raise JwtError(f"no {alg} key" + (f" with kid {kid!r}" if isinstance(kid, str) else ""))
    try:
        signature = b64url_decode(parts[2])
    except ValueError as exc:
        raise JwtError(f"malformed signature: {exc}") from None
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii", "replace")
    if not any(_verify_signature(key, signing_input, signature) for key in keys):
        raise JwtError("signature does not verify")
    claims = _json_segment(parts[1], "payload")
    if claims.get("iss") != issuer:
        raise JwtError(f"issuer {claims.get('iss')!r} is not {issuer!r}")
    expected: Sequence[str] = list(audiences)
    if expected and not set(_audiences(claims)) & set(expected):
        raise JwtError(f"audiences {_audiences(claims)} do not include any of {list(expected)}")
    current = time.time() if now is None else now
    exp = _number(claims, "exp")
    if exp is None:
        raise JwtError("no exp claim")
    if current > exp + leeway:
        raise JwtError("token expired")
    nbf = _number(claims, "nbf")
    if nbf is not None and current + leeway < nbf:
        raise JwtError("token not valid yet (nbf)")
    return claims

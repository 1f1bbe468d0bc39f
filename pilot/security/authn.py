"""Who is calling: SPIFFE identities from a client certificate or from a service-account JWT.

As istiod (``pkg/security``, ``security/pkg/server/ca/authenticate``): a list of authenticators is tried in
order and the first that succeeds gives the caller's identities; when every one fails the caller is not
authenticated, and the failures are joined into one message for the log (never for the caller).

- ``ClientCertAuthenticator``: the URI SANs ``spiffe://<trust-domain>/ns/<ns>/sa/<sa>`` of a client certificate
  that the TLS handshake already verified against the configured root (``ssl`` only reports a verified peer
  certificate). Identities of another trust domain are not accepted.
- ``JwtAuthenticator`` (istiod's JWT_RULE / OIDC authenticator, with a local JWKS file instead of discovery): a
  Bearer token signed by a key of the JWKS, with the configured issuer and one of the audiences; the identity
  comes from ``sub: system:serviceaccount:<ns>:<sa>``.
- ``KubeJwtAuthenticator`` (istiod's KubeJWTAuthenticator): a Bearer token the Kubernetes API server accepts in a
  TokenReview (audiences ``TOKEN_AUDIENCES``, default ``istio-ca``) as a service account's. Reviews run at most
  ``concurrency`` at a time with a timeout, and an accepted token is remembered for a short while (bounded, by
  a digest, never past its review's lifetime) so a reconnecting proxy does not cost a review every time.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp

from pilot.model.service import DEFAULT_TRUST_DOMAIN
from pilot.security import jwt

if TYPE_CHECKING:
    from pilot.sources.kube.client import KubeApi

log = logging.getLogger(__name__)

SPIFFE_PREFIX = "spiffe://"
BEARER_PREFIX = "Bearer "
K8S_TOKEN_PREFIX = "Istio "  # istiod also accepts this prefix on HTTP requests
DEFAULT_TOKEN_AUDIENCES = ("istio-ca",)  # istiod's TOKEN_AUDIENCES
DEFAULT_CLUSTER_ID = "Kubernetes"  # istiod's default cluster ID (what /debug/syncz shows as cluster_id)
TOKEN_REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"
SERVICE_ACCOUNTS_GROUP = "system:serviceaccounts"
SERVICE_ACCOUNT_USER_PREFIX = "system:serviceaccount:"


class AuthenticationError(Exception):
    """The caller could not be authenticated; the message is for the log, not for the caller."""


@dataclass(frozen=True, slots=True)
class Identity:
    """A SPIFFE workload identity: ``spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>``."""

    trust_domain: str
    namespace: str
    service_account: str

    def __str__(self) -> str:
        return f"{SPIFFE_PREFIX}{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    @classmethod
    def parse(cls, uri: str) -> Identity:
        """istiod's spiffe.ParseIdentity: exactly ``spiffe://TD/ns/NS/sa/SA``; raises ValueError otherwise."""
        if not uri.startswith(SPIFFE_PREFIX):
            raise ValueError(f"{uri!r} is not a spiffe:// URI")
        parts = uri[len(SPIFFE_PREFIX) :].split("/")
        if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa" or not all(parts[i] for i in (0, 2, 4)):
            raise ValueError(f"{uri!r} is not of the form spiffe://<trust-domain>/ns/<namespace>/sa/<account>")
        return cls(parts[0], parts[2], parts[4])


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: its identities (the first decides its namespace) and how it proved them."""

    identities: tuple[Identity, ...]
    source: str  # "client-certificate" or "id-token"

    @property
    def namespace(self) -> str:
        return self.identities[0].namespace

    def describe(self) -> str:
        return ",".join(str(i) for i in self.identities)


@dataclass(frozen=True, slots=True)
class Credentials:
    """What one request presents: a verified peer certificate (``ssl`` getpeercert() form) and/or headers."""

    peer_cert: Mapping[str, Any] | None = None
    authorization: str = ""
    cluster_id: str = ""  # istiod's "clusterid" metadata / header


class Authenticator(Protocol):
    kind: str

    async def authenticate(self, credentials: Credentials) -> Caller: ...


def bearer_token(authorization: str) -> str:
    for prefix in (BEARER_PREFIX, K8S_TOKEN_PREFIX):
        if authorization.startswith(prefix):
            token = authorization[len(prefix) :].strip()
            if token:
                return token
    raise AuthenticationError("no bearer token in the authorization header" if authorization else "no token")


def service_account_of_subject(subject: Any) -> tuple[str, str]:
    """(namespace, account) from ``system:serviceaccount:<ns>:<sa>``."""
    if not isinstance(subject, str) or not subject.startswith(SERVICE_ACCOUNT_USER_PREFIX):
        raise AuthenticationError(f"subject {subject!r} is not a Kubernetes service account")
    parts = subject.split(":")
    if len(parts) != 4 or not parts[2] or not parts[3]:
        raise AuthenticationError(f"subject {subject!r} is not system:serviceaccount:<namespace>:<name>")
    return parts[2], parts[3]


class ClientCertAuthenticator:
    kind = "ClientCertAuthenticator"

    def __init__(self, trust_domain: str = DEFAULT_TRUST_DOMAIN) -> None:
        self.trust_domain = trust_domain

    async def authenticate(self, credentials: Credentials) -> Caller:
        return self.identify(credentials.peer_cert)

    def identify(self, peer_cert: Mapping[str, Any] | None) -> Caller:
        if not peer_cert:
            raise AuthenticationError("no client certificate is presented")
        identities: list[Identity] = []
        rejected: list[str] = []
        for kind, value in peer_cert.get("subjectAltName", ()):
            if kind != "URI" or not str(value).startswith(SPIFFE_PREFIX):
                continue
            try:
                identity = Identity.parse(str(value))
            except ValueError as exc:
                rejected.append(str(exc))
                continue
            if identity.trust_domain != self.trust_domain:
                rejected.append(f"{identity}: trust domain is not {self.trust_domain}")
                continue
            identities.append(identity)
        if not identities:
            why = "; ".join(rejected) or "no spiffe:// URI SAN"
            raise AuthenticationError(f"no identity in the client certificate ({why})")
        return Caller(tuple(identities), "client-certificate")


class JwtAuthenticator:
    """Bearer tokens verified against a local JWKS (RS256/ES256), as istiod's JWT_RULE authenticator."""

    kind = "JwtAuthenticator"

    def __init__(
        self,
        jwks: jwt.Jwks,
        issuer: str,
        audiences: Sequence[str],
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.jwks = jwks
        self.issuer = issuer
        self.audiences = tuple(audiences)
        self.trust_domain = trust_domain
        self.clock = clock

    @classmethod
    def from_file(cls, path: Path, issuer: str, audiences: Sequence[str], trust_domain: str) -> JwtAuthenticator:
        """Raises jwt.JwksError (naming the file) when the key set cannot be read or used."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise jwt.JwksError(f"{path}: {exc.strerror or exc}") from None
        try:
            return cls(jwt.Jwks.from_bytes(data), issuer, audiences, trust_domain)
        except jwt.JwksError as exc:
            raise jwt.JwksError(f"{path}: {exc}") from None

    async def authenticate(self, credentials: Credentials) -> Caller:
        token = bearer_token(credentials.authorization)
        try:
            claims = jwt.verify(token, self.jwks, issuer=self.issuer, audiences=self.audiences, now=self.clock())
        except jwt.JwtError as exc:
            raise AuthenticationError(f"failed to verify the JWT: {exc}") from None
        namespace, account = service_account_of_subject(claims.get("sub"))
        return Caller((Identity(self.trust_domain, namespace, account),), "id-token")


class _ReviewCache:
    """Accepted tokens by SHA-256 digest -> (caller, expiry). Bounded; oldest entries go first."""

    def __init__(self, ttl: float, max_entries: int, clock: Callable[[], float]) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[bytes, tuple[Caller, float]] = OrderedDict()

    def get(self, digest: bytes) -> Caller | None:
        found = self._entries.get(digest)
        if found is None:
            return None
        if found[1] <= self.clock():
            del self._entries[digest]
            return None
        return found[0]

    def put(self, digest: bytes, caller: Caller) -> None:
        if self.ttl <= 0 or self.max_entries <= 0:
            return
        self._entries[digest] = (caller, self.clock() + self.ttl)
        self._entries.move_to_end(digest)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class KubeJwtAuthenticator:
    """Service-account tokens checked by the API server (TokenReview), as istiod's KubeJWTAuthenticator."""

    kind = "KubeJWTAuthenticator"

    def __init__(
        self,
        api: Callable[[], KubeApi | None],
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
        audiences: Sequence[str] = DEFAULT_TOKEN_AUDIENCES,
        *,
        cluster_id: str = DEFAULT_CLUSTER_ID,
        timeout: float = 5.0,
        concurrency: int = 16,
        cache_ttl: float = 60.0,
        cache_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self.trust_domain = trust_domain
        self.audiences = tuple(audiences)
        self.cluster_id = cluster_id
        self.timeout = timeout
        self._slots = asyncio.Semaphore(concurrency)
        self.cache = _ReviewCache(cache_ttl, cache_entries, clock)
        self.reviews = 0  # TokenReviews sent (for tests and metrics)

    async def authenticate(self, credentials: Credentials) -> Caller:
        token = bearer_token(credentials.authorization)
        if credentials.cluster_id and credentials.cluster_id != self.cluster_id:
            raise AuthenticationError(
                f"client claims to be in cluster {credentials.cluster_id!r}, but this pilot only knows "
                f"cluster {self.cluster_id!r}"
            )
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        cached = self.cache.get(digest)
        if cached is not None:
            return cached
        api = self._api()
        if api is None:
            raise AuthenticationError("the Kubernetes API is not connected")
        async with self._slots:
            caller = await self._review(api, token)
        self.cache.put(digest, caller)
        return caller

    async def _review(self, api: KubeApi, token: str) -> Caller:
        from pilot.sources.kube.client import ApiError

        body: dict[str, Any] = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token},
        }
        if self.audiences:
            body["spec"]["audiences"] = list(self.audiences)
        self.reviews += 1
        try:
            review = await api.request_json(
                "POST", TOKEN_REVIEW_PATH, body=body, timeout=aiohttp.ClientTimeout(total=self.timeout)
            )
        except ApiError as exc:
            raise AuthenticationError(f"TokenReview failed: {exc}") from None
        return self._caller_of(review)

    def _caller_of(self, review: Mapping[str, Any]) -> Caller:
        """istiod's getTokenReviewResult: authenticated, in the service-accounts group, a 4-part username."""
        status = review.get("status")
        if not isinstance(status, dict):
            raise AuthenticationError("TokenReview answer has no status")
        if status.get("error"):
            raise AuthenticationError(f"the service account authentication returns an error: {status['error']}")
        if status.get("authenticated") is not True:
            raise AuthenticationError("the token is not authenticated")
        user = status.get("user") if isinstance(status.get("user"), dict) else {}
        groups = user.get("groups") if isinstance(user.get("groups"), list) else []
        if SERVICE_ACCOUNTS_GROUP not in groups:
            raise AuthenticationError("the token is not a service account")
        namespace, account = service_account_of_subject(user.get("username"))
        return Caller((Identity(self.trust_domain, namespace, account),), "id-token")


class Authenticators:
    """Tries each authenticator in order; the first success wins (istiod's authenticationManager)."""

    def __init__(self, authenticators: Iterable[Authenticator] = ()) -> None:
        self.authenticators: tuple[Authenticator, ...] = tuple(authenticators)

    def __bool__(self) -> bool:
        return bool(self.authenticators)

    async def authenticate(self, credentials: Credentials) -> Caller:
        failures = []
        for authenticator in self.authenticators:
            try:
                return await authenticator.authenticate(credentials)
            except AuthenticationError as exc:
                failures.append(f"{authenticator.kind}: {exc}")
        raise AuthenticationError("; ".join(failures) or "no authenticator is configured")

"""Security settings of ``pilot serve`` and the objects they make: authenticators, xDS auth, debug access, TLS.

Flags: ``--tls-cert/--tls-key`` (pilot's serving certificate) turn on xDS over TLS on ``--secure-grpc-addr``
(default 0.0.0.0:15012, '' turns it off) and, when given an address, the TLS monitoring listener
(``--secure-monitoring-addr``); ``--ca-cert`` is the root that signs client certificates; ``--trust-domain``
(default cluster.local) the SPIFFE trust domain of identities; ``--jwt-jwks/--jwt-issuer/--jwt-audience`` accept
JWTs signed by a local key set. With Kubernetes sources, service-account tokens are also checked by TokenReview.

Environment (istiod's names and defaults): ``PILOT_ENABLE_XDS_IDENTITY_CHECK`` (true), ``XDS_AUTH_PLAINTEXT``
(false), ``ENABLE_DEBUG_ENDPOINT_AUTH`` (true), ``DEBUG_ENDPOINT_AUTH_ALLOWED_NAMESPACES`` (''),
``TOKEN_AUDIENCES`` (istio-ca).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pilot.security import debugauth, jwt
from pilot.security.authn import (
    DEFAULT_TOKEN_AUDIENCES,
    DEFAULT_TRUST_DOMAIN,
    Authenticator,
    Authenticators,
    ClientCertAuthenticator,
    JwtAuthenticator,
    KubeJwtAuthenticator,
)
from pilot.security.tls import GRPC_ALPN, HTTP_ALPN, ReloadingContext, TlsConfigError, TlsFiles
from pilot.security.xdsauth import XdsAuth

if TYPE_CHECKING:
    from pilot.sources.kube.client import KubeApi

DEFAULT_SECURE_GRPC_ADDR = "0.0.0.0:15012"
LOOPBACK = ("127.0.0.0/8", "::1/128")


class SecurityConfigError(Exception):
    """A security setting that cannot be used: one line naming the flag or file."""


def _bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    from pilot.push.debounce import parse_bool

    raw = environ.get(name)
    return default if raw is None or not raw.strip() else parse_bool(raw, name)


def _list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


@dataclass(frozen=True)
class SecurityOptions:
    tls: TlsFiles | None = None  # pilot's serving certificate (and the client root); None: no TLS listener
    secure_grpc_addr: str = DEFAULT_SECURE_GRPC_ADDR  # used only with ``tls``; '' turns it off
    secure_monitoring_addr: str = ""  # the monitoring app over TLS (client certificates authenticate); '' off
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    jwt_jwks: Path | None = None
    jwt_issuer: str = ""
    jwt_audiences: tuple[str, ...] = DEFAULT_TOKEN_AUDIENCES
    token_audiences: tuple[str, ...] = DEFAULT_TOKEN_AUDIENCES  # TokenReview audiences (TOKEN_AUDIENCES)
    identity_check: bool = True  # PILOT_ENABLE_XDS_IDENTITY_CHECK
    authenticate_plaintext: bool = False  # XDS_AUTH_PLAINTEXT
    debug_namespace_auth: bool = True  # ENABLE_DEBUG_ENDPOINT_AUTH
    debug_allowed_namespaces: tuple[str, ...] = ()  # DEBUG_ENDPOINT_AUTH_ALLOWED_NAMESPACES
    # Callers from these networks get every debug endpoint (istiod: loopback). Tests narrow it.
    debug_local_networks: tuple[str, ...] = LOOPBACK

    @property
    def secure_xds(self) -> bool:
        return self.tls is not None and bool(self.secure_grpc_addr)

    @property
    def secure_monitoring(self) -> bool:
        return self.tls is not None and bool(self.secure_monitoring_addr)

    def with_env(self, environ: Mapping[str, str] | None = None) -> SecurityOptions:
        """These options with the istiod environment variables applied; raises ValueError naming a bad one."""
        env = os.environ if environ is None else environ
        audiences = _list(env.get("TOKEN_AUDIENCES", ""))
        return dataclasses.replace(
            self,
            identity_check=_bool(env, "PILOT_ENABLE_XDS_IDENTITY_CHECK", self.identity_check),
            authenticate_plaintext=_bool(env, "XDS_AUTH_PLAINTEXT", self.authenticate_plaintext),
            debug_namespace_auth=_bool(env, "ENABLE_DEBUG_ENDPOINT_AUTH", self.debug_namespace_auth),
            debug_allowed_namespaces=_list(env.get("DEBUG_ENDPOINT_AUTH_ALLOWED_NAMESPACES", ""))
            or self.debug_allowed_namespaces,
            token_audiences=audiences or self.token_audiences,
        )


class Security:
    """What pilot serve runs with: built once per server (reads the certificate and key-set files)."""

    def __init__(
        self,
        options: SecurityOptions,
        *,
        root_namespace: str,
        plaintext_xds: bool,
        kube_api: Callable[[], KubeApi | None] | None = None,
        connections: Callable[[], Iterable[Any]] | None = None,
    ) -> None:
        self.options = options
        authenticators: list[Authenticator] = [ClientCertAuthenticator(options.trust_domain)]
        if options.jwt_jwks is not None:
            try:
                authenticators.append(
                    JwtAuthenticator.from_file(
                        options.jwt_jwks, options.jwt_issuer, options.jwt_audiences, options.trust_domain
                    )
                )
            except jwt.JwksError as exc:
                raise SecurityConfigError(f"--jwt-jwks {exc}") from None
        if kube_api is not None:
            authenticators.append(KubeJwtAuthenticator(kube_api, options.trust_domain, options.token_audiences))
        self.authenticators = Authenticators(authenticators)
        self.xds = XdsAuth(
            self.authenticators,
            identity_check=options.identity_check,
            authenticate_plaintext=options.authenticate_plaintext,
        )
        try:
            networks = debugauth.parse_networks(options.debug_local_networks)
        except ValueError as exc:
            raise SecurityConfigError(f"debug local networks: {exc}") from None
        self.debug = debugauth.DebugAccess(
            authenticators=self.authenticators,
            local_networks=networks,
            full_namespaces=frozenset({root_namespace, *options.debug_allowed_namespaces}),
            namespace_auth=options.debug_namespace_auth,
            rest_xds_open=plaintext_xds,
            connections=connections,
        )
        self.grpc_tls: ReloadingContext | None = None
        self.monitoring_tls: ReloadingContext | None = None
        try:
            if options.secure_xds and options.tls is not None:
                self.grpc_tls = ReloadingContext(options.tls, GRPC_ALPN, what="xDS serving certificate")
            if options.secure_monitoring and options.tls is not None:
                self.monitoring_tls = ReloadingContext(options.tls, HTTP_ALPN, what="monitoring serving certificate")
        except TlsConfigError as exc:
            raise SecurityConfigError(str(exc)) from None


# ----- pilot serve flags -----------------------------------------------------------------------------------------


def add_flags(parser: Any) -> None:
    """``pilot serve``'s security flags (an argparse parser)."""
    parser.add_argument(
        "--secure-grpc-addr",
        default=DEFAULT_SECURE_GRPC_ADDR,
        help="authenticated xDS over TLS (istiod's 15012), on when --tls-cert is given; '' turns it off "
        "(default %(default)s). --grpc-addr '' turns the plaintext port off",
    )
    parser.add_argument("--tls-cert", metavar="FILE", help="pilot's serving certificate (PEM chain) for TLS xDS")
    parser.add_argument("--tls-key", metavar="FILE", help="private key of --tls-cert")
    parser.add_argument(
        "--ca-cert",
        metavar="FILE",
        help="root (PEM) that signs client certificates; without it clients on the TLS port authenticate by JWT only",
    )
    parser.add_argument(
        "--secure-monitoring-addr",
        default="",
        metavar="HOST:PORT",
        help="also serve /ready, /metrics and /debug over TLS here (client certificates authenticate debug callers)",
    )
    parser.add_argument(
        "--trust-domain", default=DEFAULT_TRUST_DOMAIN, help="SPIFFE trust domain of identities (default %(default)s)"
    )
    parser.add_argument("--jwt-jwks", metavar="FILE", help="JWKS file: accept JWTs signed by these keys (RS256/ES256)")
    parser.add_argument("--jwt-issuer", metavar="ISS", help="required issuer (iss) of --jwt-jwks tokens")
    parser.add_argument(
        "--jwt-audience",
        action="append",
        metavar="AUD",
        help="accepted audience of --jwt-jwks tokens (repeatable; default istio-ca)",
    )


def from_args(args: Any) -> SecurityOptions:
    """SecurityOptions from ``pilot serve``'s flags and the environment; SecurityConfigError for a bad combination."""
    if (args.tls_cert is None) != (args.tls_key is None):
        raise SecurityConfigError("--tls-cert and --tls-key must be given together")
    if args.ca_cert is not None and args.tls_cert is None:
        raise SecurityConfigError("--ca-cert needs --tls-cert/--tls-key (pilot's serving certificate)")
    if args.secure_monitoring_addr and args.tls_cert is None:
        raise SecurityConfigError("--secure-monitoring-addr needs --tls-cert/--tls-key")
    if (args.jwt_jwks is None) != (args.jwt_issuer is None):
        raise SecurityConfigError("--jwt-jwks and --jwt-issuer must be given together")
    if args.jwt_audience and args.jwt_jwks is None:
        raise SecurityConfigError("--jwt-audience needs --jwt-jwks")
    tls = None
    if args.tls_cert is not None:
        tls = TlsFiles(Path(args.tls_cert), Path(args.tls_key), Path(args.ca_cert) if args.ca_cert else None)
    options = SecurityOptions(
        tls=tls,
        secure_grpc_addr=args.secure_grpc_addr,
        secure_monitoring_addr=args.secure_monitoring_addr,
        trust_domain=args.trust_domain,
        jwt_jwks=Path(args.jwt_jwks) if args.jwt_jwks else None,
        jwt_issuer=args.jwt_issuer or "",
        jwt_audiences=tuple(args.jwt_audience or DEFAULT_TOKEN_AUDIENCES),
    )
    if not args.grpc_addr and not options.secure_xds:
        raise SecurityConfigError(
            "no xDS port: --grpc-addr '' turns plaintext xDS off, so give --tls-cert/--tls-key for the TLS port"
        )
    try:
        return options.with_env()
    except ValueError as exc:
        raise SecurityConfigError(str(exc)) from None

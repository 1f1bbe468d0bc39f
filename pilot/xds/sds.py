"""SDS: gateway credentials as Envoy ``Secret`` resources, served on the proxy's ADS stream (istiod's SecretGen);
also the client credentials of DestinationRules (``tls.credentialName``, pilot.xds.cds).

A gateway listener that terminates TLS names its certificate ``kubernetes://NAME`` (and, for MUTUAL and
OPTIONAL_MUTUAL, its client CA ``kubernetes://NAME-cacert``) with an ADS config source; Envoy then asks for
those names. Each name a router asks for is answered when (``pilot.push.credentials``):

* a server of the Gateways selecting it references it (or a DestinationRule that applies to the proxy), and the
  Secret is in the proxy's own namespace (anything else is refused with a warning naming the proxy and the
  resource);
* the Secret exists and holds what the name needs: a certificate chain and key (``tls_certificate``) or a CA
  bundle (``validation_context.trusted_ca``), each PEM that parses.

Otherwise the name is left unanswered: Envoy keeps the listener warming until its initial fetch timeout (the
other listeners are not held up) and the problem is logged (naming the Gateway server and the Secret) and
listed in push_status (``pilot_sds_certificate_errors``). An expired certificate is logged and served, as
istiod does.

One unit per answered name, keyed by the name, the Secret read and its content fingerprint, and depending on
the Secret and its ``-cacert`` twin: a renewed Secret is one new resource, pushed to the routers that use it,
and their listeners do not change (no drain). Material is only ever encoded into the resource: no log line or
error message carries it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import partial

from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from pilot.model.proxy import Proxy
from pilot.model.secret import CertInfo
from pilot.push import credentials
from pilot.push.context import PushContext
from pilot.xds.units import Unit

log = logging.getLogger(__name__)

Secret = secret_pb2.Secret


def secret_units(proxy: Proxy, push: PushContext, names: Iterable[str] | None) -> list[Unit]:
    """The units of the credentials a proxy asks for that it may have and that can be served."""
    if not names:
        return []
    allowed = push.proxy_credentials(proxy)
    if not allowed and not proxy.is_router:
        return []  # a sidecar that no DestinationRule lets fetch anything (the usual case)
    users = push.merged_gateway(proxy).credentials if proxy.is_router else {}
    units: list[Unit] = []
    refused: list[str] = []
    for name in sorted(names):
        ref = allowed.get(name)
        if ref is None:
            refused.append(name)
            continue
        resolved = credentials.resolve(ref, push.secret)
        if resolved.problem:
            servers = ", ".join(sorted({s.describe() for s in users.get(name, ())})) or "DestinationRule TLS"
            outcome = "not served" if resolved.info is None else "served anyway"
            log.warning("%s: credential %s for proxy %s: %s (%s)", servers, name, proxy.id, resolved.problem, outcome)
        if resolved.info is None:
            continue
        key = ("sds", name, resolved.secret, resolved.fingerprint)
        units.append(Unit(key, ref.related_keys(), partial(_build, name, resolved.info, ref.is_ca)))
    if refused:
        log.warning(
            "proxy %s asked for secrets it may not have (not referenced by its Gateways or DestinationRules, or not "
            "in its namespace %s): %s",
            proxy.id,
            proxy.namespace,
            ", ".join(refused[:5]) + (f" and {len(refused) - 5} more" if len(refused) > 5 else ""),
        )
    return units


def _build(name: str, info: CertInfo, is_ca: bool) -> tuple[Secret]:
    return (ca_secret(name, info) if is_ca else certificate_secret(name, info),)


def certificate_secret(name: str, info: CertInfo) -> Secret:
    """istiod's toEnvoyTLSSecret: the chain and key inline (and an OCSP staple when the Secret has one)."""
    secret = Secret(name=name)
    certificate = secret.tls_certificate
    certificate.certificate_chain.inline_bytes = info.cert
    certificate.private_key.inline_bytes = info.key
    if info.staple:
        certificate.ocsp_staple.inline_bytes = info.staple
    return secret


def ca_secret(name: str, info: CertInfo) -> Secret:
    """istiod's toEnvoyCaSecret: the CA bundle (and a CRL when the Secret has one) to validate clients with."""
    secret = Secret(name=name)
    validation = secret.validation_context
    validation.trusted_ca.inline_bytes = info.cert
    if info.crl:
        validation.crl.inline_bytes = info.crl
    return secret


def redacted(secret: Secret) -> dict[str, object]:
    """A Secret resource as a debug endpoint may show it: its name and what it holds, sizes instead of bytes."""
    if secret.HasField("tls_certificate"):
        certificate = secret.tls_certificate
        held = {
            "certificate_chain": f"<redacted: {len(certificate.certificate_chain.inline_bytes)} bytes>",
            "private_key": "<redacted>",
        }
        return {"name": secret.name, "tls_certificate": held}
    if secret.HasField("validation_context"):
        trusted = secret.validation_context.trusted_ca.inline_bytes
        return {"name": secret.name, "validation_context": {"trusted_ca": f"<redacted: {len(trusted)} bytes>"}}
    return {"name": secret.name}

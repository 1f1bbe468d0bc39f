"""Gateway credentials: from a server's ``credentialName`` to the SDS resource a gateway proxy fetches, and
from that resource to the Kubernetes Secret that answers it (istiod's model/credentials and credentials
controller).

Resource names, as istiod's ToResourceName / ParseResourceName:

* ``credentialName: NAME`` → ``kubernetes://NAME``: Secret NAME in the **gateway proxy's** namespace;
  ``kubernetes://NS/NAME`` and ``kubernetes-gateway://NS/NAME`` name the namespace;
* MUTUAL and OPTIONAL_MUTUAL servers also reference ``<resource>-cacert``: the CA bundle, from Secret
  ``NAME-cacert`` when it exists, else from Secret NAME's ``cacert`` / ``ca.crt``;
* ``builtin://`` is the proxy's own workload certificate (SDS ``default`` / ``ROOTCA`` from its agent).

Which resources a proxy may fetch (istiod's filterAuthorizedResources, stricter): a Secret in the proxy's own
namespace, and only a resource that a server of the Gateways selecting it references, or that the client TLS
of a DestinationRule that may apply to it names (``credentialName``; gateways, and sidecars a rule's
workloadSelector selects: istiod applies it nowhere else). istiod also requires a
verified identity (a proxy authenticated over mTLS or a token); pilot serves plaintext xDS and cannot check
one, so the proxy's namespace is the one its node id and metadata claim.

``resolve`` reads the Secret and reports what is wrong in words that name keys and objects, never material:
not found, missing keys, a PEM block that does not parse (not served); an expired certificate is reported
and still served, as istiod does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pilot.model.config import SECRET, Config, ConfigKey
from pilot.model.secret import (
    CertInfo,
    MaterialError,
    SecretData,
    certificate_problem,
    extract_cert_info,
    extract_root,
    private_key_problem,
    validity_problem,
)

KUBERNETES = "kubernetes://"
KUBERNETES_GATEWAY = "kubernetes-gateway://"
BUILTIN = "builtin://"
CA_SUFFIX = "-cacert"
# The proxy's own certificate and root, which its agent serves (istiod's SDSDefaultResourceName / SDSRootResourceName).
BUILTIN_RESOURCE = "default"
BUILTIN_ROOT_RESOURCE = "ROOTCA"

Lookup = Callable[[str, str], Config | None]  # (namespace, name) -> the Secret's Config


def credential_names(tls: Any) -> list[str]:
    """A server's credentials: ``credentialNames`` (RSA and ECDSA), else ``credentialName``."""
    if tls is None:
        return []
    if tls.credential_names:
        return [n for n in tls.credential_names if n]
    return [tls.credential_name] if tls.credential_name else []


def client_resources(tls: Any) -> list[str]:
    """The SDS resources a DestinationRule's client TLS settings reference through ``credentialName`` (istiod's
    ApplyCustomSDSToClientCommonTLSContext): the client certificate for MUTUAL, and the CA bundle to verify the
    server with unless insecureSkipVerify."""
    if tls is None or not tls.credential_name:
        return []
    mode = getattr(tls.mode, "name", str(tls.mode))
    if mode not in ("SIMPLE", "MUTUAL"):
        return []
    resource = resource_name(tls.credential_name)
    out = [resource] if mode == "MUTUAL" else []
    skip = tls.insecure_skip_verify
    if not (getattr(skip, "value", skip) or False):
        out.append(ca_resource_name(resource))
    return out


def rule_client_tls(spec: Any) -> list[Any]:
    """Every client TLS block of a DestinationRule: top level, per port, per subset (and the subsets' ports)."""
    out = []
    for policy in [spec.traffic_policy, *(s.traffic_policy for s in spec.subsets or ())]:
        if policy is None:
            continue
        out.append(policy.tls)
        out.extend(p.tls for p in policy.port_level_settings or ())
    return [tls for tls in out if tls is not None]


def resource_name(credential_name: str) -> str:
    """istiod's ToResourceName: ``kubernetes://NAME`` unless the name carries a known scheme."""
    if credential_name.startswith(BUILTIN):
        return BUILTIN_RESOURCE
    if credential_name.startswith((KUBERNETES, KUBERNETES_GATEWAY)):
        return credential_name
    return KUBERNETES + credential_name


def ca_resource_name(resource: str) -> str:
    """The CA companion of a certificate resource (``builtin`` certificates: the mesh root)."""
    if resource == BUILTIN_RESOURCE:
        return BUILTIN_ROOT_RESOURCE
    return resource + CA_SUFFIX


@dataclass(frozen=True)
class SecretRef:
    """A resource name resolved for one proxy namespace: which Secret answers it."""

    resource: str
    namespace: str
    name: str  # the Secret name the resource names (may end with -cacert)

    @property
    def is_ca(self) -> bool:
        return self.name.endswith(CA_SUFFIX)

    @property
    def key(self) -> ConfigKey:
        return ConfigKey(SECRET, self.namespace, self.name)

    def related_keys(self) -> tuple[ConfigKey, ConfigKey]:
        """istiod's relatedConfigs: a Secret and its ``-cacert`` twin (or the base of a ``-cacert`` one), whose
        change can change this resource."""
        if self.is_ca:
            return self.key, ConfigKey(SECRET, self.namespace, self.name[: -len(CA_SUFFIX)])
        return self.key, ConfigKey(SECRET, self.namespace, self.name + CA_SUFFIX)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def parse_resource_name(resource: str, proxy_namespace: str) -> SecretRef | None:
    """istiod's ParseResourceName for the Secret-backed schemes; None for anything else."""
    for scheme in (KUBERNETES, KUBERNETES_GATEWAY):
        if resource.startswith(scheme):
            rest = resource[len(scheme) :]
            namespace, sep, name = rest.partition("/")
            if not sep:
                if scheme == KUBERNETES_GATEWAY:
                    return None  # the namespace is required
                namespace, name = proxy_namespace, rest
            if not namespace or not name or "/" in name:
                return None
            return SecretRef(resource, namespace, name)
    return None


@dataclass(frozen=True)
class Resolved:
    """What a resource resolves to: the material (None when it cannot be served) and any problem."""

    ref: SecretRef
    info: CertInfo | None
    secret: ConfigKey | None  # the Secret read
    fingerprint: int  # of that Secret's content (0 when none)
    problem: str = ""  # why it is not served, or (with info) what is wrong with it anyway


def resolve(ref: SecretRef, lookup: Lookup) -> Resolved:
    """Read the Secret behind ``ref`` as istiod's credentials controller does, and check its PEM."""
    config = lookup(ref.namespace, ref.name)
    if ref.is_ca and config is None:
        # istiod: the CA may also come from the Secret without the -cacert suffix
        config = lookup(ref.namespace, ref.name[: -len(CA_SUFFIX)])
        if config is None:
            return Resolved(ref, None, None, 0, f"secret {ref.namespace}/{ref.name[: -len(CA_SUFFIX)]} not found")
    if config is None:
        return Resolved(ref, None, None, 0, f"secret {ref} not found")
    secret = config.spec
    if not isinstance(secret, SecretData):
        return Resolved(ref, None, config.key, 0, f"secret {config.namespace}/{config.name} is not usable")
    try:
        info = extract_root(secret) if ref.is_ca else extract_cert_info(secret)
    except MaterialError as exc:
        return Resolved(ref, None, config.key, secret.fingerprint, f"secret {config.namespace}/{config.name}: {exc}")
    where = f"secret {config.namespace}/{config.name}"
    problem = certificate_problem(info.cert)
    if problem is None and not ref.is_ca:
        problem = private_key_problem(info.key)
    if problem is not None:
        what = "CA certificate" if ref.is_ca else "certificate and key"
        return Resolved(ref, None, config.key, secret.fingerprint, f"{where}: invalid {what}: {problem}")
    expired = validity_problem(info.cert)
    return Resolved(ref, info, config.key, secret.fingerprint, f"{where}: {expired}" if expired else "")

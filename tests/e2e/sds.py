"""A stand-in for Istio's node agent: a mesh CA made in the test and an SDS server per workload.

``MeshCA`` issues workload certificates the way istiod's CA does (an EC key, the SPIFFE identity
``spiffe://<trust domain>/ns/<ns>/sa/<sa>`` as the only (URI) SAN, client and server use). ``SdsServer``
answers Envoy's ``SecretDiscoveryService.StreamSecrets`` on a unix socket, as the agent does on
``./var/run/secrets/workload-spiffe-uds/socket``, with the secrets istiod's config names: ``default`` (the
workload's chain and key) and ``ROOTCA`` (the mesh root).
"""

from __future__ import annotations

import datetime
import itertools
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import grpclib.const
import grpclib.server
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2

SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
STREAM_SECRETS = "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets"
TRUST_DOMAIN = "cluster.local"


def spiffe_id(namespace: str, service_account: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}"


@dataclass(frozen=True)
class WorkloadCert:
    chain_pem: bytes
    key_pem: bytes
    root_pem: bytes


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class MeshCA:
    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, TRUST_DOMAIN)])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.root_pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, identity: str) -> WorkloadCert:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        return WorkloadCert(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key), self.root_pem)


def workload_secrets(cert: WorkloadCert) -> dict[str, secret_pb2.Secret]:
    default = secret_pb2.Secret(name="default")
    default.tls_certificate.certificate_chain.inline_bytes = cert.chain_pem
    default.tls_certificate.private_key.inline_bytes = cert.key_pem
    root = secret_pb2.Secret(name="ROOTCA")
    root.validation_context.trusted_ca.inline_bytes = cert.root_pem
    return {"default": default, "ROOTCA": root}


class SdsServer:
    """Answers each subscription once with the named secrets; ACKs and NACKs are recorded, not answered."""

    def __init__(self, secrets: dict[str, secret_pb2.Secret]) -> None:
        self.secrets = secrets
        self.requested: Counter[str] = Counter()  # initial requests per secret name
        self.nacks: list[str] = []
        self._nonces = itertools.count(1)
        self._server: grpclib.server.Server | None = None

    async def _stream_secrets(self, stream: grpclib.server.Stream) -> None:  # type: ignore[type-arg]
        async for request in stream:
            if request.HasField("error_detail"):
                self.nacks.append(request.error_detail.message)
                continue
            if request.response_nonce:
                continue  # an ACK
            names = list(request.resource_names)
            self.requested.update(names)
            response = discovery_pb2.DiscoveryResponse(
                version_info="1", type_url=SECRET_TYPE, nonce=str(next(self._nonces))
            )
            for name in names:
                if name in self.secrets:
                    response.resources.add().Pack(self.secrets[name])
            await stream.send_message(response)

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return {
            STREAM_SECRETS: grpclib.const.Handler(
                self._stream_secrets,
                grpclib.const.Cardinality.STREAM_STREAM,
                discovery_pb2.DiscoveryRequest,
                discovery_pb2.DiscoveryResponse,
            )
        }

    async def start(self, path: Path) -> None:
        self._server = grpclib.server.Server([self])
        await self._server.start(path=str(path))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

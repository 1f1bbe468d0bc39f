"""An Envoy's side of authenticated xDS: its ``xds-grpc`` cluster over TLS with a client certificate.

The bootstrap gets two static secrets, the proxy's certificate and key and the root that signs pilot's serving
certificate, and the xDS cluster a TLS transport socket that names them (static secrets: no SDS server is needed
to reach the control plane). pilot then knows the proxy by the SPIFFE identity in its certificate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLIENT_CERT_SECRET = "xds-client-certificate"
ROOT_CA_SECRET = "xds-root-ca"
TLS_SOCKET = "envoy.transport_sockets.tls"
UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"


@dataclass(frozen=True)
class XdsClientTls:
    cert: Path  # the proxy's certificate chain (PEM), with its SPIFFE URI SAN
    key: Path
    ca: Path  # root of pilot's serving certificate
    sni: str = ""  # server name to send (e.g. istiod.istio-system.svc); pilot does not need one

    def resolved(self) -> XdsClientTls:
        """Absolute paths: Envoy reads them relative to its own working directory."""
        return XdsClientTls(self.cert.resolve(), self.key.resolve(), self.ca.resolve(), self.sni)


def static_secrets(tls: XdsClientTls) -> list[dict[str, Any]]:
    return [
        {
            "name": CLIENT_CERT_SECRET,
            "tls_certificate": {
                "certificate_chain": {"filename": str(tls.cert)},
                "private_key": {"filename": str(tls.key)},
            },
        },
        {"name": ROOT_CA_SECRET, "validation_context": {"trusted_ca": {"filename": str(tls.ca)}}},
    ]


def transport_socket(tls: XdsClientTls) -> dict[str, Any]:
    context: dict[str, Any] = {
        "common_tls_context": {
            "alpn_protocols": ["h2"],
            "tls_certificate_sds_secret_configs": [{"name": CLIENT_CERT_SECRET}],
            "validation_context_sds_secret_config": {"name": ROOT_CA_SECRET},
        },
    }
    if tls.sni:
        context["sni"] = tls.sni
    return {"name": TLS_SOCKET, "typed_config": {"@type": UPSTREAM_TLS, **context}}

"""Gateway TLS end to end: pilot → a real Envoy router (namespace istio-system) → backends, with real TLS.

Certificates are made in the test (``tests.certs``); clients are Python ``ssl`` connections to Envoy on
127.0.0.1, choosing the server by SNI. One pilot and one Envoy serve the module; its Gateways:

* port ``https``: HTTPS servers a.example.com (SIMPLE, Secret a-cert), b.example.com (SIMPLE, generic Secret
  b-cert), m.example.com (MUTUAL, Secret m-cert with ca.crt), o.example.com (OPTIONAL_MUTUAL, the same Secret),
  v13.example.com (SIMPLE, minProtocolVersion TLSV1_3), all served over SDS on the ADS stream;
* port ``http``: plain HTTP servers of two Gateways (merged), where tests add more;
* port ``east_west``: AUTO_PASSTHROUGH for ``*.local`` (an east-west gateway).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.certs import Issued, TestCA, generic_secret, tls_secret
from tests.e2e.harness import (
    Backend,
    Backends,
    EnvoyProcess,
    HttpClient,
    PilotProcess,
    destination_rule,
    free_port,
    next_loopback_host,
    only,
    route_to,
    service_entry,
    virtual_service,
    wait_until,
)

pytestmark = pytest.mark.timeout(90)

NS = "istio-system"
ROUTER_NODE = f"router~127.0.0.1~ingress-1.{NS}~{NS}.svc.cluster.local"
LABELS = {"istio": "ingressgateway", "app": "istio-ingressgateway"}
ROUTE_TIMEOUT = 10.0
CA = TestCA("gateway-ca")
CLIENT_CA = TestCA("client-ca")
MESH_CA = TestCA("mesh-ca")
REVIEWS = "reviews.default.svc.cluster.local"


@dataclass
class TlsEnv:
    pilot: PilotProcess
    envoy: EnvoyProcess
    https: int
    http: int
    east_west: int
    certs: dict[str, Issued] = field(default_factory=dict)
    workdir: Path = Path()

    def diagnostics(self) -> str:
        return self.pilot.diagnostics() + "\n" + self.envoy.diagnostics()


def _server(port: int, name: str, hosts: list[str], tls: dict[str, Any], protocol: str = "HTTPS") -> dict[str, Any]:
    return {"port": {"number": port, "name": name, "protocol": protocol}, "hosts": hosts, "tls": tls}


def _gateway(name: str, *servers: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"istio": "ingressgateway"}, "servers": list(servers)},
    }


def _http_server(port: int, hosts: list[str], name: str = "http") -> dict[str, Any]:
    return {"port": {"number": port, "name": name, "protocol": "HTTP"}, "hosts": hosts}


@pytest.fixture(scope="module")
def tls(
    pilot_factory: Callable[..., PilotProcess], envoy_factory: Callable[..., EnvoyProcess], e2e_workdir: Path
) -> TlsEnv:
    https, http, east_west = (free_port("0.0.0.0") for _ in range(3))
    certs = {
        "a": CA.issue("a.example.com"),
        "b": CA.issue("b.example.com"),
        "m": CA.issue("m.example.com", ("m.example.com", "o.example.com")),
        "v13": CA.issue("v13.example.com"),
    }
    gateways = [
        _gateway(
            "tls",
            _server(https, "https-a", ["a.example.com"], {"mode": "SIMPLE", "credentialName": "a-cert"}),
            _server(https, "https-b", ["b.example.com"], {"mode": "SIMPLE", "credentialName": "b-cert"}),
            _server(https, "https-m", ["m.example.com"], {"mode": "MUTUAL", "credentialName": "m-cert"}),
            _server(https, "https-o", ["o.example.com"], {"mode": "OPTIONAL_MUTUAL", "credentialName": "m-cert"}),
            _server(
                https,
                "https-v13",
                ["v13.example.com"],
                {"mode": "SIMPLE", "credentialName": "v13-cert", "minProtocolVersion": "TLSV1_3"},
            ),
            _http_server(http, ["*.example.com"]),
        ),
        _gateway("second", _http_server(http, ["merged.example.org"])),
        _gateway(
            "cross-network", _server(east_west, "tls", ["*.local"], {"mode": "AUTO_PASSTHROUGH"}, "TLS"), namespace=NS
        ),
    ]
    secrets = [
        tls_secret("a-cert", NS, certs["a"]),
        generic_secret("b-cert", NS, {"cert": certs["b"].cert_pem, "key": certs["b"].key_pem}),
        tls_secret("m-cert", NS, certs["m"], ca=CLIENT_CA.pem),
        tls_secret("v13-cert", NS, certs["v13"]),
    ]
    pilot = pilot_factory({"gateways.yaml": gateways, "a-cert.yaml": secrets[0], "secrets.yaml": secrets[1:]})
    envoy = envoy_factory(pilot, ROUTER_NODE, LABELS, "tls-gateway")
    envoy.wait_listener_sync(f"0.0.0.0_{https}", f"0.0.0.0:{https}")
    return TlsEnv(pilot, envoy, https, http, east_west, certs, e2e_workdir)


# ----- a TLS client -----


@dataclass
class Reply:
    status: int  # 0: the connection or handshake failed
    body: Any = None
    peer: x509.Certificate | None = None
    error: str = ""

    @property
    def backend(self) -> str | None:
        return self.body.get("backend") if isinstance(self.body, dict) else None


_key_files: dict[int, tuple[str, str]] = {}


def _client_context(ca: bytes, client: Issued | None, max_version: ssl.TLSVersion | None, alpn: list[str]) -> Any:
    context = ssl.create_default_context(cadata=ca.decode())
    context.check_hostname = False  # the peer certificate is checked by the tests themselves
    if client is not None:
        if client.serial not in _key_files:
            directory = tempfile.mkdtemp(prefix="client-cert-")
            cert, key = Path(directory, "cert.pem"), Path(directory, "key.pem")
            cert.write_bytes(client.cert_pem)
            key.write_bytes(client.key_pem)
            _key_files[client.serial] = (str(cert), str(key))
        context.load_cert_chain(*_key_files[client.serial])
    if max_version is not None:
        context.maximum_version = max_version
    context.set_alpn_protocols(alpn)
    return context


async def tls_get(
    port: int,
    sni: str,
    *,
    ca: bytes = CA.pem,
    client: Issued | None = None,
    host: str | None = None,
    max_version: ssl.TLSVersion | None = None,
    alpn: tuple[str, ...] = ("http/1.1",),
) -> Reply:
    """One HTTP/1.1 GET over TLS to 127.0.0.1:``port`` with ``sni``; the reply, or status 0 and the error."""
    context = _client_context(ca, client, max_version, list(alpn))
    writer = None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=sni), 5
        )
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        peer = x509.load_der_x509_certificate(der) if der else None
        writer.write(f"GET / HTTP/1.1\r\nHost: {host or sni}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 5)
    except (ssl.SSLError, OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
        return Reply(0, error=f"{type(exc).__name__}: {exc}")  # ValueError: the handshake never completed
    finally:
        if writer is not None:
            writer.close()
    if not raw:
        return Reply(0, peer=peer, error="connection closed without a response")
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        parsed = body.decode(errors="replace")
    return Reply(status, parsed, peer)


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return out


def _common_name(cert: x509.Certificate | None) -> str:
    assert cert is not None
    return cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value  # type: ignore[return-value]


async def _route(env: TlsEnv, host: str, backend: Backend, **vs: Any) -> None:
    """A ServiceEntry for ``backend`` and a VirtualService binding ``host`` to it on the module's Gateway (one
    file per host: a later test's route for the host replaces an earlier one)."""
    name = host.replace(".", "-")
    service = f"{name}.backend.internal"
    env.pilot.write(
        f"route-{name}.yaml",
        [
            service_entry(name, service, 80, [backend]),
            virtual_service(name, [host], [{"route": [route_to(service, port=80)]}], gateways=["default/tls"], **vs),
        ],
    )


async def _routed(port: int, sni: str, backend: str, env: TlsEnv, **kwargs: Any) -> Reply:
    async def attempt() -> Reply | None:
        reply = await tls_get(port, sni, **kwargs)
        return reply if reply.backend == backend else None

    return await wait_until(attempt, ROUTE_TIMEOUT, message=f"{sni} routed to {backend}", describe=env.diagnostics)


# ----- scenarios -----


async def test_https_hosts_on_one_port_are_chosen_by_sni(tls: TlsEnv, backends: Backends) -> None:
    a, b = await backends.start("a", "b")
    await _route(tls, "a.example.com", a)
    await _route(tls, "b.example.com", b)
    reply_a = await _routed(tls.https, "a.example.com", "a", tls)
    reply_b = await _routed(tls.https, "b.example.com", "b", tls)
    # Each SNI gets its server's certificate: a from a kubernetes.io/tls Secret, b from a generic one.
    assert _common_name(reply_a.peer) == "a.example.com" and reply_a.peer.serial_number == tls.certs["a"].serial
    assert _common_name(reply_b.peer) == "b.example.com" and reply_b.peer.serial_number == tls.certs["b"].serial
    assert reply_a.body["headers"]["Host"] == "a.example.com"
    # An SNI no server has: no filter chain, no handshake.
    assert (await tls_get(tls.https, "nobody.example.com")).status == 0
    # Plain text on the HTTPS port is not served either.
    async with HttpClient() as plain:
        assert (await plain.get(tls.https, "a.example.com")).status != 200


async def test_mutual_tls_requires_a_client_certificate(tls: TlsEnv, backends: Backends) -> None:
    (m,) = await backends.start("m")
    await _route(tls, "m.example.com", m)
    await _route(tls, "o.example.com", m)
    client = CLIENT_CA.issue("client.example.com", client=True)
    stranger = TestCA("stranger").issue("client.example.com", client=True)
    reply = await _routed(tls.https, "m.example.com", "m", tls, client=client)
    # The gateway tells the backend who the client is (x-forwarded-client-cert, SANITIZE_SET).
    headers = {k.lower(): v for k, v in reply.body["headers"].items()}
    forwarded = headers.get("x-forwarded-client-cert", "")
    assert "client.example.com" in forwarded and "Hash=" in forwarded, forwarded
    for refused in (
        await tls_get(tls.https, "m.example.com"),
        await tls_get(tls.https, "m.example.com", client=stranger),
    ):
        assert refused.status == 0, refused
    # OPTIONAL_MUTUAL: no certificate is fine, a certificate of an unknown CA is not.
    assert (await _routed(tls.https, "o.example.com", "m", tls)).status == 200
    assert (await tls_get(tls.https, "o.example.com", client=client)).backend == "m"
    assert (await tls_get(tls.https, "o.example.com", client=stranger)).status == 0


async def test_min_protocol_version(tls: TlsEnv, backends: Backends) -> None:
    (v,) = await backends.start("v13")
    await _route(tls, "v13.example.com", v)
    await _routed(tls.https, "v13.example.com", "v13", tls)
    assert (await tls_get(tls.https, "v13.example.com", max_version=ssl.TLSVersion.TLSv1_2)).status == 0
    assert (await tls_get(tls.https, "a.example.com", max_version=ssl.TLSVersion.TLSv1_2)).status != 0


async def test_renewed_secret_reaches_envoy_without_a_listener_change(tls: TlsEnv, backends: Backends) -> None:
    (a,) = await backends.start("a")
    await _route(tls, "a.example.com", a)
    await _routed(tls.https, "a.example.com", "a", tls)
    listeners = tls.envoy.stats(
        r"^listener_manager\.(listener_modified|listener_in_place_updated|lds\.update_success)$"
    )
    sds_stat = r"^sds\.kubernetes.*a-cert\.update_success$"  # Envoy sanitises ":" in stat names
    (sds_before,) = tls.envoy.stats(sds_stat).values()
    renewed = CA.issue("a.example.com")
    tls.pilot.write("a-cert.yaml", tls_secret("a-cert", NS, renewed))

    async def serves_renewed() -> bool:
        reply = await tls_get(tls.https, "a.example.com")
        return reply.peer is not None and reply.peer.serial_number == renewed.serial

    await wait_until(serves_renewed, ROUTE_TIMEOUT, message="the renewed certificate", describe=tls.diagnostics)
    assert (await tls_get(tls.https, "a.example.com")).backend == "a"
    # The listener did not change (no drain, no in-place update, no LDS push at all); SDS updated once.
    assert (
        tls.envoy.stats(r"^listener_manager\.(listener_modified|listener_in_place_updated|lds\.update_success)$")
        == listeners
    )
    assert list(tls.envoy.stats(sds_stat).values()) == [sds_before + 1]
    tls.certs["a"] = renewed


async def test_missing_and_foreign_secrets_are_reported_while_other_servers_work(
    tls: TlsEnv, backends: Backends
) -> None:
    (a,) = await backends.start("a")
    await _route(tls, "a.example.com", a)
    await _routed(tls.https, "a.example.com", "a", tls)
    broken_port, foreign_port = free_port("0.0.0.0"), free_port("0.0.0.0")
    mark = tls.pilot.log_mark()
    tls.pilot.write(
        "broken.yaml",
        [
            _gateway(
                "broken",
                _server(broken_port, "https", ["x.example.com"], {"mode": "SIMPLE", "credentialName": "missing-cert"}),
                _server(
                    foreign_port, "https2", ["y.example.com"], {"mode": "SIMPLE", "credentialName": "foreign-cert"}
                ),
                _server(
                    foreign_port,
                    "https3",
                    ["z.example.com"],
                    {"mode": "SIMPLE", "credentialName": "kubernetes://default/foreign-cert"},
                ),
            ),
            tls_secret("foreign-cert", "default", CA.issue("y.example.com")),  # not the gateway's namespace
        ],
    )
    status = await wait_until(lambda: _credential_status(tls), ROUTE_TIMEOUT, message="push_status of the credentials")
    assert set(status) == {
        f"{NS}/kubernetes://missing-cert",
        f"{NS}/kubernetes://foreign-cert",
        f"{NS}/kubernetes://default/foreign-cert",
    }, status
    assert "Gateway default/broken server 0" in status[f"{NS}/kubernetes://missing-cert"]["message"]
    assert "secret istio-system/missing-cert not found" in status[f"{NS}/kubernetes://missing-cert"]["message"]
    assert (
        "not a Secret in the gateway proxy's namespace" in status[f"{NS}/kubernetes://default/foreign-cert"]["message"]
    )
    await tls.pilot.wait_for_log(
        r"Gateway default/broken server 0 \(port \d+\): credential kubernetes://missing-cert .* not found", since=mark
    )
    await tls.pilot.wait_for_log(r"asked for secrets it may not have.*kubernetes://default/foreign-cert", since=mark)
    # The other servers keep working meanwhile, and nothing of the foreign Secret reaches Envoy.
    assert (await tls_get(tls.https, "a.example.com")).backend == "a"
    assert (await tls_get(broken_port, "x.example.com")).status == 0
    dump = tls.envoy.config_dump()
    secrets = [
        s for c in dump["configs"] if "SecretsConfigDump" in c["@type"] for s in c.get("dynamic_active_secrets", [])
    ]
    assert {s["name"] for s in secrets} <= {"kubernetes://a-cert", "kubernetes://b-cert", "kubernetes://m-cert",
                                              "kubernetes://m-cert-cacert", "kubernetes://v13-cert"}  # fmt: skip
    # Once the missing Secret exists, its server comes up (no VirtualService yet: Envoy answers 404).
    tls.pilot.write("missing-cert.yaml", tls_secret("missing-cert", NS, CA.issue("x.example.com")))

    async def handshakes() -> bool:
        reply = await tls_get(broken_port, "x.example.com")
        return reply.status == 404 and _common_name(reply.peer) == "x.example.com"

    await wait_until(handshakes, ROUTE_TIMEOUT, message="the server of the created Secret", describe=tls.diagnostics)
    tls.pilot.remove("broken.yaml")
    tls.pilot.remove("missing-cert.yaml")
    await wait_until(lambda: not _credential_status_sync(tls), ROUTE_TIMEOUT, message="the report cleared")


async def _credential_status(env: TlsEnv) -> dict[str, Any]:
    status = await env.pilot.debug("/debug/push_status")
    found = status.get("pilot_sds_certificate_errors", {})
    return found if len(found) >= 3 else {}


def _credential_status_sync(env: TlsEnv) -> bool:
    from tests.e2e.harness import http_get_sync

    _, body = http_get_sync(env.pilot.monitoring_url + "/debug/push_status")
    return bool(json.loads(body).get("pilot_sds_certificate_errors"))


class TlsBackend:
    """A TLS server (a workload behind an east-west gateway) answering HTTP/1.1 with its name."""

    def __init__(self, name: str, issued: Issued, *, client_ca: bytes | None = None) -> None:
        self.name = name
        self.host = next_loopback_host()
        self.port = 0
        self._issued = issued
        self._client_ca = client_ca  # when set, clients must present a certificate it issued
        self.clients: list[str] = []  # the common names of the client certificates presented
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        directory = Path(tempfile.mkdtemp(prefix="tls-backend-"))
        (directory / "cert.pem").write_bytes(self._issued.cert_pem)
        (directory / "key.pem").write_bytes(self._issued.key_pem)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(directory / "cert.pem"), str(directory / "key.pem"))
        if self._client_ca is not None:
            context.load_verify_locations(cadata=self._client_ca.decode())
            context.verify_mode = ssl.CERT_REQUIRED
        self._server = await asyncio.start_server(self._handle, self.host, 0, ssl=context)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            if der:
                self.clients.append(_common_name(x509.load_der_x509_certificate(der)))
            body = json.dumps({"backend": self.name}).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def test_auto_passthrough_routes_mesh_tls_by_sni(tls: TlsEnv) -> None:
    v1 = TlsBackend("v1", MESH_CA.issue(REVIEWS))
    v2 = TlsBackend("v2", MESH_CA.issue(REVIEWS))
    for backend in (v1, v2):
        await backend.start()
    try:
        assert v1.port and v2.port
        endpoints = [{"address": b.host, "ports": {"http": b.port}, "labels": {"version": b.name}} for b in (v1, v2)]
        tls.pilot.write(
            "reviews.yaml",
            [
                {
                    "apiVersion": "networking.istio.io/v1",
                    "kind": "ServiceEntry",
                    "metadata": {"name": "reviews", "namespace": "default"},
                    "spec": {
                        "hosts": [REVIEWS],
                        "location": "MESH_INTERNAL",
                        "resolution": "STATIC",
                        "ports": [{"number": 9080, "name": "http", "protocol": "HTTP"}],
                        "endpoints": endpoints,
                    },
                },
                destination_rule("reviews", REVIEWS, ["v1", "v2"]),
            ],
        )
        istio = ("istio-peer-exchange", "istio")

        async def reach(sni: str) -> Reply:
            return await tls_get(tls.east_west, sni, ca=MESH_CA.pem, alpn=istio, host=REVIEWS)

        everyone = f"outbound_.9080_._.{REVIEWS}"
        await wait_until(
            lambda: _is_backend(reach(everyone)), ROUTE_TIMEOUT, message="east-west routing", describe=tls.diagnostics
        )
        # The workload itself terminates the client's TLS: its certificate is the one the client sees.
        reply = await reach(everyone)
        assert _common_name(reply.peer) == REVIEWS and reply.backend in {"v1", "v2"}
        seen = {(await reach(f"outbound_.9080_.v1_.{REVIEWS}")).backend for _ in range(6)}
        assert seen == {"v1"}
        seen = {(await reach(f"outbound_.9080_.v2_.{REVIEWS}")).backend for _ in range(6)}
        assert seen == {"v2"}
        # An SNI that is no cluster, or a client that does not speak Istio's mTLS ALPN, has no chain.
        assert (await reach(f"outbound_.9999_._.{REVIEWS}")).status == 0
        assert (await tls_get(tls.east_west, everyone, ca=MESH_CA.pem)).status == 0
    finally:
        for backend in (v1, v2):
            await backend.stop()


async def test_an_egress_gateway_originates_mutual_tls_with_a_destination_rule_credential(tls: TlsEnv) -> None:
    """DestinationRule tls.credentialName on a gateway (TLS origination at an egress gateway): Envoy fetches the
    client certificate and the CA over SDS, verifies the server by its SAN and presents the certificate; a CA
    that did not issue the server's certificate makes the requests fail."""
    host = "egress.example.com"
    server_ca = TestCA("external-server-ca")
    backend = TlsBackend("external", server_ca.issue(host), client_ca=CLIENT_CA.pem)
    await backend.start()
    client_cert = CLIENT_CA.issue("egress-gateway", client=True)

    def objects(ca: bytes) -> list[dict[str, Any]]:
        return [
            tls_secret("egress-client", NS, client_cert, ca=ca),
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "ServiceEntry",
                "metadata": {"name": "external", "namespace": NS},
                "spec": {
                    "hosts": [host],
                    "location": "MESH_EXTERNAL",
                    "resolution": "STATIC",
                    "ports": [{"number": 443, "name": "https", "protocol": "HTTPS"}],
                    "endpoints": [{"address": backend.host, "ports": {"https": backend.port}}],
                },
            },
            virtual_service("egress", [host], [{"route": [route_to(host, port=443)]}], gateways=["default/tls"]),
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "DestinationRule",
                "metadata": {"name": "external", "namespace": NS},
                "spec": {
                    "host": host,
                    "trafficPolicy": {
                        "tls": {
                            "mode": "MUTUAL",
                            "credentialName": "egress-client",
                            "sni": host,
                            "subjectAltNames": [host],
                        }
                    },
                },
            },
        ]

    try:
        tls.pilot.write("egress.yaml", objects(server_ca.pem))
        async with HttpClient() as client:
            await client.wait_routed(tls.http, host, only("external"), within=ROUTE_TIMEOUT, describe=tls.diagnostics)
            assert set(backend.clients) == {"egress-gateway"}
            tls.pilot.write("egress.yaml", objects(MESH_CA.pem))  # a CA that did not issue the server's cert
            await client.wait_routed(tls.http, host, only("HTTP 503"), within=ROUTE_TIMEOUT, describe=tls.diagnostics)
    finally:
        await backend.stop()


async def _is_backend(reply: Any) -> bool:
    return (await reply).backend is not None


async def test_gateways_merge_on_one_port_and_conflicts_are_rejected(tls: TlsEnv, backends: Backends) -> None:
    first, second, ns1, ns2 = await backends.start("first", "second", "ns1", "ns2")
    for name, host, backend, gateway, ns in (
        ("merge-first", "first.example.com", first, "default/tls", "default"),
        ("merge-second", "merged.example.org", second, "default/second", "default"),
        ("prefixed-1", "p.example.net", ns1, "default/prefixed", "ns1"),
        ("prefixed-2", "p.example.net", ns2, "default/prefixed", "ns2"),
    ):
        service = f"{name}.backend.internal"
        tls.pilot.write(
            f"{name}.yaml",
            [
                service_entry(name, service, 80, [backend], namespace=ns),
                virtual_service(
                    name, [host], [{"route": [route_to(service, port=80)]}], gateways=[gateway], namespace=ns
                ),
            ],
        )
    tls.pilot.write(
        "merge-gateways.yaml",
        [
            # Only VirtualServices of ns1 may bind p.example.net on this server.
            _gateway("prefixed", _http_server(tls.http, ["ns1/p.example.net"], name="http-prefixed")),
            # A TCP server on the HTTP port, of a later Gateway (key order stands for creation order): rejected,
            # the HTTP servers keep the port.
            _gateway("zz-conflict", {"port": {"number": tls.http, "name": "tcp", "protocol": "TCP"}, "hosts": ["*"]}),
        ],
    )
    async with HttpClient() as client:
        await client.wait_routed(tls.http, "first.example.com", only("first"), within=ROUTE_TIMEOUT)
        await client.wait_routed(tls.http, "merged.example.org", only("second"), within=ROUTE_TIMEOUT)
        await client.wait_routed(tls.http, "p.example.net", only("ns1"), within=ROUTE_TIMEOUT)
        assert set(await client.count(10, tls.http, "p.example.net")) == {"ns1"}
    status = await tls.pilot.debug("/debug/push_status")
    rejected = status["pilot_total_rejected_configs"]
    assert "conflicts with the HTTP server" in rejected["default/zz-conflict"]["message"], rejected


async def test_no_debug_endpoint_or_log_shows_secret_material(tls: TlsEnv) -> None:
    configz = await tls.pilot.debug("/debug/configz")
    secrets = {f"{c['metadata']['namespace']}/{c['metadata']['name']}": c for c in configz if c["kind"] == "Secret"}
    shown_data = secrets[f"{NS}/a-cert"]["spec"]["data"]  # keys only, each value a redaction marker
    assert sorted(shown_data) == ["tls.crt", "tls.key"]
    assert all("redacted" in value and len(value) < 40 for value in shown_data.values()), shown_data
    shown = json.dumps(configz)
    for path in ("/debug/push_status", "/debug/config_cache", "/debug/adsz", "/debug/syncz"):
        shown += json.dumps(await tls.pilot.debug(path))
    shown += tls.pilot.log_text()
    for issued in tls.certs.values():
        key_body = issued.key_pem.decode().splitlines()[1]
        cert_body = issued.cert_pem.decode().splitlines()[1]
        assert key_body not in shown and cert_body not in shown
        assert tls_secret("x", NS, issued)["data"]["tls.key"][:40] not in shown  # nor base64 of the PEM
    assert "PRIVATE KEY" not in shown

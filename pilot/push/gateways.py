"""The Gateways selecting one router, merged into one logical gateway as istiod's mergeGateways does.

Servers are grouped per ``ServerPort`` (port, protocol, bind), in Gateway order (key order, standing for
istiod's creation order) and server order:

* plain-text servers on a port share it when their protocols can merge (HTTP-like with HTTP-like, or the
  same protocol): HTTP servers share RDS ``http.<port>[.<bind>]``;
* TLS servers (HTTPS, TLS, or any server with ``tls``) on a port each keep their own filter chain, told apart
  by SNI: TLS-terminating HTTPS servers get RDS ``https.<port>.<portName>.<gateway>.<ns>[.<bind>]``;
* rejected, as istiod rejects them (a log line, and ``pilot_total_rejected_configs`` in push_status, keyed by
  the Gateway): a server whose hosts repeat a TLS server's on the same port and bind, a server whose
  protocol cannot merge with the plain-text server already on its port and bind, a second HTTPS server with
  the same RDS name, a server without a port.

Server hosts are sanitised first (``./host`` → ``<gateway ns>/host``, ``*/host`` → ``host``, ``*/*`` → ``*``);
``ns/host`` entries only bind VirtualServices of ``ns``. The SNI names of a TLS server are its hosts without
the namespace part. The ports a router listens on are translated as istiod does for Gateways that select it
by labels: a server port that is a port of one of the router's own services listens on that port's
targetPort (unless the service is labelled ``experimental.istio.io/disable-gateway-port-translation``).

Also collected: the credentials the merged servers reference (SDS resource names, ``-cacert`` companions for
MUTUAL and OPTIONAL_MUTUAL), which are the only secrets a router may fetch (``pilot.push.credentials``), and
whether any server is AUTO_PASSTHROUGH (its SNI-DNAT clusters and filter chains).

Deviation: duplicates among TLS servers are found on SNI names (hosts without namespace), where istiod
compares the hosts as written; two servers ``a/foo.com`` and ``b/foo.com`` would give Envoy two filter chains
with the same match, and Envoy rejects the whole listener.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pilot.config.convert import enum_name
from pilot.model.config import Config
from pilot.model.service import Protocol
from pilot.push import credentials

log = logging.getLogger(__name__)

REJECTED_STATUS = "pilot_total_rejected_configs"  # istiod's counter {type="gateway", name}, here a push_status map
PASSTHROUGH_MODES = frozenset({"PASSTHROUGH", "AUTO_PASSTHROUGH"})
MUTUAL_MODES = frozenset({"MUTUAL", "OPTIONAL_MUTUAL"})
TERMINATING_MODES = frozenset({"SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL", "ISTIO_MUTUAL"})


@dataclass(frozen=True, order=True)
class ServerPort:
    """istiod's ServerPort: servers are merged per (listen port, protocol as written, bind)."""

    number: int
    protocol: str
    bind: str


@dataclass(frozen=True, eq=False)
class GatewayServer:
    """One accepted server: its Gateway, the server (hosts sanitised), where it came from and its names."""

    gateway: Config
    server: Any  # networking.v1alpha3 Server
    index: int  # position in the Gateway's servers
    port: int  # the port it listens on (the server port, or its targetPort)
    route_name: str  # RDS of HTTP and TLS-terminating HTTPS servers, "" otherwise
    sni_hosts: tuple[str, ...]  # a TLS server's hosts without namespace, sorted ("" for others)

    @property
    def gateway_name(self) -> str:
        return f"{self.gateway.namespace}/{self.gateway.name}"

    @property
    def mode(self) -> str:
        return tls_mode(self.server)

    def describe(self) -> str:
        return f"Gateway {self.gateway_name} server {self.index} (port {self.server.port.number})"


@dataclass
class MergedServers:
    servers: list[GatewayServer] = field(default_factory=list)
    route_name: str = ""  # plain-text HTTP servers' shared RDS


@dataclass(frozen=True)
class Rejection:
    gateway: str  # "ns/name"
    index: int
    message: str


@dataclass(frozen=True, eq=False)
class MergedGateway:
    server_ports: tuple[ServerPort, ...] = ()  # in the order first seen
    merged_servers: Mapping[ServerPort, MergedServers] = field(default_factory=dict)
    servers_by_route_name: Mapping[str, tuple[GatewayServer, ...]] = field(default_factory=dict)
    rejected: tuple[Rejection, ...] = ()
    # SDS resource names the servers reference, each with the servers referencing it.
    credentials: Mapping[str, tuple[GatewayServer, ...]] = field(default_factory=dict)
    auto_passthrough_hosts: tuple[str, ...] = ()  # SNI hosts of AUTO_PASSTHROUGH servers; empty: none

    @property
    def auto_passthrough(self) -> bool:
        return bool(self.auto_passthrough_hosts)

    def servers(self) -> Iterable[GatewayServer]:
        for port in self.server_ports:
            yield from self.merged_servers[port].servers


EMPTY = MergedGateway()


# ----- reading servers -----


def tls_mode(server: Any) -> str:
    """The server's TLS mode name ("" without tls; PASSTHROUGH is the default mode)."""
    if server.tls is None:
        return ""
    return enum_name(server.tls.mode) or "PASSTHROUGH"


def protocol_of(server: Any) -> Protocol:
    return Protocol.parse(server.port.protocol if server.port is not None else "")


def is_passthrough(server: Any) -> bool:
    return tls_mode(server) in PASSTHROUGH_MODES


def is_tls_server(server: Any) -> bool:
    """istiod's IsTLSServer: TLS settings on a non-HTTP port (an HTTP server's tls is its httpsRedirect)."""
    return server.tls is not None and not protocol_of(server).is_http


def is_http_server(server: Any) -> bool:
    """istiod's IsHTTPServer: HTTP-like, or HTTPS terminating TLS."""
    protocol = protocol_of(server)
    return protocol.is_http or (protocol is Protocol.HTTPS and not is_passthrough(server))


def is_https_terminating(server: Any) -> bool:
    """istiod's IsHTTPSServerWithTLSTermination."""
    return server.tls is not None and protocol_of(server) is Protocol.HTTPS and not is_passthrough(server)


def sanitize_hosts(hosts: Sequence[str], namespace: str) -> list[str]:
    """istiod's sanitizeServerHostNamespace: ``./h`` → ``ns/h``, ``*/h`` → ``h``, ``*/*`` → ``*``."""
    out: list[str] = []
    for host in hosts:
        ns, sep, name = host.partition("/")
        if not sep:
            out.append(host)
        elif ns == ".":
            out.append(f"{namespace}/{name}")
        elif ns == "*":
            if name == "*":
                return ["*"]
            out.append(name)
        else:
            out.append(host)
    return out


def sni_hosts(hosts: Iterable[str]) -> tuple[str, ...]:
    """istiod's GetSNIHostsForServer: hosts without their namespace part, sorted, once each."""
    return tuple(sorted({h.split("/", 1)[1] if "/" in h else h for h in hosts}))


def route_name(server: Any, port: int, gateway: Config) -> str:
    """istiod's gatewayRDSRouteName (HTTPS names use the server port as written, HTTP the listen port)."""
    protocol = protocol_of(server)
    bind = server.bind or ""
    if protocol.is_http:
        return f"http.{port}.{bind}" if bind else f"http.{port}"
    if protocol is Protocol.HTTPS and not is_passthrough(server):
        suffix = f".{bind}" if bind else ""
        return f"https.{server.port.number}.{server.port.name}.{gateway.name}.{gateway.namespace}{suffix}"
    return ""


def _can_merge(current: Protocol, new: Protocol) -> bool:
    """istiod's canMergeProtocols."""
    return (current.is_http or current is new) and new.is_http


# ----- merging -----


class _Merger:
    def __init__(self, port_map: Mapping[int, int]) -> None:
        self.port_map = port_map
        self.gateway_ports: set[int] = set()
        self.non_plaintext_binds: dict[int, set[str]] = {}
        self.merged: dict[ServerPort, MergedServers] = {}
        self.server_ports: list[ServerPort] = []
        self.plaintext: dict[int, ServerPort] = {}
        self.by_route: dict[str, list[GatewayServer]] = {}
        self.tls_hosts: dict[int, dict[str, str]] = {}  # listen port -> SNI host -> bind
        self.rejected: list[Rejection] = []
        self.credentials: dict[str, list[GatewayServer]] = {}
        self.auto_hosts: dict[str, None] = {}

    def reject(self, gateway: Config, index: int, message: str) -> None:
        name = f"{gateway.namespace}/{gateway.name}"
        log.warning("gateway %s: server %d skipped: %s", name, index, message)
        self.rejected.append(Rejection(name, index, message))

    def add_gateway(self, gateway: Config) -> None:
        for index, raw in enumerate(gateway.spec.servers or ()):
            if raw.port is None or not raw.port.number:
                self.reject(gateway, index, "server without a port")
                continue
            server = dataclasses.replace(raw, hosts=sanitize_hosts(raw.hosts or [], gateway.namespace))
            self.add_server(gateway, index, server)

    def add_server(self, gateway: Config, index: int, server: Any) -> None:
        port = self.port_map.get(server.port.number, server.port.number)
        route = route_name(server, port, gateway)
        sni = sni_hosts(server.hosts) if server.tls is not None else ()
        entry = GatewayServer(gateway, server, index, port, route, sni)
        bind = server.bind or ""
        if server.tls is not None:
            known = self.tls_hosts.setdefault(port, {})
            duplicates = [h for h in sni if known.get(h) == bind]
            if duplicates:
                self.reject(gateway, index, f"duplicate host names on port {port}: {', '.join(duplicates)}")
                return
            for host in sni:
                known[host] = bind
        server_port = ServerPort(port, server.port.protocol, bind)
        protocol = protocol_of(server)
        if port not in self.gateway_ports:
            self.gateway_ports.add(port)
            self._add_plaintext(entry, server_port)
        elif port in self.plaintext:
            current = self.plaintext[port]
            if current.bind == bind:
                if not _can_merge(Protocol.parse(current.protocol), protocol):
                    self.reject(
                        gateway,
                        index,
                        f"{server.port.protocol} server on port {port} conflicts with the {current.protocol} server "
                        "already there",
                    )
                    return
                if not route:
                    self.reject(gateway, index, f"no route name for a {server.port.protocol} server on port {port}")
                    return
                self.merged[current].servers.append(entry)
                self.by_route.setdefault(route, []).append(entry)
            elif server_port not in self.merged:
                self._add_plaintext(entry, server_port)
            else:
                group = self.merged[server_port]
                group.route_name = route
                group.servers.append(entry)
                self.by_route.setdefault(route, []).append(entry)
        else:
            if not is_tls_server(server):
                self.plaintext[port] = server_port
                if is_http_server(server):
                    self.by_route[route] = [entry]
                self.merged[server_port] = MergedServers([entry], route)
                self.server_ports.append(server_port)
                self._referenced(entry)
                return
            if is_http_server(server):
                if not route:
                    self.reject(gateway, index, f"no route name for an HTTPS server on port {port}")
                    return
                if route in self.by_route:
                    self.reject(gateway, index, f"non unique port name for HTTPS port {port}: {server.port.name}")
                    return
                self.by_route[route] = [entry]
            binds = self.non_plaintext_binds.setdefault(port, set())
            new_bind = bind not in binds
            binds.add(bind)
            if server.tls is None and not new_bind:
                self.reject(gateway, index, "TLS server without TLS options")
                return
            if server_port not in self.merged:
                self.merged[server_port] = MergedServers([entry])
                self.server_ports.append(server_port)
            else:
                self.merged[server_port].servers.append(entry)
        self._referenced(entry)

    def _add_plaintext(self, entry: GatewayServer, server_port: ServerPort) -> None:
        """istiod's addPlainTextServer (also for the first server of a port, TLS or not)."""
        if not is_tls_server(entry.server):
            self.plaintext[server_port.number] = server_port
        if is_http_server(entry.server):
            self.by_route[entry.route_name] = [entry]
        self.merged[server_port] = MergedServers([entry], entry.route_name)
        self.server_ports.append(server_port)
        self._referenced(entry)

    def _referenced(self, entry: GatewayServer) -> None:
        """Record the credentials an accepted server refers to, and AUTO_PASSTHROUGH hosts."""
        mode = entry.mode
        if mode == "AUTO_PASSTHROUGH":
            self.auto_hosts.update(dict.fromkeys(entry.sni_hosts))
        if mode not in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL"):
            return
        for name in credentials.credential_names(entry.server.tls):
            resource = credentials.resource_name(name)
            self.credentials.setdefault(resource, []).append(entry)
            if mode in MUTUAL_MODES:
                self.credentials.setdefault(credentials.ca_resource_name(resource), []).append(entry)

    def result(self) -> MergedGateway:
        return MergedGateway(
            server_ports=tuple(self.server_ports),
            merged_servers=dict(self.merged),
            servers_by_route_name={name: tuple(servers) for name, servers in self.by_route.items()},
            rejected=tuple(self.rejected),
            credentials={name: tuple(servers) for name, servers in self.credentials.items()},
            auto_passthrough_hosts=tuple(self.auto_hosts),
        )


def merge_gateways(gateways: Iterable[Config], port_map: Mapping[int, int] | None = None) -> MergedGateway:
    """The merged view of the Gateways selecting one router (in key order); ``port_map`` translates a server
    port to the port the router listens on (its own services' targetPorts)."""
    merger = _Merger(port_map or {})
    for gateway in gateways:
        merger.add_gateway(gateway)
    return merger.result()

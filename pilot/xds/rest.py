"""xDS over REST (Envoy's ``api_type: REST``): ``POST /v3/discovery:<type>`` with a JSON DiscoveryRequest,
answered with a JSON DiscoveryResponse, or ``304 Not Modified`` when the client's ``version_info`` is the
version of what it would get (versions are digests of the resources, so they survive unrelated pushes).

REST has no stream: every poll is answered from the current PushContext through the same snapshots as the
gRPC streams, so polling proxies of one class cost one generation per push between them.
"""

from __future__ import annotations

import grpclib.exceptions
from aiohttp import web
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from pilot.httpbody import read_bounded
from pilot.xds.names import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE
from pilot.xds.server import DiscoveryServer

PATH_TYPES = {
    "clusters": CLUSTER_TYPE,
    "listeners": LISTENER_TYPE,
    "routes": ROUTE_TYPE,
    "endpoints": ENDPOINT_TYPE,
    "secrets": SECRET_TYPE,  # gateway credentials (pilot.xds.sds)
}
MAX_REQUEST_BYTES = 4 * 1024 * 1024  # as istiod's gRPC receive limit

DISCOVERY_KEY: web.AppKey[DiscoveryServer] = web.AppKey("rest-discovery", DiscoveryServer)


async def discovery(request: web.Request) -> web.Response:
    type_url = PATH_TYPES.get(request.match_info["type"])
    if type_url is None:
        raise web.HTTPNotFound(text=f"unknown discovery type {request.match_info['type']!r}\n")
    if request.content_length is not None and request.content_length > MAX_REQUEST_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_REQUEST_BYTES, actual_size=request.content_length)
    body = await read_bounded(request, MAX_REQUEST_BYTES)
    if body is None:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_REQUEST_BYTES, actual_size=MAX_REQUEST_BYTES + 1)
    parsed = discovery_pb2.DiscoveryRequest()
    try:
        json_format.Parse(body or b"{}", parsed, ignore_unknown_fields=True)
    except (json_format.ParseError, DecodeError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(text=f"invalid DiscoveryRequest: {exc}\n") from None
    server = request.app[DISCOVERY_KEY]
    if server.current is None:
        # The monitoring port (and so REST) is up before the first config is loaded; Envoy polls again.
        raise web.HTTPServiceUnavailable(text="no configuration loaded yet\n")
    try:
        version, encoded = server.answer(type_url, parsed, xds_api="rest")
    except grpclib.exceptions.GRPCError as exc:
        raise web.HTTPBadRequest(text=f"{exc.message}\n") from None
    if parsed.version_info and parsed.version_info == version:
        return web.Response(status=304)
    response = discovery_pb2.DiscoveryResponse.FromString(encoded)
    text = json_format.MessageToJson(response, indent=None, preserving_proto_field_name=False)
    return web.Response(text=text, content_type="application/json")


def add_routes(app: web.Application, server: DiscoveryServer) -> None:
    app[DISCOVERY_KEY] = server
    app.router.add_post("/v3/discovery:{type}", discovery)

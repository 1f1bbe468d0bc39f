"""Talking to the Kubernetes API: configuration (kubeconfig or in-cluster service account), requests, errors.

kubernetes-asyncio supplies configuration loading (kubeconfig contexts, client certificates, exec and token
auth, in-cluster token refresh) and its HTTP client; requests go through ``ApiClient.call_api`` with
``_preload_content=False`` so pilot reads JSON with orjson and streams watches line by line itself (its
``Watch`` helper retries a 410 with the same resourceVersion and hides bookmarks, which an informer must see).
kubernetes-asyncio is imported only when a client is made: its generated API models cost a files-only pilot
about 40 MB of memory and 0.2 s of start-up.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from pilot.sources.kube.resources import ResourceType, ServedResource, choose_versions

if TYPE_CHECKING:
    from kubernetes_asyncio.client import Configuration

log = logging.getLogger(__name__)

SERVICE_HOST_ENV = "KUBERNETES_SERVICE_HOST"
SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
REQUEST_TIMEOUT = 30.0  # seconds for one non-watch request (a large list included)
CONNECT_TIMEOUT = 10.0
LARGE_BODY = 1 << 20  # bodies above this are parsed off the event loop

JSON = dict[str, Any]


class ApiError(Exception):
    """A failed API request: HTTP status (0 when the server could not be reached) and the Status message."""

    def __init__(self, status: int, reason: str, message: str = "") -> None:
        self.status = status
        self.reason = reason
        self.message = message
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")


class KubeConfigError(Exception):
    """The kubeconfig or the service account cannot be used."""


def in_cluster() -> bool:
    """Running in a pod with a service account: the in-cluster configuration applies."""
    return bool(os.environ.get(SERVICE_HOST_ENV)) and SERVICE_ACCOUNT_TOKEN.is_file()


def default_identity() -> str:
    """Who this pilot is to the API server (User-Agent) and in the Lease: the pod name, else host and pid."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


async def load_configuration(kubeconfig: Path | None) -> Configuration:
    """The client configuration from ``kubeconfig`` or, when None, from the pod's service account."""
    from kubernetes_asyncio.client import Configuration
    from kubernetes_asyncio.config import load_incluster_config, load_kube_config
    from kubernetes_asyncio.config.config_exception import ConfigException

    configuration = Configuration()
    try:
        if kubeconfig is not None:
            await load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        else:
            load_incluster_config(client_configuration=configuration)
    except (ConfigException, OSError, ValueError, KeyError, TypeError) as exc:
        where = f"kubeconfig {kubeconfig}" if kubeconfig is not None else "in-cluster service account"
        raise KubeConfigError(f"{where}: {exc}") from exc
    return configuration


@dataclass(frozen=True)
class WatchStream:
    """An open watch: read lines with ``readline``; closed by the context manager."""

    response: aiohttp.ClientResponse

    async def readline(self) -> bytes:
        return await self.response.content.readline()


class KubeApi:
    """JSON requests to one API server. One per KubeSource: its ApiClient keeps the connection pool and TLS
    context (loading a CA bundle blocks for tens of milliseconds, so it is done once)."""

    def __init__(self, configuration: Configuration, identity: str) -> None:
        from kubernetes_asyncio.client import ApiClient

        self.identity = identity
        self._client = ApiClient(configuration)
        self._client.user_agent = f"pilot/0.1 ({identity})"

    @property
    def host(self) -> str:
        return str(self._client.configuration.host)

    async def close(self) -> None:
        await self._client.close()

    async def _request(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> aiohttp.ClientResponse:
        try:
            response: aiohttp.ClientResponse = await self._client.call_api(
                path,
                method,
                query_params=dict(query or {}),
                header_params={"Accept": "application/json", "Content-Type": content_type},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout or aiohttp.ClientTimeout(total=REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT),
            )
        except (aiohttp.ClientError, OSError) as exc:
            raise ApiError(0, type(exc).__name__, str(exc) or self.host) from exc
        except TimeoutError as exc:
            raise ApiError(0, "Timeout", f"{method} {path}") from exc
        if response.status >= 400:
            try:
                raw = await response.read()
            except (aiohttp.ClientError, OSError, TimeoutError):
                raw = b""
            finally:
                response.release()
            raise _error_of(response.status, response.reason or "", raw)
        return response

    async def request_json(
        self, method: str, path: str, query: Mapping[str, str] | None = None, body: Any = None, **kwargs: Any
    ) -> JSON:
        response = await self._request(method, path, query, body, **kwargs)
        try:
            raw = await response.read()
        except (aiohttp.ClientError, OSError) as exc:
            raise ApiError(0, type(exc).__name__, str(exc)) from exc
        except TimeoutError as exc:
            raise ApiError(0, "Timeout", f"{method} {path}") from exc
        finally:
            response.release()
        try:
            data = await asyncio.to_thread(orjson.loads, raw) if len(raw) > LARGE_BODY else orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ApiError(response.status, "BadResponse", f"{method} {path}: not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ApiError(response.status, "BadResponse", f"{method} {path}: expected a JSON object")
        return data

    async def get(self, path: str, query: Mapping[str, str] | None = None) -> JSON:
        return await self.request_json("GET", path, query)

    async def create(self, path: str, body: JSON) -> JSON:
        return await self.request_json("POST", path, body=body)

    async def replace(self, path: str, body: JSON) -> JSON:
        return await self.request_json("PUT", path, body=body)

    async def merge_patch(self, path: str, body: JSON) -> JSON:
        return await self.request_json("PATCH", path, body=body, content_type="application/merge-patch+json")

    @asynccontextmanager
    async def watch(self, path: str, query: Mapping[str, str]) -> AsyncIterator[WatchStream]:
        """Open a watch stream; the caller bounds each read (a silent watch is the caller's to detect)."""
        timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_read=None)
        response = await self._request("GET", path, {**query, "watch": "true"}, timeout=timeout)
        try:
            yield WatchStream(response)
        finally:
            response.close()

    async def served_resources(
        self, types: tuple[ResourceType, ...]
    ) -> tuple[list[ServedResource], list[ResourceType]]:
        """API discovery: which version of each type the cluster serves (preferred first), and the types it
        does not serve at any version pilot reads."""
        served: dict[str, dict[str, set[str]]] = {}
        for group in sorted({t.group for t in types}):
            versions = {v for t in types if t.group == group for v in t.versions}
            if group:
                try:
                    info = await self.get(f"/apis/{group}")
                except ApiError as exc:
                    if exc.status == 404:
                        continue
                    raise
                offered = {v.get("version") for v in info.get("versions", ()) if isinstance(v, dict)}
                versions &= {v for v in offered if isinstance(v, str)}
            for version in sorted(versions):
                path = f"/apis/{group}/{version}" if group else f"/api/{version}"
                try:
                    listing = await self.get(path)
                except ApiError as exc:
                    if exc.status == 404:
                        continue
                    raise
                plurals = {
                    r["name"]
                    for r in listing.get("resources", ())
                    if isinstance(r, dict) and isinstance(r.get("name"), str) and "/" not in r["name"]
                }
                served.setdefault(group, {})[version] = plurals
        return choose_versions(types, served)


def _error_of(status: int, reason: str, raw: bytes) -> ApiError:
    """An ApiError from a Status body when there is one."""
    message = ""
    try:
        body = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status":
        reason = str(body.get("reason") or reason)
        message = str(body.get("message") or "")
    elif raw:
        message = raw[:200].decode(errors="replace")
    return ApiError(status, reason, message)

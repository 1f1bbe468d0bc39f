"""pilot's validating admission webhook: HTTPS ``POST /validate`` with Kubernetes AdmissionReviews.

An object is allowed or denied with exactly the checks and messages of ``pilot validate``
(:func:`pilot.config.loader.load_object`), shaped as istiod's webhook (``pkg/webhooks/validation/server``):

- CREATE and UPDATE validate ``request.object``; every other operation (DELETE, CONNECT) is allowed unvalidated.
  ``oldObject`` is not validated, as in istiod: an object stored before the webhook existed must stay fixable.
- A denial's message is ``configuration is invalid: <errors>``; each error is the line ``pilot validate`` prints
  without its ``FILE[doc N]`` location (there is no file), several errors in istiod's multi-error list form.
- An Istio object with a top-level field other than apiVersion/kind/metadata/spec/status is denied with
  istiod's ``unknown field "x" on Kind resource ns/name``; unknown fields inside ``spec`` are reported by the
  loader with their path (``spec.http[0].bogus: unknown field "bogus"``).
- Validation warnings of an allowed object come back in ``response.warnings``, never as errors.
- Kinds pilot does not read are allowed without a warning (istiod adds warnings only about the object's
  content); the webhook configuration should list only the kinds pilot serves, so this is a mis-scoped rule.
- Counters use istiod's metric names and labels: ``galley_validation_passed{group,version,resource}``,
  ``galley_validation_failed{group,version,resource,reason}`` (every review that did not pass validation,
  including the allowed-unvalidated ones, as istiod counts them) and ``galley_validation_http_error{status}``.

The certificate and key are files (a mounted Secret that Kubernetes rotates in place). They are checked on the
TLS handshake itself, at most once per ``reload_interval`` seconds: no task or file watcher to own, two
``stat`` calls per interval only while connections arrive, and a new connection after a rotation is
guaranteed to see the new certificate (a watcher would race with the next handshake, and watching a Secret
volume means following its ``..data`` symlink swaps). A pair that fails to load (cert written, key not yet)
keeps the previous certificate in service until the files change again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from pilot.config import validation
from pilot.config.loader import LoadError, load_object
from pilot.httpbody import read_bounded
from pilot.model.config import ISTIO_GROUP, SECURITY_GROUP, yaml_type_name
from pilot.security.tls import HTTP_ALPN, ReloadingContext, TlsConfigError, TlsFiles

log = logging.getLogger(__name__)

DEFAULT_ADDR = "0.0.0.0:15017"
VALIDATE_PATHS = ("/validate", "/validate/")
# Kubernetes stores objects of up to ~1.5 MiB; an UPDATE review carries the object twice plus the envelope.
MAX_REVIEW_BYTES = 6 * 1024 * 1024
# aiohttp's keep-alive timer runs from the connection's start (and after each response) until a request's
# headers are complete, so it is both the header-read timeout and the idle timeout.
HEADER_READ_TIMEOUT = 10.0
BODY_READ_TIMEOUT = 10.0  # the API server gives a webhook 10 s by default (timeoutSeconds)
TLS_HANDSHAKE_TIMEOUT = 10.0
# After an early 413, how long the rest of the body is read and dropped so that a client still sending can read
# the answer (aiohttp's default is 10 s).
LINGERING_TIME = 2.0
CERT_CHECK_INTERVAL = 1.0
SHUTDOWN_TIMEOUT = 5.0
# Validation runs on one worker thread: a typical object takes about a millisecond, but checking for unreachable
# routes is quadratic (a 5000-route VirtualService takes seconds) and must not stall xDS on the event loop.
# Reviews beyond this many waiting or running are answered 503 (the API server applies its failurePolicy).
MAX_PENDING_REVIEWS = 32
MAX_RESOURCE_LABELS = 64  # distinct (group, version, resource) series; later ones are counted as "other"

ADMISSION_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")
VALIDATED_OPERATIONS = ("CREATE", "UPDATE")
# Top-level fields an Istio custom resource may have (istiod's checkFields).
ISTIO_TOP_LEVEL_FIELDS = frozenset({"apiVersion", "kind", "metadata", "spec", "status"})
# The loader's name for where an object came from; shown nowhere (the location prefix is dropped).
SOURCE = "admission"

# galley_validation_failed reasons (istiod's).
REASON_UNSUPPORTED_OPERATION = "unsupported_operation"
REASON_DECODE_ERROR = "yaml_decode_error"
REASON_UNKNOWN_TYPE = "unknown_type"
REASON_INVALID = "invalid_resource"


class WebhookCertificateError(Exception):
    """The webhook's certificate or key could not be loaded at start."""


class BadReview(Exception):
    """The request is not an AdmissionReview this server can answer (HTTP 400)."""


# ----- admission reviews ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    message: str = ""  # why it was denied
    warnings: tuple[str, ...] = ()
    reason: str = ""  # galley_validation_failed reason; "" when validation passed


def _without_location(error: LoadError) -> str:
    """The line ``pilot validate`` prints for this error, less the ``FILE[doc N]`` it was found at."""
    text = str(error)
    location = f"{error.source}[doc {error.doc_index}]"
    if text.startswith(location):
        text = text[len(location) :]
    return text.removeprefix(":").lstrip()


def _multi_error(messages: list[str]) -> str:
    """istiod's error list (istiomultierror): one error as is, several as a bulleted list."""
    if len(messages) == 1:
        return messages[0]
    points = "\n\t".join(f"* {m}" for m in messages)
    return f"{len(messages)} errors occurred:\n\t{points}\n\n"


def validate_object(obj: Any, namespace: str) -> Verdict:
    """The verdict on one object of a CREATE or UPDATE review."""
    if not isinstance(obj, dict):
        message = f"cannot decode configuration: request.object: expected a mapping, got {yaml_type_name(obj)}"
        return Verdict(False, message, reason=REASON_DECODE_ERROR)
    result = load_object(SOURCE, obj, default_namespace=namespace or "default")
    if result.skipped_kinds and not result.errors:
        return Verdict(True, reason=REASON_UNKNOWN_TYPE)
    accepted = {config.key: config for config in result.configs}
    errors = [_without_location(e) for e in result.errors if e.key is None or e.key not in accepted]
    if errors:
        return Verdict(False, f"configuration is invalid: {_multi_error(errors)}", reason=REASON_INVALID)
    # Loader findings on an accepted object are warnings; so are the validator's own warnings, which the loader
    # does not surface (pilot.config.validation.check keeps errors only).
    warnings = [_without_location(e) for e in result.errors]
    for config in accepted.values():
        group = config.api_version.rpartition("/")[0]
        if group not in (ISTIO_GROUP, SECURITY_GROUP):
            continue
        extra = sorted(set(obj) - ISTIO_TOP_LEVEL_FIELDS)
        if extra:
            key = config.key
            message = f'unknown field "{extra[0]}" on {key.kind} resource {key.namespace}/{key.name}'
            return Verdict(False, message, reason=REASON_INVALID)
        where = f"{config.key.kind} {config.key.namespace}/{config.key.name}: "
        _, found = validation.validate_spec_full(config.key.kind, config.spec, config.key.namespace)
        warnings.extend(where + str(w) for w in found)
    return Verdict(True, warnings=tuple(dict.fromkeys(warnings)))


def _short(value: Any, limit: int = 60) -> str:
    """repr() of a value from the request, cut so that an error message cannot echo megabytes back."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _string(value: Any) -> str:
    return value if isinstance(value, str) else ""


def parse_review(body: bytes) -> dict[str, Any]:
    """The AdmissionReview in a request body, or :class:`BadReview` saying what is wrong with it."""
    try:
        review = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadReview(f"invalid JSON: {exc}") from None
    if not isinstance(review, dict):
        raise BadReview(f"expected an AdmissionReview object, got a JSON {yaml_type_name(review)}")
    api_version = review.get("apiVersion")
    if review.get("kind") != "AdmissionReview" or api_version not in ADMISSION_VERSIONS:
        raise BadReview(
            f"expected kind AdmissionReview with apiVersion {' or '.join(ADMISSION_VERSIONS)}, "
            f"got kind {_short(review.get('kind'))} apiVersion {_short(api_version)}"
        )
    request = review.get("request")
    if not isinstance(request, dict):
        raise BadReview(f"request: expected a mapping, got {yaml_type_name(request)}")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadReview("request.uid: required non-empty string")
    return review


def review_verdict(request: dict[str, Any]) -> Verdict:
    operation = request.get("operation")
    if operation not in VALIDATED_OPERATIONS:
        return Verdict(True, reason=REASON_UNSUPPORTED_OPERATION)
    return validate_object(request.get("object"), _string(request.get("namespace")))


def review_response(review: dict[str, Any], verdict: Verdict) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": review["request"]["uid"], "allowed": verdict.allowed}
    if not verdict.allowed:
        response["status"] = {"message": verdict.message}  # no code: the API server reports 403, as for istiod
    if verdict.warnings:
        response["warnings"] = list(verdict.warnings)
    return {"apiVersion": review["apiVersion"], "kind": "AdmissionReview", "response": response}


# ----- the server ----------------------------------------------------------------------------------------------


def _split_addr(addr: str, default_port: int) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep:
        return addr or "0.0.0.0", default_port
    return host.strip("[]") or "0.0.0.0", int(port)


class WebhookServer:
    """HTTPS server for ``POST /validate``. ``port`` is the bound port after :meth:`start`."""

    def __init__(
        self,
        address: str,  # HOST:PORT; DEFAULT_ADDR is istiod's
        cert_file: str | os.PathLike[str],
        key_file: str | os.PathLike[str],
        *,
        max_review_bytes: int = MAX_REVIEW_BYTES,
        header_read_timeout: float = HEADER_READ_TIMEOUT,
        body_read_timeout: float = BODY_READ_TIMEOUT,
        reload_interval: float = CERT_CHECK_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        reuse_port: bool = False,  # for `pilot serve --workers N`: every worker serves the webhook port
        max_pending_reviews: int = MAX_PENDING_REVIEWS,
    ) -> None:
        self.host, self.port = _split_addr(address, 15017)
        self.reuse_port = reuse_port
        self.max_pending_reviews = max_pending_reviews
        self.cert_file = os.fspath(cert_file)
        self.key_file = os.fspath(key_file)
        self.max_review_bytes = max_review_bytes
        self.header_read_timeout = header_read_timeout
        self.body_read_timeout = body_read_timeout
        self.reload_interval = reload_interval
        self.clock = clock
        self.certificates: ReloadingContext | None = None
        # istiod's counters, by label values: (group, version, resource), (..., reason), HTTP status.
        self.passed: Counter[tuple[str, str, str]] = Counter()
        self.failed: Counter[tuple[str, str, str, str]] = Counter()
        self.http_errors: Counter[int] = Counter()
        self._web: web.Server | None = None
        self._server: asyncio.AbstractServer | None = None
        self._validator: ThreadPoolExecutor | None = None
        self._pending = 0  # reviews waiting for or in validation
        self._resources: set[tuple[str, str, str]] = set()  # (group, version, resource) label sets counted so far

    async def start(self) -> None:
        # The same reloading serving context as pilot's TLS xDS port (a rotated Secret reaches new connections).
        files = TlsFiles(Path(self.cert_file), Path(self.key_file))
        try:
            self.certificates = ReloadingContext(
                files, HTTP_ALPN, what="webhook certificate", interval=self.reload_interval, clock=self.clock
            )
        except TlsConfigError as exc:
            raise WebhookCertificateError(str(exc)) from exc
        self._validator = ThreadPoolExecutor(max_workers=1, thread_name_prefix="webhook-validate")
        self._web = web.Server(
            self._handle, keepalive_timeout=self.header_read_timeout, lingering_time=LINGERING_TIME, access_log=None
        )
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._web,
            self.host,
            self.port,
            ssl=self.certificates.context,
            ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT,
            reuse_address=True,
            reuse_port=self.reuse_port or None,
        )
        sockets = self._server.sockets or ()
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("validation webhook on https://%s:%d/validate (certificate %s)", self.host, self.port, self.cert_file)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._web is not None:
            self._web.pre_shutdown()
            await self._web.shutdown(SHUTDOWN_TIMEOUT)
            self._web = None
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), SHUTDOWN_TIMEOUT)
            except TimeoutError:
                log.warning("webhook server did not close within %.0fs", SHUTDOWN_TIMEOUT)
            self._server = None
        if self._validator is not None:
            # A validation still running finishes on its own thread; nothing waits for its answer any more.
            self._validator.shutdown(wait=False, cancel_futures=True)
            self._validator = None

    def metric_lines(self) -> list[str]:
        """The counters in Prometheus text form, for the monitoring endpoint."""
        lines = [
            f"galley_validation_passed{_labels(group=g, version=v, resource=r)} {n}"
            for (g, v, r), n in sorted(self.passed.items())
        ]
        lines += [
            f"galley_validation_failed{_labels(group=g, version=v, resource=r, reason=why)} {n}"
            for (g, v, r, why), n in sorted(self.failed.items())
        ]
        lines += [f'galley_validation_http_error{{status="{s}"}} {n}' for s, n in sorted(self.http_errors.items())]
        return lines

    # ----- HTTP --------------------------------------------------------------------------------------------

    def _error(self, status: int, text: str, *, close: bool = False) -> web.Response:
        self.http_errors[status] += 1
        response = web.Response(status=status, text=text + "\n")
        if close:
            response.force_close()  # the rest of the body is not read
        return response

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.path not in VALIDATE_PATHS:
            return self._error(404, f"not found: {request.path} (the webhook serves POST /validate)")
        if request.method != "POST":
            response = self._error(405, f"method {request.method} not allowed: use POST")
            response.headers["Allow"] = "POST"
            return response
        if request.content_type != "application/json":
            return self._error(415, "invalid Content-Type, want `application/json`", close=True)
        too_large = f"AdmissionReview larger than {self.max_review_bytes} bytes"
        if request.content_length is not None and request.content_length > self.max_review_bytes:
            return self._error(413, too_large, close=True)
        try:
            async with asyncio.timeout(self.body_read_timeout):
                body = await self._read_body(request)
        except TimeoutError:
            return self._error(408, f"request body not received within {self.body_read_timeout:g}s", close=True)
        if body is None:
            return self._error(413, too_large, close=True)
        if not body:
            return self._error(400, "no body found")
        try:
            review = parse_review(body)
        except BadReview as exc:
            return self._error(400, f"invalid AdmissionReview: {exc}")
        request_part = review["request"]
        if self._validator is None:
            return self._error(503, "shutting down")
        if self._pending >= self.max_pending_reviews:
            return self._error(503, f"busy: {self._pending} admission reviews already waiting")
        self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            verdict = await loop.run_in_executor(self._validator, review_verdict, request_part)
        except Exception:
            # A bug in validation must not look like a verdict: the API server applies its failurePolicy.
            log.exception("validating admission request %s failed", request_part.get("uid"))
            return self._error(500, "internal error while validating; see pilot's log")
        finally:
            self._pending -= 1
        self._count(request_part, verdict)
        if not verdict.allowed:
            log.info("denied %s: %s", _describe(request_part), verdict.message)
        return web.Response(body=orjson.dumps(review_response(review, verdict)), content_type="application/json")

    async def _read_body(self, request: web.BaseRequest) -> bytes | None:
        return await read_bounded(request, self.max_review_bytes)

    def _count(self, request: dict[str, Any], verdict: Verdict) -> None:
        resource = request.get("resource")
        if not isinstance(resource, dict):
            resource = {}
        labels = (_string(resource.get("group")), _string(resource.get("version")), _string(resource.get("resource")))
        # The labels come from the request: anyone reaching the port could otherwise grow the series without end.
        if labels not in self._resources:
            if len(self._resources) >= MAX_RESOURCE_LABELS:
                labels = ("other", "other", "other")
            self._resources.add(labels)
        if verdict.reason:
            self.failed[(*labels, verdict.reason)] += 1
        else:
            self.passed[labels] += 1


def _labels(**labels: str) -> str:
    """A Prometheus label set, values escaped as the text format requires."""
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items()) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _describe(request: dict[str, Any]) -> str:
    kind = request.get("kind")
    kind_name = _string(kind.get("kind")) if isinstance(kind, dict) else ""
    obj = request.get("object")
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    name = _string(request.get("name")) or (_string(metadata.get("name")) if isinstance(metadata, dict) else "")
    where = f"{_string(request.get('namespace'))}/{name}"
    return f"{_string(request.get('operation'))} {kind_name} {where}"

"""Semantic validation of typed Istio networking and security specs, with Istio's own wording.

The checks and messages follow Istio's validation webhook (``pkg/config/validation``): what it rejects is
reported as an error, what it only warns about as a warning. Every problem carries the JSON path of the field it
is about (camelCase names, e.g. ``spec.http[0].route[1].weight``; map entries as ``spec.selector[app]``).

Public API:

- ``validate_spec(kind, spec, namespace) -> list[FieldError]``: errors only (an object with errors is invalid).
- ``validate_spec_full(kind, spec, namespace) -> (errors, warnings)``.
- ``check(kind, spec_dict, namespace) -> (message | None, errors)``: convert + validate; the message is returned
  only when there is no error at all.
- ``re2_error(pattern) -> str | None``: RE2 syntax check (Go ``regexp`` wording).

Istio validates some things this module cannot see (object names, annotations); they are out of scope here.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import json
import math
import re
import warnings
from collections.abc import Iterable, Mapping

import betterproto2

from pilot.api.istio.networking import v1alpha3 as nw
from pilot.api.istio.security import v1beta1 as security
from pilot.api.istio.type import v1beta1 as type_beta
from pilot.config.convert import FieldError, convert_message, convert_spec
from pilot.model.host import matches as hosts_match
from pilot.model.host import subset_of as host_subset_of

__all__ = ["check", "re2_error", "validate_spec", "validate_spec_full"]


# --- collecting problems ------------------------------------------------------------------------------------------


class _Report:
    __slots__ = ("errors", "namespace", "warnings")

    def __init__(self, namespace: str) -> None:
        self.errors: list[FieldError] = []
        self.warnings: list[FieldError] = []
        self.namespace = namespace

    def err(self, path: str, message: str | None) -> None:
        if message:
            self.errors.append(FieldError(path, message))

    def warn(self, path: str, message: str | None) -> None:
        if message:
            self.warnings.append(FieldError(path, message))


def _q(text: str) -> str:
    """Go's %q for plain strings."""
    return json.dumps(text, ensure_ascii=False)


def _go_float(value: float) -> str:
    """Go's %v for a float64."""
    if math.isfinite(value) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return repr(value)


def _key(path: str, key: object) -> str:
    return f"{path}[{key}]"


# --- names, hosts, addresses --------------------------------------------------------------------------------------

_DNS1123_LABEL_FMT = "[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?"
_DNS1123_LABEL = re.compile(f"^{_DNS1123_LABEL_FMT}$")
_WILDCARD_LABEL = re.compile(rf"^(\*|(\*|\*-)?{_DNS1123_LABEL_FMT})$")
_QUALIFIED_NAME_FMT = "(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)"
_TAG_KEY = re.compile(rf"^({_DNS1123_LABEL_FMT}(?:\.{_DNS1123_LABEL_FMT})*/)?({_QUALIFIED_NAME_FMT})$")
_LABEL_VALUE = re.compile(rf"^({_QUALIFIED_NAME_FMT})?$")
_ALL_NUMERIC = re.compile(r"^[+-]?[0-9]+$")


def _is_dns1123_label(value: str) -> bool:
    return len(value) <= 63 and _DNS1123_LABEL.match(value) is not None


def _is_wildcard_dns1123_label(value: str) -> bool:
    return len(value) <= 63 and _WILDCARD_LABEL.match(value) is not None


def _check_dns1123_preconditions(name: str) -> str | None:
    if len(name) > 255:
        return f"domain name {_q(name)} too long (max 255)"
    if not name:
        return "empty domain name not allowed"
    return None


def _validate_dns1123_labels(domain: str) -> str | None:
    parts = domain.split(".")
    tld = parts[-1]
    if _ALL_NUMERIC.match(tld):
        return f"domain name {_q(domain)} invalid (top level domain {_q(tld)} cannot be all-numeric)"
    for i, label in enumerate(parts):
        if i == len(parts) - 1 and label == "":
            return None  # a trailing dot, as in "istio.io."
        if not _is_dns1123_label(label):
            return f"domain name {_q(domain)} invalid (label {_q(label)} invalid)"
    return None


def validate_fqdn(fqdn: str) -> str | None:
    return _check_dns1123_preconditions(fqdn) or _validate_dns1123_labels(fqdn)


def validate_wildcard_domain(domain: str) -> str | None:
    """A DNS name whose first label may be a wildcard ("*", "*.example.com"); short names are allowed."""
    bad = _check_dns1123_preconditions(domain)
    if bad:
        return bad
    first, _, rest = domain.partition(".")
    if not _is_wildcard_dns1123_label(first):
        return f"domain name {_q(domain)} invalid (label {_q(first)} invalid)"
    if "." in domain:
        return _validate_dns1123_labels(rest)
    return None


def _validate_wildcard_domain_for_gateway_vs(sni: bool, domain: str) -> str | None:
    bad = _check_dns1123_preconditions(domain)
    if bad:
        return bad
    if sni and domain.startswith("outbound_"):
        # Auto-generated SNI of AUTO_PASSTHROUGH gateways: outbound_.<port>_._.<hostname>
        fmt = "outbound_.<PORT>_._.<HOSTNAME>"
        parts = domain.split("_")
        if len(parts) < 4:
            return f"domain name {domain} invalid, should follow '{fmt}' format"
        port = parts[1].strip(".")
        hostname = parts[3].strip(".")
        if not re.search(r"[0-9]", port):
            return f"domain name {_q(domain)} invalid (label {_q(port)} invalid). should follow {fmt} format"
        if not re.search(r"[a-zA-Z]", hostname):
            return f"domain name {_q(domain)} invalid (label {_q(hostname)} invalid). should follow {fmt} format"
        return None
    return validate_wildcard_domain(domain)


def is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _validate_ip_address(addr: str) -> str | None:
    return None if is_ip_address(addr) else f"{addr} is not a valid IP"


def _validate_ip_subnet(subnet: str) -> str | None:
    if subnet.count("/") == 1:
        try:
            ipaddress.ip_network(subnet, strict=False)
        except ValueError:
            return f"{subnet} is not a valid CIDR block"
        return None
    return _validate_ip_address(subnet)


def _validate_port(port: int) -> str | None:
    if 1 <= port <= 65535:
        return None
    return f"port number {port} must be in the range 1..65535"


def _validate_port_name(name: str) -> str | None:
    return None if _is_dns1123_label(name) else f"invalid port name: {name}"


def _validate_unix_address(addr: str) -> str | None:
    if not addr:
        return "unix address must not be empty"
    if addr.startswith("@"):
        return None
    if not addr.startswith("/") or addr.endswith("/"):
        return f"{addr} is not an absolute path to a file"
    return None


def _validate_percent(value: int) -> str | None:
    if value < 0 or value > 100:
        return f"percentage {value} is not in range 0..100"
    return None


def _validate_percentage(percentage: nw.Percent | None) -> str | None:
    if percentage is None:
        return None
    value = percentage.value
    if value < 0.0 or value > 100.0 or (0.0 < value < 0.0001):
        return f"percentage {_go_float(value)} is neither 0.0, nor in range [0.0001, 100.0]"
    return None


def _validate_duration(duration: datetime.timedelta) -> str | None:
    if duration < datetime.timedelta(milliseconds=1):
        return "duration must be greater than 1ms"
    if duration.microseconds % 1000:
        return "only durations to ms precision are supported"
    return None


def _validate_labels(rep: _Report, path: str, labels: Mapping[str, str]) -> None:
    for key in sorted(labels):
        match = _TAG_KEY.match(key)
        if not match:
            rep.err(_key(path, key), f"invalid tag key: {_q(key)}")
        elif match.group(1) and len(match.group(1)) - 1 > 253:
            rep.err(_key(path, key), f"invalid tag key: {_q(key)} (DNS prefix is too long)")
        elif len(match.group(2)) > 63:
            rep.err(_key(path, key), f"invalid tag key: {_q(key)} (name is too long)")
        if not _LABEL_VALUE.match(labels[key]):
            rep.err(_key(path, key), f"invalid tag value: {_q(labels[key])}")


def _validate_subset_name(name: str) -> str | None:
    if not name:
        return "subset name cannot be empty"
    if not _is_dns1123_label(name):
        return f"subset name is invalid: {name}"
    return None


# Protocol names Istio understands (pkg/config/protocol), case-insensitive.
_HTTP_PROTOCOLS = {"http", "http2", "grpc", "grpc-web", "http_proxy"}
_TLS_PROTOCOLS = {"https", "tls"}
_KNOWN_PROTOCOLS = _HTTP_PROTOCOLS | _TLS_PROTOCOLS | {"tcp", "udp", "mongo", "redis", "mysql"}


def _protocol(name: str) -> str | None:
    lowered = name.lower()
    return lowered if lowered in _KNOWN_PROTOCOLS else None


def _validate_protocol(name: str) -> str | None:
    if name and _protocol(name) is None:
        return f"unsupported protocol: {name}"
    return None


def _validate_partial_wildcard(host: str) -> str | None:
    if "*" in host and len(host) != 1 and not host.startswith("*."):
        return f"partial wildcard {_q(host)} not allowed"
    return None


def _validate_gateway_or_sidecar_host_part(hostname: str, is_gateway: bool) -> list[str]:
    out: list[str] = []
    if hostname != "*" and "." not in hostname:
        out.append("short names (non FQDN) are not allowed")
    bad = validate_wildcard_domain(hostname)
    if bad:
        if not is_gateway:
            out.append(bad)
        if not is_ip_address(hostname):
            out.append(bad)
    partial = _validate_partial_wildcard(hostname)
    if partial:
        out.append(partial)
    return list(dict.fromkeys(out))


def _validate_namespace_slash_host(hostname: str, is_gateway: bool) -> list[str]:
    parts = hostname.split("/", 1)
    if len(parts) != 2:
        if is_gateway:
            return _validate_gateway_or_sidecar_host_part(hostname, True)
        return ["host must be of form namespace/dnsName"]
    out: list[str] = []
    namespace, dns_name = parts
    if not namespace or not dns_name:
        out.append("config namespace and dnsName in host entry cannot be empty")
    if not is_gateway:
        if namespace not in ("*", ".", "~") and not _is_dns1123_label(namespace):
            out.append(f"invalid namespace value {_q(namespace)} in sidecar")
    elif namespace not in ("*", ".") and not _is_dns1123_label(namespace):
        out.append(f"invalid namespace value {_q(namespace)} in gateway")
    out.extend(_validate_gateway_or_sidecar_host_part(dns_name, is_gateway))
    return out


def _validate_gateway_names(rep: _Report, path: str, names: list[str]) -> None:
    for i, name in enumerate(names):
        item = f"{path}[{i}]"
        parts = name.split("/", 1)
        if len(parts) != 2:
            if "." in name:
                dotted = name.split(".")
                rep.warn(
                    item,
                    f"using legacy gatewayName format {_q(name)}; prefer the <namespace>/<name> format: "
                    f"{_q(dotted[1] + '/' + dotted[0])}",
                )
            rep.err(item, validate_fqdn(name))
            continue
        namespace, gateway = parts
        if not namespace or not gateway:
            rep.err(item, "config namespace and gateway name cannot be empty")
        if not _is_dns1123_label(namespace):
            rep.err(item, f"invalid value for namespace: {_q(namespace)}")
        if not _is_dns1123_label(gateway):
            rep.err(item, f"invalid value for gateway name: {_q(gateway)}")


def _validate_export_to(
    rep: _Report, path: str, export_to: list[str], is_service_entry: bool, is_dr_with_selector: bool
) -> None:
    if not export_to:
        return
    namespace = rep.namespace
    seen: set[str] = set()
    for i, entry in enumerate(export_to):
        item = f"{path}[{i}]"
        key = namespace if entry == "." else entry
        if key in seen:
            if key != entry:
                rep.err(item, f"duplicate entries in exportTo: . and current namespace {namespace}")
            else:
                rep.err(item, f"duplicate entries in exportTo for entry {entry}")
            continue
        if is_service_entry and entry == "~":
            seen.add(key)
            continue
        if key in (".", "*"):
            seen.add(key)
        elif key == "~":
            rep.err(item, "exportTo ~ (none) is not allowed for Istio configuration objects")
        elif not _is_dns1123_label(key):
            rep.err(item, "only .,*, or a valid DNS 1123 label is allowed as exportTo entry")
        else:
            seen.add(key)
    if is_dr_with_selector and seen:
        if namespace in seen:
            if len(seen) > 1:
                rep.err(path, "destination rule with workload selector cannot have multiple entries in exportTo")
        else:
            rep.err(path, "destination rule with workload selector cannot have exportTo beyond current namespace")
    if "*" in seen and len(export_to) > 1:
        rep.err(path, "cannot have both public (*) and non-public exportTo values for a resource")
    if "~" in seen and len(export_to) > 1:
        rep.err(path, "cannot export service entry to no one (~) and someone")


def _validate_workload_selector(rep: _Report, path: str, selector: type_beta.WorkloadSelector | None) -> None:
    if selector is None:
        return
    for key, value in sorted(selector.match_labels.items()):
        if key == "":
            rep.err(
                _key(f"{path}.matchLabels", key), f"empty key is not supported in selector: {_q(key + '=' + value)}"
            )
        if "*" in key or "*" in value:
            rep.err(_key(f"{path}.matchLabels", key), f"wildcard is not supported in selector: {_q(key + '=' + value)}")
    if not selector.match_labels:
        rep.warn(path, "workload selector specified without labels")


def _alpha_workload_selector_errors(path: str, selector: nw.WorkloadSelector | None) -> list[FieldError]:
    out: list[FieldError] = []
    if selector is None:
        return out
    for key, value in sorted(selector.labels.items()):
        item = _key(f"{path}.labels", key)
        if key == "":
            out.append(FieldError(item, f"empty key is not supported in selector: {_q(key + '=' + value)}"))
        if "*" in key or "*" in value:
            out.append(FieldError(item, f"wildcard is not supported in selector: {_q(key + '=' + value)}"))
    return out


# --- HTTP headers -------------------------------------------------------------------------------------------------

_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~A-Za-z0-9]+$")
_HEADER_VALUE = re.compile(r"^[^\x00-\x08\x0a-\x1f\x7f]*$")
_PSEUDO_HEADERS = {":method", ":scheme", ":authority", ":path", ":status"}
_JWT_CLAIM_PREFIX = "@request.auth.claims"


def is_jwt_claim_route(name: str) -> bool:
    if not name.lower().startswith(_JWT_CLAIM_PREFIX):
        return False
    rest = name[len(_JWT_CLAIM_PREFIX) :]
    if rest.startswith(".") and len(rest) > 1:
        return True
    return rest.startswith("[") and rest.endswith("]") and len(rest) > 2


def _validate_match_header_name(name: str) -> str | None:
    if not name:
        return "header name cannot be empty"
    if is_jwt_claim_route(name) or name in _PSEUDO_HEADERS:
        return None
    if not _HEADER_NAME.match(name):
        return f"header name {name} is not a valid header name"
    return None


def _validate_cors_header_name(name: str) -> str | None:
    if not name:
        return "header name cannot be empty"
    if name == "*" or _HEADER_NAME.match(name):
        return None
    return f"header name {name} is not a valid header name"


def _is_internal_header(name: str) -> bool:
    return name.startswith(":") or name.lower() == "host"


def _is_authority_header(name: str) -> bool:
    return name.lower() in (":authority", "host")


def _validate_header_op_name_with_authority(name: str) -> str | None:
    if not name:
        return "header name cannot be empty"
    if _is_internal_header(name) and not _is_authority_header(name):
        return f'invalid header {_q(name)}: header cannot have ":" prefix'
    return None


def _validate_header_op_name(name: str) -> str | None:
    if not name:
        return "header name cannot be empty"
    if name.lower() == "host":
        return f"invalid header {_q(name)}: cannot set Host header"
    if _is_internal_header(name):
        return f'invalid header {_q(name)}: header cannot have ":" prefix'
    return None


def _envoy_header_value_error(value: str) -> str | None:
    """Envoy's header-value formatter grammar: literal text, "%%", "%VAR%" and "%VAR(args)%"."""
    literal, name, expect_array, expect_string, string, expect_delim, expect_args_end, expect_var_end = range(8)
    state = literal
    pos = 0
    n = len(value)
    while pos < n:
        ch = value[pos]
        if state == literal:
            if ch == "%":
                if pos + 1 >= n:
                    return "invalid header configuration. Un-escaped %"
                if value[pos + 1] == "%":
                    pos += 1
                else:
                    state = name
        elif state == name:
            if ch == "%":
                state = literal
            elif ch == "(":
                state = expect_array
        elif state == expect_array:
            if ch == "[":
                state = expect_string
            elif ch != " ":
                state = string
        elif state == expect_delim:
            if ch == ",":
                state = expect_string
            elif ch == "]":
                state = expect_args_end
            elif ch != " ":
                return "invalid header configuration. Expecting ',', ']', or whitespace"
        elif state == expect_string:
            if ch == '"':
                state = string
            elif ch != " ":
                return "invalid header configuration. Expecting '\"'"
        elif state == string:
            if ch == "\\":
                if pos + 1 >= n:
                    return "invalid header configuration. Un-terminated backslash in JSON string"
                pos += 1
            elif ch == ")":
                state = expect_var_end
            elif ch == '"':
                state = expect_delim
        elif state == expect_args_end:
            if ch == ")":
                state = expect_var_end
            elif ch != " ":
                return f"invalid header configuration. Expecting ')' or whitespace, but found '{ch}'"
        elif state == expect_var_end:
            if ch == "%":
                state = literal
            elif ch != " ":
                return "invalid header configuration. Expecting '%' or whitespace after"
        pos += 1
    if state != literal:
        return f"invalid header configuration. Un-terminated variable expression '{value}'"
    return None


def _validate_header_value(value: str) -> str | None:
    if not _HEADER_VALUE.match(value):
        return f"header value configuration {value} is invalid"
    bad = _envoy_header_value_error(value)
    return f"header value configuration: {bad}" if bad else None


def _validate_header_operations(rep: _Report, path: str, headers: nw.Headers | None) -> None:
    if headers is None:
        return
    request, response = headers.request, headers.response
    if request is not None:
        for op in ("add", "set"):
            for name, value in getattr(request, op).items():
                item = _key(f"{path}.request.{op}", name)
                rep.err(item, _validate_header_op_name_with_authority(name))
                rep.err(item, _validate_header_value(value))
        for i, name in enumerate(request.remove):
            rep.err(f"{path}.request.remove[{i}]", _validate_header_op_name(name))
    if response is not None:
        for op in ("add", "set"):
            for name, value in getattr(response, op).items():
                item = _key(f"{path}.response.{op}", name)
                rep.err(item, _validate_header_op_name(name))
                rep.err(item, _validate_header_value(value))
        for i, name in enumerate(response.remove):
            rep.err(f"{path}.response.remove[{i}]", _validate_header_op_name(name))


# --- string matches and regexes -----------------------------------------------------------------------------------


def _validate_regex(rep: _Report, path: str, regex: str, where: str) -> None:
    if len(regex) > 1024:
        rep.err(path, f"{_q(where)}: regex is too large, max length allowed is 1024")
        return
    bad = re2_error(regex)
    if bad:
        rep.err(
            path,
            f"{_q(where)}: {bad}; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)",
        )


def _validate_string_match_regexp(rep: _Report, path: str, sm: nw.StringMatch | None, where: str) -> None:
    if sm is None or sm.regex is None:
        return
    if sm.regex == "":
        rep.err(f"{path}.regex", f"{_q(where)}: regex string match should not be empty")
        return
    _validate_regex(rep, f"{path}.regex", sm.regex, where)


def _validate_string_match(rep: _Report, path: str, sm: nw.StringMatch | None, where: str) -> None:
    if sm is None:
        return
    if sm.prefix is not None and sm.prefix == "":
        rep.err(f"{path}.prefix", f"{_q(where)}: prefix string match should not be empty")
    _validate_string_match_regexp(rep, path, sm, where)


# --- VirtualService -----------------------------------------------------------------------------------------------

_SUPPORTED_RETRY_ON = {
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
}
# Status codes Go's net/http knows (http.StatusText(code) != "").
_KNOWN_HTTP_STATUS = (
    {100, 101, 102, 103, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226}
    | {300, 301, 302, 303, 304, 305, 307, 308}
    | set(range(400, 419))
    | {421, 422, 423, 424, 425, 426, 428, 429, 431, 451}
    | {500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511}
)
_CORS_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*"}
_GRPC_STATUS = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
}
_GO_INT = re.compile(r"^[+-]?[0-9]+$")


def _validate_destination(rep: _Report, path: str, dest: nw.Destination | None) -> None:
    if dest is None:
        return
    if dest.host == "*":
        rep.err(f"{path}.host", f"invalid destination host {dest.host}")
    else:
        rep.err(f"{path}.host", validate_wildcard_domain(dest.host))
    if dest.subset:
        rep.err(f"{path}.subset", _validate_subset_name(dest.subset))
    if dest.port is not None:
        rep.err(f"{path}.port.number", _validate_port(dest.port.number))


def _validate_http_status(status: int) -> str | None:
    if status < 200 or status > 600:
        return f"HTTP status {status} is not in range 200-599"
    return None


def _validate_route_destinations(
    rep: _Report, path: str, routes: list[nw.HttpRouteDestination] | list[nw.RouteDestination]
) -> None:
    total = 0
    for i, route in enumerate(routes):
        item = f"{path}[{i}]"
        if route.destination is None:
            rep.err(f"{item}.destination", "destination is required")
        if isinstance(route, nw.HttpRouteDestination):
            _validate_header_operations(rep, f"{item}.headers", route.headers)
        _validate_destination(rep, f"{item}.destination", route.destination)
        if route.weight < 0:
            rep.err(f"{item}.weight", f"weight {route.weight} < 0")
        total += route.weight
    if len(routes) > 1 and total == 0:
        rep.err(path, "total destination weight = 0")


def _validate_cors(rep: _Report, path: str, policy: nw.CorsPolicy | None) -> None:
    if policy is None:
        return
    for i, origin in enumerate(policy.allow_origins):
        item = f"{path}.allowOrigins[{i}]"
        value = origin.exact if origin.exact is not None else origin.prefix
        if value is None:
            value = origin.regex
        if not value:
            rep.err(item, "'' is not a valid match type for CORS allow origins")
            continue
        _validate_string_match_regexp(rep, item, origin, "corsPolicy.allowOrigins")
    for i, method in enumerate(policy.allow_methods):
        if method not in _CORS_METHODS:
            rep.err(f"{path}.allowMethods[{i}]", f"{_q(method)} is not a supported HTTP method")
    for field in ("allow_headers", "expose_headers"):
        camel = "allowHeaders" if field == "allow_headers" else "exposeHeaders"
        for i, name in enumerate(getattr(policy, field)):
            rep.err(f"{path}.{camel}[{i}]", _validate_cors_header_name(name))
    if policy.max_age is not None:
        rep.err(f"{path}.maxAge", _validate_duration(policy.max_age))
        if policy.max_age.microseconds > 0:
            rep.err(f"{path}.maxAge", "max_age duration is accurate only to seconds precision")


def _validate_fault(rep: _Report, path: str, fault: nw.HttpFaultInjection | None) -> None:
    if fault is None:
        return
    if fault.abort is None and fault.delay is None:
        rep.err(path, "HTTP fault injection must have an abort and/or a delay")
    abort = fault.abort
    if abort is not None:
        apath = f"{path}.abort"
        rep.err(f"{apath}.percentage", _validate_percentage(abort.percentage))
        if abort.grpc_status is not None:
            if abort.grpc_status not in _GRPC_STATUS:
                rep.err(
                    f"{apath}.grpcStatus",
                    f"gRPC status {_q(abort.grpc_status)} is not supported. See "
                    "https://github.com/grpc/grpc/blob/master/doc/statuscodes.md for a list of supported codes, "
                    "for example 'NOT_FOUND'",
                )
        elif abort.http2_error is not None:
            rep.err(f"{apath}.http2Error", "HTTP/2 abort fault injection not supported yet")
        elif abort.http_status is not None:
            rep.err(f"{apath}.httpStatus", _validate_http_status(abort.http_status))
        else:
            rep.warn(apath, "abort configured, but error type not set")
    delay = fault.delay
    if delay is not None:
        dpath = f"{path}.delay"
        rep.err(f"{dpath}.percentage", _validate_percentage(delay.percentage))
        if delay.fixed_delay is not None:
            rep.err(f"{dpath}.fixedDelay", _validate_duration(delay.fixed_delay))
        elif delay.exponential_delay is not None:
            rep.err(f"{dpath}.exponentialDelay", _validate_duration(delay.exponential_delay))
            rep.err(f"{dpath}.exponentialDelay", "exponentialDelay not supported yet")


def _validate_retry(rep: _Report, path: str, retries: nw.HttpRetry | None) -> None:
    if retries is None:
        return
    if retries.attempts < 0:
        rep.err(f"{path}.attempts", "attempts cannot be negative")
    if retries.attempts == 0 and (
        retries.per_try_timeout is not None or retries.retry_on != "" or retries.retry_remote_localities is not None
    ):
        rep.err(path, "http retry policy configured when attempts are set to 0 (disabled)")
    if retries.per_try_timeout is not None:
        rep.err(f"{path}.perTryTimeout", _validate_duration(retries.per_try_timeout))
    if retries.retry_on:
        for policy in retries.retry_on.split(","):
            code = int(policy) if _GO_INT.match(policy) else 0
            if code not in _KNOWN_HTTP_STATUS and policy not in _SUPPORTED_RETRY_ON:
                rep.err(f"{path}.retryOn", f"{_q(policy)} is not a valid retryOn policy")
    if retries.backoff is not None:
        rep.err(f"{path}.backoff", _validate_duration(retries.backoff))


def _validate_redirect(rep: _Report, path: str, redirect: nw.HttpRedirect | None) -> None:
    if redirect is None:
        return
    has_port = redirect.port is not None or redirect.derive_port is not None
    if not redirect.uri and not redirect.authority and not has_port and not redirect.scheme:
        rep.err(path, "redirect must specify URI, authority, scheme, or port")
    elif redirect.redirect_code != 0 and not 300 <= redirect.redirect_code <= 399:
        rep.err(f"{path}.redirectCode", f"{redirect.redirect_code} is not a valid redirect code, must be 3xx")
    elif redirect.scheme and redirect.scheme not in ("http", "https"):
        rep.err(f"{path}.scheme", 'invalid redirect scheme, must be "http" or "https"')
    elif redirect.port:
        rep.err(f"{path}.port", _validate_port(redirect.port))


def _validate_direct_response(rep: _Report, path: str, response: nw.HttpDirectResponse | None) -> None:
    if response is None:
        return
    body = response.body
    if body is not None:
        if body.string is not None:
            size = len(body.string.encode("utf-8"))
        elif body.bytes is not None:
            size = len(body.bytes)
        else:
            size = 0
        if size > 1024 * 1024:
            rep.err(
                f"{path}.body", "large direct_responses may impact control plane performance, must be less than 1MB"
            )
        elif size > 100 * 1024:
            rep.warn(f"{path}.body", "large direct_responses may impact control plane performance")
    rep.err(f"{path}.status", _validate_http_status(response.status))


def _validate_mirrors(rep: _Report, path: str, mirrors: list[nw.HttpMirrorPolicy]) -> None:
    for i, mirror in enumerate(mirrors):
        item = f"{path}[{i}]"
        if mirror.destination is None:
            rep.err(f"{item}.destination", "destination is required for mirrors")
            continue
        _validate_destination(rep, f"{item}.destination", mirror.destination)
        if mirror.percentage is not None:
            value = mirror.percentage.value
            if value > 100:
                rep.err(f"{item}.percentage", f"mirror percentage must have a max value of 100 (it has {value:.6f})")
            if value < 0:
                rep.err(f"{item}.percentage", f"mirror percentage must have a min value of 0 (it has {value:.6f})")


def _validate_rewrite(rep: _Report, path: str, rewrite: nw.HttpRewrite | None) -> None:
    if rewrite is None:
        return
    if rewrite.uri and rewrite.uri_regex_rewrite is not None:
        rep.err(path, "rewrite may only contain one of URI or UriRegexRewrite")
        return
    if not rewrite.uri and rewrite.uri_regex_rewrite is None and not rewrite.authority:
        rep.err(
            path,
            "rewrite must specify at least one of URI, UriRegexRewrite, or authority. "
            "Only one of URI or UriRegexRewrite may be specified",
        )
        return
    regex_rewrite = rewrite.uri_regex_rewrite
    if regex_rewrite is not None:
        rpath = f"{path}.uriRegexRewrite"
        if not regex_rewrite.match or not regex_rewrite.rewrite:
            rep.err(
                rpath,
                "UriRegexRewrite has errors: UriRegexRewrite requires both Rewrite and Match fields to be specified",
            )
            return
        _validate_regex(rep, f"{rpath}.match", regex_rewrite.match, "HTTPRewrite.UriRegexRewrite.Match")


def _validate_authority_rewrite(rep: _Report, path: str, http: nw.HttpRoute) -> None:
    current = http.rewrite.authority if http.rewrite is not None else ""
    request = http.headers.request if http.headers is not None else None
    if request is None:
        return
    for op in ("set", "add"):
        for name, value in getattr(request, op).items():
            if not _is_authority_header(name):
                continue
            if current:
                rep.err(
                    _key(f"{path}.headers.request.{op}", name),
                    f"authority header cannot be set multiple times: have {_q(current)}, attempting to set {_q(value)}",
                )
                return
            current = value


def _validate_http_route_conflicts(rep: _Report, path: str, http: nw.HttpRoute, route_type: str) -> None:
    if route_type == "root":
        if http.redirect is not None:
            rep.err(path, f"root HTTP route {http.name} must not specify redirect")
        if http.route:
            rep.err(path, f"root HTTP route {http.name} must not specify route")
        return
    if route_type == "delegate" and http.delegate is not None:
        rep.err(f"{path}.delegate", "delegate HTTP route cannot contain delegate")
    if http.redirect is not None:
        if http.route:
            rep.err(path, "HTTP route cannot contain both route and redirect")
        if http.fault is not None:
            rep.err(path, "HTTP route cannot contain both fault and redirect")
        if http.rewrite is not None:
            rep.err(path, "HTTP route rule cannot contain both rewrite and redirect")
        if http.direct_response is not None:
            rep.err(path, "HTTP route rule cannot contain both direct_response and redirect")
    elif http.direct_response is not None:
        if http.route:
            rep.err(path, "HTTP route cannot contain both route and direct_response")
        if http.fault is not None:
            rep.err(path, "HTTP route cannot contain both fault and direct_response")
        if http.rewrite is not None:
            rep.err(path, "HTTP route rule cannot contain both rewrite and direct_response")
    elif not http.route:
        rep.err(path, "HTTP route, redirect or direct_response is required")
    if http.mirror is not None and http.mirrors:
        rep.err(path, "HTTP route cannot contain both mirror and mirrors")


def _validate_http_matches(rep: _Report, path: str, matches: list[nw.HttpMatchRequest]) -> None:
    for i, match in enumerate(matches):
        mpath = f"{path}[{i}]"
        for name, header in match.headers.items():
            item = _key(f"{mpath}.headers", name)
            rep.err(item, _validate_match_header_name(name))
            _validate_string_match(rep, item, header, "headers")
        for name, header in match.without_headers.items():
            item = _key(f"{mpath}.withoutHeaders", name)
            rep.err(item, _validate_match_header_name(name))
            if header.regex != "*":  # "*" means "present", it is not a regex
                _validate_string_match(rep, item, header, "withoutHeaders")
        _validate_string_match_regexp(rep, f"{mpath}.uri", match.uri, "uri")  # an empty uri prefix is fine
        _validate_string_match(rep, f"{mpath}.scheme", match.scheme, "scheme")
        _validate_string_match(rep, f"{mpath}.method", match.method, "method")
        _validate_string_match(rep, f"{mpath}.authority", match.authority, "authority")
        for name, param in match.query_params.items():
            _validate_string_match(rep, _key(f"{mpath}.queryParams", name), param, "queryParams")
        if match.port != 0:
            rep.err(f"{mpath}.port", _validate_port(match.port))
        _validate_labels(rep, f"{mpath}.sourceLabels", match.source_labels)
        _validate_gateway_names(rep, f"{mpath}.gateways", match.gateways)
        if match.source_namespace and not _is_dns1123_label(match.source_namespace):
            rep.err(f"{mpath}.sourceNamespace", f"sourceNamespace match {match.source_namespace} is invalid")


def _validate_http_route(rep: _Report, path: str, http: nw.HttpRoute, delegate: bool) -> None:
    route_type = "delegate" if delegate else ("root" if http.delegate is not None else "independent")
    _validate_http_route_conflicts(rep, path, http, route_type)
    _validate_http_matches(rep, f"{path}.match", http.match)
    _validate_header_operations(rep, f"{path}.headers", http.headers)
    _validate_cors(rep, f"{path}.corsPolicy", http.cors_policy)
    _validate_fault(rep, f"{path}.fault", http.fault)
    if http.mirror_percent is not None:
        if http.mirror_percent > 100:
            rep.err(
                f"{path}.mirrorPercent", f"mirror_percent must have a max value of 100 (it has {http.mirror_percent})"
            )
        rep.warn(f"{path}.mirrorPercent", 'using deprecated setting "mirrorPercent", use "mirrorPercentage" instead')
    if http.mirror_percentage is not None:
        value = http.mirror_percentage.value
        if value > 100:
            rep.err(f"{path}.mirrorPercentage", f"mirror_percentage must have a max value of 100 (it has {value:.6f})")
        if value < 0:
            rep.err(f"{path}.mirrorPercentage", f"mirror_percentage must have a min value of 0 (it has {value:.6f})")
    _validate_destination(rep, f"{path}.mirror", http.mirror)
    _validate_mirrors(rep, f"{path}.mirrors", http.mirrors)
    _validate_redirect(rep, f"{path}.redirect", http.redirect)
    _validate_direct_response(rep, f"{path}.directResponse", http.direct_response)
    _validate_retry(rep, f"{path}.retries", http.retries)
    _validate_rewrite(rep, f"{path}.rewrite", http.rewrite)
    _validate_authority_rewrite(rep, path, http)
    _validate_route_destinations(rep, f"{path}.route", http.route)
    if http.timeout is not None:
        rep.err(f"{path}.timeout", _validate_duration(http.timeout))


def _is_gateway_vs(vs: nw.VirtualService) -> bool:
    # Istio's isGateway: true unless "mesh" is listed (also true when no gateway is listed).
    return "mesh" not in vs.gateways


def _has_sni_hosts(vs: nw.VirtualService) -> bool:
    return any(match.sni_hosts for tls in vs.tls for match in tls.match)


def _validate_sni_host(rep: _Report, path: str, sni: str, vs: nw.VirtualService) -> None:
    if _is_gateway_vs(vs):
        bad = _validate_wildcard_domain_for_gateway_vs(True, sni)
    else:
        bad = validate_wildcard_domain(sni)
    if bad:
        if is_ip_address(sni):
            rep.warn(
                path, f"using an IP address ({_q(sni)}) goes against SNI spec and most clients do not support this"
            )
        else:
            rep.err(path, bad)
        return
    if any(host_subset_of(sni, h) for h in vs.hosts):
        return
    rep.err(
        path,
        f"SNI host {_q(sni)} is not a compatible subset of any of the virtual service hosts: [{', '.join(vs.hosts)}]",
    )


def _validate_tls_route(rep: _Report, path: str, tls: nw.TlsRoute, vs: nw.VirtualService) -> None:
    if not tls.match:
        rep.err(f"{path}.match", "TLS route must have at least one match condition")
    for i, match in enumerate(tls.match):
        mpath = f"{path}.match[{i}]"
        if not match.sni_hosts:
            rep.err(f"{mpath}.sniHosts", "TLS match must have at least one SNI host")
        for j, sni in enumerate(match.sni_hosts):
            _validate_sni_host(rep, f"{mpath}.sniHosts[{j}]", sni, vs)
        for j, subnet in enumerate(match.destination_subnets):
            rep.err(f"{mpath}.destinationSubnets[{j}]", _validate_ip_subnet(subnet))
        if match.port != 0:
            rep.err(f"{mpath}.port", _validate_port(match.port))
        _validate_labels(rep, f"{mpath}.sourceLabels", match.source_labels)
        _validate_gateway_names(rep, f"{mpath}.gateways", match.gateways)
    if not tls.route:
        rep.err(f"{path}.route", "TLS route is required")
    _validate_route_destinations(rep, f"{path}.route", tls.route)


def _validate_tcp_route(rep: _Report, path: str, tcp: nw.TcpRoute) -> None:
    for i, match in enumerate(tcp.match):
        mpath = f"{path}.match[{i}]"
        for j, subnet in enumerate(match.destination_subnets):
            rep.err(f"{mpath}.destinationSubnets[{j}]", _validate_ip_subnet(subnet))
        if match.port != 0:
            rep.err(f"{mpath}.port", _validate_port(match.port))
        _validate_labels(rep, f"{mpath}.sourceLabels", match.source_labels)
        _validate_gateway_names(rep, f"{mpath}.gateways", match.gateways)
    if not tcp.route:
        rep.err(f"{path}.route", "TCP route is required")
    _validate_route_destinations(rep, f"{path}.route", tcp.route)


@functools.cache
def _presence_fields(cls: type[betterproto2.Message]) -> tuple[tuple[str, bool], ...]:
    """(attribute, has explicit presence) for each field of ``cls``."""
    meta = cls._betterproto  # type: ignore[attr-defined]
    return tuple(
        (name, bool(meta.meta_by_field_name[name].optional or meta.meta_by_field_name[name].group))
        for name in meta.sorted_field_names
    )


def _freeze(value: object) -> object:
    """A hashable structural key for a message (set fields only), like comparing JSON serializations."""
    if isinstance(value, betterproto2.Message):
        items = []
        for name, explicit in _presence_fields(type(value)):
            item = getattr(value, name)
            if item is None or (not explicit and not item):
                continue
            items.append((name, _freeze(item)))
        return (type(value).__name__, tuple(items))
    if isinstance(value, list):
        return tuple(_freeze(item) for item in value)
    if isinstance(value, dict):
        return tuple(sorted((key, _freeze(item)) for key, item in value.items()))
    return value


def _match_key(match: betterproto2.Message) -> object:
    key = _freeze(match)
    if isinstance(match, nw.HttpMatchRequest) and match.name:
        name, fields = key  # type: ignore[misc]
        key = (name, tuple(item for item in fields if item[0] != "name"))
    return key


def _route_name(route: betterproto2.Message, index: int) -> str:
    name = getattr(route, "name", "") if isinstance(route, nw.HttpRoute) else ""
    return _q(name) if name else f"#{index}"


def _match_name(match: betterproto2.Message, index: int) -> str:
    name = getattr(match, "name", "") if isinstance(match, nw.HttpMatchRequest) else ""
    return _q(name) if name else f"#{index}"


def _exact_or_prefix(sm: nw.StringMatch | None) -> str:
    if sm is None:
        return ""
    if sm.exact:
        return "exact:" + sm.exact
    if sm.prefix:
        return "prefix:" + sm.prefix
    return ""


def _warn_unreachable_rules(
    rep: _Report, path: str, routes: list[nw.HttpRoute] | list[nw.TcpRoute] | list[nw.TlsRoute]
) -> None:
    seen: dict[object, int] = {}
    empty_match_at = -1
    prefix_matches: list[tuple[str, str, str, int, str, str, dict[str, str], dict[str, str], dict[str, str]]] = []
    for rulen, route in enumerate(routes):
        name = _route_name(route, rulen)
        if not route.match:
            if empty_match_at >= 0:
                rep.warn(
                    f"{path}[{rulen}]", f"virtualService rule {name} not used (only the last rule can have no matches)"
                )
            empty_match_at = rulen
            continue
        duplicates = 0
        for matchn, match in enumerate(route.match):
            if empty_match_at >= 0:
                rep.warn(
                    f"{path}[{rulen}]", f"virtualService rule {name} not used (route without matches defined before)"
                )
                continue
            key = _match_key(match)
            if key in seen:
                dup = seen[key]
                rep.warn(
                    f"{path}[{rulen}].match[{matchn}]",
                    f"virtualService rule {name} match {_match_name(match, matchn)} is not used "
                    f"(duplicate/overlapping match in rule {_route_name(routes[dup], dup)})",
                )
                duplicates += 1
                continue
            seen[key] = rulen
            if isinstance(match, nw.HttpMatchRequest) and match.uri is not None and match.uri.prefix:
                prefix_matches.append(
                    (
                        name,
                        _match_name(match, matchn),
                        match.uri.prefix,
                        match.port,
                        _exact_or_prefix(match.method) or "exact:GET",
                        _exact_or_prefix(match.authority),
                        {k: _exact_or_prefix(v) for k, v in match.headers.items()},
                        {k: _exact_or_prefix(v) for k, v in match.query_params.items()},
                        {k: _exact_or_prefix(v) for k, v in match.without_headers.items()},
                    )
                )
        if duplicates == len(route.match):
            rep.warn(f"{path}[{rulen}]", f"virtualService rule {name} not used (all matches used by prior rules)")

    def covered_map(a: dict[str, str], b: dict[str, str]) -> bool:
        if len(a) != len(b):
            return False
        return all(k in b and (v == b[k] or v.startswith(b[k])) for k, v in a.items())

    for i, a in enumerate(prefix_matches):
        for b in prefix_matches[i + 1 :]:
            if a[2] == b[2] or not b[2].startswith(a[2]) or a[3] != b[3]:
                continue
            if a[4] != b[4] and not a[4].startswith(b[4]):
                continue
            if a[5] != b[5] and not a[5].startswith(b[5]):
                continue
            if not (covered_map(a[6], b[6]) and covered_map(a[7], b[7]) and covered_map(a[8], b[8])):
                continue
            rep.warn(
                path,
                f"virtualService rule {b[0]} match {b[1]} of prefix {b[2]} is not used (duplicate/overlapping match "
                f"in rule {a[1]} of prefix {a[2]} on {a[0]})",
            )


def _validate_virtual_service(rep: _Report, vs: nw.VirtualService) -> None:
    if not vs.hosts:
        # No hosts: a delegate VirtualService.
        if vs.gateways:
            rep.err("spec.gateways", "delegate virtual service must have no gateways specified")
        if vs.tls:
            rep.err("spec.tls", "delegate virtual service must have no tls route specified")
        if vs.tcp:
            rep.err("spec.tcp", "delegate virtual service must have no tcp route specified")
    applies_to_mesh = True
    applies_to_gateway = False
    if vs.gateways:
        _validate_gateway_names(rep, "spec.gateways", vs.gateways)
        applies_to_gateway = _is_gateway_vs(vs)
        applies_to_mesh = not applies_to_gateway
    if not applies_to_gateway:
        for i, http in enumerate(vs.http):
            for j, match in enumerate(http.match):
                for field, camel in (("headers", "headers"), ("without_headers", "withoutHeaders")):
                    for key in getattr(match, field):
                        if is_jwt_claim_route(key):
                            rep.err(
                                _key(f"spec.http[{i}].match[{j}].{camel}", key),
                                f"JWT claim based routing (key: {key}) is only supported for gateway, "
                                f"found no gateways: [{' '.join(vs.gateways)}]",
                            )
    all_valid = True
    sni = _has_sni_hosts(vs)
    for i, host in enumerate(vs.hosts):
        if applies_to_gateway:
            bad = _validate_wildcard_domain_for_gateway_vs(sni, host)
        else:
            bad = validate_wildcard_domain(host)
        if bad:
            if not is_ip_address(host):
                rep.err(f"spec.hosts[{i}]", bad)
                all_valid = False
        elif applies_to_mesh and host == "*":
            rep.err(f"spec.hosts[{i}]", "wildcard host * is not allowed for virtual services bound to the mesh gateway")
            all_valid = False
    if all_valid:
        for i, a in enumerate(vs.hosts):
            for j in range(i + 1, len(vs.hosts)):
                if hosts_match(a, vs.hosts[j]):
                    rep.err(f"spec.hosts[{j}]", f"duplicate hosts in virtual service: {a} & {vs.hosts[j]}")
    if not vs.http and not vs.tcp and not vs.tls:
        rep.err("spec", "http, tcp or tls must be provided in virtual service")
    for i, http in enumerate(vs.http):
        _validate_http_route(rep, f"spec.http[{i}]", http, delegate=not vs.hosts)
    for i, tls in enumerate(vs.tls):
        _validate_tls_route(rep, f"spec.tls[{i}]", tls, vs)
    for i, tcp in enumerate(vs.tcp):
        _validate_tcp_route(rep, f"spec.tcp[{i}]", tcp)
    _validate_export_to(rep, "spec.exportTo", vs.export_to, False, False)
    _warn_unreachable_rules(rep, "spec.http", vs.http)
    _warn_unreachable_rules(rep, "spec.tcp", vs.tcp)
    _warn_unreachable_rules(rep, "spec.tls", vs.tls)


# --- DestinationRule ----------------------------------------------------------------------------------------------


def _validate_outlier_detection(rep: _Report, path: str, outlier: nw.OutlierDetection | None) -> None:
    if outlier is None:
        return
    if outlier.base_ejection_time is not None:
        rep.err(f"{path}.baseEjectionTime", _validate_duration(outlier.base_ejection_time))
    if outlier.consecutive_errors != 0:
        rep.warn(
            f"{path}.consecutiveErrors",
            "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or "
            "consecutive5xxErrors instead",
        )
    if not outlier.split_external_local_origin_errors and (outlier.consecutive_local_origin_failures or 0) > 0:
        rep.err(
            f"{path}.consecutiveLocalOriginFailures",
            "outlier detection consecutive local origin failures is specified, but split external local origin "
            "errors is set to false",
        )
    if outlier.interval is not None:
        rep.err(f"{path}.interval", _validate_duration(outlier.interval))
    rep.err(f"{path}.maxEjectionPercent", _validate_percent(outlier.max_ejection_percent))
    rep.err(f"{path}.minHealthPercent", _validate_percent(outlier.min_health_percent))


def _validate_connection_pool(rep: _Report, path: str, pool: nw.ConnectionPoolSettings | None) -> None:
    if pool is None:
        return
    if pool.http is None and pool.tcp is None:
        rep.err(path, "connection pool must have at least one field")
        return
    http = pool.http
    if http is not None:
        hpath = f"{path}.http"
        for attr, camel, what in (
            ("http1_max_pending_requests", "http1MaxPendingRequests", "http1 max pending requests"),
            ("http2_max_requests", "http2MaxRequests", "http2 max requests"),
            ("max_requests_per_connection", "maxRequestsPerConnection", "max requests per connection"),
            ("max_retries", "maxRetries", "max retries"),
        ):
            if getattr(http, attr) < 0:
                rep.err(f"{hpath}.{camel}", f"{what} must be non-negative")
        if http.idle_timeout is not None:
            rep.err(f"{hpath}.idleTimeout", _validate_duration(http.idle_timeout))
        upgrade = nw.ConnectionPoolSettingsHttpSettingsH2UpgradePolicy.UPGRADE
        if http.h2_upgrade_policy == upgrade and http.use_client_protocol:
            rep.err(
                f"{hpath}.useClientProtocol", "use client protocol must not be true when H2UpgradePolicy is UPGRADE"
            )
        if http.max_concurrent_streams < 0:
            rep.err(f"{hpath}.maxConcurrentStreams", "max concurrent streams must be non-negative")
    tcp = pool.tcp
    if tcp is not None:
        tpath = f"{path}.tcp"
        if tcp.max_connections < 0:
            rep.err(f"{tpath}.maxConnections", "max connections must be non-negative")
        if tcp.connect_timeout is not None:
            rep.err(f"{tpath}.connectTimeout", _validate_duration(tcp.connect_timeout))
        if tcp.max_connection_duration is not None:
            rep.err(f"{tpath}.maxConnectionDuration", _validate_duration(tcp.max_connection_duration))
        # 0s disables the idle timeout; anything under 1ms counts as 0 there.
        if tcp.idle_timeout is not None and tcp.idle_timeout >= datetime.timedelta(milliseconds=1):
            rep.err(f"{tpath}.idleTimeout", _validate_duration(tcp.idle_timeout))
        keepalive = tcp.tcp_keepalive
        if keepalive is not None:
            if keepalive.time is not None:
                rep.err(f"{tpath}.tcpKeepalive.time", _validate_duration(keepalive.time))
            if keepalive.interval is not None:
                rep.err(f"{tpath}.tcpKeepalive.interval", _validate_duration(keepalive.interval))


def _is_prime(x: int) -> bool:
    # Envoy's check (and so Istio's): 1, 2 and 3 count as prime, 0 does not.
    if x != 0 and x < 4:
        return True
    if x & 1 == 0:
        return False
    limit = math.isqrt(x)
    return all(x % factor for factor in range(3, limit + 1, 2))


_TOPOLOGY_LABELS = {"topology.kubernetes.io/region", "topology.kubernetes.io/zone", "topology.istio.io/subzone"}


def _validate_localities(localities: list[str]) -> str | None:
    regions: dict[str, dict[str, dict[str, bool]]] = {}
    for locality in localities:
        stars = locality.count("*")
        if stars and (stars > 1 or not locality.endswith("*")):
            return f"locality {locality} wildcard '*' number can not exceed 1 and must be in the end"
        if "*" in regions:
            return f"locality {locality} overlap with previous specified ones"
        items = locality.split("/", 2)
        if any(item == "" for item in items):
            return f"locality {locality} must not contain empty region/zone/subzone info"
        region = items[0]
        zone = items[1] if len(items) > 1 else ""
        subzone = items[2] if len(items) > 2 else ""
        overlap = f"locality {locality} overlap with previous specified ones"
        if len(items) == 1:
            if region in regions:
                return overlap
            regions[region] = {"*": {"*": True}}
        elif len(items) == 2:
            zones = regions.get(region)
            if zones is not None:
                if "*" in zones or zone in zones:
                    return overlap
                zones[zone] = {"*": True}
            else:
                regions[region] = {zone: {"*": True}}
        else:
            zones = regions.get(region)
            if zones is not None:
                if "*" in zones:
                    return overlap
                subzones = zones.get(zone)
                if subzones is not None:
                    if subzones.get("*") or subzones.get(subzone):
                        return overlap
                    subzones[subzone] = True
                else:
                    zones[zone] = {subzone: True}
            else:
                regions[region] = {zone: {subzone: True}}
    return None


def _validate_locality_lb(
    rep: _Report, path: str, lb: nw.LocalityLoadBalancerSetting | None, outlier: nw.OutlierDetection | None
) -> None:
    if lb is None:
        return
    if lb.distribute and lb.failover:
        rep.err(path, "can not simultaneously specify 'distribute' and 'failover'")
        return
    if lb.failover and lb.failover_priority:
        for label in lb.failover_priority:
            if label in _TOPOLOGY_LABELS:
                rep.err(
                    f"{path}.failoverPriority",
                    f"can not simultaneously set 'failover' and topology label '{label}' in 'failover_priority'",
                )
                return
    sources: list[str] = []
    for i, distribute in enumerate(lb.distribute):
        sources.append(distribute.from_)
        total = 0
        for weight in distribute.to.values():
            if weight <= 0 or weight > 100:
                rep.err(f"{path}.distribute[{i}].to", "locality weight must be in range [1, 100]")
                return
            total += weight
        if total != 100:
            rep.err(f"{path}.distribute[{i}].to", f"total locality weight {total} != 100")
            return
        rep.err(f"{path}.distribute[{i}].to", _validate_localities(list(distribute.to)))
    rep.err(f"{path}.distribute", _validate_localities(sources))
    if (lb.failover or lb.failover_priority) and outlier is None:
        rep.warn(path, "outlier detection policy must be provided for failover")
    for i, failover in enumerate(lb.failover):
        fpath = f"{path}.failover[{i}]"
        if failover.from_ == failover.to:
            rep.err(fpath, "locality lb failover settings must specify different regions")
        if "/" in failover.from_ or "/" in failover.to:
            rep.err(fpath, "locality lb failover only specify region")
        if "*" in failover.from_ or "*" in failover.to:
            rep.err(fpath, "locality lb failover region should not contain '*' wildcard")


def _validate_load_balancer(
    rep: _Report, path: str, lb: nw.LoadBalancerSettings | None, outlier: nw.OutlierDetection | None
) -> None:
    if lb is None:
        return
    consistent_hash = lb.consistent_hash
    if consistent_hash is not None:
        cpath = f"{path}.consistentHash"
        if consistent_hash.http_cookie is not None and not consistent_hash.http_cookie.name:
            rep.err(f"{cpath}.httpCookie.name", "name required for HttpCookie")
        if consistent_hash.minimum_ring_size != 0:
            rep.warn(
                f"{cpath}.minimumRingSize",
                "consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's RingHash configuration instead",
            )
            if consistent_hash.ring_hash is not None or consistent_hash.maglev is not None:
                rep.err(cpath, "only one of MinimumRingSize or Maglev/Ringhash can be specified")
        maglev = consistent_hash.maglev
        if maglev is not None:
            tpath = f"{cpath}.maglev.tableSize"
            if maglev.table_size == 0:
                rep.err(tpath, "tableSize must be set for maglev")
            if maglev.table_size >= 5000011:
                rep.err(tpath, "tableSize must be less than 5000011 for maglev")
            if not _is_prime(maglev.table_size):
                rep.err(tpath, "tableSize must be a prime number for maglev")
    _validate_locality_lb(rep, f"{path}.localityLbSetting", lb.locality_lb_setting, outlier)
    warm = lb.warmup
    if warm is not None:
        wpath = f"{path}.warmup"
        if warm.duration is None:
            rep.err(f"{wpath}.duration", "duration is required")
        else:
            rep.err(f"{wpath}.duration", _validate_duration(warm.duration))
        if (warm.minimum_percent or 0.0) > 100:
            rep.err(f"{wpath}.minimumPercent", "minimumPercent value should be less than or equal to 100")
        if warm.aggression is not None and warm.aggression < 1:
            rep.err(f"{wpath}.aggression", "aggression should be greater than or equal to 1")


def _validate_client_tls(rep: _Report, path: str, tls: nw.ClientTlsSettings | None) -> None:
    if tls is None:
        return
    modes = nw.ClientTlsSettingsTlSmode
    namespace = rep.namespace
    if tls.credential_name.startswith("configmap://"):
        resource = tls.credential_name[len("configmap://") :]
        parts = resource.split("/")
        if not resource or len(parts) > 2 or any(not p for p in parts):
            rep.err(
                f"{path}.credentialName",
                f"invalid configmap:// credentialName: invalid resource name {_q(tls.credential_name)}",
            )
        elif (parts[0] if len(parts) == 2 else namespace) != namespace or not namespace:
            rep.err(
                f"{path}.credentialName",
                "invalid configmap:// credentialName: namespace must match the configuration namespace "
                f"{_q(namespace)}",
            )
    if tls.insecure_skip_verify:
        if tls.mode == modes.SIMPLE and (tls.ca_certificates or tls.credential_name or tls.subject_alt_names):
            rep.err(
                path,
                "cannot specify CaCertificates or CredentialName or SubjectAltNames when InsecureSkipVerify is "
                "set true",
            )
        if tls.mode == modes.MUTUAL and (tls.ca_certificates or tls.subject_alt_names):
            rep.err(path, "cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set true")
    if tls.mode in (modes.SIMPLE, modes.MUTUAL) and tls.credential_name:
        if tls.client_certificate or tls.ca_certificates or tls.private_key or tls.ca_crl:
            rep.err(path, "cannot specify client certificates or CA certificate or CA CRL If credentialName is set")
        return
    if tls.mode == modes.MUTUAL:
        if not tls.client_certificate:
            rep.err(f"{path}.clientCertificate", "client certificate required for mutual tls")
        if not tls.private_key:
            rep.err(f"{path}.privateKey", "private key required for mutual tls")


def _validate_tunnel(rep: _Report, path: str, tunnel: nw.TrafficPolicyTunnelSettings | None) -> None:
    if tunnel is None:
        return
    if tunnel.protocol not in ("", "CONNECT", "POST"):
        rep.err(f"{path}.protocol", 'tunnel protocol must be "CONNECT" or "POST"')
    fqdn_error = validate_fqdn(tunnel.target_host)
    ip_error = _validate_ip_address(tunnel.target_host)
    if fqdn_error and ip_error:
        rep.err(f"{path}.targetHost", f"tunnel target host must be valid FQDN or IP address: {fqdn_error}; {ip_error}")
    port_error = _validate_port(tunnel.target_port)
    if port_error:
        rep.err(f"{path}.targetPort", f"tunnel target port is invalid: {port_error}")


def _validate_traffic_policy(rep: _Report, path: str, policy: nw.TrafficPolicy | None) -> None:
    if policy is None:
        return
    if (
        policy.outlier_detection is None
        and policy.connection_pool is None
        and policy.load_balancer is None
        and policy.tls is None
        and not policy.port_level_settings
        and policy.tunnel is None
        and policy.proxy_protocol is None
        and policy.retry_budget is None
    ):
        rep.err(path, "traffic policy must have at least one field")
        return
    if policy.tunnel is not None and policy.proxy_protocol is not None:
        rep.err(path, "tunnel and proxyProtocol must not be set together")
        return
    _validate_outlier_detection(rep, f"{path}.outlierDetection", policy.outlier_detection)
    _validate_connection_pool(rep, f"{path}.connectionPool", policy.connection_pool)
    _validate_load_balancer(rep, f"{path}.loadBalancer", policy.load_balancer, policy.outlier_detection)
    _validate_client_tls(rep, f"{path}.tls", policy.tls)
    for i, port_policy in enumerate(policy.port_level_settings):
        ppath = f"{path}.portLevelSettings[{i}]"
        if port_policy.port is None:
            rep.err(f"{ppath}.port", "portTrafficPolicy must have valid port")
        if (
            port_policy.outlier_detection is None
            and port_policy.connection_pool is None
            and port_policy.load_balancer is None
            and port_policy.tls is None
        ):
            rep.err(ppath, "port traffic policy must have at least one field")
            continue
        _validate_outlier_detection(rep, f"{ppath}.outlierDetection", port_policy.outlier_detection)
        _validate_connection_pool(rep, f"{ppath}.connectionPool", port_policy.connection_pool)
        _validate_load_balancer(rep, f"{ppath}.loadBalancer", port_policy.load_balancer, port_policy.outlier_detection)
        _validate_client_tls(rep, f"{ppath}.tls", port_policy.tls)
    _validate_tunnel(rep, f"{path}.tunnel", policy.tunnel)


def _validate_destination_rule(rep: _Report, dr: nw.DestinationRule) -> None:
    rep.err("spec.host", validate_wildcard_domain(dr.host))
    _validate_traffic_policy(rep, "spec.trafficPolicy", dr.traffic_policy)
    names: set[str] = set()
    for i, subset in enumerate(dr.subsets):
        spath = f"spec.subsets[{i}]"
        if subset.name in names:
            rep.err(f"{spath}.name", f"duplicate subset names: {subset.name}")
        names.add(subset.name)
        rep.err(f"{spath}.name", _validate_subset_name(subset.name))
        _validate_labels(rep, f"{spath}.labels", subset.labels)
        _validate_traffic_policy(rep, f"{spath}.trafficPolicy", subset.traffic_policy)
    _validate_export_to(rep, "spec.exportTo", dr.export_to, False, dr.workload_selector is not None)
    _validate_workload_selector(rep, "spec.workloadSelector", dr.workload_selector)


# --- Gateway ------------------------------------------------------------------------------------------------------

_VALID_CIPHERS = {
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "DES-CBC3-SHA",
}
VALID_CIPHER_SUITES = frozenset(_VALID_CIPHERS)  # istiod's ValidCipherSuites (FilterCipherSuites keeps only these)


def _port_text(port: nw.Port) -> str:
    parts = []
    if port.number:
        parts.append(f"number:{port.number}")
    if port.protocol:
        parts.append(f"protocol:{_q(port.protocol)}")
    if port.name:
        parts.append(f"name:{_q(port.name)}")
    return " ".join(parts)


def _validate_server_tls(rep: _Report, path: str, tls: nw.ServerTlsSettings | None) -> None:
    if tls is None:
        return
    modes = nw.ServerTlsSettingsTlSmode
    versions = nw.ServerTlsSettingsTlsProtocol
    if tls.min_protocol_version in (versions.TLSV1_0, versions.TLSV1_1) and not tls.cipher_suites:
        rep.warn(
            f"{path}.minProtocolVersion",
            "TLS version below TLSV1_2 require setting compatible ciphers as by default they no longer include "
            "compatible ciphers.",
        )
    invalid = sorted({c for c in tls.cipher_suites if c not in _VALID_CIPHERS})
    duplicate = sorted({c for c in tls.cipher_suites if c in _VALID_CIPHERS and tls.cipher_suites.count(c) > 1})
    if invalid:
        rep.warn(f"{path}.cipherSuites", f"ignoring invalid cipher suites: [{' '.join(invalid)}]")
    if duplicate:
        rep.warn(f"{path}.cipherSuites", f"ignoring duplicate cipher suites: [{' '.join(duplicate)}]")
    if tls.mode == modes.ISTIO_MUTUAL:
        for value, what in (
            (tls.server_certificate, "server certificate"),
            (tls.private_key, "private key"),
            (tls.ca_certificates, "CA bundle"),
            (tls.tls_certificates, "tlsCertificates"),
            (tls.credential_name, "credentialName"),
            (tls.credential_names, "credentialNames"),
        ):
            if value:
                rep.err(path, f"ISTIO_MUTUAL TLS cannot have associated {what}")
        return
    if tls.mode in (modes.PASSTHROUGH, modes.AUTO_PASSTHROUGH) and (
        tls.ca_crl
        or tls.server_certificate
        or tls.private_key
        or tls.ca_certificates
        or tls.tls_certificates
        or tls.credential_name
        or tls.credential_names
    ):
        rep.warn(path, f"{tls.mode.name} mode does not use certificates, they will be ignored")
    sources = sum(
        (
            bool(tls.server_certificate and tls.private_key),
            bool(tls.credential_name),
            bool(tls.credential_names),
            bool(tls.tls_certificates),
        )
    )
    if sources > 1:
        rep.err(
            path,
            "only one of credential_name, credential_names, server_certificate/private_key, tls_certificates "
            "should be specified",
        )
    terminating = tls.mode in (modes.SIMPLE, modes.MUTUAL, modes.OPTIONAL_MUTUAL)
    if terminating and (tls.credential_name or tls.credential_names):
        return  # certificates come from the credential
    if terminating:
        prefix = "SIMPLE TLS" if tls.mode == modes.SIMPLE else "MUTUAL TLS"
        if tls.mode != modes.SIMPLE and not tls.ca_certificates:
            rep.err(f"{path}.caCertificates", f"{prefix} requires a client CA bundle")
        if len(tls.tls_certificates) > 2:
            rep.warn(f"{path}.tlsCertificates", f"{prefix} can support up to 2 server certificates")
        certs: Iterable[tuple[str, str, str]]
        if tls.tls_certificates:
            certs = (
                (c.server_certificate, c.private_key, f"{path}.tlsCertificates[{i}]")
                for i, c in enumerate(tls.tls_certificates)
            )
        else:
            certs = ((tls.server_certificate, tls.private_key, path),)
        for cert, key, cpath in certs:
            if not cert:
                rep.err(f"{cpath}.serverCertificate", f"{prefix} requires a server certificate")
            if not key:
                rep.err(f"{cpath}.privateKey", f"{prefix} requires a private key")
    if tls.ca_crl:
        if tls.credential_name:
            rep.err(
                f"{path}.caCrl", "CRL is not supported with credentialName. CRL has to be specified in the credential"
            )
        if tls.mode == modes.SIMPLE:
            rep.err(f"{path}.caCrl", "CRL is not supported with SIMPLE TLS")


def _validate_server(rep: _Report, path: str, server: nw.Server) -> None:
    if not server.hosts:
        rep.err(f"{path}.hosts", "server config must contain at least one host")
    for i, host in enumerate(server.hosts):
        for problem in _validate_namespace_slash_host(host, True):
            rep.err(f"{path}.hosts[{i}]", problem)
    port = server.port
    port_ok = True
    before = len(rep.errors)
    if port is None:
        rep.err(f"{path}.port", "port is required")
    else:
        ppath = f"{path}.port"
        if _protocol(port.protocol) is None:
            rep.err(
                f"{ppath}.protocol",
                f"invalid protocol {_q(port.protocol)}, supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, MONGO, "
                "REDIS, MYSQL, TCP",
            )
        if port.number > 0 or not server.bind.startswith("unix://"):
            rep.err(f"{ppath}.number", _validate_port(port.number))
        if port.target_port > 0:
            rep.err(f"{ppath}.targetPort", "targetPort has no impact on Gateways")
        if not port.name:
            rep.err(f"{ppath}.name", f"port name must be set: {_port_text(port)}")
    port_ok = len(rep.errors) == before
    if server.bind.startswith("unix://"):
        rep.err(f"{path}.bind", _validate_unix_address(server.bind[len("unix://") :]))
        if port is not None and port.number != 0:
            rep.err(f"{path}.bind", f"port number must be 0 for unix domain socket: {_port_text(port)}")
    elif server.bind:
        rep.err(f"{path}.bind", _validate_ip_address(server.bind))
    _validate_server_tls(rep, f"{path}.tls", server.tls)
    if port_ok and port is not None:
        protocol = _protocol(port.protocol)
        is_tls = protocol in _TLS_PROTOCOLS
        if is_tls and server.tls is None:
            rep.err(path, "server must have TLS settings for HTTPS/TLS protocols")
        elif not is_tls and server.tls is not None:
            if protocol in _HTTP_PROTOCOLS:
                tls = server.tls
                passthrough = tls.mode in (
                    nw.ServerTlsSettingsTlSmode.PASSTHROUGH,
                    nw.ServerTlsSettingsTlSmode.AUTO_PASSTHROUGH,
                )
                if not passthrough or tls.ca_certificates or tls.private_key or tls.server_certificate:
                    rep.err(f"{path}.tls", "server cannot have TLS settings for plain text HTTP ports")
            else:
                rep.err(f"{path}.tls", "server cannot have TLS settings for non HTTPS/TLS ports")


def _validate_gateway(rep: _Report, gw: nw.Gateway) -> None:
    if not gw.servers:
        rep.err("spec.servers", "gateway must have at least one server")
    for i, server in enumerate(gw.servers):
        _validate_server(rep, f"spec.servers[{i}]", server)
    port_names: set[str] = set()
    for i, server in enumerate(gw.servers):
        if server.port is None:
            continue
        if server.port.name in port_names:
            rep.err(
                f"spec.servers[{i}].port.name",
                f"port names in servers must be unique: duplicate name {server.port.name}",
            )
        port_names.add(server.port.name)
        if (
            _protocol(server.port.protocol) not in _HTTP_PROTOCOLS
            and server.tls is not None
            and server.tls.https_redirect
        ):
            rep.warn(f"spec.servers[{i}].tls.httpsRedirect", "tls.httpsRedirect should only be used with http servers")


# --- Sidecar ------------------------------------------------------------------------------------------------------


def _split_host_port(address: str) -> tuple[str, str, str | None]:
    """Go's net.SplitHostPort: (host, port, error)."""
    if address.startswith("["):
        end = address.find("]")
        if end == -1:
            return "", "", f"address {address}: missing ']' in address"
        if end + 1 == len(address):
            return "", "", f"address {address}: missing port in address"
        if address[end + 1] != ":":
            return "", "", f"address {address}: missing port in address"
        return address[1:end], address[end + 2 :], None
    colon = address.rfind(":")
    if colon == -1:
        return "", "", f"address {address}: missing port in address"
    host = address[:colon]
    if ":" in host:
        return "", "", f"address {address}: too many colons in address"
    return host, address[colon + 1 :], None


def _validate_sidecar(rep: _Report, sidecar: nw.Sidecar) -> None:
    selector_errors = _alpha_workload_selector_errors("spec.workloadSelector", sidecar.workload_selector)
    if selector_errors:
        rep.errors.extend(selector_errors)
        return
    if sidecar.workload_selector is not None and not sidecar.workload_selector.labels:
        rep.warn(
            "spec.workloadSelector",
            "sidecar: workload selector specified without labels, will be applied to all services in namespace",
        )
    if (
        not sidecar.egress
        and not sidecar.ingress
        and sidecar.outbound_traffic_policy is None
        and sidecar.inbound_connection_pool is None
    ):
        rep.err("spec", "sidecar: empty configuration provided")
        return
    ports: set[int] = set()
    for i, ingress in enumerate(sidecar.ingress):
        ipath = f"spec.ingress[{i}]"
        port = ingress.port
        if port is None:
            rep.err(f"{ipath}.port", "sidecar: port is required for ingress listeners")
            continue
        if port.target_port > 0:
            rep.err(f"{ipath}.port.targetPort", "targetPort has no impact on Sidecars")
        if port.name:
            rep.err(f"{ipath}.port.name", _validate_port_name(port.name))
        rep.err(f"{ipath}.port.protocol", _validate_protocol(port.protocol))
        rep.err(f"{ipath}.port.number", _validate_port(port.number))
        if ingress.bind:
            rep.err(f"{ipath}.bind", _validate_ip_address(ingress.bind))
        if port.number in ports:
            rep.err(f"{ipath}.port.number", "sidecar: ports on IP bound listeners must be unique")
        ports.add(port.number)
        endpoint = ingress.default_endpoint
        if endpoint:
            epath = f"{ipath}.defaultEndpoint"
            if endpoint.startswith("unix://"):
                rep.err(epath, _validate_unix_address(endpoint[len("unix://") :]))
            else:
                host, port_text, split_error = _split_host_port(endpoint)
                rep.err(epath, split_error)
                if host not in ("", "127.0.0.1", "0.0.0.0", "::1", "::"):
                    rep.err(
                        epath,
                        "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,[::1]:port,"
                        "[::]:port,unix://filepath or unset",
                    )
                if _GO_INT.match(port_text):
                    rep.err(epath, _validate_port(int(port_text)))
                else:
                    rep.err(
                        epath,
                        f"sidecar: defaultEndpoint port ({port_text}) is not a number: strconv.Atoi: parsing "
                        f"{_q(port_text)}: invalid syntax",
                    )
        tls = ingress.tls
        if tls is not None:
            tpath = f"{ipath}.tls"
            if tls.subject_alt_names:
                rep.err(f"{tpath}.subjectAltNames", "sidecar: subjectAltNames is not supported in ingress tls")
            if tls.https_redirect:
                rep.err(f"{tpath}.httpsRedirect", "sidecar: httpsRedirect is not supported")
            if tls.credential_name:
                rep.err(f"{tpath}.credentialName", "sidecar: credentialName is not currently supported")
            if tls.credential_names:
                rep.err(f"{tpath}.credentialNames", "sidecar: credentialNames is not currently supported")
            if tls.tls_certificates:
                rep.err(f"{tpath}.tlsCertificates", "sidecar: tls_certificates is not currently supported")
            if tls.mode in (nw.ServerTlsSettingsTlSmode.ISTIO_MUTUAL, nw.ServerTlsSettingsTlSmode.AUTO_PASSTHROUGH):
                rep.err(
                    f"{tpath}.mode",
                    f"configuration is invalid: cannot set mode to {tls.mode.name} in sidecar ingress tls",
                )
            if _protocol(port.protocol) not in _TLS_PROTOCOLS:
                rep.err(tpath, "server cannot have TLS settings for non HTTPS/TLS ports")
            _validate_server_tls(rep, tpath, tls)
        _validate_connection_pool(rep, f"{ipath}.connectionPool", ingress.connection_pool)
        pool = ingress.connection_pool
        if pool is not None and pool.http is not None and _protocol(port.protocol) not in _HTTP_PROTOCOLS:
            rep.warn(
                f"{ipath}.connectionPool.http",
                f"sidecar: HTTP connection pool settings are configured for port {port.number} ({_q(port.name)}) "
                f"but its protocol is not HTTP ({port.protocol}); only TCP settings will apply",
            )
    _validate_connection_pool(rep, "spec.inboundConnectionPool", sidecar.inbound_connection_pool)

    ports = set()
    unix_binds: set[str] = set()
    catch_all_found = False
    for i, egress in enumerate(sidecar.egress):
        epath = f"spec.egress[{i}]"
        port = egress.port
        if port is None:
            if not catch_all_found:
                if i == len(sidecar.egress) - 1:
                    catch_all_found = True
                else:
                    rep.err(
                        epath, "sidecar: the egress listener with empty port should be the last listener in the list"
                    )
            else:
                rep.err(epath, "sidecar: egress can have only one listener with empty port")
                continue
        else:
            if port.target_port > 0:
                rep.err(f"{epath}.port.targetPort", "targetPort has no impact on Sidecars")
            if port.name:
                rep.err(f"{epath}.port.name", _validate_port_name(port.name))
            rep.err(f"{epath}.port.protocol", _validate_protocol(port.protocol))
            if port.number == 0:
                if not egress.bind.startswith("unix://"):
                    rep.err(f"{epath}.bind", "sidecar: ports with 0 value must have a unix domain socket bind address")
                else:
                    rep.err(f"{epath}.bind", _validate_unix_address(egress.bind[len("unix://") :]))
                if egress.capture_mode not in (nw.CaptureMode.DEFAULT, nw.CaptureMode.NONE):
                    rep.err(
                        f"{epath}.captureMode",
                        "sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners",
                    )
                if egress.bind in unix_binds:
                    rep.err(f"{epath}.bind", "sidecar: unix domain socket values for listeners must be unique")
                unix_binds.add(egress.bind)
            else:
                rep.err(f"{epath}.port.number", _validate_port(port.number))
                if egress.bind:
                    rep.err(f"{epath}.bind", _validate_ip_address(egress.bind))
                if port.number in ports:
                    rep.err(f"{epath}.port.number", "sidecar: ports on IP bound listeners must be unique")
                ports.add(port.number)
        if not egress.hosts:
            rep.err(f"{epath}.hosts", "sidecar: egress listener must contain at least one host")
            continue
        by_namespace: dict[str, set[str]] = {}
        for j, hostname in enumerate(egress.hosts):
            hpath = f"{epath}.hosts[{j}]"
            parts = hostname.split("/", 1)
            if len(parts) == 2:
                namespace = rep.namespace if parts[0] == "." else parts[0]
                services = by_namespace.setdefault(namespace, set())
                if parts[1] != "*":
                    if parts[1] in services or "*" in services:
                        rep.warn(hpath, f"duplicated egress host: {hostname}")
                elif services:
                    rep.warn(hpath, f"duplicated egress host: {hostname}")
                services.add(parts[1])
            for problem in _validate_namespace_slash_host(hostname, False):
                rep.err(hpath, problem)
        if "*" in by_namespace.get("*", set()) and len(by_namespace) != 1:
            rep.warn(f"{epath}.hosts", "`*/*` host select all resources, no other hosts can be added")

    policy = sidecar.outbound_traffic_policy
    if policy is not None and policy.egress_proxy is not None:
        ppath = "spec.outboundTrafficPolicy.egressProxy"
        if policy.mode != nw.OutboundTrafficPolicyMode.ALLOW_ANY:
            rep.err(ppath, "sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode")
        else:
            rep.err(f"{ppath}.host", validate_fqdn(policy.egress_proxy.host))
            if policy.egress_proxy.port is None:
                rep.err(f"{ppath}.port", "sidecar: egress_proxy port must be non-nil")
            else:
                _validate_destination(rep, ppath, policy.egress_proxy)


# --- ServiceEntry and WorkloadEntry -------------------------------------------------------------------------------


def _validate_workload_entry(
    rep: _Report, path: str, we: nw.WorkloadEntry, service_ports: set[str] | None, allow_fqdn: bool
) -> None:
    addr = we.address
    if not addr:
        if not we.network:
            rep.err(f"{path}.address", "address is required")
            return
        rep.warn(f"{path}.address", f"address is unset with network {_q(we.network)}")
    unix = addr.startswith("unix://")
    if unix:
        rep.err(f"{path}.address", _validate_unix_address(addr[len("unix://") :]))
        if we.ports:
            rep.err(f"{path}.ports", f"unix endpoint {addr} must not include ports")
    elif addr and not is_ip_address(addr):
        if not allow_fqdn:
            rep.err(f"{path}.address", f"endpoint address {_q(addr)} is not a valid IP address")
        elif validate_fqdn(addr):
            rep.err(f"{path}.address", f"endpoint address {_q(addr)} is not a valid FQDN or an IP address")
    for name, port in we.ports.items():
        ppath = _key(f"{path}.ports", name)
        if service_ports is not None and name not in service_ports:
            rep.err(ppath, f"endpoint port {port} is not defined by the service entry")
        rep.err(ppath, _validate_port_name(name))
        rep.err(ppath, _validate_port(port))
    _validate_labels(rep, f"{path}.labels", we.labels)
    if unix and service_ports is not None and len(service_ports) != 1:
        rep.err(path, "exactly 1 service port required for unix endpoints")


def _validate_service_entry(rep: _Report, se: nw.ServiceEntry) -> None:
    selector_errors = _alpha_workload_selector_errors("spec.workloadSelector", se.workload_selector)
    if selector_errors:
        rep.errors.extend(selector_errors)
        return
    if se.workload_selector is not None and not se.workload_selector.labels:
        rep.warn(
            "spec.workloadSelector",
            "service entry: workload selector specified without labels, will be applied to all services in namespace",
        )
    if se.workload_selector is not None and se.endpoints:
        rep.err("spec", "only one of WorkloadSelector or Endpoints is allowed in Service Entry")
    if not se.hosts:
        rep.err("spec.hosts", "service entry must have at least one host")
    for i, host in enumerate(se.hosts):
        if host == "*":
            rep.err(f"spec.hosts[{i}]", f"invalid host {host}")
        else:
            rep.err(f"spec.hosts[{i}]", validate_wildcard_domain(host))
            rep.warn(f"spec.hosts[{i}]", _validate_partial_wildcard(host))
    cidr_found = False
    for i, address in enumerate(se.addresses):
        cidr_found = cidr_found or "/" in address
        rep.err(f"spec.addresses[{i}]", _validate_ip_subnet(address))
    resolution = se.resolution
    res = nw.ServiceEntryResolution
    if cidr_found and resolution not in (res.NONE, res.STATIC):
        rep.err("spec.addresses", "CIDR addresses are allowed only for NONE/STATIC resolution types")
    port_names: set[str] = set()
    port_numbers: set[int] = set()
    for i, port in enumerate(se.ports):
        ppath = f"spec.ports[{i}]"
        if port.name in port_names:
            rep.err(f"{ppath}.name", f"service entry port name {_q(port.name)} already defined")
        port_names.add(port.name)
        if port.number in port_numbers:
            rep.err(f"{ppath}.number", f"service entry port {port.number} already defined")
        port_numbers.add(port.number)
        if port.target_port != 0:
            rep.err(f"{ppath}.targetPort", _validate_port(port.target_port))
        if not se.addresses and port.protocol in ("", "TCP"):
            rep.warn(
                ppath,
                "addresses are required for ports serving TCP (or unset) protocol when IP Autoallocation is "
                "not enabled",
            )
        rep.err(f"{ppath}.name", _validate_port_name(port.name))
        rep.err(f"{ppath}.protocol", _validate_protocol(port.protocol))
        rep.err(f"{ppath}.number", _validate_port(port.number))

    if resolution == res.NONE:
        if se.endpoints:
            rep.err("spec.endpoints", "no endpoints should be provided for resolution type none")
        if se.workload_selector is not None:
            rep.warn("spec.workloadSelector", "workloadSelector should not be set when resolution mode is NONE")
    elif resolution == res.STATIC:
        for i, endpoint in enumerate(se.endpoints):
            _validate_workload_entry(rep, f"spec.endpoints[{i}]", endpoint, port_names, False)
    elif resolution in (res.DNS, res.DNS_ROUND_ROBIN):
        if not se.endpoints:
            for i, host in enumerate(se.hosts):
                if validate_fqdn(host):
                    rep.err(
                        f"spec.hosts[{i}]",
                        f"hosts must be FQDN if no endpoints are provided for resolution mode {resolution.name}",
                    )
        if resolution == res.DNS_ROUND_ROBIN and len(se.endpoints) > 1:
            rep.err("spec.endpoints", f"there must only be 0 or 1 endpoint for resolution mode {resolution.name}")
        for i, endpoint in enumerate(se.endpoints):
            epath = f"spec.endpoints[{i}]"
            if not is_ip_address(endpoint.address) and validate_fqdn(endpoint.address):
                rep.err(
                    f"{epath}.address", f"endpoint address {_q(endpoint.address)} is not a valid FQDN or an IP address"
                )
            _validate_labels(rep, f"{epath}.labels", endpoint.labels)
            for name, number in endpoint.ports.items():
                ppath = _key(f"{epath}.ports", name)
                if name not in port_names:
                    rep.err(ppath, f"endpoint port {number} is not defined by the service entry")
                rep.err(ppath, _validate_port_name(name))
                rep.err(ppath, _validate_port(number))
        if se.addresses and len(se.hosts) > 1:
            tcp_like = {"tcp", "https", "tls", "mongo", "redis", "mysql"}
            if any(_protocol(p.protocol) in tcp_like for p in se.ports):
                rep.warn(
                    "spec.hosts",
                    "service entry can not have more than one host specified simultaneously with address and tcp port",
                )
    # DYNAMIC_DNS (newer Istio) has no resolution-specific checks here.

    if resolution != res.NONE and len(se.hosts) > 1:
        for i, port in enumerate(se.ports):
            protocol = _protocol(port.protocol)
            if protocol not in _HTTP_PROTOCOLS and protocol not in _TLS_PROTOCOLS:
                rep.err(f"spec.ports[{i}]", "multiple hosts provided with non-HTTP, non-TLS ports")
                break
    _validate_export_to(rep, "spec.exportTo", se.export_to, True, False)


def _validate_standalone_workload_entry(rep: _Report, we: nw.WorkloadEntry) -> None:
    _validate_workload_entry(rep, "spec", we, None, True)


# --- PeerAuthentication (security.istio.io) ----------------------------------------------------------------------


def _validate_peer_authentication(rep: _Report, pa: security.PeerAuthentication) -> None:
    """istiod's ValidatePeerAuthentication (and the CRD's rules it mirrors)."""
    selector = pa.selector
    if (selector is None or not selector.match_labels) and pa.port_level_mtls:
        rep.err("spec.portLevelMtls", "mesh/namespace peer authentication cannot have port level mTLS")
    for port in sorted(pa.port_level_mtls):
        if port <= 0 or port > 65535:
            rep.err(_key("spec.portLevelMtls", port), "port must be in range 1..65535")
    _validate_workload_selector(rep, "spec.selector", selector)


# Security kinds are converted here: their messages live outside the networking package convert_spec knows.
_SECURITY_KINDS: dict[str, type[betterproto2.Message]] = {"PeerAuthentication": security.PeerAuthentication}


def _convert(kind: str, spec_dict: object) -> tuple[betterproto2.Message | None, list[FieldError]]:
    cls = _SECURITY_KINDS.get(kind)
    if cls is None:
        return convert_spec(kind, spec_dict)
    message, errors = convert_message(cls, {} if spec_dict is None else spec_dict, "spec")
    if message is not None and isinstance(spec_dict, dict):
        # An explicit empty map is not "unset" to istiod (a nil map is); the CRD asks for one entry at least.
        port_level = spec_dict.get("portLevelMtls", spec_dict.get("port_level_mtls"))
        if isinstance(port_level, dict) and not port_level:
            message_text = "port level mTLS, if defined, must have at least one element"
            return None, [FieldError("spec.portLevelMtls", message_text)]
    return message, errors


# --- entry points -------------------------------------------------------------------------------------------------

_VALIDATORS = {
    "VirtualService": (nw.VirtualService, _validate_virtual_service),
    "DestinationRule": (nw.DestinationRule, _validate_destination_rule),
    "Gateway": (nw.Gateway, _validate_gateway),
    "ServiceEntry": (nw.ServiceEntry, _validate_service_entry),
    "WorkloadEntry": (nw.WorkloadEntry, _validate_standalone_workload_entry),
    "Sidecar": (nw.Sidecar, _validate_sidecar),
    "PeerAuthentication": (security.PeerAuthentication, _validate_peer_authentication),
}


def validate_spec_full(
    kind: str, spec: betterproto2.Message, namespace: str
) -> tuple[list[FieldError], list[FieldError]]:
    """Validate a typed spec; return (errors, warnings)."""
    entry = _VALIDATORS.get(kind)
    if entry is None:
        return [FieldError("spec", f'unsupported kind "{kind}"')], []
    cls, validator = entry
    if not isinstance(spec, cls):
        return [FieldError("spec", f"expected a {cls.__name__} message, got {type(spec).__name__}")], []
    rep = _Report(namespace)
    validator(rep, spec)  # type: ignore[operator]
    return rep.errors, rep.warnings


def validate_spec(kind: str, spec: betterproto2.Message, namespace: str) -> list[FieldError]:
    """Validate a typed spec; return its errors (empty when valid). Warnings are dropped."""
    return validate_spec_full(kind, spec, namespace)[0]


def check(kind: str, spec_dict: object, namespace: str) -> tuple[betterproto2.Message | None, list[FieldError]]:
    """Convert then validate. Returns (message, []) when valid, (None, errors) otherwise."""
    message, errors = _convert(kind, spec_dict)
    if message is None:
        return None, errors
    errors = validate_spec(kind, message, namespace)
    if errors:
        return None, errors
    return message, []


# --- RE2 syntax ---------------------------------------------------------------------------------------------------
# Python's re is close to RE2 but accepts constructs RE2 lacks (lookarounds, backreferences, possessive
# quantifiers, atomic groups, conditionals) and lacks a few RE2 ones (\z, \pL, \Q..\E, \x{...}, flags in the
# middle of an expression). _re2_translate rewrites a pattern into an equivalent Python one, rejecting what RE2
# rejects; re.compile then finds the remaining syntax errors. Messages follow Go's regexp wording.

_PERL_ESCAPES = set("dDsSwW")
_LITERAL_ESCAPES = {"a": "\\a", "f": "\\f", "t": "\\t", "n": "\\n", "r": "\\r", "v": "\\v"}
_POSIX_CLASSES = {
    "alnum",
    "alpha",
    "ascii",
    "blank",
    "cntrl",
    "digit",
    "graph",
    "lower",
    "print",
    "punct",
    "space",
    "upper",
    "word",
    "xdigit",
}
_REPEAT = re.compile(r"\{([0-9]+)(,([0-9]*))?\}")
_NAME = re.compile(r"[A-Za-z0-9_]+")
_FLAGS = re.compile(r"([imsU]*)(-([imsU]*))?([:)])")
_OCTAL = re.compile(r"[0-7]{1,3}")
_MAX_REPEAT = 1000


class _Re2Error(Exception):
    pass


def _fail(kind: str, text: str) -> _Re2Error:
    return _Re2Error(f"{kind}: `{text}`")


def _escape_char(code: int) -> str:
    return re.escape(chr(code))


def _translate_escape(pattern: str, i: int, in_class: bool) -> tuple[str, int]:
    """Translate the escape starting at pattern[i] == '\\'; return (python text, next index)."""
    if i + 1 >= len(pattern):
        raise _fail("trailing backslash at end of expression", "")
    ch = pattern[i + 1]
    if ch in "01234567":
        octal = _OCTAL.match(pattern, i + 1)
        assert octal is not None
        digits = octal.group(0)
        if ch != "0" and len(digits) == 1:
            # A single non-zero digit is a backreference, which RE2 does not support.
            raise _fail("invalid escape sequence", pattern[i : i + 2])
        return _escape_char(int(digits, 8)), octal.end()
    if ch in "89":
        raise _fail("invalid escape sequence", pattern[i : i + 2])
    if ch == "x":
        if pattern.startswith("{", i + 2):
            end = pattern.find("}", i + 3)
            hex_digits = pattern[i + 3 : end] if end != -1 else ""
            if end == -1 or not hex_digits or not all(c in "0123456789abcdefABCDEF" for c in hex_digits):
                raise _fail("invalid escape sequence", pattern[i : (end + 1 if end != -1 else len(pattern))])
            code = int(hex_digits, 16)
            if code > 0x10FFFF:
                raise _fail("invalid escape sequence", pattern[i : end + 1])
            return _escape_char(code), end + 1
        two = pattern[i + 2 : i + 4]
        if len(two) != 2 or not all(c in "0123456789abcdefABCDEF" for c in two):
            raise _fail("invalid escape sequence", pattern[i : i + 4])
        return _escape_char(int(two, 16)), i + 4
    if ch in "pP":
        if pattern.startswith("{", i + 2):
            end = pattern.find("}", i + 3)
            if end == -1:
                raise _fail("invalid character class range", pattern[i:])
            name = pattern[i + 3 : end].lstrip("^")
            if not _NAME.fullmatch(name):
                raise _fail("invalid character class range", pattern[i : end + 1])
            return "\\w", end + 1
        if i + 2 >= len(pattern) or not pattern[i + 2].isalpha():
            raise _fail("invalid character class range", pattern[i : i + 3])
        return "\\w", i + 3
    if ch in _PERL_ESCAPES:
        return pattern[i : i + 2], i + 2
    if ch in _LITERAL_ESCAPES:
        return _LITERAL_ESCAPES[ch], i + 2
    if not in_class and ch in "bBA":
        return pattern[i : i + 2], i + 2
    if not in_class and ch == "z":
        return "\\Z", i + 2
    if ch.isascii() and ch.isalnum():
        # \C, \Z, \u, \N, \e, ... are not RE2 escapes.
        raise _fail("invalid escape sequence", pattern[i : i + 2])
    return re.escape(ch), i + 2


def _translate_class(pattern: str, i: int) -> tuple[str, int]:
    """Translate a character class starting at pattern[i] == '['; return (python text, next index)."""
    out = ["["]
    j = i + 1
    if pattern.startswith("^", j):
        out.append("^")
        j += 1
    first = True
    while True:
        if j >= len(pattern):
            raise _fail("missing closing ]", pattern[i:])
        ch = pattern[j]
        if ch == "]" and not first:
            out.append("]")
            return "".join(out), j + 1
        first = False
        if ch == "\\":
            text, j = _translate_escape(pattern, j, in_class=True)
            out.append(text)
            continue
        if pattern.startswith("[:", j):
            end = pattern.find(":]", j + 2)
            if end != -1:
                name = pattern[j + 2 : end].lstrip("^")
                if name not in _POSIX_CLASSES:
                    raise _fail("invalid character class range", pattern[j : end + 2])
                out.append("\\w")
                j = end + 2
                continue
        if ch in "[&~|":
            out.append("\\" + ch)  # literal in RE2; Python may treat doubled ones as set operations
        else:
            out.append(ch)
        j += 1


def _translate(pattern: str) -> str:
    out: list[str] = []
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            if pattern.startswith("\\Q", i):
                end = pattern.find("\\E", i + 2)
                literal = pattern[i + 2 :] if end == -1 else pattern[i + 2 : end]
                out.append(re.escape(literal))
                i = n if end == -1 else end + 2
                continue
            text, i = _translate_escape(pattern, i, in_class=False)
            out.append(text)
            continue
        if ch == "[":
            text, i = _translate_class(pattern, i)
            out.append(text)
            continue
        if ch == "(" and pattern.startswith("(?", i):
            rest = pattern[i + 2 :]
            if rest.startswith(("=", "!", "<=", "<!", ">", "#", "(", "P=", "P>", "|")):
                raise _fail("invalid or unsupported Perl syntax", pattern[i : i + 3])
            if rest.startswith(("P<", "<")):
                start = i + (4 if rest.startswith("P<") else 3)
                end = pattern.find(">", start)
                name = pattern[start:end] if end != -1 else ""
                if end == -1 or not _NAME.fullmatch(name):
                    raise _fail("invalid named capture", pattern[i : (end + 1 if end != -1 else n)])
                out.append(f"(?P<{name}>")
                i = end + 1
                continue
            flags = _FLAGS.match(pattern, i + 2)
            if flags is None or (not flags.group(1) and not flags.group(3) and flags.group(4) == ")"):
                raise _fail("invalid or unsupported Perl syntax", pattern[i : i + 3])
            if flags.group(2) is not None and not flags.group(3):
                raise _fail("invalid or unsupported Perl syntax", pattern[i : flags.end()])
            # Flags change matching, not syntax: drop them so Python accepts them anywhere.
            if flags.group(4) == ":":
                out.append("(?:")
            i = flags.end()
            continue
        if ch in "*+?" or (ch == "{" and _REPEAT.match(pattern, i)):
            end = i + 1
            if ch == "{":
                rep = _REPEAT.match(pattern, i)
                assert rep is not None
                low = int(rep.group(1))
                high = int(rep.group(3)) if rep.group(3) else low
                if low > _MAX_REPEAT or high > _MAX_REPEAT or (rep.group(3) and high < low):
                    raise _fail("invalid repeat count", rep.group(0))
                end = rep.end()
            if pattern.startswith("?", end):
                end += 1  # lazy form
            if end < n and (pattern[end] in "*+?" or (pattern[end] == "{" and _REPEAT.match(pattern, end))):
                raise _fail("invalid nested repetition operator", pattern[i : end + 1])
            out.append(pattern[i:end])
            i = end
            continue
        out.append(ch)
        i += 1
    return "".join(out)


_PY_MESSAGES = (
    ("missing ), unterminated subpattern", "missing closing )"),
    ("unbalanced parenthesis", "unexpected )"),
    ("nothing to repeat", "missing argument to repetition operator"),
    ("multiple repeat", "invalid nested repetition operator"),
    ("unterminated character set", "missing closing ]"),
    ("bad character range", "invalid character class range"),
)


@functools.lru_cache(maxsize=4096)
def re2_error(pattern: str) -> str | None:
    """Return a Go-style "error parsing regexp: ..." message if ``pattern`` is not valid RE2, else None."""
    try:
        translated = _translate(pattern)
    except _Re2Error as exc:
        return f"error parsing regexp: {exc}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            re.compile(translated)
    except re.error as exc:
        text = exc.msg
        for python_text, go_text in _PY_MESSAGES:
            if text.startswith(python_text):
                text = go_text
                break
        return f"error parsing regexp: {text}: `{pattern}`"
    except (RecursionError, OverflowError):
        return f"error parsing regexp: expression too large: `{pattern}`"
    return None

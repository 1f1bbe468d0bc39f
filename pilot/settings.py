"""Every environment variable ``pilot serve`` reads, with its default, parsed and checked up front.

Values follow istiod's forms: durations as Go writes them (``100ms``, ``10s``, ``1m30s``, ``1h``; a bare number
is seconds, as pilot always accepted), booleans as Go's strconv.ParseBool. A bad value is a ``SettingError``
whose message names the variable and the value, so ``pilot serve`` can stop with one line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class SettingError(ValueError):
    pass


_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_go_duration(text: str) -> float:
    """Seconds from a Go duration (time.ParseDuration: ``1h2m3.5s``, ``250ms``, ``0``) or a bare number of
    seconds. Negative durations are refused: no setting of pilot's means anything by them."""
    value = text.strip()
    if not value:
        raise ValueError("empty duration")
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if seconds < 0 or seconds != seconds or seconds == float("inf"):
            raise ValueError(f"invalid duration {text!r} (must be a non-negative, finite number of seconds)")
        return seconds
    if value.startswith("-"):
        raise ValueError(f"invalid duration {text!r} (must not be negative)")
    body = value[1:] if value.startswith("+") else value
    total = 0.0
    position = 0
    for match in _DURATION_PART.finditer(body):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position != len(body) or not body:
        raise ValueError(f"invalid duration {text!r} (expected Go form, e.g. 100ms, 10s, 1m30s)")
    return total


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "t", "true", "yes", "on"):
        return True
    if value in ("0", "f", "false", "no", "off"):
        return False
    raise ValueError(f"invalid boolean {text!r} (expected true or false)")


def _non_negative_int(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"invalid integer {text!r}") from None
    if value < 0:
        raise ValueError(f"{value} is negative")
    return value


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise ValueError("must be at least 1")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"invalid number {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{text!r} must be a non-negative number")
    return value


def _positive_duration(text: str) -> float:
    seconds = parse_go_duration(text)
    if seconds <= 0:
        raise ValueError(f"{text!r} must be greater than zero")
    return seconds


def _log_levels(text: str) -> str:
    from pilot.log import LogConfigError, parse_levels

    try:
        parse_levels(text)
    except LogConfigError as exc:
        raise ValueError(str(exc)) from None
    return text


@dataclass(frozen=True)
class Setting:
    name: str
    default: str  # as shown in --help; "" = unset
    help: str
    parse: Callable[[str], Any]

    def read(self, env: Mapping[str, str]) -> Any:
        """The parsed value (the default when unset or empty); SettingError for a bad one."""
        raw = env.get(self.name, "")
        if not raw.strip():
            return self.parse(self.default) if self.default else None
        try:
            return self.parse(raw)
        except ValueError as exc:
            raise SettingError(f"{self.name}={raw!r}: {exc}") from None


SETTINGS: tuple[Setting, ...] = (
    Setting("PILOT_DEBOUNCE_AFTER", "100ms", "quiet time after a config change before a push", parse_go_duration),
    Setting("PILOT_DEBOUNCE_MAX", "10s", "longest a push waits during continuous changes", parse_go_duration),
    Setting(
        "PILOT_ENABLE_EDS_DEBOUNCE",
        "true",
        "false: endpoint-only changes are pushed at once, without the debounce",
        parse_bool,
    ),
    Setting(
        "PILOT_PUSH_THROTTLE",
        "0",
        "proxies generating a push at once; 0: min(15 + 5 x cores, 100) as istiod",
        _non_negative_int,
    ),
    Setting(
        "PILOT_XDS_SEND_TIMEOUT",
        "10s",
        "a proxy that does not read a push within this is disconnected",
        _positive_duration,
    ),
    Setting(
        "PILOT_XDS_CACHE_SIZE",
        "60000",
        "entries of the generated-resource cache (0: 20000 as istiod)",
        _non_negative_int,
    ),
    Setting(
        "PILOT_KEEPALIVE_MAX_SERVER_CONNECTION_AGE",
        "",
        "xDS connections older than this are closed (GOAWAY; +/-10 %) and proxies reconnect; unset or 0: never",
        parse_go_duration,
    ),
    Setting("PILOT_ENABLE_STATUS", "false", "Kubernetes: the elected replica writes validation status", parse_bool),
    Setting(
        "PILOT_LEADER_LEASE_DURATION", "15s", "Kubernetes: duration of the leader-election Lease", _positive_duration
    ),
    Setting(
        "PILOT_LOG_OUTPUT_LEVEL",
        "",
        "scope levels as --log_output_level (the flags apply on top)",
        _log_levels,
    ),
    Setting("PILOT_LOG_AS_JSON", "false", "true: JSON log lines, as --log_as_json", parse_bool),
    Setting("POD_NAMESPACE", "istio-system", "Kubernetes: pilot's namespace (its Lease, its status writes)", str),
    Setting("POD_NAME", "", "Kubernetes: pilot's instance name (default: hostname-pid)", str),
    Setting(
        "PILOT_MAX_REQUESTS_PER_SECOND",
        "0",
        "new xDS streams admitted per second (0: 150 per core); a flood waits in a bounded line",
        _non_negative_float,
    ),
    Setting("PILOT_MONITORING_MAX_CONNECTIONS", "256", "open HTTP connections on the monitoring port", _positive_int),
    Setting("PILOT_FILE_SETTLE", "200ms", "quiet time before a rewritten config file is read", parse_go_duration),
    Setting(
        "PILOT_ENABLE_XDS_IDENTITY_CHECK", "true", "authenticated proxies get only their namespace's config", parse_bool
    ),
    Setting("XDS_AUTH_PLAINTEXT", "false", "true: authenticate proxies on the plaintext xDS port too", parse_bool),
    Setting("ENABLE_DEBUG_ENDPOINT_AUTH", "true", "remote /debug callers are scoped to their namespace", parse_bool),
    Setting("DEBUG_ENDPOINT_AUTH_ALLOWED_NAMESPACES", "", "namespaces whose callers see all of /debug", str),
    Setting("TOKEN_AUDIENCES", "istio-ca", "audiences of proxies' service-account tokens (TokenReview)", str),
)

BY_NAME = {setting.name: setting for setting in SETTINGS}


def read_all(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Every setting parsed; the first bad one raises SettingError."""
    env = os.environ if env is None else env
    return {setting.name: setting.read(env) for setting in SETTINGS}


def help_text() -> str:
    """The environment section of ``pilot serve --help``."""
    width = max(len(s.name) for s in SETTINGS)
    lines = ["environment variables (default in brackets):"]
    for setting in SETTINGS:
        default = f"[{setting.default}]" if setting.default else "[unset]"
        lines.append(f"  {setting.name:<{width}}  {default:<14} {setting.help}")
    return "\n".join(lines)


def split_address(flag: str, value: str, default_port: int) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``, ``:PORT`` for every interface, or a bare host) checked the way a listener
    needs it: a port in 0..65535 and a host that is an address or resolves. SettingError names the flag."""
    import ipaddress
    import socket

    host, sep, port_text = value.rpartition(":")
    if not sep:
        host, port_text = value, str(default_port)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    host = host or "0.0.0.0"
    try:
        port = int(port_text)
    except ValueError:
        raise SettingError(f"{flag} {value!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise SettingError(f"{flag} {value!r}: port {port} is out of range 0-65535")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        try:
            socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise SettingError(f"{flag} {value!r}: cannot resolve host {host!r}: {reason}") from None
    return host, port

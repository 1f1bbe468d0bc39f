"""istiod-style logging: named scopes with their own levels, text or JSON lines.

Every Python logger belongs to one scope, chosen by the longest logger-name prefix in ``SCOPES`` (anything
else is ``default``). ``--log_output_level`` takes istiod's syntax, ``scope:level[,scope:level...]``; a bare
level sets the ``default`` scope and ``all:level`` sets every scope. Levels: debug, info, warn, error, none.

A scope's level is applied to the Python loggers it owns, so a disabled level costs one ``isEnabledFor``
check, and records carry their scope for the formatters. h2/hpack log every HTTP/2 frame at debug; they stay at
warning whatever the levels say, so ``default:debug`` (or ``all:debug``) never floods the log with frames.

Text lines: ``2026-12-01T10:00:00.123456Z INFO ads: message`` (istiod's columns; the level in capitals so
that `` ERROR `` finds problems). JSON lines (``--log_as_json``): istiod's keys ``time``, ``level``,
``scope``, ``msg``, plus ``logger`` and, for exceptions, ``stack``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any

import orjson

# scope -> (description, Python logger name prefixes). Names follow istiod's scopes where one matches.
SCOPES: dict[str, tuple[str, tuple[str, ...]]] = {
    "default": ("Unscoped logging messages.", ("pilot",)),
    "ads": ("ads debugging (xDS streams, pushes sent, ACKs and NACKs)", ("pilot.xds",)),
    "delta": ("delta xds debugging", ("pilot.xds.delta",)),
    "grpcgen": ("xDS Generator for Proxyless gRPC", ("pilot.xds.grpcgen", "pilot.xds.grpcgen_cds")),
    "push": ("logs details about why pilot is triggering a push", ("pilot.push", "pilot.xds.generate")),
    "model": ("model (push contexts, merged config, xDS cache)", ("pilot.model", "pilot.push.context")),
    "file": ("File client messages (the config directory)", ("pilot.sources.files", "pilot.config")),
    "kube": ("Kubernetes client messages", ("pilot.sources.kube", "pilot.registry.kube", "kubernetes_asyncio")),
    "serviceentry": ("ServiceEntry registry", ("pilot.registry.serviceentry",)),
    "status": ("status reporting", ("pilot.sources.kube.status",)),
    "leader": ("leader election", ("pilot.sources.kube.leader",)),
    "validationServer": ("validation webhook server", ("pilot.webhook",)),
    "workers": ("the --workers supervisor and its worker processes", ("pilot.workers",)),
    "debug": ("monitoring HTTP server: /debug endpoints", ("pilot.debug", "pilot.introspect", "aiohttp")),
    "grpc": ("gRPC transport (grpclib)", ("grpclib",)),
}

# Loggers that are never louder than warning: per-frame HTTP/2 and file-watcher chatter.
QUIET_LOGGERS = ("hpack", "h2", "hyperframe", "watchfiles")

LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
    "none": logging.CRITICAL + 10,
}
_LEVEL_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn", logging.ERROR: "error"}

# istiod: every scope at info except grpc (istiod: "default:info,grpc:none"; pilot keeps grpclib's
# warnings and errors, which report failed handlers).
DEFAULT_LEVELS = "default:info,grpc:warn"
OVERRIDE_SCOPE = "all"


class LogConfigError(ValueError):
    """A bad --log_output_level value: the message names the offending part."""


@dataclass(frozen=True)
class LogOptions:
    levels: Mapping[str, int]  # every scope's level
    as_json: bool = False


def parse_levels(spec: str, base: Mapping[str, int] | None = None) -> dict[str, int]:
    """Apply ``scope:level,...`` (istiod's --log_output_level) on top of ``base`` (the defaults)."""
    levels = dict(base) if base is not None else default_levels()
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        scope, sep, level_name = part.rpartition(":")
        if not sep:
            scope = "default"
        level = LEVELS.get(level_name.lower())
        if level is None:
            raise LogConfigError(
                f"invalid log level {level_name!r} in {part!r} (expected one of debug, info, warn, error, none)"
            )
        if scope == OVERRIDE_SCOPE:
            levels = dict.fromkeys(SCOPES, level)
        elif scope in SCOPES:
            levels[scope] = level
        else:
            known = ", ".join(sorted(SCOPES))
            raise LogConfigError(f"unknown log scope {scope!r} in {part!r} (scopes: {known}, or all)")
    return levels


def default_levels() -> dict[str, int]:
    levels = dict.fromkeys(SCOPES, logging.INFO)
    levels["grpc"] = logging.WARNING
    return levels


def describe_levels(levels: Mapping[str, int]) -> str:
    """The canonical ``scope:level,...`` text of ``levels`` (what a worker process is given)."""
    return ",".join(f"{scope}:{level_name(level)}" for scope, level in sorted(levels.items()))


def level_name(level: int) -> str:
    return _LEVEL_NAMES.get(level, "none" if level > logging.ERROR else "debug")


def scope_of(logger_name: str) -> str:
    """The scope a Python logger belongs to: the longest matching prefix, else ``default``."""
    best, best_len = "default", -1
    for scope, (_, prefixes) in SCOPES.items():
        for prefix in prefixes:
            if (logger_name == prefix or logger_name.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = scope, len(prefix)
    return best


class _ScopeFilter(logging.Filter):
    """Tags records with their scope (cached per logger name: records are many, loggers few)."""

    def __init__(self) -> None:
        super().__init__()
        self._cache: dict[str, str] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        scope = self._cache.get(record.name)
        if scope is None:
            scope = self._cache[record.name] = scope_of(record.name)
        record.scope = scope
        return True


def _timestamp(created: float) -> str:
    seconds = int(created)
    micros = int((created - seconds) * 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micros:06d}Z"


# Names this process in every line when several share one stderr (the --workers workers): "worker 1".
_label = ""


def set_label(label: str) -> None:
    global _label
    _label = label


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        level = "WARN" if record.levelno == logging.WARNING else record.levelname
        label = f" [{_label}]" if _label else ""
        line = f"{_timestamp(record.created)} {level}{label} {getattr(record, 'scope', 'default')}: {message}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record.created),
            "level": level_name(record.levelno) if record.levelno <= logging.ERROR else "fatal",
            "scope": getattr(record, "scope", "default"),
            "msg": record.getMessage(),
            "logger": record.name,
        }
        if _label:
            entry["process"] = _label
        if record.exc_info:
            entry["stack"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


_HANDLER_MARK = "_pilot_log_handler"


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of each record (tests swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        pass


def configure(options: LogOptions, stream: IO[str] | None = None) -> None:
    """Install pilot's handler on the root logger and set every scope's level (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    handler: logging.Handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    setattr(handler, _HANDLER_MARK, True)
    handler.addFilter(_ScopeFilter())
    handler.setFormatter(JsonFormatter() if options.as_json else TextFormatter())
    root.addHandler(handler)
    # The root (scope "default" for loggers outside pilot) and each scope's own loggers.
    root.setLevel(options.levels.get("default", logging.INFO))
    for scope, (_, prefixes) in SCOPES.items():
        level = options.levels.get(scope, logging.INFO)
        for prefix in prefixes:
            logging.getLogger(prefix).setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, options.levels.get("grpc", logging.WARNING)))


# Environment variables that carry the log settings to processes pilot starts (the --workers workers) and
# that an operator may set instead of the flags.
ENV_LEVELS = "PILOT_LOG_OUTPUT_LEVEL"
ENV_AS_JSON = "PILOT_LOG_AS_JSON"


def options_from(
    log_level: str | None, output_level: str | None, as_json: bool | None, env: Mapping[str, str] | None = None
) -> LogOptions:
    """Resolve the logging flags: ``--log-level`` (pilot's, a level or a scope list) and istiod's
    ``--log_output_level`` apply on top of PILOT_LOG_OUTPUT_LEVEL, itself on top of the defaults.
    Raises LogConfigError with a one-line message."""
    env = os.environ if env is None else env
    levels = parse_levels(DEFAULT_LEVELS)
    from_env = env.get(ENV_LEVELS, "")
    if from_env:
        try:
            levels = parse_levels(from_env, levels)
        except LogConfigError as exc:
            raise LogConfigError(f"{ENV_LEVELS}: {exc}") from None
    for flag, value in (("--log-level", log_level), ("--log_output_level", output_level)):
        if value:
            try:
                levels = parse_levels(value, levels)
            except LogConfigError as exc:
                raise LogConfigError(f"{flag}: {exc}") from None
    if as_json is None:
        raw = env.get(ENV_AS_JSON, "").strip().lower()
        if raw and raw not in ("1", "t", "true", "yes", "on", "0", "f", "false", "no", "off"):
            raise LogConfigError(f"{ENV_AS_JSON}={raw!r}: expected true or false")
        as_json = raw in ("1", "t", "true", "yes", "on")
    return LogOptions(levels, as_json)


def export(options: LogOptions) -> None:
    """Put the resolved settings in this process's environment, so processes it starts log the same way."""
    os.environ[ENV_LEVELS] = describe_levels(options.levels)
    os.environ[ENV_AS_JSON] = "true" if options.as_json else "false"

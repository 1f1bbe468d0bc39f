"""What the operator commands share: talking to a running pilot, one-line errors, output formats."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

DEFAULT_PILOT_ADDR = "127.0.0.1:15014"
DEFAULT_TIMEOUT = 10.0


class ToolError(Exception):
    """A problem the command reports as one line (no traceback) before exiting with status 1."""


def add_pilot_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pilot-addr",
        default=DEFAULT_PILOT_ADDR,
        metavar="HOST:PORT",
        help="the monitoring address of the running pilot to ask (default %(default)s)",
    )
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait for pilot (default %(default)s)"
    )


def guarded(name: str, run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``run`` with ToolError (and a closed stdout, as with ``| head``) turned into a line and a status."""

    def command(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except ToolError as exc:
            print(f"pilot {name}: {exc}", file=sys.stderr)
            return 1
        except BrokenPipeError:
            return 0

    return command


def base_url(addr: str) -> str:
    if "://" in addr:
        return addr.rstrip("/")
    return f"http://{addr}"


def get(addr: str, path: str, query: dict[str, str] | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> bytes:
    """GET from pilot's monitoring port; ToolError with the reason when it cannot be done."""
    url = base_url(addr) + path + ("?" + urllib.parse.urlencode(query) if query else "")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace").strip()
        raise ToolError(f"{path}: HTTP {exc.code}: {body or exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason.strerror if isinstance(exc.reason, OSError) and exc.reason.strerror else exc.reason
        raise ToolError(f"cannot reach pilot at {addr}: {reason} (is --pilot-addr right?)") from None
    except (TimeoutError, OSError) as exc:
        raise ToolError(f"cannot reach pilot at {addr}: {exc}") from None


def get_json(addr: str, path: str, query: dict[str, str] | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> Any:
    body = get(addr, path, query, timeout=timeout)
    try:
        return json.loads(body)
    except ValueError:
        raise ToolError(f"{path}: not JSON: {body[:200]!r}") from None


def read_json_file(path: str) -> Any:
    try:
        with open(path, "rb") as handle:
            return json.load(handle)
    except OSError as exc:
        raise ToolError(f"{path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ToolError(f"{path}: not JSON: {exc}") from None


def dump_structured(value: Any, output: str) -> str:
    """``value`` as JSON (indented, as istioctl prints) or YAML."""
    if output == "yaml":
        import yaml

        plain = json.loads(json.dumps(value))  # protobuf JSON has OrderedDicts that YAML's safe dumper refuses
        return yaml.safe_dump(plain, sort_keys=False, default_flow_style=False).rstrip("\n")
    return json.dumps(value, indent=4)

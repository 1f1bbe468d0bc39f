"""``pilot validate FILE|DIR...``: the server's own checks, offline. Every problem of every file is reported
(each on one line naming file, document, object and field), then a count; exit status 1 if there was any."""

from __future__ import annotations

import argparse
import sys

from pilot.tools import common
from pilot.tools.files import MissingPath, expand


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("validate", help="validate YAML files or directories offline; exits 1 on errors")
    parser.add_argument("paths", metavar="FILE|DIR", nargs="+", help="YAML files, or directories of them")
    parser.set_defaults(func=common.guarded("validate", run))


def run(args: argparse.Namespace) -> int:
    from pilot.config.loader import load_text

    errors = objects = files = 0
    try:
        paths = list(expand(args.paths))
    except MissingPath as exc:
        raise common.ToolError(str(exc)) from None
    if not paths:
        raise common.ToolError(f"no *.yaml or *.yml files in {' '.join(args.paths)}")
    for path in paths:
        files += 1
        try:
            text = sys.stdin.read() if str(path) == "-" else path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            print(f"{path}: {reason}", file=sys.stderr)
            errors += 1
            continue
        result = load_text(str(path), text)
        objects += len(result.configs)
        for error in result.errors:
            print(str(error), file=sys.stderr)
        errors += len(result.errors)
        for kind in result.skipped_kinds:
            print(f"{path}: skipping unsupported kind {kind}", file=sys.stderr)
    if errors:
        print(f"{errors} error(s) in {files} file(s)", file=sys.stderr)
        return 1
    print(f"{objects} object(s) in {files} file(s) valid")
    return 0

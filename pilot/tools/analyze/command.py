"""``pilot analyze FILE|DIR...``: istioctl analyze's offline checks, codes and output for pilot's kinds.

Files are read as pilot reads them (schema problems are IST0106, validation warnings IST0130/IST0131/IST0133),
then the analyzers of ``analyzers`` run over everything together. Output as istioctl's: ``log`` lines
(``Error [IST0101] (VirtualService default/reviews vs.yaml:12) Referenced host not found: "reviews"``),
``json`` or ``yaml``; exit status 79 when a message reaches ``--failure-threshold`` (istioctl's code for
"analyzers found issues"), 1 when a file cannot be read or parsed, else 0.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys

from pilot.tools import common, render
from pilot.tools.analyze.messages import BY_CODE, LEVEL_ORDER, Message, sorted_unique

EXIT_FOUND_ISSUES = 79
LEVELS = ("Error", "Warning", "Info")
SUPPRESS_ANNOTATION = "galley.istio.io/analyze-suppress"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "analyze", help="analyze Istio config files offline with istioctl analyze's checks and message codes"
    )
    parser.add_argument("paths", metavar="FILE|DIR", nargs="*", help="YAML files, or directories of them")
    parser.add_argument("-o", "--output", choices=("log", "json", "yaml"), default="log", help="default %(default)s")
    parser.add_argument("-n", "--namespace", default="default", help="namespace of objects that name none")
    parser.add_argument(
        "--failure-threshold",
        type=_level,
        default="Error",
        help="the lowest level of a message that makes the exit status non-zero (Error, Warning, Info)",
    )
    parser.add_argument(
        "--output-threshold", type=_level, default="Info", help="the lowest level of a message that is printed"
    )
    parser.add_argument(
        "-S",
        "--suppress",
        action="append",
        default=[],
        metavar="CODE=KIND NS/NAME",
        help='leave out messages of a code for a resource (glob), e.g. "IST0101=VirtualService default/*"',
    )
    parser.add_argument(
        "--meshConfigFile", metavar="FILE", help="a MeshConfig YAML to analyze with (e.g. proxyMetadata)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="list the analyzers that ran and were skipped")
    parser.add_argument("-L", "--list-analyzers", action="store_true", help="list the analyzers and exit")
    parser.set_defaults(func=common.guarded("analyze", run))


def _level(text: str) -> str:
    for level in LEVELS:
        if level.lower() == text.lower():
            return level
    raise argparse.ArgumentTypeError(f"invalid level {text!r} (expected Error, Warning or Info)")


def run(args: argparse.Namespace) -> int:
    from pilot.tools.analyze.analyzers import ANALYZERS, analyze
    from pilot.tools.analyze.resources import load
    from pilot.tools.files import MissingPath, expand

    if args.list_analyzers:
        for analyzer in ANALYZERS:
            print(f"* {analyzer.name}:\n    {analyzer.description}")
        return 0
    if not args.paths:
        raise common.ToolError("give the files or directories to analyze")
    suppressions = [_suppression(text) for text in args.suppress]
    try:
        paths = list(expand(args.paths))
    except MissingPath as exc:
        raise common.ToolError(str(exc)) from None
    loaded = load(paths, args.namespace)
    if args.meshConfigFile:
        loaded.context.mesh = _mesh_config(args.meshConfigFile)
    for problem in loaded.file_errors:
        print(f"Error(s) adding files: {problem}", file=sys.stderr)
    result = analyze(loaded.context)
    if args.verbose:
        print(f"Analyzed resources in {_target(args.paths)}", file=sys.stderr)
        print("Executed analyzers:\n" + "".join(f"\t {name}\n" for name in result.executed), file=sys.stderr)
        print("Skipped analyzers (no objects of a kind they read):", file=sys.stderr)
        print("".join(f"\t {name}\n" for name in result.skipped), file=sys.stderr)
    found = loaded.messages + result.messages
    found = [m for m in found if not _suppressed(m, suppressions, loaded.context)]
    messages = sorted_unique(found)
    shown = [m for m in messages if LEVEL_ORDER[m.type.level] <= LEVEL_ORDER[args.output_threshold]]
    _print(shown, args, paths)
    if any(LEVEL_ORDER[m.type.level] <= LEVEL_ORDER[args.failure_threshold] for m in messages):
        if args.output == "log":
            print(
                f"Error: Analyzers found issues when analyzing {_target(args.paths)}.\n"
                "See https://istio.io/latest/docs/reference/config/analysis for more information about causes and "
                "resolutions.",
                file=sys.stderr,
            )
        return EXIT_FOUND_ISSUES
    return 1 if loaded.file_errors else 0


def _mesh_config(path: str) -> dict[str, object]:
    import yaml

    try:
        with open(path) as handle:
            value = yaml.safe_load(handle)
    except OSError as exc:
        raise common.ToolError(f"--meshConfigFile {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise common.ToolError(f"--meshConfigFile {path}: not YAML: {exc}") from None
    return value if isinstance(value, dict) else {}


def _target(paths: list[str]) -> str:
    return ", ".join(paths)


def _print(messages: list[Message], args: argparse.Namespace, paths: list[object]) -> None:
    if args.output != "log":
        print(common.dump_structured([m.to_dict() for m in messages], args.output))
        return
    if not messages:
        print(f"\u2714 No validation issues found when analyzing {_target(args.paths)}.", file=sys.stderr)
        return
    for message in messages:
        text = str(message)
        level = message.type.level
        print(render.coloured(level, level, sys.stdout) + text[len(level) :])


def _suppression(text: str) -> tuple[str, str]:
    code, sep, resource = text.partition("=")
    code = code.strip()
    if not sep or (code not in BY_CODE and code != "*"):
        raise common.ToolError(f'--suppress {text!r}: expected "CODE=KIND NS/NAME" with a known code')
    return code, resource.strip()


def _suppressed(message: Message, suppressions: list[tuple[str, str]], context: object) -> bool:
    origin = message.origin
    if origin is None:
        return False
    for code, pattern in suppressions:
        if code in ("*", message.type.code) and fnmatch.fnmatchcase(origin.friendly_name, pattern):
            return True
    from pilot.tools.analyze.resources import Context

    assert isinstance(context, Context)
    resource = context.find(origin.kind, origin.namespace, origin.name)
    codes = resource.annotations.get(SUPPRESS_ANNOTATION, "") if resource is not None else ""
    listed = {c.strip() for c in codes.split(",") if c.strip()}
    return "*" in listed or message.type.code in listed

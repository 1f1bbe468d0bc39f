"""Merge the Prometheus text of several workers into one exposition (pure; no I/O).

Samples are matched by metric name and label set. Most metrics are per-worker quantities (counters, the
connected-clients gauge ``pilot_xds``, histogram buckets) and are summed. Gauges that describe the config
(every worker serves the same config) are taken from the first worker that has them, and a few gauges are
maxima. ``# HELP`` / ``# TYPE`` lines are kept (from the first worker that emits them) and also steer the
merge: summary quantiles cannot be summed, so they are taken from one worker.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from pilot.metrics.definitions import DEFINITIONS
from pilot.metrics.definitions import Merge as MergeRule

# Per pilot.metrics.definitions: gauges that describe the config (sizes of the PushContext or of its ProxyStatus
# maps, build info) are the same on every worker; a few are maxima.
CONFIG_GAUGES = frozenset(d.name for d in DEFINITIONS if d.merge is MergeRule.FIRST)
MAX_GAUGES = frozenset(d.name for d in DEFINITIONS if d.merge is MergeRule.MAX) | {"pilot_xds_recv_max"}

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_FAMILY_SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created")


class Merge(enum.Enum):
    SUM = "sum"
    FIRST = "first"
    MAX = "max"


@dataclass(frozen=True)
class Sample:
    name: str
    labels: str  # the label block as emitted, braces included ("" when none)
    label_key: tuple[tuple[str, str], ...]  # sorted (name, raw value) pairs: the identity of the series
    value: float


@dataclass
class Exposition:
    samples: list[Sample] = field(default_factory=list)
    help: dict[str, str] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)


def parse(text: str) -> Exposition:
    """Parse Prometheus text format; lines that do not parse are skipped."""
    out = Exposition()
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line[1:].strip().split(None, 2)
            if len(parts) >= 2 and parts[0] in ("HELP", "TYPE"):
                target = out.help if parts[0] == "HELP" else out.types
                target.setdefault(parts[1], parts[2] if len(parts) > 2 else "")
            continue
        sample = _parse_sample(line)
        if sample is not None:
            out.samples.append(sample)
    return out


def _parse_sample(line: str) -> Sample | None:
    match = _NAME.match(line)
    if match is None:
        return None
    name = match.group()
    pos = match.end()
    labels = ""
    pairs: list[tuple[str, str]] = []
    if pos < len(line) and line[pos] == "{":
        end = _parse_labels(line, pos, pairs)
        if end is None:
            return None
        labels = line[pos:end]
        pos = end
    fields = line[pos:].split()
    if not fields:
        return None
    try:
        value = float(fields[0])  # accepts +Inf, -Inf, NaN; a trailing timestamp is dropped
    except ValueError:
        return None
    return Sample(name, labels, tuple(sorted(pairs)), value)


def _parse_labels(line: str, start: int, pairs: list[tuple[str, str]]) -> int | None:
    """Parse ``{a="x",b="y"}`` from ``start`` (at the brace); return the index after ``}`` or None."""
    pos = start + 1
    while True:
        while pos < len(line) and line[pos] in " ,":
            pos += 1
        if pos >= len(line):
            return None
        if line[pos] == "}":
            return pos + 1
        match = _NAME.match(line, pos)
        if match is None:
            return None
        pos = match.end()
        while pos < len(line) and line[pos] == " ":
            pos += 1
        if line[pos : pos + 2] != '="':
            return None
        pos += 2
        value_start = pos
        while pos < len(line) and line[pos] != '"':
            pos += 2 if line[pos] == "\\" else 1
        if pos >= len(line):
            return None
        pairs.append((match.group(), line[value_start:pos]))
        pos += 1


def family_of(name: str, known: Collection[str]) -> str:
    """The metric family a sample belongs to: itself, or its name without a histogram/summary suffix."""
    if name in known:
        return name
    for suffix in _FAMILY_SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in known:
            return name[: -len(suffix)]
    return name


def merge_rule(sample: Sample, family: str, types: dict[str, str]) -> Merge:
    if family in CONFIG_GAUGES or sample.name in CONFIG_GAUGES:
        return Merge.FIRST
    if family in MAX_GAUGES or sample.name in MAX_GAUGES:
        return Merge.MAX
    if types.get(family) == "summary" and any(key == "quantile" for key, _ in sample.label_key):
        return Merge.FIRST
    return Merge.SUM


def merge(texts: Iterable[str], extra: Iterable[str] = ()) -> str:
    """One exposition for all workers' ``texts`` (in worker order), then the ``extra`` lines as they are."""
    expositions = [parse(text) for text in texts]
    helps: dict[str, str] = {}
    types: dict[str, str] = {}
    for exposition in expositions:
        for name, doc in exposition.help.items():
            helps.setdefault(name, doc)
        for name, kind in exposition.types.items():
            types.setdefault(name, kind)
    known = set(helps) | set(types)

    order: list[tuple[str, tuple[tuple[str, str], ...]]] = []
    merged: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[Sample, float]] = {}
    for exposition in expositions:
        for sample in exposition.samples:
            key = (sample.name, sample.label_key)
            if key not in merged:
                order.append(key)
                merged[key] = (sample, sample.value)
                continue
            first, value = merged[key]
            rule = merge_rule(sample, family_of(sample.name, known), types)
            if rule is Merge.SUM:
                value += sample.value
            elif rule is Merge.MAX:
                value = max(value, sample.value)
            merged[key] = (first, value)

    lines: list[str] = []
    described: set[str] = set()
    for key in order:
        sample, value = merged[key]
        family = family_of(sample.name, known)
        if family not in described:
            described.add(family)
            if family in helps:
                lines.append(f"# HELP {family} {helps[family]}")
            if family in types:
                lines.append(f"# TYPE {family} {types[family]}")
        lines.append(f"{sample.name}{sample.labels} {format_value(value)}")
    lines.extend(extra)
    return "\n".join(lines) + "\n" if lines else ""


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)

"""discoverySelectors as in Istio's meshConfig: Kubernetes label selectors on namespaces.

A namespace is selected when any selector matches its labels; no selectors (or none configured) selects
every namespace. Each selector has ``matchLabels`` and/or ``matchExpressions`` (operators In, NotIn,
Exists, DoesNotExist), all of which must hold; an empty selector ``{}`` matches every namespace.

Read from ``--discovery-selectors FILE``: either a YAML list of selectors, or a mesh config mapping with a
``discoverySelectors:`` key (so the mesh config file of an Istio install can be passed as is).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


class SelectorError(ValueError):
    pass


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        return self.key not in labels or labels[self.key] not in self.values  # NotIn


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


@dataclass(frozen=True)
class DiscoverySelectors:
    selectors: tuple[LabelSelector, ...]

    def selects(self, labels: Mapping[str, str]) -> bool:
        return not self.selectors or any(s.matches(labels) for s in self.selectors)


def parse_selectors(doc: Any, where: str = "discoverySelectors") -> DiscoverySelectors:
    """Selectors from a parsed list (or a mesh config mapping holding ``discoverySelectors``)."""
    if isinstance(doc, dict):
        if "discoverySelectors" not in doc:
            raise SelectorError(f"{where}: expected a list of label selectors or a mapping with discoverySelectors")
        doc = doc["discoverySelectors"]
        where = f"{where}: discoverySelectors"
    if doc is None:
        return DiscoverySelectors(())
    if not isinstance(doc, list):
        raise SelectorError(f"{where}: expected a list of label selectors, got {type(doc).__name__}")
    return DiscoverySelectors(tuple(_selector(item, f"{where}[{i}]") for i, item in enumerate(doc)))


def load_selectors(path: Path) -> DiscoverySelectors:
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SelectorError(f"{path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise SelectorError(f"{path}: not YAML: {exc}") from exc
    return parse_selectors(doc, str(path))


def _selector(item: Any, where: str) -> LabelSelector:
    if not isinstance(item, dict):
        raise SelectorError(f"{where}: expected a mapping, got {type(item).__name__}")
    unknown = set(item) - {"matchLabels", "matchExpressions"}
    if unknown:
        raise SelectorError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    requirements: list[Requirement] = []
    labels = item.get("matchLabels") or {}
    if not isinstance(labels, dict):
        raise SelectorError(f"{where}.matchLabels: expected a mapping")
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise SelectorError(f"{where}.matchLabels.{key}: keys and values must be strings")
        requirements.append(Requirement(key, "In", frozenset({value})))
    expressions = item.get("matchExpressions") or []
    if not isinstance(expressions, list):
        raise SelectorError(f"{where}.matchExpressions: expected a list")
    for i, expr in enumerate(expressions):
        path = f"{where}.matchExpressions[{i}]"
        if not isinstance(expr, dict):
            raise SelectorError(f"{path}: expected a mapping")
        key, operator, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if not isinstance(key, str) or not key:
            raise SelectorError(f"{path}.key: required string")
        if operator not in _OPERATORS:
            raise SelectorError(f"{path}.operator: must be one of {', '.join(_OPERATORS)}, got {operator!r}")
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise SelectorError(f"{path}.values: expected a list of strings")
        if operator in ("In", "NotIn") and not values:
            raise SelectorError(f"{path}.values: required for {operator}")
        if operator in ("Exists", "DoesNotExist") and values:
            raise SelectorError(f"{path}.values: must be empty for {operator}")
        requirements.append(Requirement(key, operator, frozenset(values)))
    return LabelSelector(tuple(requirements))

"""Bounded YAML loading: each document is composed by libyaml, measured, and only then constructed.

The measure runs on the composed node graph, before any Python object exists, so a document that would
cost too much is refused while it is still cheap: a node reached through an alias is the same node object
as its anchor, which lets the walk count what aliases would expand to without expanding them. A document is
refused (and the rest of the file still loaded) when

- its text is larger than ``bounds.MAX_DOCUMENT_BYTES`` (each item of a ``kind: List`` document instead),
- it nests deeper than ``bounds.MAX_DEPTH`` once aliases are followed,
- aliases would add more than ``bounds.MAX_ALIAS_NODES`` nodes, or an alias refers to its own anchor,
- constructing it fails (an invalid timestamp, an ``!!int`` that is not one, …).

A syntax error still raises ``yaml.YAMLError`` (the stream cannot be trusted past it); more than
``bounds.MAX_OBJECTS_PER_FILE`` documents raise ``FileLimitError``.

libyaml itself stops at 1,000 nesting levels while parsing; without anchors ('&' absent from the text) the
graph is a tree and only its depth is measured (~0.2 µs per node, a few percent of loading).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pilot.config import bounds

# libyaml's parser and composer (~10x faster than the pure-Python ones); construction is PyYAML's safe subset.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR_TAG = "tag:yaml.org,2002:str"
# What constructing a document can raise besides YAMLError, for input such as `2001-02-30` or `!!int 0x`.
_CONSTRUCT_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError, RecursionError)


class FileLimitError(ValueError):
    """The file as a whole exceeds a bound; nothing of it should be applied."""


@dataclass(frozen=True)
class Document:
    index: int  # 0-based position in the file
    value: Any = None  # the constructed document (None for an empty one, or when refused)
    problem: str | None = None  # why it was refused
    # apiVersion, kind and metadata name/namespace read from the nodes, to name a refused document.
    head: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Limits:
    document_bytes: int = bounds.MAX_DOCUMENT_BYTES
    depth: int = bounds.MAX_DEPTH
    alias_nodes: int = bounds.MAX_ALIAS_NODES
    documents: int = bounds.MAX_OBJECTS_PER_FILE


DEFAULT_LIMITS = Limits()


def load_documents(text: str, limits: Limits = DEFAULT_LIMITS) -> Iterator[Document]:
    """The documents of ``text`` in order; refused ones carry ``problem`` instead of ``value``."""
    anchors = "&" in text  # no anchor, no alias: every document is a tree
    loader = _LOADER(text)
    try:
        index = 0
        while loader.check_node():
            if index >= limits.documents:
                raise FileLimitError(f"more than {limits.documents} documents in one file")
            node = loader.get_node()
            problem = measure(node, limits, anchors=anchors)
            if problem is not None:
                yield Document(index, problem=problem, head=head_of(node))
            else:
                try:
                    yield Document(index, value=loader.construct_document(node))
                except (*_CONSTRUCT_ERRORS, yaml.constructor.ConstructorError) as exc:
                    _reset_constructor(loader)
                    yield Document(index, problem=_construct_message(exc), head=head_of(node))
            index += 1
    finally:
        loader.dispose()


def measure(node: Node, limits: Limits = DEFAULT_LIMITS, *, anchors: bool = True) -> str | None:
    """Why the document rooted at ``node`` must be refused, or None."""
    items = _list_items(node)
    sized = items if items is not None else [node]
    for i, item in enumerate(sized):
        size = item.end_mark.index - item.start_mark.index
        if size > limits.document_bytes:
            where = f"items[{i}]: " if items is not None else ""
            return (
                f"{where}document is {size} characters, more than the limit of {limits.document_bytes} "
                f"({bounds.size_text(limits.document_bytes)}, etcd's object size limit)"
            )
    if not isinstance(node.value, list):
        return None
    return _graph_problem(node, limits) if anchors else _tree_problem(node, limits.depth)


def head_of(node: Node) -> dict[str, Any]:
    """apiVersion, kind and metadata.name/namespace of a mapping document, read from its scalar nodes."""
    head: dict[str, Any] = {}
    for key, value in _pairs(node):
        if key in ("apiVersion", "kind"):
            text = _scalar(value)
            if text is not None:
                head[key] = text
        elif key == "metadata":
            metadata = {k: _scalar(v) for k, v in _pairs(value) if k in ("name", "namespace")}
            head["metadata"] = {k: v for k, v in metadata.items() if v is not None}
    return head


def _reset_constructor(loader: Any) -> None:
    """Drop what a failed construct_document left behind, so the next document starts clean."""
    loader.constructed_objects = {}
    loader.recursive_objects = {}
    loader.state_generators = []
    loader.deep_construct = False


def _construct_message(exc: Exception) -> str:
    if isinstance(exc, yaml.YAMLError):
        text = f"yaml: {exc}"
    else:
        text = f"yaml: cannot construct a value: {type(exc).__name__}: {exc}"
    return " ".join(text.split())[:500]


# ----- measuring -----


def _tree_problem(root: Node, max_depth: int) -> str | None:
    stack: list[tuple[Node, int]] = [(root, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        node, depth = pop()
        if depth > max_depth:
            return _depth_message(max_depth)
        if node.__class__ is MappingNode:
            for key, value in node.value:
                if value.value.__class__ is list:
                    push((value, depth + 1))
                if key.value.__class__ is list:
                    push((key, depth + 1))
        else:
            for child in node.value:
                if child.value.__class__ is list:
                    push((child, depth + 1))
    return None


def _graph_problem(root: Node, limits: Limits) -> str | None:
    """Depth and alias expansion of a node graph (a DAG, or cyclic through a recursive alias), in time
    linear in its distinct nodes: each node's expanded size and height are computed once and reused."""
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    expanding: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            children = _children(node)
            size[key] = 1 + sum(size[id(child)] for child in children)
            height[key] = 1 + max((height[id(child)] for child in children), default=0)
            expanding.discard(key)
            if height[key] > limits.depth:
                return _depth_message(limits.depth) + " (following aliases)"
            continue
        if key in size:
            continue
        if key in expanding:
            return "yaml: an alias refers to its own anchor (a recursive structure)"
        if node.value.__class__ is not list:
            size[key] = 1
            height[key] = 0
            continue
        expanding.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in size)
    through_aliases = size[id(root)] - len(size)
    if through_aliases > limits.alias_nodes:
        return (
            f"yaml: aliases expand to {through_aliases} more nodes, more than the limit of {limits.alias_nodes} "
            "(an alias bomb?)"
        )
    return None


def _depth_message(max_depth: int) -> str:
    return f"document nests more than {max_depth} levels deep"


def _children(node: Node) -> list[Node]:
    if node.__class__ is MappingNode or isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return list(node.value)


def _pairs(node: Node) -> Iterator[tuple[str, Node]]:
    if isinstance(node, MappingNode):
        for key, value in node.value:
            text = _scalar(key)
            if text is not None:
                yield text, value


def _scalar(node: Node) -> str | None:
    return node.value if isinstance(node, ScalarNode) and node.tag == _STR_TAG else None


def _list_items(node: Node) -> list[Node] | None:
    """The item nodes of a ``kind: List`` document with a sequence of items, else None."""
    pairs = dict(_pairs(node))
    kind, items = pairs.get("kind"), pairs.get("items")
    if kind is None or _scalar(kind) != "List" or not isinstance(items, SequenceNode):
        return None
    return list(items.value)

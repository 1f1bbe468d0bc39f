"""Bounded fuzzing of the loader and validator (a few seconds); `python benchmarks/fuzz_loader.py` runs longer.

Derandomized, so CI runs the same cases every time; the long run draws new ones.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from pilot.config import yamlsafe
from tests.hardening.fuzzing import (
    alias_graphs,
    check_object,
    check_text,
    mutated_objects,
    mutated_texts,
    naive_alias_nodes,
)

CI = settings(derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(autouse=True)
def quiet_loader() -> Iterator[None]:
    # Fuzzed input produces thousands of warnings; the assertions are on the results.
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


@settings(CI, max_examples=300)
@given(mutated_objects())
def test_mutated_objects_never_break_the_loader(doc: dict[str, Any]) -> None:
    check_object(doc)


@settings(CI, max_examples=300)
@given(mutated_texts())
def test_mutated_yaml_never_breaks_the_loader(text: str) -> None:
    check_text(text)


@settings(CI, max_examples=150)
@given(alias_graphs())
def test_alias_count_matches_a_naive_expansion(text: str) -> None:
    through_aliases = naive_alias_nodes(text)
    node = yamlsafe._LOADER(text).get_single_node()
    for limit in (0, through_aliases - 1, through_aliases, through_aliases + 1):
        if limit < 0:
            continue
        problem = yamlsafe.measure(node, yamlsafe.Limits(alias_nodes=limit))
        refused = problem is not None and "aliases expand" in problem
        assert refused == (through_aliases > limit), (limit, through_aliases, problem)

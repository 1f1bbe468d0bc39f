"""Long fuzz run of the loader and validator (the CI suite, tests/hardening/test_fuzz_loader.py, runs a few
hundred derandomized cases; this draws new ones each run).

    python benchmarks/fuzz_loader.py [--examples 20000] [--seed N]

Reports, per generator, the cases run, the time taken and the first failure, if any (exit status 1).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.hardening.fuzzing

from hypothesis import HealthCheck, given, seed, settings
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.strategies import SearchStrategy

from pilot.config import yamlsafe
from tests.hardening.fuzzing import (
    alias_graphs,
    check_object,
    check_text,
    mutated_objects,
    mutated_texts,
    naive_alias_nodes,
)


def check_aliases(text: str) -> None:
    through_aliases = naive_alias_nodes(text)
    node = yamlsafe._LOADER(text).get_single_node()
    for limit in {max(0, through_aliases - 1), through_aliases}:
        problem = yamlsafe.measure(node, yamlsafe.Limits(alias_nodes=limit))
        assert (problem is not None and "aliases expand" in problem) == (through_aliases > limit), (limit, problem)


def run(name: str, strategy: SearchStrategy[Any], check: Callable[[Any], None], examples: int, rng: int) -> bool:
    cases = 0

    @seed(rng)
    @settings(max_examples=examples, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def fuzz(value: Any) -> None:
        nonlocal cases
        cases += 1
        check(value)

    started = time.perf_counter()
    try:
        fuzz()
        failure = ""
    except Exception:
        failure = traceback.format_exc(limit=-3)
    elapsed = time.perf_counter() - started
    print(f"{name:18s} {cases:7d} cases  {elapsed:6.1f} s  {'FAILED' if failure else 'ok'}")
    if failure:
        print(failure)
    return not failure


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=20_000, help="cases per generator")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "pilot-hypothesis")  # its caches, not in the tree
    print(f"seed {args.seed}, up to {args.examples} cases per generator")
    ok = run("mutated objects", mutated_objects(), check_object, args.examples, args.seed)
    ok &= run("mutated YAML", mutated_texts(), check_text, args.examples, args.seed)
    ok &= run("alias graphs", alias_graphs(), check_aliases, args.examples, args.seed)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

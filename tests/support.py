"""Small helpers shared by test modules."""

from __future__ import annotations

from pilot.config.loader import load_text
from pilot.push.context import PushContext
from pilot.push.offline import push_of_configs


def push_of(text: str, domain_suffix: str = "cluster.local") -> PushContext:
    """A PushContext from YAML text, failing the test on any load error."""
    result = load_text("test.yaml", text)
    assert not result.errors, [str(e) for e in result.errors]
    return push_of_configs(result.configs, domain_suffix)

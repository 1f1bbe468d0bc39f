"""The end-to-end fixtures (a real pilot process, a real Envoy) for the tests of pilot's operator tools."""

from tests.e2e.conftest import (  # noqa: F401 (fixtures and the report hook, shared with tests/e2e)
    e2e_failure_diagnostics,
    e2e_processes,
    e2e_workdir,
    envoy_binary,
    envoy_factory,
    pilot_factory,
    pytest_runtest_makereport,
)

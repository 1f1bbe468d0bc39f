"""What a files-only pilot loads at start-up: not the Kubernetes client library, whose generated API models
cost about 40 MB of memory and 0.2 s (it is imported when a Kubernetes source starts)."""

from __future__ import annotations

import subprocess
import sys

from tests.e2e.harness import REPO_ROOT, _python_env


def test_serving_files_does_not_load_the_kubernetes_client() -> None:
    probe = "import sys, pilot.server, pilot.cli; print(sorted(m for m in sys.modules if m.startswith('kubernetes')))"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, env=_python_env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"

"""The committed betterproto2 code in pilot/api must be what proto/ generates (tox -e gen regenerates it)."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _differences(a: Path, b: Path) -> list[str]:
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])
    out = [f"only in committed: {n}" for n in cmp.left_only] + [f"only in generated: {n}" for n in cmp.right_only]
    out += [f"differs: {n}" for n in cmp.diff_files]
    for name, sub in cmp.subdirs.items():
        out += [f"{name}/{d}" for d in _differences(Path(sub.left), Path(sub.right))]
    return out


def test_committed_api_matches_proto(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools.protoc")
    out = tmp_path / "api"
    env = dict(os.environ, PYTHON=sys.executable)
    result = subprocess.run(
        ["bash", str(ROOT / "tools" / "gen_api.sh"), str(out)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert _differences(ROOT / "pilot" / "api", out) == [], "pilot/api is stale: run `tox -e gen`"

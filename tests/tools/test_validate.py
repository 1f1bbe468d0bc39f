"""pilot validate: directories are walked, and every problem of every file is reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from pilot.cli import main

TWO_PROBLEMS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: twice, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews}, weight: -1}
    - {destination: {host: ratings}, weight: -2}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dup, namespace: shop}
spec:
  host: reviews
  subsets: [{name: v1}, {name: v1}]
"""
VALID = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  selector: {a: b}\n" + (
    "  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]\n"
)


def test_a_directory_is_walked_and_every_error_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "bad.yaml").write_text(TWO_PROBLEMS)
    (tmp_path / "good.yml").write_text(VALID)
    (tmp_path / ".hidden.yaml").write_text("not: [valid")  # skipped, as the config directory source skips it
    (tmp_path / "notes.txt").write_text("ignored")
    assert main(["validate", str(tmp_path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert [line.split(": ", 1)[1] for line in err[:-1]] == [
        "spec.http[0].route[0].weight: weight -1 < 0",
        "spec.http[0].route[1].weight: weight -2 < 0",
        "spec.subsets[1].name: duplicate subset names: v1",
    ]
    assert err[-1] == "3 error(s) in 2 file(s)"


def test_a_valid_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "good.yaml").write_text(VALID)
    assert main(["validate", str(tmp_path)]) == 0
    assert capsys.readouterr().out == "1 object(s) in 1 file(s) valid\n"
    assert main(["validate", str(tmp_path / "missing")]) == 1
    assert "no such file or directory" in capsys.readouterr().err

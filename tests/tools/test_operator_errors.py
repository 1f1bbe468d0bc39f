"""Operator mistakes end `pilot serve` with one clear line and a non-zero status, never a traceback.

Every case runs `pilot` as a real process, as an operator would; the processes of all cases run at once (each
spends most of its time importing), so the module takes about as long as its slowest case."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pilot import settings
from tests.e2e.harness import REPO_ROOT, free_port, http_get_sync, wait_until_sync

pytestmark = pytest.mark.timeout(90)

EXAMPLE = REPO_ROOT / "examples" / "bookinfo"
DEADLINE = 60.0  # for each process: a loaded CI machine imports slowly


@dataclass(frozen=True)
class Outcome:
    status: int
    stdout: str
    stderr: str


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(extra or {})}


def serve(grpc: str = "127.0.0.1:0", monitoring: str = "127.0.0.1:0") -> list[str]:
    return ["serve", "--config-dir", str(EXAMPLE), "--grpc-addr", grpc, "--monitoring-addr", monitoring]


BAD_ADDRESSES = {
    "127.0.0.1:http": "port 'http' is not a number",
    "127.0.0.1:99999": "out of range",
    "no-such-host.invalid:15010": "cannot resolve host",
}
BAD_SETTINGS = {
    "PILOT_DEBOUNCE_AFTER": "100 ms",
    "PILOT_XDS_SEND_TIMEOUT": "soon",
    "PILOT_ENABLE_EDS_DEBOUNCE": "maybe",
    "PILOT_PUSH_THROTTLE": "many",
    "PILOT_XDS_CACHE_SIZE": "1e9x",
    "PILOT_LOG_OUTPUT_LEVEL": "ads:loud",
}


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.fixture(scope="module")
def outcomes(busy_port: int) -> dict[str, Outcome]:
    """Every failing invocation, run concurrently: case name -> how it ended."""
    cases: dict[str, tuple[list[str], dict[str, str]]] = {
        "grpc in use": (serve(grpc=f"127.0.0.1:{busy_port}"), {}),
        "monitoring in use": (serve(monitoring=f"127.0.0.1:{busy_port}"), {}),
        "help": (["serve", "--help"], {}),
        "version": (["--version"], {}),
    }
    for address in BAD_ADDRESSES:
        cases[f"address {address}"] = (serve(grpc=address), {})
    for name, value in BAD_SETTINGS.items():
        cases[f"setting {name}"] = (serve(), {name: value})
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-m", "pilot", *args],
            env=_env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (args, env) in cases.items()
    }
    out = {}
    try:
        for name, process in processes.items():
            stdout, stderr = process.communicate(timeout=DEADLINE)
            out[name] = Outcome(process.returncode, stdout, stderr)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    return out


def one_line(outcome: Outcome) -> str:
    """The one line that reports the mistake: the last one, the only one from the command itself; before it at
    most pilot's ordinary INFO lines (a port is found busy after the config has loaded)."""
    assert "Traceback" not in outcome.stderr, outcome.stderr
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("pilot"), outcome.stderr
    assert all(" INFO " in line for line in lines[:-1]), outcome.stderr
    return lines[-1]


@pytest.mark.parametrize(("case", "flag"), [("grpc in use", "--grpc-addr"), ("monitoring in use", "--monitoring-addr")])
def test_a_port_in_use_is_one_line_naming_the_flag(
    outcomes: dict[str, Outcome], busy_port: int, case: str, flag: str
) -> None:
    outcome = outcomes[case]
    assert outcome.status == 1
    line = one_line(outcome)
    assert line.startswith(f"pilot serve: {flag} 127.0.0.1:{busy_port}: ") and "in use" in line, line


@pytest.mark.parametrize(("address", "fragment"), list(BAD_ADDRESSES.items()))
def test_a_bad_address_is_one_line(outcomes: dict[str, Outcome], address: str, fragment: str) -> None:
    outcome = outcomes[f"address {address}"]
    assert outcome.status == 2
    line = one_line(outcome)
    assert line.startswith(f"pilot serve: --grpc-addr {address!r}: ") and fragment in line, line


@pytest.mark.parametrize(("name", "value"), list(BAD_SETTINGS.items()))
def test_a_bad_setting_is_one_line_naming_it(outcomes: dict[str, Outcome], name: str, value: str) -> None:
    outcome = outcomes[f"setting {name}"]
    assert outcome.status == 2
    line = one_line(outcome)
    assert name in line and value in line, line


def test_serve_help_lists_every_environment_variable_with_its_default(outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes["help"]
    assert outcome.status == 0
    for setting in settings.SETTINGS:
        line = next(line for line in outcome.stdout.splitlines() if line.split()[:1] == [setting.name])
        assert (f"[{setting.default}]" if setting.default else "[unset]") in line


def test_version_flag(outcomes: dict[str, Outcome]) -> None:
    assert outcomes["version"].status == 0 and outcomes["version"].stdout.startswith("pilot ")


def test_go_durations_are_accepted_everywhere(tmp_path: Path) -> None:
    grpc, monitoring = free_port(), free_port()
    env = {
        "PILOT_DEBOUNCE_AFTER": "150ms",
        "PILOT_DEBOUNCE_MAX": "1m30s",
        "PILOT_XDS_SEND_TIMEOUT": "1m",
        "PILOT_LOG_AS_JSON": "true",
    }
    log = tmp_path / "pilot.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "pilot", *serve(f"127.0.0.1:{grpc}", f"127.0.0.1:{monitoring}")],
            env=_env(env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_sync(
            lambda: process.poll() is None and http_get_sync(f"http://127.0.0.1:{monitoring}/ready")[0] == 200,
            DEADLINE,
            message="pilot ready",
        )
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
    first = log.read_text().splitlines()[0]
    assert first.startswith("{") and '"scope":' in first, first  # --log_as_json, given through the environment

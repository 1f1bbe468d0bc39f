"""``pilot serve`` / ``pilot bootstrap`` security flags: bad combinations and unusable files are one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from pilot.cli import build_parser
from tests.security.conftest import Pki


def run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--grpc-addr", ""], "no xDS port"),
        (["--tls-cert", "c.pem"], "--tls-cert and --tls-key"),
        (["--ca-cert", "ca.pem"], "--ca-cert needs --tls-cert"),
        (["--secure-monitoring-addr", "127.0.0.1:0"], "--secure-monitoring-addr needs"),
        (["--jwt-jwks", "jwks.json"], "--jwt-jwks and --jwt-issuer"),
        (["--jwt-audience", "x"], "--jwt-audience needs --jwt-jwks"),
        (
            ["--tls-cert", "c", "--tls-key", "k", "--secure-monitoring-addr", "127.0.0.1:0", "--workers", "2"],
            "--workers > 1 is not supported with --secure-monitoring-addr",
        ),
        (["--tls-cert", "c", "--tls-key", "k", "--grpc-addr", "", "--workers", "2"], "needs the plaintext xDS port"),
    ],
)
def test_serve_flag_combinations(
    flags: list[str], message: str, config_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["serve", "--config-dir", str(config_dir), *flags]) == 2
    assert message in capsys.readouterr().err


def test_serve_bad_environment_value(
    config_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PILOT_ENABLE_XDS_IDENTITY_CHECK", "sometimes")
    assert run(["serve", "--config-dir", str(config_dir)]) == 2
    assert "PILOT_ENABLE_XDS_IDENTITY_CHECK" in capsys.readouterr().err


def test_serve_unusable_files_are_one_line(
    config_dir: Path, pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.pem"
    broken.write_text("not a certificate")
    common = [
        "serve",
        "--config-dir",
        str(config_dir),
        "--grpc-addr",
        "127.0.0.1:0",
        "--monitoring-addr",
        "127.0.0.1:0",
    ]
    key = str(pki.server_files[1])
    assert run([*common, "--tls-cert", str(broken), "--tls-key", key, "--secure-grpc-addr", "127.0.0.1:0"]) == 1
    err = capsys.readouterr().err
    assert "broken.pem" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert run([*common, "--jwt-jwks", str(broken), "--jwt-issuer", "x"]) == 1
    err = capsys.readouterr().err
    assert "--jwt-jwks" in err and "broken.pem" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "flags",
    [["--xds-tls"], ["--xds-tls", "--cert", "c", "--key", "k"], ["--cert", "c", "--key", "k", "--ca", "a"]],
)
def test_bootstrap_tls_flags_go_together(flags: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bootstrap", "--node-id", "sidecar~10.0.0.1~a.default~default.svc.cluster.local", "--xds-addr", "x:1"]
    assert run([*argv, *flags]) == 2
    assert "--xds-tls --cert FILE --key FILE --ca FILE" in capsys.readouterr().err

"""istiod-style logging: scopes, per-scope levels, text and JSON lines, no HTTP/2 frame noise."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from pilot import log
from pilot.cli import main


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure() sets levels on module loggers: put them back for the other tests of the session."""
    names = ["", *(p for _, prefixes in log.SCOPES.values() for p in prefixes), *log.QUIET_LOGGERS]
    saved = {name: logging.getLogger(name).level for name in names}
    handlers = list(logging.getLogger().handlers)
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)


def test_levels_follow_istiod_syntax() -> None:
    levels = log.parse_levels("ads:debug,model:error")
    assert levels["ads"] == logging.DEBUG and levels["model"] == logging.ERROR
    assert levels["default"] == logging.INFO and levels["grpc"] == logging.WARNING  # the defaults
    assert log.parse_levels("debug")["default"] == logging.DEBUG  # a bare level is the default scope
    assert set(log.parse_levels("all:none").values()) == {log.LEVELS["none"]}
    assert log.parse_levels("delta:warn")["delta"] == logging.WARNING


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [("nosuch:debug", "unknown log scope 'nosuch'"), ("ads:loud", "invalid log level 'loud'")],
)
def test_bad_levels_are_one_line_naming_the_part(spec: str, fragment: str) -> None:
    with pytest.raises(log.LogConfigError, match=fragment):
        log.parse_levels(spec)


def test_loggers_belong_to_the_longest_matching_scope() -> None:
    assert log.scope_of("pilot.xds.server") == "ads"
    assert log.scope_of("pilot.xds.delta") == "delta"
    assert log.scope_of("pilot.xds.grpcgen_cds") == "grpcgen"
    assert log.scope_of("pilot.push.context") == "model"
    assert log.scope_of("pilot.push.debounce") == "push"
    assert log.scope_of("pilot.sources.kube.leader") == "leader"
    assert log.scope_of("pilot.server") == "default"
    assert log.scope_of("somelibrary") == "default"


def test_scope_levels_apply_and_frames_stay_quiet() -> None:
    out = io.StringIO()
    log.configure(log.LogOptions(log.parse_levels("all:debug,model:error")), out)
    logging.getLogger("pilot.xds.server").debug("push %s", "cds")
    logging.getLogger("pilot.push.context").warning("hidden: model is at error")
    logging.getLogger("hpack.hpack").debug("Decoding frame header")  # per-frame chatter
    logging.getLogger("h2.connection").debug("Received frame")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].endswith(" DEBUG ads: push cds")
    assert lines[0][:4].isdigit() and lines[0].split(" ")[0].endswith("Z")


def test_json_lines_carry_istiod_keys() -> None:
    out = io.StringIO()
    log.configure(log.LogOptions(log.parse_levels("default:info"), as_json=True), out)
    logging.getLogger("pilot.xds.server").warning("ADS: %s", "rejected")
    entry = json.loads(out.getvalue())
    assert entry["level"] == "warn" and entry["scope"] == "ads" and entry["msg"] == "ADS: rejected"
    assert entry["time"].endswith("Z") and entry["logger"] == "pilot.xds.server"


def test_flags_apply_over_the_environment() -> None:
    env = {log.ENV_LEVELS: "ads:error,model:debug", log.ENV_AS_JSON: "true"}
    options = log.options_from("info", "ads:debug", None, env)
    assert options.levels["ads"] == logging.DEBUG and options.levels["model"] == logging.DEBUG
    assert options.as_json
    with pytest.raises(log.LogConfigError, match=log.ENV_AS_JSON):
        log.options_from(None, None, None, {log.ENV_AS_JSON: "maybe"})


def test_a_bad_flag_is_one_line_and_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--log_output_level", "ads:shout", "version", "--no-remote"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid log level 'shout'" in err and "--log_output_level" in err

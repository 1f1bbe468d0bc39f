"""PILOT_* values: Go durations everywhere, one clear error per bad value, addresses checked up front."""

from __future__ import annotations

import pytest

from pilot import settings


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10.0), ("1m30s", 90.0), ("250ms", 0.25), ("1.5h", 5400.0), ("2h45m", 9900.0), ("0", 0.0),
     ("10", 10.0), ("0.5", 0.5), ("300us", 0.0003), ("+5s", 5.0)],
)  # fmt: skip
def test_go_durations(text: str, seconds: float) -> None:
    assert settings.parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["10x", "s", "1m30", "-1s", "1 s", "", "nan", "10s5"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        settings.parse_go_duration(text)


def test_every_setting_reads_its_default() -> None:
    values = settings.read_all({})
    assert values["PILOT_DEBOUNCE_AFTER"] == pytest.approx(0.1)
    assert values["PILOT_DEBOUNCE_MAX"] == 10.0
    assert values["PILOT_XDS_SEND_TIMEOUT"] == 10.0
    assert values["PILOT_ENABLE_EDS_DEBOUNCE"] is True
    assert values["PILOT_XDS_CACHE_SIZE"] == 60000


def test_a_bad_value_names_the_variable_and_the_value() -> None:
    with pytest.raises(settings.SettingError, match=r"PILOT_XDS_SEND_TIMEOUT='soon': invalid duration"):
        settings.read_all({"PILOT_XDS_SEND_TIMEOUT": "soon"})
    with pytest.raises(settings.SettingError, match=r"PILOT_XDS_SEND_TIMEOUT='0s': .* greater than zero"):
        settings.read_all({"PILOT_XDS_SEND_TIMEOUT": "0s"})
    with pytest.raises(settings.SettingError, match=r"PILOT_ENABLE_EDS_DEBOUNCE='yes please'"):
        settings.read_all({"PILOT_ENABLE_EDS_DEBOUNCE": "yes please"})
    with pytest.raises(settings.SettingError, match=r"PILOT_PUSH_THROTTLE='-3'"):
        settings.read_all({"PILOT_PUSH_THROTTLE": "-3"})


def test_help_lists_every_setting_with_its_default() -> None:
    text = settings.help_text()
    for setting in settings.SETTINGS:
        line = next(line for line in text.splitlines() if line.split()[:1] == [setting.name])
        assert f"[{setting.default}]" in line if setting.default else "[unset]" in line


@pytest.mark.parametrize(
    ("value", "expected"),
    [("127.0.0.1:15010", ("127.0.0.1", 15010)), (":9", ("0.0.0.0", 9)), ("[::1]:80", ("::1", 80)),
     ("localhost", ("localhost", 15010))],
)  # fmt: skip
def test_addresses(value: str, expected: tuple[str, int]) -> None:
    assert settings.split_address("--grpc-addr", value, 15010) == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("127.0.0.1:x", "port 'x' is not a number"), ("127.0.0.1:70000", "out of range"),
     ("no-such-host.invalid:1", "cannot resolve host")],
)  # fmt: skip
def test_bad_addresses(value: str, fragment: str) -> None:
    with pytest.raises(settings.SettingError, match=fragment) as info:
        settings.split_address("--grpc-addr", value, 15010)
    assert str(info.value).startswith(f"--grpc-addr {value!r}")

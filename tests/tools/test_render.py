"""Tables and states as istioctl prints them, and the xDS port's check of the HTTP/2 preface."""

from __future__ import annotations

import io
from typing import Any

import pytest

from pilot import connlog
from pilot.tools import render
from pilot.tools.proxy_status import CDS, EDS, LDS, RDS, human_duration, status_rows, type_status


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_tables_align_like_tabwriter() -> None:
    text = render.plain_table(["NAME", "STATUS"], [["a", "SYNCED"], ["longer-name", ""]])
    assert text.splitlines() == ["NAME            STATUS", "a               SYNCED", "longer-name"]


def test_terminal_tables_use_rich_and_colour_states(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    out = Terminal()
    render.table(["NAME", "CDS"], [["proxy-1.default", "STALE (3s)"]], out=out)
    text = out.getvalue()
    assert "proxy-1.default" in text and "STALE (3s)" in text and "\x1b[" in text  # styled
    monkeypatch.setenv("NO_COLOR", "1")
    plain = Terminal()
    render.table(["NAME"], [["x"]], out=plain)
    assert "\x1b[" not in plain.getvalue()


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (119, "119s"), (125, "2m5s"), (600, "10m"), (3 * 3600 + 60, "3h1m"), (30 * 3600, "30h"),
     (50 * 3600, "2d2h"), (400 * 86400, "400d"), (3 * 365 * 86400 + 86400, "3y1d")],
)  # fmt: skip
def test_ages_read_like_kubectl(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_states_follow_istiod_statusgen() -> None:
    now = 1_000_000.0
    sent = "1970-01-12T13:46:30+00:00"  # 10 s before now
    assert type_status(None, now) == "IGNORED"
    assert type_status({"sent": "", "acked": ""}, now) == "NOT SENT"
    assert type_status({"sent": "5", "acked": "5", "sentTime": sent}, now) == "SYNCED (10s)"
    assert type_status({"sent": "6", "acked": "5", "sentTime": sent}, now) == "STALE (10s)"
    assert type_status({"sent": "6", "acked": "6", "sentTime": sent, "lastError": "bad"}, now) == "ERROR (10s)"


def test_rows_are_sorted_and_name_the_worker() -> None:
    entries: list[dict[str, Any]] = [
        {"proxy": "b.default", "cluster_id": "Kubernetes", "istiod": "pilot-0", "worker": 1, "resources": {}},
        {
            "proxy": "a.default",
            "cluster_id": "Kubernetes",
            "istio_version": "1.24.0",
            "resources": {t: {"sent": "1", "acked": "1"} for t in (CDS, LDS, EDS, RDS)},
        },
    ]
    rows = status_rows(entries, 0.0)
    assert rows[0] == ["a.default", "Kubernetes", "SYNCED", "SYNCED", "SYNCED", "SYNCED", "IGNORED", "", "1.24.0"]
    assert rows[1][0] == "b.default" and rows[1][2:7] == ["IGNORED"] * 5 and rows[1][7] == "pilot-0/worker-1"


class _Transport:
    def __init__(self) -> None:
        self.protocol: object = None

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.9", 4242) if name == "peername" else None

    def set_protocol(self, protocol: object) -> None:
        self.protocol = protocol


class _Inner:
    def __init__(self) -> None:
        self.data = b""

    def connection_made(self, transport: object) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        self.data += data


def test_the_preface_check_steps_aside_after_a_split_preface(caplog: pytest.LogCaptureFixture) -> None:
    inner, transport = _Inner(), _Transport()
    check = connlog._PrefaceCheck(inner)  # type: ignore[arg-type]
    check.connection_made(transport)  # type: ignore[arg-type]
    check.data_received(connlog.H2_PREFACE[:7])
    assert transport.protocol is None
    check.data_received(connlog.H2_PREFACE[7:] + b"\x00\x00\x00")  # the rest, and the first frame bytes
    assert transport.protocol is inner and inner.data == connlog.H2_PREFACE + b"\x00\x00\x00"
    assert not [r for r in caplog.records if "rejected" in r.getMessage()]


def test_a_client_that_is_not_http2_is_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    inner, transport = _Inner(), _Transport()
    check = connlog._PrefaceCheck(inner)  # type: ignore[arg-type]
    check.connection_made(transport)  # type: ignore[arg-type]
    with caplog.at_level("WARNING", logger="pilot.xds.rejected"):
        check.data_received(b"GET / HTTP/1.1\r\n")
        check.data_received(b"Host: x\r\n\r\n")
    lines = [r.getMessage() for r in caplog.records if r.name == "pilot.xds.rejected"]
    assert lines == ["xDS: rejected connection from 127.0.0.9:4242: HTTP/1.x (xDS needs gRPC over HTTP/2)"]
    assert inner.data == b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"  # grpclib still gets it (and closes the connection)

"""FileSource against a real directory and real inotify (watchfiles): every wait is a bounded poll."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import statistics
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pilot.config.store import ConfigStore
from pilot.model.config import ConfigKey
from pilot.sources.files import FileSource

TIMEOUT = 5.0


def svc(name: str, port: int = 80, ns: str = "default") -> str:
    return f"""\
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  ports: [{{name: http, port: {port}}}]
"""


def key(name: str, ns: str = "default") -> ConfigKey:
    return ConfigKey("Service", ns, name)


async def wait_for(predicate: Callable[[], bool], within: float = TIMEOUT, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"{what} not met within {within}s")
        await asyncio.sleep(0.002)


@dataclass
class Harness:
    root: Path
    store: ConfigStore
    source: FileSource
    task: asyncio.Task[None] | None = None
    change_times: list[float] = field(default_factory=list)

    def port(self, name: str, ns: str = "default") -> int | None:
        cfg = self.store.get(key(name, ns))
        return None if cfg is None else cfg.spec["spec"]["ports"][0]["port"]

    async def start(self) -> None:
        await self.source.initial_load()
        self.task = asyncio.create_task(self.source.run())
        # run() rescans once its watch is up; wait until the watcher thread is live by round-tripping a file.
        probe = self.root / "zz-probe.yaml"
        probe.write_text(svc("probe"))
        await wait_for(lambda: self.store.get(key("probe")) is not None, what="watcher start")
        probe.unlink()
        await wait_for(lambda: self.store.get(key("probe")) is None, what="probe removal")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.wait_for(asyncio.gather(self.task, return_exceptions=True), TIMEOUT)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    root = tmp_path / "config"
    root.mkdir()
    store = ConfigStore()
    # A short quiet period keeps these tests quick; settling itself is tested in tests/hardening.
    h = Harness(root, store, FileSource(root, store, settle=0.05))
    store.subscribe(lambda _keys: h.change_times.append(time.monotonic()))
    yield h
    await h.stop()


# ----- initial load -----


async def test_initial_load_scans_recursively(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pilot.sources.files")
    (harness.root / "a.yaml").write_text(svc("a") + "---\n" + svc("a2"))
    (harness.root / "sub" / "deeper").mkdir(parents=True)
    (harness.root / "sub" / "deeper" / "b.yml").write_text(svc("b"))
    (harness.root / "notes.txt").write_text(svc("txt"))
    (harness.root / ".hidden").mkdir()
    (harness.root / ".hidden" / "h.yaml").write_text(svc("hidden"))
    (harness.root / ".swap.yaml").write_text(svc("swap"))
    assert not harness.source.loaded.is_set()
    await harness.source.initial_load()
    assert harness.source.loaded.is_set()
    assert sorted(harness.store.snapshot()) == [key("a"), key("a2"), key("b")]
    assert harness.store.get(key("b")).source == str(harness.root / "sub" / "deeper" / "b.yml")  # type: ignore[union-attr]
    assert "config: 3 objects from 2 files" in caplog.messages


async def test_errors_and_skipped_kinds_are_logged(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pilot.sources.files")
    peer = "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata: {name: p}\n"
    path = harness.root / "mixed.yaml"
    path.write_text(peer + "---\n" + peer.replace("name: p", "name: q") + "---\n" + svc("bad", 0))
    await harness.source.initial_load()
    assert (
        caplog.messages.count(f"skipping unsupported kind security.istio.io/v1beta1/AuthorizationPolicy in {path}") == 1
    )
    assert f"{path}[doc 2] Service default/bad: spec.ports[0].port: 0 out of range 1..65535" in caplog.messages


# ----- watching -----


async def test_create_modify_delete(harness: Harness) -> None:
    await harness.start()
    path = harness.root / "x.yaml"
    path.write_text(svc("x", 80))
    await wait_for(lambda: harness.port("x") == 80, what="create")
    path.write_text(svc("x", 81))
    await wait_for(lambda: harness.port("x") == 81, what="modify")
    path.unlink()
    await wait_for(lambda: harness.store.get(key("x")) is None, what="delete")
    assert harness.source.files == []


async def test_atomic_replace_with_non_yaml_temp_name(harness: Harness) -> None:
    path = harness.root / "x.yaml"
    path.write_text(svc("x", 80))
    await harness.start()
    assert harness.port("x") == 80
    for i, tmp_name in enumerate(("x.yaml.tmp", ".x.yaml.swp", "tmp-8f3a2c")):
        tmp = harness.root / tmp_name
        tmp.write_text(svc("x", 90 + i))
        os.rename(tmp, path)
        await wait_for(lambda i=i: harness.port("x") == 90 + i, what=f"rename from {tmp_name}")
    assert harness.source.files == [str(path)]
    assert sorted(harness.store.snapshot()) == [key("x")]


async def test_rename_yaml_file_moves_its_objects(harness: Harness) -> None:
    (harness.root / "a.yaml").write_text(svc("x"))
    await harness.start()
    os.rename(harness.root / "a.yaml", harness.root / "b.yaml")
    await wait_for(lambda: harness.source.files == [str(harness.root / "b.yaml")], what="rename")
    assert harness.store.get(key("x")).source == str(harness.root / "b.yaml")  # type: ignore[union-attr]


async def test_new_subdirectory_is_watched(harness: Harness) -> None:
    await harness.start()
    sub = harness.root / "team" / "svc"
    sub.mkdir(parents=True)
    (sub / "a.yaml").write_text(svc("a"))  # written before the watch on the new dir can exist
    await wait_for(lambda: harness.store.get(key("a")) is not None, what="file in new dir")
    (sub / "b.yaml").write_text(svc("b"))  # written once the new dir is watched
    await wait_for(lambda: harness.store.get(key("b")) is not None, what="second file in new dir")
    (sub / "b.yaml").write_text(svc("b", 99))
    await wait_for(lambda: harness.port("b") == 99, what="modify in new dir")


async def test_directory_moved_in_and_deleted(harness: Harness, tmp_path: Path) -> None:
    await harness.start()
    outside = tmp_path / "staging"
    outside.mkdir()
    (outside / "m.yaml").write_text(svc("m"))
    os.rename(outside, harness.root / "moved")
    await wait_for(lambda: harness.store.get(key("m")) is not None, what="dir moved in")
    shutil.rmtree(harness.root / "moved")
    await wait_for(lambda: harness.store.get(key("m")) is None, what="dir deleted")


async def test_invalid_edit_keeps_last_good(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pilot.sources.files")
    path = harness.root / "x.yaml"
    path.write_text(svc("x", 80) + "---\n" + svc("y", 80))
    await harness.start()
    revision = harness.store.revision
    path.write_text(svc("x", 0) + "---\n" + svc("y", 81))  # x invalid, y changed
    await wait_for(lambda: harness.port("y") == 81, what="valid part applied")
    assert harness.port("x") == 80  # last good kept
    assert any("Service default/x: spec.ports[0].port" in m for m in caplog.messages)
    path.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: x\n")  # YAML syntax error
    await wait_for(lambda: any("yaml:" in m for m in caplog.messages), what="syntax error logged")
    assert harness.port("x") == 80 and harness.port("y") == 81
    path.write_text(svc("x", 82))  # fixed; y really removed now
    await wait_for(lambda: harness.port("x") == 82, what="fixed")
    assert harness.store.get(key("y")) is None
    assert harness.store.revision > revision


async def test_configmap_style_symlink_swap(harness: Harness) -> None:
    root = harness.root

    def publish(version: int, files: dict[str, str]) -> None:
        data_dir = root / f"..2024_01_01_00_00_0{version}.000"
        data_dir.mkdir()
        for name, text in files.items():
            (data_dir / name).write_text(text)
        tmp_link = root / "..data_tmp"
        tmp_link.symlink_to(data_dir.name)
        os.rename(tmp_link, root / "..data")
        for name in files:
            link = root / name
            if not link.is_symlink():
                link.symlink_to(f"..data/{name}")

    publish(1, {"a.yaml": svc("a", 80), "b.yaml": svc("b", 80)})
    await harness.start()
    assert harness.port("a") == 80 and harness.port("b") == 80
    assert harness.source.files == [str(root / "a.yaml"), str(root / "b.yaml")]  # not the ..data copies
    old = root / "..2024_01_01_00_00_01.000"
    publish(2, {"a.yaml": svc("a", 81), "b.yaml": svc("b", 80)})
    shutil.rmtree(old)
    await wait_for(lambda: harness.port("a") == 81, what="ConfigMap update")
    assert harness.port("b") == 80
    assert harness.source.files == [str(root / "a.yaml"), str(root / "b.yaml")]


async def test_symlinked_directory(harness: Harness, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "s.yaml").write_text(svc("s", 80))
    (harness.root / "linked").symlink_to(target, target_is_directory=True)
    await harness.start()
    assert harness.port("s") == 80
    # Re-point the symlink atomically at another directory.
    other = tmp_path / "elsewhere2"
    other.mkdir()
    (other / "s.yaml").write_text(svc("s", 81))
    tmp_link = harness.root / "linked.tmp"
    tmp_link.symlink_to(other, target_is_directory=True)
    os.rename(tmp_link, harness.root / "linked")
    await wait_for(lambda: harness.port("s") == 81, what="symlink re-pointed")


async def test_events_between_initial_load_and_run_are_not_lost(harness: Harness) -> None:
    await harness.source.initial_load()
    (harness.root / "late.yaml").write_text(svc("late"))  # before run() starts watching
    harness.task = asyncio.create_task(harness.source.run())
    await wait_for(lambda: harness.store.get(key("late")) is not None, what="catch-up rescan")


async def test_run_without_initial_load_loads_first(harness: Harness) -> None:
    (harness.root / "a.yaml").write_text(svc("a"))
    harness.task = asyncio.create_task(harness.source.run())
    await asyncio.wait_for(harness.source.loaded.wait(), TIMEOUT)
    assert harness.store.get(key("a")) is not None


async def test_cancel_stops_promptly(harness: Harness) -> None:
    await harness.start()
    started = time.monotonic()
    await harness.stop()
    assert harness.task is not None and harness.task.cancelled()
    assert time.monotonic() - started < 1.0
    # No longer watching: a write does not reach the store.
    revision = harness.store.revision
    (harness.root / "after.yaml").write_text(svc("after"))
    await asyncio.sleep(0.2)  # negative check: give a (wrongly) live watcher time to act
    assert harness.store.revision == revision


async def test_write_to_store_latency(harness: Harness) -> None:
    """A write in place reaches the store once it has settled (PILOT_FILE_SETTLE), plus well under 100 ms
    (debounce ~10-50 ms); reports the measurement."""
    await harness.start()
    path = harness.root / "lat.yaml"
    samples = []
    for i in range(20):
        before = len(harness.change_times)
        written = time.monotonic()
        path.write_text(svc("lat", 1000 + i))
        await wait_for(lambda i=i: harness.port("lat") == 1000 + i, what="latency write")
        samples.append(harness.change_times[before] - written)
    median = statistics.median(samples)
    print(f"file write -> store change: median {median * 1000:.1f} ms, max {max(samples) * 1000:.1f} ms")
    assert median < harness.source.settle + 0.1

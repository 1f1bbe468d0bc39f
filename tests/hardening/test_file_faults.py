"""A failing config directory or a half-written file never empties the mesh (issue 8, finding 2).

FileSource on a real directory with real inotify, its settle and poll timing on a ManualClock: the tests
move time explicitly and wait (with deadlines) only for what the source has observed. Every store change is
recorded, so "never dropped" is checked over the whole history, not only at the end.

Tests run as root, so chmod cannot make a path unreadable here: a symlink loop in a directory's place
(ELOOP) stands for an unreadable directory; tests/hardening/test_envoy_faults.py does real chmod 000 with a
pilot process that lacks CAP_DAC_OVERRIDE.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pilot.config.store import ConfigStore
from pilot.model.config import ConfigKey
from pilot.push.clock import ManualClock
from pilot.sources.files import FileSource, Signature, source_errors
from pilot.tasks import INTERNAL_ERRORS
from tests.hardening.waiting import wait_for

SETTLE = 0.2
POLL = 1.0


def se(name: str, port: int = 80) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{name}.example.com]
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
  resolution: DNS
"""


def key(name: str) -> ConfigKey:
    return ConfigKey("ServiceEntry", "default", name)


def signature(path: Path) -> Signature:
    info = os.stat(path)
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


@dataclass
class Rig:
    root: Path
    store: ConfigStore
    clock: ManualClock
    source: FileSource
    history: list[frozenset[str]] = field(default_factory=list)  # object names after every store change
    task: asyncio.Task[None] | None = None

    def names(self) -> set[str]:
        return {k.name for k in self.store.snapshot()}

    def always_had(self, *names: str) -> bool:
        return all(set(names) <= state for state in self.history)

    async def start(self) -> None:
        await self.source.initial_load()
        self.task = asyncio.create_task(self.source.run())
        await wait_for(lambda: self.source.watching, "watcher running")
        await self.settled()
        self.history[:] = [frozenset(self.names())]  # "never dropped" counts from here

    async def settled(self) -> None:
        """Wait until the source has looked at everything it was told about and has nothing waiting."""
        await wait_for(lambda: not self.source._dirty and not self.source._rescan, "events observed")
        await wait_for(lambda: not self.source.pending, f"nothing pending (pending: {self.source.pending})")

    async def observed(self, path: Path, gone: bool = False) -> None:
        """Wait until the source saw ``path`` as it is on disk now: settling at its current signature, or (a
        new path, read at once) already loaded at it."""
        expected = None if gone else signature(path)

        def seen() -> bool:
            if self.source.pending.get(str(path), "absent") == expected:
                return True
            loaded = self.source._files.get(str(path))
            return not gone and loaded is not None and loaded.signature == expected

        await wait_for(seen, f"{path} observed")

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    async def settle_until(self, predicate: Callable[[], object], what: str, rounds: int = 10) -> None:
        """Let quiet periods pass (one per round, the source given up to 1 s to act) until ``predicate``
        holds: for outcomes whose path through settling depends on when the watcher's events arrive."""
        for _ in range(rounds):
            with contextlib.suppress(AssertionError):
                await wait_for(predicate, what, within=1.0)
                return
            self.advance(SETTLE)
        await wait_for(predicate, what)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    root = tmp_path / "config"
    root.mkdir()
    store = ConfigStore()
    clock = ManualClock()
    source = FileSource(root, store, clock=clock, settle=SETTLE, poll_interval=POLL)
    r = Rig(root, store, clock, source)
    store.subscribe(lambda _keys: r.history.append(frozenset(r.names())))
    yield r
    await r.stop()


async def test_a_file_rewritten_in_place_changes_only_once_settled(rig: Rig) -> None:
    path = rig.root / "mesh.yaml"
    path.write_text(se("a") + "---\n" + se("b"))
    await rig.start()
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, se("a", 81).encode())  # truncated, first document only...
        await rig.observed(path)
        rig.advance(SETTLE / 2)
        os.write(fd, ("---\n" + se("b", 81)).encode())  # ...and the rest before it settled
    finally:
        os.close(fd)
    await rig.observed(path)
    rig.advance(SETTLE / 2)
    await asyncio.sleep(0)
    assert rig.store.get(key("a")).spec.ports[0].number == 80  # type: ignore[union-attr]  # the quiet period restarted
    rig.advance(SETTLE / 2)
    await wait_for(lambda: rig.store.get(key("b")).spec.ports[0].number == 81, "settled version applied")  # type: ignore[union-attr]
    assert rig.always_had("a", "b")
    # A version that stays put for the quiet period is the file's content, even if it drops an object.
    path.write_text(se("a", 82))
    await rig.observed(path)
    rig.advance(SETTLE)
    await wait_for(lambda: rig.names() == {"a"}, "b removed by a settled version")


async def test_slow_append_never_drops_objects(rig: Rig) -> None:
    path = rig.root / "mesh.yaml"
    names = [f"s{i}" for i in range(6)]
    path.write_text("---\n".join(se(n) for n in names))
    await rig.start()
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        for i, name in enumerate(names):
            os.write(fd, (("---\n" if i else "") + se(name, 90)).encode())
            await rig.observed(path)
            rig.advance(SETTLE * 0.6)  # a writer that pauses, but never for the whole quiet period
    finally:
        os.close(fd)
    rig.advance(SETTLE)
    await wait_for(lambda: all(rig.store.get(key(n)).spec.ports[0].number == 90 for n in names), "appended")  # type: ignore[union-attr]
    assert rig.always_had(*names)


async def test_a_syntax_error_keeps_the_last_good_objects(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pilot.sources.files")
    path = rig.root / "mesh.yaml"
    path.write_text(se("a") + "---\n" + se("b"))
    await rig.start()
    path.write_text(se("a", 81) + "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: b")
    await rig.observed(path)
    rig.advance(SETTLE)
    await wait_for(lambda: any("yaml:" in m for m in caplog.messages), "syntax error logged")
    assert rig.names() == {"a", "b"} and rig.store.get(key("a")).spec.ports[0].number == 80  # type: ignore[union-attr]
    assert rig.always_had("a", "b")


async def test_a_removed_file_removes_its_objects_once_settled(rig: Rig) -> None:
    (rig.root / "a.yaml").write_text(se("a"))
    (rig.root / "b.yaml").write_text(se("b"))
    await rig.start()
    (rig.root / "b.yaml").unlink()
    await rig.observed(rig.root / "b.yaml", gone=True)
    assert rig.names() == {"a", "b"}
    rig.advance(SETTLE)
    await wait_for(lambda: rig.names() == {"a"}, "b removed")


async def test_a_watcher_that_fails_because_the_dir_went_away_reports_the_missing_dir(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watcher often notices a deleted config dir first (watchfiles raises FileNotFoundError): that is the
    dir missing, not a watcher failure (no 'file watcher failed' problem, no watcher error counted)."""
    import pilot.sources.files as files

    gone = asyncio.Event()

    async def failing_when_gone(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        await gone.wait()
        raise FileNotFoundError("No path was found.")
        yield  # an async generator, as watchfiles' awatch

    (rig.root / "a.yaml").write_text(se("a"))
    monkeypatch.setattr(files, "awatch", failing_when_gone)
    await rig.start()
    shutil.rmtree(rig.root)
    gone.set()
    await wait_for(lambda: rig.source.problems(), "source unhealthy")
    assert rig.source.problems() == [f"config dir {rig.root} does not exist; keeping the 1 files' objects it had"]
    assert rig.source.counters[source_errors("watcher")] == 0


async def test_deleting_the_config_dir_keeps_everything_until_it_is_back(rig: Rig) -> None:
    (rig.root / "a.yaml").write_text(se("a"))
    (rig.root / "sub").mkdir()
    (rig.root / "sub" / "b.yaml").write_text(se("b"))
    await rig.start()
    shutil.rmtree(rig.root)
    await wait_for(lambda: rig.source.problems(), "source unhealthy")
    assert rig.source.problems() == [f"config dir {rig.root} does not exist; keeping the 2 files' objects it had"]
    for _ in range(3):  # polls keep retrying, and keep failing; each failed attempt is counted
        failed = rig.source.counters[source_errors("root")]
        rig.advance(POLL)
        await wait_for(lambda failed=failed: rig.source.counters[source_errors("root")] > failed, "retried")
    assert rig.names() == {"a", "b"} and rig.always_had("a", "b")
    # Back, with other content: what is there now is the config.
    rig.root.mkdir()
    (rig.root / "c.yaml").write_text(se("c"))
    rig.advance(POLL)
    await wait_for(lambda: rig.source.watching and not rig.source.problems(), "root back and watched")
    # The deletions seen while rm -rf ran are long due and c.yaml is new (read at once): all of it may apply
    # as soon as the root is back, or wait for its quiet period.
    await rig.settle_until(lambda: rig.names() == {"c"}, "new content applied")


async def test_a_config_dir_deleted_file_by_file_keeps_everything(rig: Rig) -> None:
    """rm -rf removes files first: their deletions must not apply once the root itself is gone."""
    (rig.root / "a.yaml").write_text(se("a"))
    (rig.root / "b.yaml").write_text(se("b"))
    await rig.start()
    (rig.root / "a.yaml").unlink()
    await rig.observed(rig.root / "a.yaml", gone=True)
    shutil.rmtree(rig.root)
    rig.advance(SETTLE)
    await wait_for(lambda: rig.source.problems(), "source unhealthy")
    rig.advance(SETTLE)
    await asyncio.sleep(0)
    assert rig.names() == {"a", "b"} and rig.always_had("a", "b")


async def test_a_config_dir_replaced_by_a_file_keeps_everything(rig: Rig) -> None:
    (rig.root / "a.yaml").write_text(se("a"))
    await rig.start()
    shutil.rmtree(rig.root)
    rig.root.write_text("not a directory")
    rig.advance(POLL)
    await wait_for(lambda: any("is not a directory" in p for p in rig.source.problems()), "source unhealthy")
    rig.advance(SETTLE + POLL)
    await asyncio.sleep(0)
    assert rig.names() == {"a"} and rig.always_had("a")


async def test_an_unreadable_subdirectory_keeps_its_objects(rig: Rig) -> None:
    (rig.root / "a.yaml").write_text(se("a"))
    sub = rig.root / "sub"
    sub.mkdir()
    (sub / "b.yaml").write_text(se("b"))
    await rig.start()
    shutil.rmtree(sub)
    sub.symlink_to(sub)  # a symlink loop: listing it or anything below it fails with ELOOP
    await wait_for(lambda: rig.source.problems(), "source unhealthy")
    assert "Too many levels of symbolic links" in rig.source.problems()[0]
    (rig.root / "c.yaml").write_text(se("c"))  # the rest of the directory still works
    await rig.observed(rig.root / "c.yaml")
    rig.advance(SETTLE)
    await wait_for(lambda: rig.names() == {"a", "b", "c"}, "c added, b kept")
    sub.unlink()
    sub.mkdir()
    (sub / "b.yaml").write_text(se("b", 81))

    def b_port() -> int:
        return rig.store.get(key("b")).spec.ports[0].number  # type: ignore[union-attr]

    rig.advance(POLL)  # unhealthy: the poll rescans
    # A watcher event may beat the poll (b.yaml replaced a known file: a new inode applies at once), or the scan
    # may catch b.yaml half-written (its write restarts the quiet period): advance until it is in.
    await rig.settle_until(lambda: b_port() == 81, "b readable again")
    await wait_for(lambda: not rig.source.problems(), "healthy again")
    assert rig.always_had("a", "b")


async def test_removing_a_subdirectory_removes_its_objects(rig: Rig) -> None:
    sub = rig.root / "sub"
    sub.mkdir()
    (sub / "b.yaml").write_text(se("b"))
    (rig.root / "a.yaml").write_text(se("a"))
    await rig.start()
    shutil.rmtree(sub)
    await rig.observed(sub / "b.yaml", gone=True)
    rig.advance(SETTLE)
    await wait_for(lambda: rig.names() == {"a"}, "b removed")
    assert not rig.source.problems()


async def test_a_file_renamed_into_place_applies_without_the_quiet_period(rig: Rig) -> None:
    path = rig.root / "a.yaml"
    path.write_text(se("a"))
    await rig.start()
    staged = rig.root.parent / "a.yaml.tmp"
    staged.write_text(se("a", 81))
    written = os.stat(staged).st_mtime_ns
    os.utime(staged, ns=(written - 10**9, written - 10**9))  # written a second ago: ctime (now) > mtime
    os.rename(staged, path)
    await wait_for(lambda: rig.store.get(key("a")).spec.ports[0].number == 81, "applied")  # type: ignore[union-attr]


async def test_a_new_file_applies_at_once(rig: Rig) -> None:
    """A new path replaces nothing, so it needs no quiet period (the clock is never advanced here)."""
    (rig.root / "a.yaml").write_text(se("a"))
    await rig.start()
    (rig.root / "b.yaml").write_text(se("b"))
    await wait_for(lambda: rig.names() == {"a", "b"}, "b added without settling")


async def test_a_known_file_replaced_by_rename_applies_without_the_quiet_period(rig: Rig) -> None:
    """Written and renamed within one clock tick (ctime not after mtime): the new inode at a known path shows it."""
    path = rig.root / "a.yaml"
    path.write_text(se("a"))
    await rig.start()
    staged = rig.root.parent / "a.yaml.tmp"
    staged.write_text(se("a", 82))
    os.rename(staged, path)
    later = os.stat(path).st_ctime_ns + 10**10
    os.utime(path, ns=(later, later))  # an mtime after the ctime: the ctime rule cannot tell it was renamed
    await wait_for(lambda: rig.store.get(key("a")).spec.ports[0].number == 82, "applied")  # type: ignore[union-attr]


async def test_a_non_utf8_file_name_does_not_stop_the_source(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pilot.sources.files")
    (rig.root / "a.yaml").write_text(se("a"))
    await rig.start()
    # The watcher sets up its inotify watch on its own thread: a file it reports proves the watch is live
    # (a name written before that is only met by a scan, which skips it without a watcher failure).
    (rig.root / "probe.yaml").write_text(se("probe"))
    await rig.observed(rig.root / "probe.yaml")
    fd = os.open(os.path.join(os.fsencode(rig.root), b"bad\xff.yaml"), os.O_WRONLY | os.O_CREAT)
    os.write(fd, se("bad").encode())
    os.close(fd)
    await wait_for(lambda: any("file watcher failed" in p for p in rig.source.problems()), "watcher failure seen")
    assert rig.source.counters[source_errors("watcher")] == 1
    rig.advance(0.1)  # its first restart
    await wait_for(lambda: not rig.source.problems() or rig.source.watching, "watcher restarted")
    (rig.root / "c.yaml").write_text(se("c"))
    await rig.observed(rig.root / "c.yaml")
    rig.advance(SETTLE)
    await wait_for(lambda: "c" in rig.names(), "later changes still applied")
    assert "bad" not in rig.names()
    assert any("its name is not UTF-8" in m for m in caplog.messages)


async def test_an_oversized_file_is_not_read(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pilot.sources.files")
    path = rig.root / "a.yaml"
    path.write_text(se("a"))
    await rig.start()
    os.truncate(path, 17 * 1024 * 1024)  # sparse: costs no disk
    await rig.observed(path)
    rig.advance(SETTLE)
    await wait_for(lambda: any("more than the limit of 16 MiB; not read" in m for m in caplog.messages), "refused")
    assert rig.names() == {"a"}


async def test_a_fifo_named_like_config_does_not_block_the_source(rig: Rig) -> None:
    os.mkfifo(rig.root / "pipe.yaml")
    (rig.root / "a.yaml").write_text(se("a"))
    await rig.start()
    assert rig.names() == {"a"}
    (rig.root / "b.yaml").write_text(se("b"))
    await rig.observed(rig.root / "b.yaml")
    rig.advance(SETTLE)
    await wait_for(lambda: rig.names() == {"a", "b"}, "b added")


async def test_a_failing_reconcile_is_counted_and_retried(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    (rig.root / "a.yaml").write_text(se("a"))
    await rig.start()
    real = rig.source._observe
    calls = 0

    def failing_once(paths: set[str] | None):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("disk on fire")
        return real(paths)

    monkeypatch.setattr(rig.source, "_observe", failing_once)
    (rig.root / "b.yaml").write_text(se("b"))
    await wait_for(lambda: rig.source.counters[INTERNAL_ERRORS] == 1, "failure counted")
    rig.advance(0.1)  # the retry backoff
    await wait_for(lambda: rig.source.pending or "b" in rig.names(), "rescanned")
    rig.advance(SETTLE)
    await wait_for(lambda: rig.names() == {"a", "b"}, "b added after the retry")

"""The config-directory source: every ``*.yaml`` / ``*.yml`` under a root directory, watched with inotify.

Each file is one store source. Reads and parses run in a worker thread; store updates happen on the event
loop. Change events only say *where* to look: the handler re-stats the named paths (and everything known
below them) and reloads what differs, so create, modify, delete, rename over (atomic replace, whatever the
temporary name), directories created or moved in later, and symlinks re-pointed all take the same path.

Names starting with "." are never loaded (hidden files, editor swap files, and the ``..data`` /
``..2024_…`` entries of Kubernetes ConfigMap volumes, whose visible files are symlinks into them). An
event on such a name, or on a path outside the root, triggers a full rescan instead, which is how a
ConfigMap update (an atomic rename of the ``..data`` symlink) is picked up.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from watchfiles import awatch

from pilot.config.loader import LoadError, LoadResult, load_text
from pilot.config.store import ConfigStore

log = logging.getLogger(__name__)

CONFIG_SUFFIXES = (".yaml", ".yml")
DEBOUNCE_MS = 50  # longest a burst of events is grouped before it is handled
STEP_MS = 10  # a batch is handled once no new event arrived for this long
RUST_TIMEOUT_MS = 1_000  # how often the watcher thread returns to Python when idle


@dataclass(frozen=True)
class _FileState:
    signature: tuple[int, int, int, int]  # (st_dev, st_ino, st_size, st_mtime_ns) of the target
    digest: bytes  # of the file's bytes
    warned_kinds: frozenset[str] = frozenset()


@dataclass
class _Update:
    path: str
    state: _FileState | None = None  # None: the file is gone
    result: LoadResult | None = None  # None: content unchanged, only the stat signature moved


class FileSource:
    def __init__(self, root: Path, store: ConfigStore, *, default_namespace: str = "default") -> None:
        self.root = os.path.abspath(os.fspath(root))
        self.store = store
        self.default_namespace = default_namespace
        self.loaded = asyncio.Event()
        self._files: dict[str, _FileState] = {}
        self._lock = asyncio.Lock()

    # ----- public -----

    async def initial_load(self) -> None:
        """Load every config file under the root into the store, then set ``loaded``."""
        async with self._lock:
            updates = await asyncio.to_thread(self._plan, None)
            self._apply(updates)
        objects = sum(1 for cfg in self.store.snapshot().values() if cfg.source in self._files)
        log.info("config: %d objects from %d files", objects, len(self._files))
        self.loaded.set()

    async def run(self) -> None:
        """Watch the root and apply changes until cancelled."""
        if not self.loaded.is_set():
            await self.initial_load()
        stop = asyncio.Event()
        changes = awatch(
            self.root,
            watch_filter=None,
            debounce=DEBOUNCE_MS,
            step=STEP_MS,
            stop_event=stop,
            rust_timeout=RUST_TIMEOUT_MS,
            recursive=True,
        )
        pending: asyncio.Future[set[tuple[object, str]]] | None = None
        try:
            # The watcher registers its inotify watches synchronously when first iterated; give that task
            # one loop turn, then rescan to catch anything written between initial_load and now.
            pending = asyncio.ensure_future(anext(changes))
            await asyncio.sleep(0)
            await self._reconcile(None)
            while True:
                try:
                    batch = await pending
                except StopAsyncIteration:
                    return
                pending = asyncio.ensure_future(anext(changes))
                await self._reconcile({path for _change, path in batch})
        finally:
            stop.set()  # lets the watcher thread return at its next step
            if pending is not None and not pending.done():
                pending.cancel()
            if pending is not None:
                with contextlib.suppress(BaseException):
                    await pending
            with contextlib.suppress(BaseException):
                await changes.aclose()

    @property
    def files(self) -> list[str]:
        """The config files currently tracked, sorted."""
        return sorted(self._files)

    # ----- reconciliation -----

    async def _reconcile(self, paths: set[str] | None) -> None:
        async with self._lock:
            updates = await asyncio.to_thread(self._plan, paths)
            self._apply(updates)

    def _plan(self, paths: set[str] | None) -> list[_Update]:
        """Worker thread: decide which files to (re)load or drop. ``None`` = rescan everything."""
        # Files an event named are re-read even if their stat looks unchanged: mtime is coarse (a few ms), so
        # two same-size writes in quick succession can share a signature.
        named = {os.path.normpath(p) for p in paths or ()}
        force = {p for p in named if p in self._files or _is_config_name(os.path.basename(p))}
        candidates = set(force)
        if paths is None or any(self._needs_rescan(p) for p in named):
            candidates.update(self._walk(self.root))
            candidates.update(self._files)
        else:
            for path in named:
                prefix = path + os.sep
                candidates.update(f for f in self._files if f.startswith(prefix))
                if os.path.isdir(path):
                    candidates.update(self._walk(path))
        updates = []
        for path in sorted(candidates):
            update = self._check(path, force=path in force)
            if update is not None:
                updates.append(update)
        return updates

    def _check(self, path: str, *, force: bool) -> _Update | None:
        known = self._files.get(path)
        try:
            info = os.stat(path)
        except OSError:
            info = None
        if info is None or not _is_regular(info.st_mode) or not self._loadable(path):
            return _Update(path) if known is not None else None
        signature = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        if known is not None and not force and known.signature == signature:
            return None
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            return _Update(path) if known is not None else None
        except OSError as exc:
            err = LoadError(path, 0, None, f"cannot read file: {exc.strerror or exc}")
            # Keep whatever the file defined before; retry on the next event.
            return _Update(path, known or _FileState(signature, b""), LoadResult(errors=(err,)))
        digest = hashlib.blake2b(data, digest_size=16).digest()
        if known is not None and known.digest == digest:
            if known.signature == signature:
                return None
            return _Update(path, _FileState(signature, digest, known.warned_kinds))
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            err = LoadError(path, 0, None, f"not UTF-8 text: {exc.reason} at byte {exc.start}")
            return _Update(
                path,
                _FileState(signature, digest, known.warned_kinds if known else frozenset()),
                LoadResult(errors=(err,)),
            )
        result = load_text(path, text, self.default_namespace)
        return _Update(path, _FileState(signature, digest, known.warned_kinds if known else frozenset()), result)

    def _apply(self, updates: Iterable[_Update]) -> None:
        """Event loop: push planned updates into the store, in path order."""
        for update in updates:
            if update.state is None:
                self._files.pop(update.path, None)
                self.store.remove_source(update.path)
                log.info("config: %s removed", update.path)
                continue
            result = update.result
            if result is None:
                self._files[update.path] = update.state
                continue
            for error in result.errors:
                log.warning("%s", error)
            warned = set(update.state.warned_kinds)
            for kind in result.skipped_kinds:
                if kind not in warned:
                    log.warning("skipping unsupported kind %s in %s", kind, update.path)
                    warned.add(kind)
            self._files[update.path] = _FileState(update.state.signature, update.state.digest, frozenset(warned))
            self.store.replace_source(update.path, result)

    # ----- filesystem helpers (worker thread) -----

    def _needs_rescan(self, path: str) -> bool:
        rel = os.path.relpath(os.path.normpath(path), self.root)
        if rel == "." or rel.startswith(".." + os.sep) or rel == "..":
            return True  # the root itself, or outside it (a symlink target)
        return any(part.startswith(".") for part in rel.split(os.sep))

    def _loadable(self, path: str) -> bool:
        rel = os.path.relpath(path, self.root)
        if rel.startswith(".." + os.sep):
            return False
        parts = rel.split(os.sep)
        return _is_config_name(parts[-1]) and not any(part.startswith(".") for part in parts)

    def _walk(self, top: str) -> Iterator[str]:
        """Config files below ``top``, following directory symlinks (each real directory once)."""
        seen: set[tuple[int, int]] = set()
        for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
            try:
                st = os.stat(dirpath)
            except OSError:
                dirnames[:] = []
                continue
            ident = (st.st_dev, st.st_ino)
            if ident in seen:
                dirnames[:] = []
                continue
            seen.add(ident)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if _is_config_name(name):
                    path = os.path.join(dirpath, name)
                    if self._loadable(path):
                        yield path


def _is_config_name(name: str) -> bool:
    return name.endswith(CONFIG_SUFFIXES) and not name.startswith(".")


def _is_regular(mode: int) -> bool:
    return stat.S_ISREG(mode)

"""The config-directory source: every ``*.yaml`` / ``*.yml`` under a root directory, watched with inotify.

Each file is one store source. Stats, reads and parses run in a worker thread; store updates happen on the
event loop. Change events only say *where* to look: the paths they name (and everything known below them)
are re-stat'ed and what differs is reloaded, so create, modify, delete, rename over (atomic replace, whatever
the temporary name), directories created or moved in later, and symlinks re-pointed all take the same path.

Names starting with "." are never loaded (hidden files, editor swap files, and the ``..data`` /
``..2024_…`` entries of Kubernetes ConfigMap volumes, whose visible files are symlinks into them). An
event on such a name, or on a path outside the root, triggers a full rescan instead, which is how a
ConfigMap update (an atomic rename of the ``..data`` symlink) is picked up. So are file names that are
not UTF-8: they are skipped with a warning (they could not be named in logs, metrics or debug output).

What a failing source or a half-written file can and cannot do:

- A file's objects change only when a *settled* version of it is read: its stat signature (inode, size,
  mtime, ctime) unchanged and no event on it for ``settle`` seconds (PILOT_FILE_SETTLE, default 200ms) on
  the source's clock, and unchanged again while it is read. A file renamed into place (a known path with a
  new inode, or a ctime later than its mtime: written before, then moved) is complete already and is read at
  once; so is a new path (it replaces nothing: a half-written new file can only add objects early). A YAML
  syntax error keeps every object of the file's last good version.
- A file is removed (its objects deleted) only when it is positively gone, settled the same way: no longer
  in its parent directory while the root is a readable directory.
- When the root is missing, not a directory or unreadable, or a directory or file below it cannot be read,
  nothing it held is removed: the source reports itself unhealthy (``problems()``, a log line per new
  problem, ``pilot_config_source_errors{source=files,reason}`` counted per failed attempt) and retries every
  ``poll_interval`` seconds, as istiod's file monitor keeps its last snapshot when a read fails.
- The watcher (watchfiles) is restarted with backoff if it fails (it raises on a non-UTF-8 name, for
  one) or the root is replaced; while it is down the source rescans every ``poll_interval``.
- Files above pilot.config.bounds.MAX_FILE_BYTES are not read; documents and objects beyond the other bounds
  are rejected by the loader.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import stat
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from watchfiles import awatch

from pilot.config import bounds
from pilot.config.loader import LoadError, LoadResult, load_text
from pilot.config.store import ConfigStore
from pilot.push.clock import Clock, MonotonicClock
from pilot.push.debounce import parse_duration
from pilot.tasks import INTERNAL_ERRORS, Backoff

log = logging.getLogger(__name__)

CONFIG_SUFFIXES = (".yaml", ".yml")
DEBOUNCE_MS = 50  # longest a burst of events is grouped before it is handled
STEP_MS = 10  # a batch is handled once no new event arrived for this long
RUST_TIMEOUT_MS = 1_000  # how often the watcher thread returns to Python when idle
DEFAULT_SETTLE = 0.2
POLL_INTERVAL = 1.0  # root identity check; rescans while unhealthy or unwatched
MAX_DIRTY_PATHS = 10_000  # beyond this many paths waiting to be looked at, one full rescan instead
_IDLE = 3600.0  # nothing to wait for: sleep until woken
_EPSILON = 1e-6

# st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns of the file (symlinks followed)
Signature = tuple[int, int, int, int, int]


def settle_from_env() -> float:
    return parse_duration(os.environ.get("PILOT_FILE_SETTLE", "200ms"))


def source_errors(reason: str) -> str:
    return f"pilot_config_source_errors{{source=files,reason={reason}}}"


@dataclass(frozen=True)
class _FileState:
    signature: Signature
    digest: bytes  # of the file's bytes
    warned_kinds: frozenset[str] = frozenset()


@dataclass
class _Pending:
    signature: Signature | None  # None: the file looked gone
    since: float  # when this signature (or an event on the path) was last seen


@dataclass
class _Observation:
    """What a stat pass found (worker thread)."""

    root_problem: str | None = None
    seen: dict[str, Signature | None] = field(default_factory=dict)  # None: positively gone
    problems: dict[str, str] = field(default_factory=dict)  # path (file or directory) -> why it cannot be read
    readable: set[str] = field(default_factory=set)  # directories listed and files stat'ed fine this time
    forced: set[str] = field(default_factory=set)  # named by an event: look again even if the stat matches
    full: bool = False


@dataclass
class _Update:
    path: str
    state: _FileState | None = None  # None: the file is gone
    result: LoadResult | None = None  # None: content unchanged, only the stat signature moved


@dataclass
class _Unsettled:
    path: str
    signature: Signature | None


@dataclass
class _ReadFailure:
    path: str
    problem: str


_Outcome = _Update | _Unsettled | _ReadFailure


class FileSource:
    def __init__(
        self,
        root: Path,
        store: ConfigStore,
        *,
        default_namespace: str = "default",
        clock: Clock | None = None,
        settle: float | None = None,
        poll_interval: float = POLL_INTERVAL,
        counters: Counter[str] | None = None,
    ) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self.store = store
        self.default_namespace = default_namespace
        self.settle = settle_from_env() if settle is None else settle
        self.poll_interval = poll_interval
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self.loaded = asyncio.Event()
        self._clock = clock or MonotonicClock()
        self._files: dict[str, _FileState] = {}
        self._pending: dict[str, _Pending] = {}
        self._dirty: set[str] = set()
        self._rescan = False
        self._wake = asyncio.Event()
        self._never = asyncio.Event()  # waited on with a timeout: a sleep on the source's clock
        self._root_changed = asyncio.Event()
        self._watched: tuple[int, int] | None = None  # (st_dev, st_ino) of the root the watcher watches
        self._root_problem: str | None = None
        self._dir_problems: dict[str, str] = {}  # directories (or files) that could not be listed (stat'ed)
        self._file_problems: dict[str, str] = {}  # files that could not be read
        self._watcher_problem: str | None = None
        self._skipped_names: set[str] = set()
        self._lock = asyncio.Lock()
        for reason in ("root", "read", "watcher"):
            self.counters[source_errors(reason)] += 0

    # ----- public -----

    async def initial_load(self) -> None:
        """Load every config file under the root into the store, then set ``loaded``. Files are read as they
        are (there is no earlier version to protect); a missing or unreadable root leaves the source unhealthy
        and empty until it can be read."""
        async with self._lock:
            try:
                observation = await asyncio.to_thread(self._observe, None)
                self._note(observation)
                for entry in self._pending.values():
                    entry.since = self._clock.now() - self.settle  # due now
                await self._settle_due()
            except Exception:
                self._internal_error("initial load")
        objects = sum(1 for cfg in self.store.snapshot().values() if cfg.source in self._files)
        log.info("config: %d objects from %d files", objects, len(self._files))
        self.loaded.set()

    async def run(self) -> None:
        """Watch the root and apply changes until cancelled."""
        if not self.loaded.is_set():
            await self.initial_load()
        async with asyncio.TaskGroup() as group:
            group.create_task(self._reconcile_loop(), name="config-reconcile")
            group.create_task(self._watch_loop(), name="config-watcher")
            group.create_task(self._poll_loop(), name="config-poll")

    @property
    def files(self) -> list[str]:
        """The config files currently tracked, sorted."""
        return sorted(self._files)

    @property
    def pending(self) -> dict[str, Signature | None]:
        """Paths seen changed (None: gone) and waiting to settle, with the signature they are settling at."""
        return {path: entry.signature for path, entry in sorted(self._pending.items())}

    @property
    def watching(self) -> bool:
        """Whether the watcher is running (its inotify watches may still be registering)."""
        return self._watched is not None

    @property
    def healthy(self) -> bool:
        return not self.problems()

    def problems(self) -> list[str]:
        """Why the source may be serving stale config now: one line per problem, empty when healthy."""
        out = []
        if self._root_problem is not None:
            out.append(f"{self._root_problem}; keeping the {len(self._files)} files' objects it had")
        out.extend(f"{problem}; keeping its objects" for problem in self._dir_problems.values())
        out.extend(f"{problem}; keeping its objects" for problem in self._file_problems.values())
        if self._watcher_problem is not None:
            out.append(self._watcher_problem)
        return out

    def count_into(self, counters: Counter[str]) -> None:
        """Record this source's counters in ``counters`` (the server's metrics) from now on."""
        counters.update(self.counters)
        self.counters = counters

    def notify(self, paths: Iterable[str] | None) -> None:
        """Look at ``paths`` (None: everything) again: what the watcher calls for each batch of events."""
        if paths is None:
            self._rescan = True
        else:
            self._dirty.update(paths)
            if len(self._dirty) > MAX_DIRTY_PATHS:
                self._dirty.clear()
                self._rescan = True
        self._wake.set()

    # ----- loops -----

    async def _reconcile_loop(self) -> None:
        backoff = Backoff(0.1, 10.0)
        while True:
            self._wake.clear()
            try:
                async with self._lock:
                    await self._step()
                backoff.reset()
            except Exception:
                self._internal_error("reconciling")
                self._rescan = True
                await self._clock.wait(self._never, backoff.next())
                continue
            await self._clock.wait(self._wake, self._until_due())

    async def _step(self) -> None:
        paths, rescan = self._dirty, self._rescan
        self._dirty, self._rescan = set(), False
        if paths or rescan:
            observation = await asyncio.to_thread(self._observe, None if rescan else paths)
            self._note(observation)
        await self._settle_due()

    async def _settle_due(self) -> None:
        if self._root_problem is not None:
            return  # nothing is read or removed while the root cannot be read
        now = self._clock.now()
        due = {p: e.signature for p, e in self._pending.items() if now - e.since >= self.settle - _EPSILON}
        if not due:
            return
        root_problem, outcomes = await asyncio.to_thread(self._settle, due)
        if root_problem is not None:
            self._set_root_problem(root_problem)
            return
        self._apply(outcomes)

    def _until_due(self) -> float:
        if not self._pending or self._root_problem is not None:
            return _IDLE
        now = self._clock.now()
        return max(0.0, min(e.since + self.settle - now for e in self._pending.values()))

    async def _watch_loop(self) -> None:
        backoff = Backoff(0.1, 30.0)
        while True:
            identity = await asyncio.to_thread(_directory_identity, self.root)
            if identity is None:
                self.notify(None)  # records why the root cannot be read; the poll notices its return
                self._root_changed.clear()
                await self._clock.wait(self._root_changed, self.poll_interval)
                continue
            started = self._clock.now()
            try:
                await self._watch(identity)
                continue  # the root was replaced: watch the directory there now
            except Exception as exc:
                if await asyncio.to_thread(_directory_identity, self.root) is None:
                    continue  # the root went away under the watcher: reported as such, not as a watcher failure
                if self._clock.now() - started > 60:
                    backoff.reset()
                delay = backoff.next()
                self.counters[source_errors("watcher")] += 1
                self._watcher_problem = (
                    f"file watcher failed ({_describe(exc)}); rescanning every {self.poll_interval:g}s"
                )[:400]
                log.warning("config: %s; restarting it in %.1fs", self._watcher_problem, delay)
            self.notify(None)  # events may have been lost with the watcher
            await self._clock.wait(self._never, delay)

    async def _watch(self, identity: tuple[int, int]) -> None:
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
        self._root_changed.clear()
        self._watched = identity
        batch: asyncio.Future[set[tuple[object, str]]] = asyncio.ensure_future(anext(changes))
        replaced = asyncio.ensure_future(self._root_changed.wait())
        try:
            # The watcher registers its inotify watches synchronously when first iterated; give that task
            # one loop turn, then rescan to catch anything written before the watch was up.
            await asyncio.sleep(0)
            self.notify(None)
            if self._watcher_problem is not None:
                self._watcher_problem = None
                log.info("config: file watcher running again")
            while True:
                await asyncio.wait({batch, replaced}, return_when=asyncio.FIRST_COMPLETED)
                if replaced.done():
                    return
                try:
                    changed = batch.result()
                except StopAsyncIteration:
                    raise RuntimeError("the watcher stopped") from None
                self.notify(path for _change, path in changed)
                batch = asyncio.ensure_future(anext(changes))
        finally:
            self._watched = None
            stop.set()  # lets the watcher thread return at its next step
            replaced.cancel()
            if not batch.done():
                batch.cancel()
            with contextlib.suppress(BaseException):
                await batch
            with contextlib.suppress(BaseException):
                await changes.aclose()

    async def _poll_loop(self) -> None:
        while True:
            await self._clock.wait(self._never, self.poll_interval)
            identity = await asyncio.to_thread(_directory_identity, self.root)
            if identity is not None and self._watched is not None and identity != self._watched:
                self._root_changed.set()  # replaced: the watcher follows the old directory
            if self._watched is None and identity is not None:
                self._root_changed.set()  # back: start watching it
            if self._watched is None or self.problems():
                self.notify(None)

    # ----- planning (worker thread) -----

    def _observe(self, paths: set[str] | None) -> _Observation:
        """Stat what ``paths`` name (None: everything under the root, and every known file)."""
        observation = _Observation(full=paths is None)
        root_problem = _root_problem(self.root)
        if root_problem is not None:
            observation.root_problem = root_problem
            return observation
        # Files an event named are looked at even if their stat looks unchanged: mtime is coarse (a few ms),
        # so two same-size writes in quick succession can share a signature.
        named = {os.path.normpath(p) for p in paths or ()}
        observation.forced = {p for p in named if p in self._files or _is_config_name(os.path.basename(p))}
        candidates = set(observation.forced)
        if paths is None or any(self._needs_rescan(p) for p in named):
            observation.full = True
            candidates.update(self._walk(self.root, observation))
            candidates.update(self._files)
        else:
            for path in named:
                prefix = path + os.sep
                candidates.update(f for f in self._files if f.startswith(prefix))
                if os.path.isdir(path):
                    candidates.update(self._walk(path, observation))
        unreadable = tuple(d + os.sep for d in observation.problems)
        for path in sorted(candidates):
            if unreadable and path.startswith(unreadable):
                continue  # below a directory that cannot be listed: neither gone nor changed, as far as we know
            if not self._loadable(path):
                observation.seen[path] = None
                continue
            try:
                observation.seen[path] = _signature(path)
                observation.readable.add(path)
            except OSError as exc:
                observation.problems[path] = f"cannot read {path}: {exc.strerror or exc}"
        return observation

    def _settle(self, due: dict[str, Signature | None]) -> tuple[str | None, list[_Outcome]]:
        """Re-stat, read and parse the files whose last signature has been stable for the settle time."""
        root_problem = _root_problem(self.root)
        if root_problem is not None:
            return root_problem, []
        outcomes: list[_Outcome] = []
        for path, expected in sorted(due.items(), key=lambda item: item[0]):
            try:
                now = _signature(path)
            except OSError as exc:
                outcomes.append(_ReadFailure(path, f"cannot read {path}: {exc.strerror or exc}"))
                continue
            if now != expected:
                outcomes.append(_Unsettled(path, now))
            elif now is None:
                if path in self._files:
                    outcomes.append(_Update(path))
                else:
                    outcomes.append(_Unsettled(path, None))  # never loaded and gone: the pending entry goes
            else:
                outcomes.append(self._read(path, now))
        return None, outcomes

    def _read(self, path: str, signature: Signature) -> _Outcome:
        known = self._files.get(path)
        warned = known.warned_kinds if known else frozenset()
        size = signature[2]
        if size > bounds.MAX_FILE_BYTES:
            message = (
                f"file is {bounds.size_text(size)}, more than the limit of {bounds.size_text(bounds.MAX_FILE_BYTES)};"
                " not read"
            )
            return _Update(
                path, _FileState(signature, b"", warned), LoadResult(errors=(LoadError(path, 0, None, message),))
            )
        try:
            data = _read_settled(path, signature)
        except FileNotFoundError:
            return _Unsettled(path, None)
        except OSError as exc:
            return _ReadFailure(path, f"cannot read {path}: {exc.strerror or exc}")
        if data is None:
            try:
                return _Unsettled(path, _signature(path))
            except OSError as exc:
                return _ReadFailure(path, f"cannot read {path}: {exc.strerror or exc}")
        digest = hashlib.blake2b(data, digest_size=16).digest()
        if known is not None and known.digest == digest:
            if known.signature == signature:
                return _Update(path, known)
            return _Update(path, _FileState(signature, digest, warned))
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            err = LoadError(path, 0, None, f"not UTF-8 text: {exc.reason} at byte {exc.start}")
            return _Update(path, _FileState(signature, digest, warned), LoadResult(errors=(err,)))
        result = load_text(path, text, self.default_namespace)
        return _Update(path, _FileState(signature, digest, warned), result)

    # ----- applying (event loop) -----

    def _note(self, observation: _Observation) -> None:
        """Record what a stat pass found: changed paths start (or restart) settling; problems are tracked."""
        if observation.root_problem is not None:
            self._set_root_problem(observation.root_problem)
            return
        if self._root_problem is not None:
            log.info("config: %s is readable again", self.root)
            self._root_problem = None
        now = self._clock.now()
        for path, signature in observation.seen.items():
            known = self._files.get(path)
            entry = self._pending.get(path)
            if known is None and signature is None:
                self._pending.pop(path, None)
                continue
            if known is not None and signature == known.signature and path not in observation.forced:
                self._pending.pop(path, None)
                continue
            # A file renamed into place is complete: it needs no quiet period. Seen as a known file whose inode
            # changed (editors and kubectl-style tools write a new file and rename it over the old one), or as an
            # inode change (ctime) after the last write (mtime), where the clock's granularity shows it. A new
            # path is read at once too: it replaces nothing, so a half-written one can only add objects early,
            # never drop any. Any other change, or an event on a file still settling, restarts the quiet period.
            renamed_in = signature is not None and (
                signature[4] > signature[3] or known is None or known.signature[1] != signature[1]
            )
            if entry is not None and entry.signature == signature and (renamed_in or path not in observation.forced):
                continue
            self._pending[path] = _Pending(signature, now - self.settle if renamed_in else now)
            if signature is None:
                self._clear_problem(self._file_problems, path)
        if observation.full:
            for path in [p for p in self._dir_problems if p not in observation.problems]:
                self._clear_problem(self._dir_problems, path)
        for path in observation.readable:
            self._clear_problem(self._dir_problems, path)
        for path, problem in observation.problems.items():
            self._add_problem(self._dir_problems, path, problem)

    def _apply(self, outcomes: Iterable[_Outcome]) -> None:
        """Push settled versions into the store, in path order; re-pend what moved while being read."""
        for outcome in outcomes:
            path = outcome.path
            if isinstance(outcome, _ReadFailure):
                self._pending.pop(path, None)  # retried by the poll's rescans while the source is unhealthy
                self._add_problem(self._file_problems, path, outcome.problem)
                continue
            if isinstance(outcome, _Unsettled):
                if outcome.signature is None and path not in self._files:
                    self._pending.pop(path, None)
                else:
                    self._pending[path] = _Pending(outcome.signature, self._clock.now())
                continue
            self._pending.pop(path, None)
            self._clear_problem(self._file_problems, path)
            self._apply_update(outcome)

    def _apply_update(self, update: _Update) -> None:
        if update.state is None:
            self._files.pop(update.path, None)
            self.store.remove_source(update.path)
            log.info("config: %s removed", update.path)
            return
        result = update.result
        if result is None:
            self._files[update.path] = update.state
            return
        for error in result.errors:
            log.warning("%s", error)
        warned = set(update.state.warned_kinds)
        for kind in result.skipped_kinds:
            if kind not in warned:
                log.warning("skipping unsupported kind %s in %s", kind, update.path)
                warned.add(kind)
        self._files[update.path] = _FileState(update.state.signature, update.state.digest, frozenset(warned))
        self.store.replace_source(update.path, result)

    def _set_root_problem(self, problem: str) -> None:
        self.counters[source_errors("root")] += 1
        if problem != self._root_problem:
            log.error(
                "config: %s; keeping every object from its %d files until it can be read", problem, len(self._files)
            )
            self._root_problem = problem

    def _add_problem(self, problems: dict[str, str], path: str, problem: str) -> None:
        self.counters[source_errors("read")] += 1
        if problems.get(path) != problem:
            log.error("config: %s; keeping its objects", problem)
            problems[path] = problem

    def _clear_problem(self, problems: dict[str, str], path: str) -> None:
        if problems.pop(path, None) is not None:
            log.info("config: %s is readable again", path)

    def _internal_error(self, what: str) -> None:
        self.counters[INTERNAL_ERRORS] += 1
        log.exception("config: %s %s failed; retrying with a full rescan", what, self.root)

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

    def _walk(self, top: str, observation: _Observation) -> Iterator[str]:
        """Config files below ``top``, following directory symlinks (each real directory once); a directory
        that cannot be listed is recorded in ``observation.problems``."""
        seen: set[tuple[int, int]] = set()
        stack = [top]
        while stack:
            directory = stack.pop()
            try:
                info = os.stat(directory)
                if (info.st_dev, info.st_ino) in seen:
                    continue
                seen.add((info.st_dev, info.st_ino))
                with os.scandir(directory) as listing:
                    entries = sorted(listing, key=lambda e: e.name, reverse=True)
            except FileNotFoundError:
                continue  # gone: its files are gone too
            except OSError as exc:
                observation.problems[directory] = f"cannot read directory {directory}: {exc.strerror or exc}"
                continue
            observation.readable.add(directory)
            for entry in entries:
                if entry.name.startswith(".") or not self._utf8_name(entry.path):
                    continue
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    is_dir = False
                if is_dir:
                    stack.append(entry.path)
                elif _is_config_name(entry.name) and self._loadable(entry.path):
                    yield entry.path

    def _utf8_name(self, path: str) -> bool:
        try:
            path.encode("utf-8")
            return True
        except UnicodeEncodeError:
            if path not in self._skipped_names and len(self._skipped_names) < 1000:
                self._skipped_names.add(path)
                log.warning("config: skipping %r: its name is not UTF-8", path)
            return False


def _describe(exc: BaseException) -> str:
    """'Type: message' of the first real error (watchfiles raises its thread's errors in a group)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def _is_config_name(name: str) -> bool:
    return name.endswith(CONFIG_SUFFIXES) and not name.startswith(".")


def _signature(path: str) -> Signature | None:
    """The stat signature of a regular file; None when it is positively gone (or no longer a regular file).
    Other failures (permission, a symlink loop) raise: the file may well still be there."""
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _read_settled(path: str, signature: Signature) -> bytes | None:
    """The file's bytes if it still has ``signature`` before and after the read, else None. Opened without
    blocking and checked to be a regular file, so a FIFO put in its place cannot hang the reader."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode) or _stat_signature(before) != signature:
            return None
        chunks = []
        remaining = bounds.MAX_FILE_BYTES + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        if _stat_signature(os.fstat(fd)) != signature:
            return None
        return b"".join(chunks)
    finally:
        os.close(fd)


def _stat_signature(info: os.stat_result) -> Signature:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _directory_identity(path: str) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino) if stat.S_ISDIR(info.st_mode) else None


def _root_problem(root: str) -> str | None:
    """Why the root cannot be read now, or None."""
    try:
        info = os.stat(root)
        if not stat.S_ISDIR(info.st_mode):
            return f"config dir {root} is not a directory"
        with os.scandir(root):
            pass
    except FileNotFoundError:
        return f"config dir {root} does not exist"
    except OSError as exc:
        return f"cannot read config dir {root}: {exc.strerror or exc}"
    return None

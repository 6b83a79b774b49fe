"""The server's style library: built-in, preloaded, loaded, recorded and mixed styles.

Server-wide and thread-safe.  Learning happens outside the lock so listing never waits
for it.  Remote clients may only read audio files from inside the styles folder: relative
paths without ``..`` that stay inside it after resolving symlinks.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

from ..audio import AudioError, load_audio
from ..builtin_styles import builtin_style_files
from ..engine.cache import StyleCache, check_name
from ..engine.presets import Preset
from ..engine.style import StyleTarget, mix_targets

log = logging.getLogger(__name__)
DEFAULT_STYLE = "voice"


class LibraryError(ValueError):
    """A style request that cannot be served, with a one-line reason."""


@dataclass
class Recording:
    """Audio collected between ``/style/record/start`` and ``/style/record/stop``."""

    name: str
    sample_rate: int
    channels: int
    limit: int  # most samples (all channels) kept
    chunks: list[np.ndarray] = field(default_factory=list)
    samples: int = 0
    last_seq: int | None = None


class StyleLibrary:
    """Named style targets plus the active one every session streams with."""

    def __init__(self, styles_dir: Path, cache: StyleCache, preset: Preset, max_record_seconds: float = 120.0) -> None:
        self.styles_dir = Path(styles_dir)
        self.cache = cache
        self.preset = preset
        self.max_record_seconds = max_record_seconds
        self._lock = threading.Lock()
        self._targets: dict[str, StyleTarget] = {}
        self._files: dict[str, Path] = {}  # known by file, learned on first use
        self._recordings: dict[Hashable, Recording] = {}
        self.active: StyleTarget | None = None
        self.active_name: str | None = None
        self._listeners: list[Callable[[], None]] = []
        self._files.update(builtin_style_files())

    # -- lookup -------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Every style name a client can select, sorted."""
        with self._lock:
            known = set(self._targets) | set(self._files)
        return sorted(known | set(self.cache.names()))

    def get(self, name: str) -> StyleTarget:
        """The target called ``name``, learning or reading it on first use."""
        with self._lock:
            target, path = self._targets.get(name), self._files.get(name)
        if target is not None:
            return target
        if path is not None:
            return self._store(self._learn_file(name, path))
        try:
            target = self.cache.load_named(check_name(name))
            target.require(self.preset)
        except KeyError:
            raise LibraryError(f"unknown style {name!r}; /style/list shows the names") from None
        except ValueError as error:
            raise LibraryError(str(error)) from None
        return self._store(target)

    def _store(self, target: StyleTarget) -> StyleTarget:
        with self._lock:
            self._targets[target.name] = target
        self._changed()
        return target

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after a style is learned, deleted, selected or mixed (on that thread: quickly)."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    def _learn_file(self, name: str, path: Path) -> StyleTarget:
        try:
            audio, sample_rate = load_audio(path)
            return self.cache.learn([(audio, sample_rate)], self.preset, name=name)
        except AudioError as error:
            raise LibraryError(str(error)) from None

    # -- adding -------------------------------------------------------------------------

    def add_file(self, name: str, path: Path) -> StyleTarget:
        """Learn a style from any file now: for the operator's ``--style NAME=FILE``."""
        return self._store(self._learn_file(_check(name), Path(path)))

    def resolve(self, relative: str) -> Path:
        """The file ``relative`` names inside the styles folder, or LibraryError."""
        if not relative or "\x00" in relative:
            raise LibraryError("file must be a non-empty path relative to the styles folder")
        if PurePosixPath(relative).is_absolute() or PureWindowsPath(relative).anchor:
            raise LibraryError(f"{relative!r}: absolute paths are refused; give a path inside the styles folder")
        if ".." in PurePosixPath(relative.replace("\\", "/")).parts:
            raise LibraryError(f"{relative!r}: '..' is refused; give a path inside the styles folder")
        root = self.styles_dir.resolve()
        path = (root / relative).resolve()
        if not path.is_relative_to(root):
            raise LibraryError(f"{relative!r} leads outside the styles folder (symlink); refused")
        if not path.is_file():
            raise LibraryError(f"{relative!r}: no such file in the styles folder {self.styles_dir}")
        return path

    def load(self, name: str, relative: str) -> StyleTarget:
        """``/style/load``: learn a file from the styles folder and keep it as a named style."""
        name = _check(name)
        target = self._learn_file(name, self.resolve(relative))
        self.cache.save_named(target)
        return self._store(target)

    # -- recording ----------------------------------------------------------------------

    def record_start(self, owner: Hashable, name: str, sample_rate: int, channels: int) -> None:
        limit = int(self.max_record_seconds * sample_rate) * channels
        with self._lock:
            self._recordings[owner] = Recording(_check(name), sample_rate, channels, limit)

    def record_audio(self, owner: Hashable, seq: int, samples: np.ndarray) -> None:
        """Append a chunk in arrival order; repeats and stragglers (seq not above the last) are dropped."""
        with self._lock:
            rec = self._recordings.get(owner)
            if rec is None:
                raise LibraryError("no recording: send /style/record/start first")
            if samples.size % rec.channels:
                raise LibraryError(f"{samples.size} samples is not a whole number of {rec.channels}-channel frames")
            if rec.last_seq is not None and seq <= rec.last_seq:
                return
            if rec.samples + samples.size > rec.limit:
                raise LibraryError(f"recording {rec.name!r} would exceed {self.max_record_seconds:g} s; send /style/record/stop")
            rec.chunks.append(samples)
            rec.samples += samples.size
            rec.last_seq = seq

    def record_stop(self, owner: Hashable) -> StyleTarget:
        """Learn the recording (cached and kept as a named style) and return it."""
        with self._lock:
            rec = self._recordings.pop(owner, None)
        if rec is None:
            raise LibraryError("no recording: send /style/record/start first")
        if not rec.chunks:
            raise LibraryError(f"recording {rec.name!r} is empty: send /style/audio between start and stop")
        audio = np.concatenate(rec.chunks).reshape(-1, rec.channels).T
        try:
            target = self.cache.learn([(np.ascontiguousarray(audio), rec.sample_rate)], self.preset, name=rec.name)
        except AudioError as error:
            raise LibraryError(str(error)) from None
        self.cache.save_named(target)
        return self._store(target)

    def discard_recording(self, owner: Hashable) -> None:
        with self._lock:
            self._recordings.pop(owner, None)

    # -- the active style ---------------------------------------------------------------

    def select(self, name: str) -> StyleTarget:
        target = self.get(name)
        with self._lock:
            self.active, self.active_name = target, name
        self._changed()
        return target

    def mix(self, parts: list[tuple[str, float]]) -> StyleTarget:
        """Make the weighted mixture of named styles the active style."""
        targets = [(self.get(name), weight) for name, weight in parts]
        try:
            target = mix_targets(targets)
        except ValueError as error:
            raise LibraryError(str(error)) from None
        with self._lock:
            self.active, self.active_name = target, None
        self._changed()
        return target

    def delete(self, name: str) -> None:
        """Forget a style (and its named file in the cache); the active one cannot go."""
        with self._lock:
            if name == self.active_name:
                raise LibraryError(f"style {name!r} is active; select another first")
            known = name in self._targets or name in self._files
            self._targets.pop(name, None)
            self._files.pop(name, None)
        if name in self.cache.names():
            self.cache.delete_named(name)
        elif not known:
            raise LibraryError(f"unknown style {name!r}; /style/list shows the names")
        self._changed()


def _check(name: str) -> str:
    try:
        return check_name(name)
    except ValueError as error:
        raise LibraryError(str(error)) from None

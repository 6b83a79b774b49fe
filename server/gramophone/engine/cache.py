"""The on-disk cache of style targets and the named style store.

Targets are keyed by the hash of their source audio and the settings they depend on, so
the same clip under the same preset is learned once. Named styles (``gramophone style
learn --name``) are the same files under ``styles/NAME.npz``. A corrupt or foreign file is
recomputed (or reported) with a warning, never a crash. Every write is atomic and durable
(atomic.py), so a process killed mid-write leaves each style whole or absent; opening the
cache removes the temporary files such a process left and sets aside named styles cut
short by an older version or a disk problem, so they read as absent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..atomic import remove_leftovers

# torch and the DSP (seconds to import) load only where a target is learned or read whole:
# `gramophone style list` needs each style's metadata alone.
if TYPE_CHECKING:
    from .presets import Preset
    from .style import StyleTarget

log = logging.getLogger(__name__)
META_FIELDS = ("format", "key", "source_hash", "sample_rate", "frames")  # what every saved target's metadata holds
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def default_cache_dir() -> Path:
    """``$GRAMOPHONE_CACHE``, else the platform's user cache folder."""
    override = os.environ.get("GRAMOPHONE_CACHE")
    if override:
        return Path(override)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "gramophone"


def check_name(name: str) -> str:
    """A style name safe to use as a file name: letters, digits, ``_ . -``, at most 64."""
    if not NAME_PATTERN.match(name):
        raise ValueError(f"style name {name!r} must be 1–64 letters, digits, '_', '.' or '-', starting with a letter or digit")
    return name


def read_meta(path: Path) -> dict:
    """The metadata a saved target carries (style.StyleTarget.save), read without its arrays; ValueError if none."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
        missing = [field for field in META_FIELDS if not isinstance(meta, dict) or field not in meta]
        if missing:
            raise ValueError(f"its metadata lacks {', '.join(missing)}")
        return meta
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: not a Gramophone style target ({error})") from None


class StyleCache:
    """Targets on disk: anonymous ones keyed by content, and named ones."""

    def __init__(self, directory: str | os.PathLike | None = None) -> None:
        self.directory = Path(directory) if directory else default_cache_dir()
        for folder in ("targets", "styles"):
            (self.directory / folder).mkdir(parents=True, exist_ok=True)
            remove_leftovers(self.directory / folder)
        self._set_aside_cut_short()

    def _set_aside_cut_short(self) -> None:
        """Rename named styles that are not a whole zip (empty, truncated) to ``NAME.npz.damaged``.

        They then read as absent, not as broken, and can be learned again.
        """
        for path in self._named_files():
            if not zipfile.is_zipfile(path):
                aside = path.with_name(f"{path.name}.damaged")
                try:
                    os.replace(path, aside)
                except FileNotFoundError:  # another process set it aside or deleted it first
                    continue
                log.warning("style file %s is empty or cut short; moved to %s; learn the style again", path, aside)

    def _named_files(self) -> Iterator[Path]:
        """The named styles' files: ``NAME.npz`` with a valid name (not temporary or other files)."""
        for path in (self.directory / "styles").glob("*.npz"):
            if NAME_PATTERN.match(path.stem) and path.is_file():
                yield path

    def key_path(self, sources: list[tuple[np.ndarray, int]], preset: Preset) -> Path:
        from .style import audio_hash

        settings = json.dumps(preset.target_key(), sort_keys=True)
        digest = hashlib.sha256(f"{audio_hash(sources)}:{settings}".encode()).hexdigest()[:32]
        return self.directory / "targets" / f"{digest}.npz"

    def learn(self, sources: list[tuple[np.ndarray, int]], preset: Preset, name: str = "style") -> StyleTarget:
        """The cached target for these clips and settings, learned and stored if absent or unreadable."""
        from .style import StyleTarget, learn_style

        path = self.key_path(sources, preset)
        if path.exists():
            try:
                target = StyleTarget.load(path)
                if target.compatible_with(preset) and target.complete:
                    target.name = name
                    return target
                log.warning("cache file %s has other settings or an older format; recomputing", path)
            except ValueError as error:
                log.warning("%s; recomputing", error)
        target = learn_style(sources, preset, name=name)
        target.save(path)
        return target

    def named_path(self, name: str) -> Path:
        return self.directory / "styles" / f"{check_name(name)}.npz"

    def save_named(self, target: StyleTarget) -> Path:
        return target.save(self.named_path(target.name))

    def load_named(self, name: str) -> StyleTarget:
        """A named style; KeyError if there is none, ValueError if its file is damaged."""
        from .style import StyleTarget

        path = self.named_path(name)
        if not path.exists():
            raise KeyError(name)
        target = StyleTarget.load(path)
        target.name = name
        if not target.complete:  # it still works, with less of the effect
            log.warning("style %r was saved by an older version, without some of what the effect uses; learn it "
                        "again for the full effect", name)
        return target

    def meta_named(self, name: str) -> dict:
        """A named style's metadata (its settings, rate, frames, source hash) without its arrays; KeyError, ValueError as ``load_named``."""
        path = self.named_path(name)
        if not path.exists():
            raise KeyError(name)
        return read_meta(path) | {"name": name}

    def names(self) -> list[str]:
        return sorted(path.stem for path in self._named_files())

    def delete_named(self, name: str) -> None:
        self.named_path(name).unlink(missing_ok=True)

"""The style clips shipped in ``gramophone/data/styles`` (no torch: the command line checks names with it)."""

from __future__ import annotations

from pathlib import Path

BUILTIN_DIR = Path(__file__).parent / "data" / "styles"
BUILTIN_SUFFIXES = (".wav", ".flac")


def builtin_style_files() -> dict[str, Path]:
    """Each built-in style's name and clip, sorted by name."""
    return {path.stem: path for path in sorted(BUILTIN_DIR.iterdir()) if path.suffix.lower() in BUILTIN_SUFFIXES}

"""Gramophone: live neural style transfer for audio over OSC.

The public names below load lazily, so that ``import gramophone.osc`` (the protocol,
which the client shares) does not pull in torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "stylize": "engine.offline",
    "StylizeResult": "engine.offline",
    "StyleTarget": "engine.style",
    "learn_style": "engine.style",
    "mix_targets": "engine.style",
    "Preset": "engine.presets",
    "get_preset": "engine.presets",
    "PRESETS": "engine.presets",
    "StreamProcessor": "engine.stream",
    "StreamConfig": "engine.stream",
    "StyleCache": "engine.cache",
    "Parameters": "params",
    "load_audio": "audio",
    "save_audio": "audio",
    "AudioError": "audio",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

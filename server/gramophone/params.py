"""Live parameters: names, ranges, defaults, and a thread-safe server-wide set.

Torch-free on purpose: the OSC protocol layer validates and reports parameters
without importing the engine.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ParamSpec:
    """One automatable parameter: its range, default, unit and kind."""

    name: str
    minimum: float
    maximum: float
    default: float
    unit: str
    doc: str
    integer: bool = False

    def clamp(self, value: float) -> float:
        """Bring ``value`` into range (rounded for integer and switch parameters)."""
        if not math.isfinite(value):
            raise ValueError(f"{self.name} must be a finite number, got {value!r}")
        value = min(max(float(value), self.minimum), self.maximum)
        return float(round(value)) if self.integer else value


PARAMETERS: dict[str, ParamSpec] = {
    spec.name: spec
    for spec in (
        ParamSpec("style_weight", 0.0, 100.0, 1.0, "", "how hard the optimiser pulls toward the style's gram statistics; 0 turns the effect off"),
        ParamSpec("content_weight", 0.0, 100.0, 0.3, "", "how hard it holds on to the content's spectrogram; larger keeps more of the original"),
        ParamSpec("wet", 0.0, 1.0, 1.0, "", "wet/dry mix, smoothed per sample"),
        ParamSpec("gain_db", -60.0, 24.0, 0.0, "dB", "output gain, smoothed per sample; applied after the wet signal's full-scale limiter, so above 0 dB it can pass full scale"),
        ParamSpec("bypass", 0.0, 1.0, 0.0, "", "1 passes the input through (latency kept, crossfaded)", integer=True),
        ParamSpec("iterations", 0.0, 200.0, 8.0, "", "optimiser steps per chunk: the most in live mode, exactly this many in render mode", integer=True),
        ParamSpec("budget", 0.05, 0.9, 0.4, "", "share of a chunk's duration the optimiser may spend on it in live mode (part of the latency, except under `serve --latency short` and `low`, where the steps follow the output; a session's latency is fixed at `/connect` from the value then, which stays its ceiling)"),
        ParamSpec("learning_rate", 0.001, 1.0, 0.02, "", "Adam step size of the learned spectral correction, in log-magnitude units per step (it carries across chunks, so small steps add up)"),
        ParamSpec("colour", 0.0, 1.0, 1.0, "", "strength of the closed-form spectral colouring toward the style before the gram steps"),
        ParamSpec("pitch", -24.0, 24.0, 0.0, "st", "pitch shift in semitones, formant-preserving (the spectral envelope stays unless `formant` moves it); applies whatever `style_weight` is, glides under automation"),
        ParamSpec("pitch_follow", 0.0, 1.0, 0.0, "", "share of the way the content's median F0 moves to the style's, on top of `pitch`; nothing for an unvoiced style"),
        ParamSpec("formant", -12.0, 12.0, 0.0, "st", "spectral envelope (formant) shift in semitones, independent of the pitch; applies whatever `style_weight` is"),
        ParamSpec("formant_follow", 0.0, 1.0, 0.0, "", "share of the way the content's formants move to the style's, on top of `formant`; nothing for an unvoiced style"),
    )
}


class Parameters:
    """The server-wide parameter values; readers take a consistent snapshot."""

    def __init__(self, specs: dict[str, ParamSpec] = PARAMETERS) -> None:
        self._specs = specs
        self._values = {name: spec.default for name, spec in specs.items()}
        self._lock = threading.Lock()
        self._version = 0
        self._listeners: list[Callable[[str, float], None]] = []

    @property
    def specs(self) -> dict[str, ParamSpec]:
        return self._specs

    @property
    def version(self) -> int:
        """Increments on every change, so readers can tell cheaply that something moved."""
        return self._version

    def get(self, name: str) -> float:
        """The current value of ``name`` (KeyError for an unknown name)."""
        with self._lock:
            return self._values[name]

    def set(self, name: str, value: float) -> float:
        """Clamp ``value`` into range, store it, tell every listener, and return what was applied."""
        spec = self._specs[name]
        applied = spec.clamp(value)
        with self._lock:
            self._values[name] = applied
            self._version += 1
        for listener in self._listeners:
            listener(name, applied)
        return applied

    def subscribe(self, listener: Callable[[str, float], None]) -> None:
        """Call ``listener(name, applied)`` after every ``set``, on the setter's thread (so: quickly)."""
        self._listeners.append(listener)

    def snapshot(self) -> dict[str, float]:
        """A copy of every value, taken at one instant."""
        with self._lock:
            return dict(self._values)

"""The live latency settings ``serve --latency`` chooses between (torch-free: options are checked first).

Each names the analysis (a preset), the chunk and when a chunk's optimiser steps run. With the
steps after the output (``StreamConfig.steps_after_output``) the budget costs no latency, so a short
chunk can give most of its time to them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LatencySetting:
    """What ``--latency`` chooses: the analysis (a preset), the chunk, and when a chunk's steps run."""

    preset: str
    chunk_frames: int
    window_seconds: float  # recent input the correction is trained on: a step's cost grows with it
    steps_after_output: bool  # a chunk goes out first and takes its steps after: they add no latency
    budget: float | None  # the budget parameter's starting value, where the setting needs its own
    about: str


LATENCIES = {
    "default": LatencySetting("default", 8, 0.75, False, None, "about 185 ms at 48 kHz (--chunk-frames 3: about 105 ms)"),
    # The steps come after the output, so the budget costs no latency: most of each short chunk goes to
    # them. On the default analysis a 2-frame chunk lasts 23 ms at 48 kHz, room for 2-3 steps over the
    # default 0.75 s window; with its steps before the output it would get under one, half its chunks late.
    "short": LatencySetting("default", 2, 0.75, True, 0.9, "about 90 ms at 48 kHz: the default analysis, "
                            "2-frame chunks, each chunk's steps after its output"),
    # On a 21 ms analysis a window of 0.5 s keeps a step (6 ms on one thread) within a chunk (10.7 ms at 48 kHz).
    "low": LatencySetting("low-latency", 2, 0.5, True, 0.9, "under 50 ms at 48 kHz: a 21 ms analysis, 2-frame "
                          "chunks, each chunk's steps after its output"),
}

"""The offline pipeline: a content clip and a style target in, stylised audio out.

analyse → colour (closed form) → optimise (gram steps) → map the quiet levels onto the
style's (``levels.py``) → resynthesise, held under the style's range (each channel and
each frame) when the preset asks (``ceiling.py``) → the quiet bins equalised toward the
style's long-term spectrum (``match_eq.py``) → every sample within full scale (``limiter.py``).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..dsp.analysis import analyse, synthesise
from ..audio import resample, validate_audio
from ..stages.ceiling import ceiling_limit, hold_frames
from ..stages.colour import BandBasis, RunningColour
from ..stages.levels import RunningLevelMatch
from ..dsp.limiter import Limiter
from ..stages.match_eq import match_spectrum
from .network import get_pool
from .optimize import Callback, Objective, Result, optimise
from .presets import Preset
from .style import StyleTarget

COLOUR_CHUNK_FRAMES = 8  # offline colouring and level matching step through the clip like a live stream's default chunk


@dataclass
class StylizeResult:
    audio: np.ndarray  # (channels, samples) float32
    sample_rate: int
    content_logmag: np.ndarray  # (channels, grid channels, frames): for plots
    output_logmag: np.ndarray
    optimisation: Result
    seconds: float  # wall time of colouring + optimisation + level matching (what the benchmark's RTF counts)

    @property
    def interrupted(self) -> bool:
        return self.optimisation.interrupted


def colour_toward(logmag: np.ndarray, style: StyleTarget, preset: Preset, strength: float) -> np.ndarray:
    """The closed-form first step, chunk by chunk against running content statistics.

    The same ``RunningColour`` as the live path, so offline and live colour alike; it
    measured better on held-out nets than one transform from the whole clip (docs/quality.md).
    """
    if strength <= 0:
        return logmag
    colour = running_colour(preset)
    coloured = logmag.copy()
    for start in range(0, logmag.shape[-1], COLOUR_CHUNK_FRAMES):
        part = logmag[..., start:start + COLOUR_CHUNK_FRAMES]
        coloured[..., start:start + COLOUR_CHUNK_FRAMES] += colour.delta(part, style.bands, strength, style.envelopes)
    return coloured


def running_colour(preset: Preset, chunk_frames: int = 8) -> RunningColour:
    """The preset's running colouring for chunks of ``chunk_frames`` frames."""
    config = preset.analysis
    basis = BandBasis.build(config.channels, config.max_freq_hz, preset.colour_bands)
    return RunningColour(basis, *_running_window(preset, chunk_frames), neighbour_share=preset.colour_neighbours)


def _running_window(preset: Preset, chunk_frames: int) -> tuple[float, int]:
    """The running statistics' per-chunk decay and ramp-in frames, shared by colouring and level matching."""
    config = preset.analysis
    chunk_seconds = chunk_frames * config.hop_ms / 1000
    return (math.exp(-chunk_seconds / preset.colour_window_seconds),
            round(preset.colour_warmup_seconds * 1000 / config.hop_ms))


def match_levels(logmag: np.ndarray, style: StyleTarget, preset: Preset, strength: float) -> np.ndarray:
    """The quiet levels of ``logmag`` mapped onto the style's, chunk by chunk, as the live path does."""
    if not preset.levels or style.levels is None or strength <= 0:
        return logmag
    matcher = running_levels(preset)
    return np.concatenate([matcher.apply(logmag[..., start:start + COLOUR_CHUNK_FRAMES], style.levels, strength)
                           for start in range(0, logmag.shape[-1], COLOUR_CHUNK_FRAMES)], axis=-1)


def hold_to_loudest(logmag: np.ndarray, content: np.ndarray, style: StyleTarget, preset: Preset,
                    strength: float) -> np.ndarray:
    """``logmag`` with no frame louder than the style's loudest (``ceiling.hold_frames``), when the preset holds."""
    if not preset.ceiling or style.loudest_db is None:
        return logmag
    return hold_frames(logmag, content, style.loudest_db, strength)


def running_levels(preset: Preset, chunk_frames: int = 8) -> RunningLevelMatch:
    """The preset's level matching for chunks of ``chunk_frames`` frames, over the colouring's window."""
    return RunningLevelMatch(preset.analysis.channels, *_running_window(preset, chunk_frames))


def stylize(
    content: np.ndarray,
    sample_rate: int,
    style: StyleTarget,
    preset: Preset,
    seed: int = 0,
    callback: Callback | None = None,
    device: str = "cpu",
) -> StylizeResult:
    """Stylise ``content`` (``(channels, samples)``) toward ``style`` with ``preset``'s settings.

    Works at the content's own rate unless the preset fixes one; the output has the
    content's length. ``seed`` draws the noise start, the random phase of
    bins the edit fills and random-phase Griffin-Lim (the networks' seed is part of the preset).
    """
    style.require(preset)
    config = preset.analysis
    if preset.sample_rate and sample_rate != preset.sample_rate:
        content, sample_rate = resample(np.atleast_2d(content), sample_rate, preset.sample_rate), preset.sample_rate
    content = validate_audio(content, "content", min_samples=config.n_fft(sample_rate))
    spectrum = analyse(content, sample_rate, config)
    began = time.monotonic()
    pull = min(preset.style_weight, 1.0)  # how far the colouring, bounds and maps go; beyond 1 only the steps pull harder
    strength = preset.colour * pull
    anchor = colour_toward(spectrum.logmag, style, preset, strength)
    upper = None
    if preset.ceiling and style.ceiling is not None:
        limit = ceiling_limit(spectrum.logmag, style.ceiling, pull)
        anchor, upper = np.minimum(anchor, limit), torch.from_numpy(limit).to(device)
    nets = get_pool(config.channels, preset.network, config.max_freq_hz)
    if device != "cpu":  # the shared pool stays on the CPU; this run gets its own copies
        nets = [copy.deepcopy(net).to(device) for net in nets]
    anchor_tensor = torch.from_numpy(anchor).to(device)
    objective = Objective.for_content(nets, style.grams.to(device), anchor_tensor, preset.style_weight,
                                      preset.content_weight, preset.loss)
    if preset.init == "noise":
        generator = torch.Generator().manual_seed(seed)
        start = (torch.randn(anchor_tensor.shape, generator=generator) * 1e-3).to(device)
    else:
        start = anchor_tensor
    # From the content with no style pull, every step would leave it where it is.
    iterations = 0 if preset.style_weight == 0 and preset.init == "content" else preset.iterations
    result = optimise(start, objective, iterations, preset.learning_rate, preset.optimizer, callback, upper=upper)
    output_logmag = match_levels(result.spectrogram.cpu().numpy(), style, preset, pull)
    if upper is not None:  # a mapped level may sit up to a histogram bin above the style's peak
        output_logmag = np.minimum(output_logmag, limit)
    output_logmag = hold_to_loudest(output_logmag, spectrum.logmag, style, preset, pull)
    seconds = time.monotonic() - began
    audio = synthesise(spectrum, output_logmag, preset.phase, preset.griffin_lim_iterations,
                       griffin_lim_init=preset.griffin_lim_init, seed=seed)
    if preset.match_eq and style.spectrum is not None:
        audio = match_spectrum(audio, sample_rate, style.spectrum, pull)
    audio = Limiter(sample_rate).process(audio)
    return StylizeResult(audio=audio, sample_rate=sample_rate, content_logmag=spectrum.logmag,
                         output_logmag=output_logmag, optimisation=result, seconds=seconds)

"""The offline pipeline: a content clip and a style target in, stylised audio out.

analyse → the chain's spectrum stage (pitch and formant shift) → its anchor stages (colouring) under the ceiling → optimise (gram steps,
bounded by the ceiling) → the chain's output stages (quiet levels, frame hold) → resynthesise
→ the chain's audio stages (match EQ, limiter). The chain is the preset's (``stages/``); its
running stages step through the clip chunk by chunk, as a live stream's would.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..audio import resample, validate_audio
from ..dsp.analysis import analyse, grid_logmag, synthesise
from ..stages import Chain, build_chain
from .network import get_pool
from .optimize import Callback, Objective, Result, optimise
from .presets import Preset
from .style import StyleTarget

CHUNK_FRAMES = 8  # offline, running stages step through the clip like a live stream's default chunk


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


def offline_chain(preset: Preset, sample_rate: int) -> Chain:
    """The preset's chain for a whole clip at ``sample_rate``."""
    return build_chain(preset.stages, preset.ceiling, preset.analysis, preset.colour_bands, CHUNK_FRAMES,
                       sample_rate, live=False)


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
    chain = offline_chain(preset, sample_rate)
    voice = preset.voice
    shifted = chain.run("spectrum", spectrum.stft,
                        chain.context(preset.style_weight, preset.colour, style.bands, style.features, spectrum.stft, voice))
    if shifted is not spectrum.stft:  # the shifted voice is the content from here on, its phase the content phase
        spectrum = replace(spectrum, stft=shifted, logmag=grid_logmag(shifted, sample_rate, config))
    context = chain.context(preset.style_weight, preset.colour, style.bands, style.features, spectrum.logmag, voice)
    limit = chain.limit(context)
    anchor = chain.run("anchor", spectrum.logmag, context, limit)
    upper = None if limit is None else torch.from_numpy(limit).to(device)
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
    output_logmag = chain.run("output", result.spectrogram.cpu().numpy(), context, limit)
    seconds = time.monotonic() - began
    audio = synthesise(spectrum, output_logmag, preset.phase, preset.griffin_lim_iterations,
                       griffin_lim_init=preset.griffin_lim_init, seed=seed)
    audio = chain.run("audio", audio, context)
    return StylizeResult(audio=audio, sample_rate=sample_rate, content_logmag=spectrum.logmag,
                         output_logmag=output_logmag, optimisation=result, seconds=seconds)

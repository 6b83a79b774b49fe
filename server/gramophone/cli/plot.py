"""The ``--plot`` picture: content, style and output spectrograms and the loss curve."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: the server and CI have no screen
import matplotlib.pyplot as plt
import numpy as np

from ..dsp.analysis import analyse
from ..engine.optimize import Step
from ..engine.presets import Preset
from ..engine.offline import StylizeResult


def plot_result(path: Path, result: StylizeResult, style_clips: list[tuple[np.ndarray, int]], preset: Preset,
                steps: list[Step]) -> Path:
    """Write a PNG with one spectrogram row per signal and the losses per iteration."""
    panels = [("content", result.content_logmag[0]), ("output", result.output_logmag[0])]
    if style_clips:
        style, rate = style_clips[0]
        panels.insert(1, ("style", analyse(style, rate, preset.analysis).logmag[0]))
    figure, axes = plt.subplots(len(panels) + 1, 1, figsize=(10, 2.4 * (len(panels) + 1)), constrained_layout=True)
    hop_seconds = preset.analysis.hop_ms / 1000
    top = preset.analysis.max_freq_hz
    vmax = max(float(np.percentile(image, 99.5)) for _, image in panels)
    for axis, (title, image) in zip(axes, panels):
        axis.imshow(image, origin="lower", aspect="auto", cmap="magma", vmin=0, vmax=vmax,
                    extent=(0, image.shape[1] * hop_seconds, 0, top))
        axis.set_title(f"{title} (log1p magnitude)")
        axis.set_ylabel("Hz")
    axes[-2].set_xlabel("seconds")
    loss_axis = axes[-1]
    if steps:
        iterations = [step.iteration for step in steps]
        loss_axis.plot(iterations, [step.style for step in steps], label="style")
        loss_axis.plot(iterations, [step.content for step in steps], label="content")
        loss_axis.plot(iterations, [step.loss for step in steps], label="weighted total")
        loss_axis.set_yscale("log")
        loss_axis.legend()
    loss_axis.set_title("losses per iteration (each step measured under that step's network)")
    loss_axis.set_xlabel("iteration")
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return Path(path)

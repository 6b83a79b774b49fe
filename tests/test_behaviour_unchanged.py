"""The offline pipeline and a render-mode stream keep their output for fixed input and seeds.

The input (1.5 s of each espeak voice) and the two outputs are stored in ``tests/data/behaviour``
as 16-bit FLAC. A change meant to keep behaviour must keep every output sample within
``TOLERANCE`` of the stored one; a change meant to alter the sound rewrites the outputs
(``python tests/test_behaviour_unchanged.py --write``) and says so in its commit message.

Not a bit-exact checksum: the same code gives other low bits under another numpy or another
CPU's kernels (numpy 2.1.3, 2.3.5 and 2.4.6 differ by up to 2.4e-7 here), while any change of
behaviour moves samples by far more than ``TOLERANCE``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from gramophone import Parameters, StreamProcessor, get_preset, learn_style, stylize

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DATA = Path(__file__).parent / "data" / "behaviour"
RATE = 22050
TOLERANCE = 1e-4  # −80 dB of full scale: 16-bit storage (±1.5e-5) plus 400× the numeric noise measured


def read(name: str) -> np.ndarray:
    audio, rate = sf.read(DATA / f"{name}.flac", dtype="float32")
    assert rate == RATE
    return audio[None]


def offline_output(gain_db: float = 0.0) -> np.ndarray:
    """The stored content (``gain_db`` louder) stylised offline toward the stored style."""
    preset = get_preset("default").with_overrides(iterations=6)
    style = learn_style([(read("style"), RATE)], preset)
    return stylize(read("content") * 10 ** (gain_db / 20), RATE, style, preset, seed=3).audio


def render_output() -> np.ndarray:
    preset = get_preset("default")
    style = learn_style([(read("style"), RATE)], preset)
    params = Parameters()
    params.set("iterations", 3)
    return StreamProcessor(params, style, preset, mode="render").process(read("content"), RATE, block_size=256)


def assert_unchanged(output: np.ndarray, name: str) -> None:
    stored = read(name)
    assert output.shape == stored.shape
    worst = float(np.max(np.abs(output - stored)))
    assert worst <= TOLERANCE, f"{name}: a sample moved {worst:.2e} from the stored output (tolerance {TOLERANCE:g})"


def test_offline_output_is_unchanged():
    assert_unchanged(offline_output(), "offline")


def test_render_mode_stream_is_unchanged():
    assert_unchanged(render_output(), "render")


def test_a_change_of_behaviour_is_caught():
    """The tolerance is tight enough to see a small change: the content 0.1 dB louder."""
    with pytest.raises(AssertionError, match="moved"):
        assert_unchanged(offline_output(gain_db=0.1), "offline")


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    import torch

    torch.set_num_threads(1)
    for name, make in (("offline", offline_output), ("render", render_output)):
        sf.write(DATA / f"{name}.flac", make()[0], RATE, subtype="PCM_16")
        print(f"wrote {DATA / name}.flac")

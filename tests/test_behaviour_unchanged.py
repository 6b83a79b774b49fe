"""The offline pipeline and a render-mode stream give bit-identical output for fixed seeds.

The checksums were taken before the package was reorganised into sub-packages and its
spectral stages into one chain; a change meant to keep behaviour must keep them. A change
that is meant to alter the sound updates them, and says so in its commit message.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from gramophone import Parameters, StreamProcessor, get_preset, learn_style, stylize

pytestmark = pytest.mark.usefixtures("one_torch_thread")

OFFLINE_SHA256 = "31a9a043bc9432e5"
RENDER_SHA256 = "cc9ec7832c78928c"


def digest(audio: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(audio, dtype=np.float32).tobytes()).hexdigest()[:16]


@pytest.fixture(scope="module")
def short_pair(speech) -> tuple[np.ndarray, np.ndarray, int]:
    """1.5 s of each espeak voice at 22 050 Hz, ``(1, samples)``."""
    (content, rate), (style, _) = speech["content"], speech["style"]
    length = int(1.5 * rate)
    return content[:, :length], style[:, :length], rate


def test_offline_output_is_bit_identical(short_pair):
    content, style_clip, rate = short_pair
    preset = get_preset("default").with_overrides(iterations=6)
    style = learn_style([(style_clip, rate)], preset)
    result = stylize(content, rate, style, preset, seed=3)
    assert digest(result.audio) == OFFLINE_SHA256


def test_render_mode_stream_is_bit_identical(short_pair):
    content, style_clip, rate = short_pair
    preset = get_preset("default")
    style = learn_style([(style_clip, rate)], preset)
    params = Parameters()
    params.set("iterations", 3)
    processor = StreamProcessor(params, style, preset, mode="render")
    assert digest(processor.process(content, rate, block_size=256)) == RENDER_SHA256

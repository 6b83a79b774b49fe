"""Gram matrices and the normalised losses (``engine/objective.py``)."""

from __future__ import annotations


import pytest
import torch

from gramophone.dsp.analysis import analyse
from gramophone.engine.network import get_pool
from gramophone.engine.objective import content_loss, gram, style_loss
from testpresets import SMALL


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_gram_is_length_invariant():
    """A clip repeated twice has the same gram: G = F Fᵀ / T."""
    features = torch.randn(1, 12, 37)
    torch.testing.assert_close(gram(torch.cat([features, features], dim=-1)), gram(features))


def test_gram_scales_with_the_square_of_the_features():
    features = torch.randn(2, 8, 20)
    torch.testing.assert_close(gram(3.0 * features), 9.0 * gram(features))


def test_relative_losses_are_zero_at_the_target_and_one_when_everything_is_gone():
    target_gram = gram(torch.randn(1, 8, 30))
    spectrogram = torch.rand(1, 20, 30)
    assert float(style_loss(target_gram, target_gram)) == 0.0
    assert float(content_loss(spectrogram, spectrogram)) == 0.0
    assert float(style_loss(torch.zeros_like(target_gram), target_gram)) == pytest.approx(1.0)
    assert float(content_loss(torch.zeros_like(spectrogram), spectrogram)) == pytest.approx(1.0)


def test_relative_losses_do_not_depend_on_scale():
    now, target = gram(torch.randn(1, 8, 30)), gram(torch.randn(1, 8, 30))
    assert float(style_loss(100.0 * now, 100.0 * target)) == pytest.approx(float(style_loss(now, target)), rel=1e-5)
    a, b = torch.rand(1, 20, 30), torch.rand(1, 20, 30)
    assert float(content_loss(7.0 * a, 7.0 * b)) == pytest.approx(float(content_loss(a, b)), rel=1e-5)


def test_style_loss_averages_over_audio_channels():
    target = gram(torch.randn(1, 8, 30))
    now = torch.stack([target[0], 2 * target[0]])  # channel 0 exact, channel 1 off by 100 %
    assert float(style_loss(now, target)) == pytest.approx(0.5, rel=1e-5)


def test_own_style_loss_of_content_starts_near_one(clips, style_a):
    """The normalisation keeps the starting style loss a number around 1, not 1e9."""
    spectrum = analyse(clips["content"][0], clips["content"][1], SMALL.analysis)
    nets = get_pool(SMALL.analysis.channels, SMALL.network)
    start = float(style_loss(gram(nets[0](torch.from_numpy(spectrum.logmag))), style_a.grams[0]))
    assert 0.01 < start < 10

"""The optimisers over the spectrogram (``engine/optimize.py``): Adam and L-BFGS, callbacks, deadlines."""

from __future__ import annotations


import pytest
import torch

from gramophone.dsp.analysis import analyse
from gramophone.engine.network import get_pool
from gramophone.engine.optimize import Objective, optimise
from gramophone.engine.style import StyleTarget
from testpresets import SMALL


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _objective(clips, style: StyleTarget) -> tuple[Objective, torch.Tensor]:
    spectrum = analyse(clips["content"][0][:, :22050], clips["content"][1], SMALL.analysis)
    content = torch.from_numpy(spectrum.logmag)
    nets = get_pool(SMALL.analysis.channels, SMALL.network)
    return Objective.for_content(nets, style.grams, content, 1.0, 1.0), content


def _pool_style_loss(objective: Objective, spectrogram: torch.Tensor) -> float:
    with torch.no_grad():
        return sum(objective.terms(i, spectrogram)[0].item() for i in range(len(objective.nets)))


@pytest.mark.parametrize(("method", "rate"), [("adam", 0.08), ("lbfgs", 1.0)])
def test_losses_fall(clips, style_a, method, rate):
    objective, content = _objective(clips, style_a)
    steps = []
    result = optimise(content, objective, 12 if method == "adam" else 5, rate, method, callback=steps.append)
    assert result.iterations == len(steps) > 0 and not result.interrupted
    assert _pool_style_loss(objective, result.spectrogram) < 0.7 * _pool_style_loss(objective, content)
    if method == "lbfgs":  # one consistent objective: the reported loss falls step by step
        assert steps[-1].loss < steps[0].loss
    assert steps[0].content >= 0.0 and result.spectrogram.shape == content.shape


def test_callback_can_stop_the_run(clips, style_a):
    objective, content = _objective(clips, style_a)
    result = optimise(content, objective, 50, 0.08, callback=lambda step: step.iteration < 3)
    assert result.iterations == 3 and result.interrupted


def test_a_past_deadline_takes_no_step(clips, style_a):
    import time

    objective, content = _objective(clips, style_a)
    result = optimise(content, objective, 50, 0.08, deadline=time.monotonic() - 1)
    assert result.iterations == 0 and result.out_of_time
    torch.testing.assert_close(result.spectrogram, content)


def test_unknown_optimizer_is_rejected(clips, style_a):
    objective, content = _objective(clips, style_a)
    with pytest.raises(ValueError):
        optimise(content, objective, 2, 0.1, method="sgd")

"""The engine's Adam (``engine/adam.py``) moves a parameter bit for bit as ``torch.optim.Adam`` does."""

from __future__ import annotations

import torch

from gramophone.engine.adam import Adam


def test_steps_match_torch_bit_for_bit():
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(1, 64, 1, generator=generator)
    grads = [torch.randn(1, 64, 1, generator=generator) * scale for scale in (1.0, 0.1, 10.0, 1e-4, 3.0)]
    ours, theirs = start.clone(), start.clone().requires_grad_(True)
    adam, reference = Adam(lr=0.02), torch.optim.Adam([theirs], lr=0.02)
    for number, grad in enumerate(grads):
        if number == 3:  # the live stream changes the step size between chunks
            adam.lr = reference.param_groups[0]["lr"] = 0.05
        adam.step(ours, grad)
        theirs.grad = grad.clone()
        reference.step()
        assert torch.equal(ours, theirs.detach())
    state = reference.state[theirs]
    assert adam.steps == int(state["step"]) == len(grads)
    assert torch.equal(adam.exp_avg, state["exp_avg"]) and torch.equal(adam.exp_avg_sq, state["exp_avg_sq"])


def test_a_copy_stepped_elsewhere_is_taken_back():
    param = torch.ones(1, 4, 1)
    adam = Adam(lr=0.1)
    adam.step(param, torch.full_like(param, 0.5))
    copy = adam.copy("cpu")
    assert copy.exp_avg is not adam.exp_avg and torch.equal(copy.exp_avg, adam.exp_avg)
    copy.step(param, torch.full_like(param, -0.5))
    assert adam.steps == 1 and copy.steps == 2
    adam.take(copy, "cpu")
    assert adam.steps == 2 and torch.equal(adam.exp_avg, copy.exp_avg) and adam.exp_avg is not copy.exp_avg

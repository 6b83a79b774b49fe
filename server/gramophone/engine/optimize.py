"""The optimiser that edits a log-magnitude spectrogram toward the style.

Adam takes one network of the pool per step, in turn: each step costs one small network
but the result has to satisfy all of them, which is what keeps a random network from
being fooled. L-BFGS needs one consistent objective, so it sums the whole pool per step.
Every iteration reports to a callback that may stop the run; a deadline stops it too
(the live path), and Ctrl-C stops it keeping the result so far.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .adam import Adam
from .network import FeatureNet
from .objective import content_loss, gram, style_loss


@dataclass
class Step:
    """What one iteration reports."""

    iteration: int
    loss: float
    style: float
    content: float
    elapsed: float


@dataclass
class Objective:
    """The pool, its style grams, and the content the result should stay near.

    With the ``relative`` loss (ours) the content term compares spectrograms; the
    reference recipes (``article``, ``ulyanov``) compare each network's features, as
    they did, so those are precomputed per network.
    """

    nets: list[FeatureNet]
    style_grams: torch.Tensor  # (pool, filters, filters)
    content: torch.Tensor  # (batch, channels, frames)
    content_features: list[torch.Tensor]  # per network, reference losses only
    style_weight: float
    content_weight: float
    loss: str = "relative"

    @classmethod
    def for_content(cls, nets: list[FeatureNet], style_grams: torch.Tensor, content: torch.Tensor,
                    style_weight: float, content_weight: float, loss: str = "relative") -> "Objective":
        features = []
        if loss != "relative" and content_weight > 0:
            with torch.no_grad():
                features = [net(content) for net in nets]
        return cls(nets, style_grams, content, features, style_weight, content_weight, loss)

    def terms(self, index: int, spectrogram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Style and content loss under network ``index``, in this objective's normalisation."""
        features = self.nets[index](spectrogram)
        now, target = gram(features), self.style_grams[index]
        zero = features.new_zeros(())
        if self.loss == "relative":
            style = style_loss(now, target)
            content = content_loss(spectrogram, self.content) if self.content_weight > 0 else zero
        elif self.loss == "article":  # G = F·Fᵀ / (filters · T); mean squared errors
            filters = features.shape[-2]
            style = (now / filters - target / filters).pow(2).mean()
            content = (features - self.content_features[index]).pow(2).mean() if self.content_features else zero
        else:  # "ulyanov": G = F·Fᵀ / T; summed squared errors
            style = (now - target).pow(2).sum()
            content = (features - self.content_features[index]).pow(2).sum() if self.content_features else zero
        return style, content

    def total(self, index: int, spectrogram: torch.Tensor) -> tuple[torch.Tensor, float, float]:
        style, content = self.terms(index, spectrogram)
        loss = self.style_weight * style + self.content_weight * content
        return loss, style.item(), content.item()


@dataclass
class Result:
    spectrogram: torch.Tensor
    steps: list[Step] = field(default_factory=list)
    interrupted: bool = False  # Ctrl-C or the callback stopped it
    out_of_time: bool = False  # the deadline stopped it

    @property
    def iterations(self) -> int:
        return len(self.steps)


Callback = Callable[[Step], bool | None]


def optimise(
    start: torch.Tensor,
    objective: Objective,
    iterations: int,
    learning_rate: float,
    method: str = "adam",
    callback: Callback | None = None,
    deadline: float | None = None,
    first_net: int = 0,
    upper: torch.Tensor | None = None,
) -> Result:
    """Run up to ``iterations`` steps from ``start``; returns the spectrogram reached.

    ``callback(step)`` returning ``False`` stops the run. ``deadline`` is a
    ``time.monotonic()`` instant after which no new step starts. ``first_net`` picks
    which pool network Adam starts its rotation at (streaming carries it across chunks).
    ``upper`` bounds the result from above (broadcast against it): Adam is projected
    under it after every step, L-BFGS (whose line search assumes no bound) at the end.
    """
    # contiguous: L-BFGS flattens the variable with view(-1), which a strided numpy-born tensor refuses
    spectrogram = start.detach().clone(memory_format=torch.contiguous_format).requires_grad_(True)
    result = Result(spectrogram=spectrogram)
    if iterations <= 0 or objective.style_weight == 0 and objective.content_weight == 0:
        result.spectrogram = _bounded(spectrogram.detach(), upper)
        return result
    began = time.monotonic()
    try:
        if method == "adam":
            _adam(spectrogram, objective, iterations, learning_rate, callback, deadline, first_net, began, result, upper)
        elif method == "lbfgs":
            _lbfgs(spectrogram, objective, iterations, learning_rate, callback, deadline, began, result)
        else:
            raise ValueError(f"optimizer must be 'adam' or 'lbfgs', got {method!r}")
    except KeyboardInterrupt:
        result.interrupted = True
    except _Stop:
        pass
    result.spectrogram = _bounded(spectrogram.detach(), upper)
    return result


def _bounded(spectrogram: torch.Tensor, upper: torch.Tensor | None) -> torch.Tensor:
    return spectrogram if upper is None else torch.minimum(spectrogram, upper)


class _Stop(Exception):
    """Raised inside L-BFGS's closure to end the run early (callback or deadline)."""


def _report(result: Result, callback: Callback | None, deadline: float | None, began: float,
            loss: float, style: float, content: float) -> bool:
    """Record one iteration; False when the callback or the deadline says stop."""
    step = Step(result.iterations + 1, loss, style, content, time.monotonic() - began)
    result.steps.append(step)
    if callback is not None and callback(step) is False:
        result.interrupted = True
        return False
    if deadline is not None and time.monotonic() >= deadline:
        result.out_of_time = True
        return False
    return True


def _adam(spectrogram: torch.Tensor, objective: Objective, iterations: int, learning_rate: float,
          callback: Callback | None, deadline: float | None, first_net: int, began: float, result: Result,
          upper: torch.Tensor | None) -> None:
    optimiser = Adam(lr=learning_rate)
    pool = len(objective.nets)
    for iteration in range(iterations):
        if deadline is not None and time.monotonic() >= deadline:
            result.out_of_time = True
            return
        spectrogram.grad = None
        loss, style, content = objective.total((first_net + iteration) % pool, spectrogram)
        loss.backward()
        optimiser.step(spectrogram, spectrogram.grad)
        if upper is not None:
            with torch.no_grad():
                spectrogram.copy_(torch.minimum(spectrogram, upper))
        if not _report(result, callback, deadline, began, float(loss.detach()), style, content):
            return


def _lbfgs(spectrogram: torch.Tensor, objective: Objective, iterations: int, learning_rate: float,
           callback: Callback | None, deadline: float | None, began: float, result: Result) -> None:
    """One L-BFGS run of up to ``iterations`` iterations, as Ulyanov ran SciPy's.

    Called an iteration at a time, torch's L-BFGS stops on its own tolerances after the
    first steps from a near-zero start and never moves again, so it runs as one call
    with the tolerances off; every evaluation is reported, and stops via ``_Stop``.
    """
    optimiser = torch.optim.LBFGS([spectrogram], lr=learning_rate, max_iter=iterations, max_eval=iterations * 5 // 4,
                                  tolerance_grad=0.0, tolerance_change=0.0, history_size=50,
                                  line_search_fn="strong_wolfe")
    pool = len(objective.nets)

    def closure() -> torch.Tensor:
        optimiser.zero_grad(set_to_none=True)
        total = spectrogram.new_zeros(())
        styles = contents = 0.0
        for index in range(pool):
            part, style_part, content_part = objective.total(index, spectrogram)
            total = total + part / pool
            styles += style_part / pool
            contents += content_part / pool
        total.backward()
        if not _report(result, callback, deadline, began, float(total.detach()), styles, contents):
            raise _Stop
        return total

    optimiser.step(closure)

"""Adam for the engine's few parameters, by hand.

Making a ``torch.optim`` optimiser the first time imports ``torch._dynamo``: over a second of
every server's and every ``stylize``'s start-up, before the first step. This is the arithmetic
of ``torch.optim.Adam``'s single-tensor path with its defaults (no weight decay, no amsgrad),
operation for operation, so a step moves a parameter bit for bit as torch's does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(eq=False)
class Adam:
    """Adam's settings and moments for one parameter (the moments start at its first step)."""

    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    steps: int = 0
    exp_avg: torch.Tensor | None = None
    exp_avg_sq: torch.Tensor | None = None

    @torch.no_grad()
    def step(self, param: torch.Tensor, grad: torch.Tensor) -> None:
        """Move ``param`` one step along ``grad``."""
        if self.exp_avg is None or self.exp_avg_sq is None:
            self.exp_avg = torch.zeros_like(param, memory_format=torch.preserve_format)
            self.exp_avg_sq = torch.zeros_like(param, memory_format=torch.preserve_format)
        beta1, beta2 = self.betas
        self.steps += 1
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size = self.lr / (1 - beta1**self.steps)
        denominator = (self.exp_avg_sq.sqrt() / (1 - beta2**self.steps) ** 0.5).add_(self.eps)
        param.addcdiv_(self.exp_avg, denominator, value=-step_size)

    def copy(self, device: torch.device | str) -> Adam:
        """The same settings and moments, as new tensors on ``device``."""
        moments = [None if moment is None else moment.to(device, copy=True) for moment in (self.exp_avg, self.exp_avg_sq)]
        return Adam(self.lr, self.betas, self.eps, self.steps, *moments)

    def take(self, other: Adam, device: torch.device | str) -> None:
        """Carry on from ``other`` (a copy stepped on another device), keeping the moments on ``device``."""
        moved = other.copy(device)
        self.steps, self.exp_avg, self.exp_avg_sq = moved.steps, moved.exp_avg, moved.exp_avg_sq

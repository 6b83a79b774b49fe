"""Gram matrices and the normalised style and content losses.

Normalisation, chosen so the weights are numbers around 1 whatever the clip length,
sample rate, filter count or loudness of the style:

- ``gram(F) = F Fᵀ / T``: the mean outer product of the feature frames, so a longer
  clip gives the same gram, not a larger one.
- ``style_loss = ‖G − Gₛ‖² / ‖Gₛ‖²``: the relative squared error of the gram; 0 is a
  perfect match and the content's own gram typically starts between 0.1 and 1.
- ``content_loss = ‖X − X_c‖² / ‖X_c‖²``: the relative squared error of the
  log-magnitude spectrogram against the content's (coloured) one; 0 at the start (the
  optimiser starts from the content) and 1 when it is gone. It is taken on the
  spectrogram rather than on features: it anchors the same thing at no network cost,
  which matters live, where every forward pass eats into a chunk's deadline.

So ``style_weight = content_weight = 1`` weighs one unit of relative gram error against
one unit of relative spectrogram error.
"""

from __future__ import annotations

import torch


def gram(features: torch.Tensor) -> torch.Tensor:
    """``(batch, filters, frames) -> (batch, filters, filters)``, divided by the frame count."""
    frames = features.shape[-1]
    return features @ features.transpose(-1, -2) / max(frames, 1)


def style_loss(gram_now: torch.Tensor, gram_target: torch.Tensor) -> torch.Tensor:
    """Relative squared gram error, averaged over the batch (audio channels)."""
    target = gram_target.expand_as(gram_now)
    error = (gram_now - target).pow(2).sum(dim=(-2, -1))
    return (error / target.pow(2).sum(dim=(-2, -1)).clamp_min(1e-12)).mean()


def content_loss(now: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Relative squared error of ``(batch, channels, frames)`` tensors, averaged over the batch."""
    error = (now - target).pow(2).sum(dim=(-2, -1))
    return (error / target.pow(2).sum(dim=(-2, -1)).clamp_min(1e-12)).mean()

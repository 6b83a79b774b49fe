"""The look-ahead limiter as the chain's last stage: every rendered sample within full scale."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..dsp.analysis import AnalysisConfig
from ..dsp.limiter import FULL_SCALE, LOOKAHEAD_SECONDS, RELEASE_DB_PER_SECOND, Limiter
from .base import Context, Stage


@dataclass(frozen=True)
class LimiterSettings:
    """The limiter's settings (british → american live peaked at 1.28 without it: docs/research-log.md)."""

    stage: ClassVar[str] = "limiter"
    full_scale: float = FULL_SCALE
    lookahead_seconds: float = LOOKAHEAD_SECONDS
    release_db_per_second: float = RELEASE_DB_PER_SECOND

    def build(self, analysis: AnalysisConfig, bands: int, chunk_frames: int, sample_rate: int) -> "FullScale":
        return FullScale(Limiter(sample_rate, self.full_scale, self.lookahead_seconds, self.release_db_per_second))


class FullScale(Stage):
    """Samples through the limiter, segment by segment (live: each chunk's finished samples, no added latency)."""

    name: ClassVar[str] = "limiter"
    place: ClassVar[str] = "audio"
    learns: ClassVar[bool] = False

    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter

    def reset(self) -> None:
        self.limiter.reset()

    def apply(self, data: np.ndarray, context: Context) -> np.ndarray:
        return self.limiter.process(data)

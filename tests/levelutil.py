"""How far an output's dB levels lie from a style's, for the level-matching tests.

    from levelutil import level_distance
"""

from __future__ import annotations

import numpy as np

from gramophone.stages.levels import LevelTable, to_db
from gramophone.engine.style import StyleTarget


def level_distance(logmag: np.ndarray, style: StyleTarget) -> float:
    """Mean over channels and percentiles of how far the first audio channel's dB levels lie from the style's."""
    share = np.linspace(0.02, 0.98, 49)
    ours = np.quantile(to_db(logmag[0]), share, axis=1).T  # (channels, percentiles)
    theirs = LevelTable(style.features["levels"]).level_at(np.broadcast_to(share, ours.shape))
    return float(np.mean(np.abs(ours - theirs)))

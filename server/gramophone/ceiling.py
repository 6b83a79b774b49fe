"""The style's range: the most each frequency channel of the output may reach.

Colouring and gram steps can push a channel far above anything the style ever plays
there: a note onset coloured from thin running statistics, or a content note the style
never holds. Offline, outputs peaked at 2–3× full scale on the benchmark's pairs
(docs/quality.md). The ceiling is the style's own loudest log1p magnitude in each
channel, widened to the channels within ``SPREAD_HZ`` so a note a little off the style's
pitches is not cut; the output is held under it.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import maximum_filter1d

SPREAD_HZ = 172.0  # ±8 channels at the default 21.5 Hz spacing; measured against ±4 and ±2 in docs/quality.md


def style_ceiling(peaks: np.ndarray, window_ms: float) -> np.ndarray:
    """Widen per-channel peaks ``(channels,)`` to the highest within ``SPREAD_HZ`` of each channel.

    ``window_ms`` sets the channel spacing (``1000 / window_ms`` Hz).
    """
    reach = int(round(SPREAD_HZ * window_ms / 1000))
    return maximum_filter1d(np.asarray(peaks, dtype=np.float32), size=2 * reach + 1, mode="nearest")


def ceiling_limit(content: np.ndarray, ceiling: np.ndarray, strength: float) -> np.ndarray:
    """The upper bound for an edit of ``content`` ``(..., channels, frames)`` at ``strength`` 0–1.

    At full strength the ceiling itself; at 0 nothing below the content, so the dry
    signal passes untouched; in between, a straight blend of the two.
    """
    top = ceiling[:, None].astype(np.float32)
    return (strength * top + (1 - strength) * np.maximum(top, content)).astype(np.float32)

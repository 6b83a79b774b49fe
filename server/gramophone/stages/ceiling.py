"""The style's range: the most each frequency channel, and each frame, of the output may reach.

Colouring and gram steps can push a channel far above anything the style ever plays
there: a note onset coloured from thin running statistics, or a content note the style
never holds. Offline, outputs peaked at 2–3× full scale on the benchmark's pairs
(docs/quality.md). The ceiling is the style's own loudest log1p magnitude in each
channel, widened to the channels within ``SPREAD_HZ`` so a note a little off the style's
pitches is not cut; the output is held under it. Held channel by channel, every channel
may still reach its ceiling in the same frame, which the style never does: a live
stream's opening second peaked at 1.9× full scale. So each frame's energy is held, too,
under the style's loudest frame (``hold_frames``).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import maximum_filter1d

SPREAD_HZ = 172.0  # ±8 channels at the default 21.5 Hz spacing; measured against ±4 and ±2 in docs/quality.md
ENERGY_FLOOR = 1e-12  # keeps the dB of a silent frame finite


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


def frame_energy_db(logmag: np.ndarray) -> np.ndarray:
    """Each frame's energy, ``Σ magnitude²`` over the channels of ``(..., channels, frames)``, in dB."""
    magnitude = np.expm1(np.maximum(logmag, 0.0))
    return 10 * np.log10(np.maximum(np.einsum("...ct,...ct->...t", magnitude, magnitude), ENERGY_FLOOR))


def hold_frames(logmag: np.ndarray, content: np.ndarray, loudest_db: np.ndarray | float, strength: float) -> np.ndarray:
    """``logmag`` with every frame louder than the style's loudest scaled down to it.

    A frame's magnitudes are scaled alike, so its spectral shape stays; frames under the
    bound are returned unchanged. At ``strength`` 0 the bound opens to the content's own
    frame energy (``content``, same shape), so the dry signal passes; in between, a
    straight blend in dB, as ``ceiling_limit`` blends.
    """
    energy = frame_energy_db(logmag)
    bound = strength * loudest_db + (1 - strength) * np.maximum(loudest_db, frame_energy_db(content))
    over = np.maximum(energy - bound, 0.0)[..., None, :]
    if not over.any():
        return logmag
    held = np.log1p(np.expm1(np.maximum(logmag, 0.0)) * 10 ** (-over / 20)).astype(np.float32)
    return np.where(over > 0, held, logmag)

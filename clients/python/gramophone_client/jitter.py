"""The live client's jitter buffer: replies played a fixed delay after capture, dry when missing."""

from __future__ import annotations

import threading

import numpy as np

#: Samples over which a jump between wet and dry audio is smoothed away.
DECLICK_SAMPLES = 64


class JitterBuffer:
    """Block ``seq - delay`` comes out when block ``seq`` is captured.

    It is the server's reply if it arrived in time, otherwise the dry input of that block (so a
    late or lost reply never becomes silence); switching between the two is declicked by letting
    the jump decay over ``DECLICK_SAMPLES``. Safe to feed from the receiving thread while the
    audio callback reads.
    """

    def __init__(self, delay_blocks: int, frames: int, channels: int) -> None:
        self.delay = delay_blocks
        self.frames = frames
        self.channels = channels
        self.wet_blocks = 0
        self.dry_blocks = 0
        self.late_replies = 0
        self._dry: dict[int, np.ndarray] = {}
        self._wet: dict[int, np.ndarray] = {}
        self._next_play = 0
        self._last_offset = np.zeros(channels, np.float32)
        self._last_wet: bool | None = None
        self._lock = threading.Lock()

    def add_reply(self, seq: int, block: np.ndarray) -> None:
        """A reply from the server; counted as late if its block has already been played."""
        with self._lock:
            if seq < self._next_play:
                self.late_replies += 1
            elif seq in self._dry and block.shape == (self.frames, self.channels):
                self._wet[seq] = block

    def cycle(self, seq: int, captured: np.ndarray) -> tuple[np.ndarray, bool]:
        """Store captured block ``seq`` and return the block to play now, and whether it is wet."""
        with self._lock:
            self._dry[seq] = np.array(captured, np.float32, copy=True)
            play = seq - self.delay
            if play < 0:
                return np.zeros((self.frames, self.channels), np.float32), False
            self._next_play = play + 1
            dry = self._dry.pop(play)
            wet = self._wet.pop(play, None)
            is_wet = wet is not None
            out = np.array(wet if is_wet else dry, np.float32, copy=True)
            if is_wet:
                self.wet_blocks += 1
            else:
                self.dry_blocks += 1
            if self._last_wet is not None and is_wet != self._last_wet:
                fade = np.linspace(0.0, 1.0, min(DECLICK_SAMPLES, self.frames), dtype=np.float32)[:, None]
                head = slice(0, len(fade))
                if is_wet:
                    out[head] = dry[head] + (out[head] - dry[head]) * fade
                else:
                    out[head] += self._last_offset[None, :] * (1.0 - fade)
            self._last_wet = is_wet
            self._last_offset = out[-1] - dry[-1]
            return out, is_wet

"""Stream a whole array through the server: as fast as it goes (render mode) or paced in real time (live)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .client import Client, blocks_of
from .errors import GramophoneError, NoReply

#: Seconds a render may wait for the next reply before giving up (a chunk can take long on a busy CPU).
STALL_SECONDS = 120.0

Progress = Callable[[int], None]


@dataclass(frozen=True)
class RenderReport:
    """How a file went: blocks streamed, replies that came too late or never, the server's latency."""

    blocks: int
    late: int
    lost: int
    latency_samples: int


def render(client: Client, audio: np.ndarray, sample_rate: int, block_size: int = 1024,
           progress: Progress | None = None) -> tuple[np.ndarray, RenderReport]:
    """Render mode: full quality, a bounded window of blocks in flight, then ``/flush``; output aligned."""
    audio = _frames(audio)
    session = client.connect(sample_rate, audio.shape[1], block_size)
    client.set_mode("render")
    blocks = list(blocks_of(audio, block_size))
    n = len(blocks)
    window = session.latency_blocks + 8  # block s comes back only once the latency after it has been sent
    out = np.zeros((n * block_size, audio.shape[1]), np.float32)
    received = 0

    def take(timeout: float) -> None:
        nonlocal received
        try:
            seq, block = client.receive_block(timeout=timeout)
        except NoReply:
            raise GramophoneError(
                f"the server stopped answering after {received} of {n} blocks"
                + ("" if client.tcp else "; over UDP a lost packet stalls a render, try --tcp")
            ) from None
        if 0 <= seq < n:
            out[seq * block_size:(seq + 1) * block_size] = block
            received += 1
            if progress:
                progress(1)

    for seq, block in enumerate(blocks):
        while seq - received >= window:
            take(STALL_SECONDS)
        client.send_block(seq, block)
    client.flush(timeout=STALL_SECONDS)
    while received < n:
        take(1.0)
    return out[:len(audio)], RenderReport(n, 0, 0, session.latency_samples)


def render_live(client: Client, audio: np.ndarray, sample_rate: int, block_size: int = 1024,
                jitter_blocks: int = 2, progress: Progress | None = None) -> tuple[np.ndarray, RenderReport]:
    """Live mode paced in real time; a reply later than a live player could use is replaced by dry audio."""
    audio = _frames(audio)
    session = client.connect(sample_rate, audio.shape[1], block_size)
    client.set_mode("live")
    blocks = list(blocks_of(audio, block_size))
    n = len(blocks)
    total = n + session.latency_blocks + 1
    period = block_size / sample_rate
    delay = session.latency_blocks + jitter_blocks
    arrivals: dict[int, tuple[float, np.ndarray]] = {}
    start = time.monotonic() + 0.05

    def pace() -> None:
        silence = np.zeros_like(blocks[0])
        for seq in range(total):
            time.sleep(max(0.0, start + seq * period - time.monotonic()))
            client.send_block(seq, blocks[seq] if seq < n else silence)

    sender = threading.Thread(target=pace, name="gramophone-pace", daemon=True)
    sender.start()
    end = start + (total + delay + 1) * period
    while time.monotonic() < end and len(arrivals) < n:
        try:
            seq, block = client.receive_block(timeout=0.1)
        except NoReply:
            continue
        if seq < n and seq not in arrivals:
            arrivals[seq] = (time.monotonic(), block)
            if progress:
                progress(1)
    sender.join()
    out = np.concatenate(blocks)
    late = 0
    for seq, (arrived, block) in arrivals.items():
        if arrived > start + (seq + delay + 1) * period:
            late += 1
        else:
            out[seq * block_size:(seq + 1) * block_size] = block
    lost = n - len(arrivals)
    if progress and lost:
        progress(lost)
    return out[:len(audio)], RenderReport(n, late, lost, session.latency_samples)


def _frames(audio: np.ndarray) -> np.ndarray:
    """``audio`` as float32 (frames, channels) with one or two channels."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[:, None]
    if audio.shape[1] not in (1, 2) or len(audio) == 0:
        raise GramophoneError(f"expected mono or stereo audio, got shape {audio.shape}")
    return audio

"""Cross-session batching on a real server: sessions streaming at once share steps (``/status``'s
sessions per step), every block of each comes back once, aligned with its input and within the
reported latency; ``--device auto`` picks the CPU here, and ``--device cuda`` without CUDA is refused."""

from __future__ import annotations

import subprocess
import threading
import time

import numpy as np
import pytest
import torch

from serverutil import SERVER_COMMAND, RealTimeSender, running_server

pytestmark = pytest.mark.slow

RATE, BLOCK = 48000, 512
OVERLOAD_SLACK = 0.010  # as tests/test_live_promise.py allows when the machine is loaded
STATUS = ("sessions", "rtf_avg", "rtf_peak", "iterations_avg", "latency_ms", "late_chunks", "lost_blocks",
          "queued_blocks", "late_blocks", "sessions_per_step")


def saw(seconds: float, pitch: float) -> np.ndarray:
    """A saw whose pitch glides around ``pitch`` (so no shift by whole periods matches it), under a tremolo."""
    t = np.arange(int(seconds * RATE)) / RATE
    phase = pitch * (t - 0.3 * np.cos(2 * np.pi * 0.7 * t) / (2 * np.pi * 0.7))
    audio = 0.3 * (1 + 0.5 * np.sin(2 * np.pi * 1.3 * t)) * (phase % 1.0 * 2 - 1)
    return audio[: audio.size - audio.size % BLOCK].astype(np.float32)


def best_lag(output: np.ndarray, signal: np.ndarray, most: int = 2048) -> int:
    """The shift of ``output`` against ``signal`` (in samples) where they correlate best."""
    lags = range(-most, most + 1, 1)
    middle = slice(most, signal.size - most)
    scores = [float(np.dot(output[most + lag:signal.size - most + lag], signal[middle])) for lag in lags]
    return lags[int(np.argmax(scores))]


def test_sessions_streaming_at_once_share_steps_and_stay_aligned_and_on_time(tmp_path):
    """The server as it ships (``--device auto``: the CPU on a machine without CUDA)."""
    with running_server(tmp_path, "--device", "auto", "--max-sessions", "4") as srv:
        senders = [RealTimeSender(srv.host, srv.port, RATE, BLOCK) for _ in range(3)]
        latencies = [s.request("/connect", RATE, 1, BLOCK, reply="/connected").params[1] / RATE for s in senders]
        signals = [saw(3.0, pitch) for pitch in (110, 165, 220)]
        threads = [threading.Thread(target=s.send, args=(0, list(x.reshape(-1, BLOCK)))) for s, x in zip(senders, signals)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        time.sleep(max(latencies) + 0.3)
        statuses = [dict(zip(STATUS, s.request("/status", reply="/status/reply").params)) for s in senders]
        for sender in senders:
            sender.request("/disconnect", reply="/done")
            sender.close()
        log = srv.log_text()
    assert f"live steps: batched across sessions on {'cuda' if torch.cuda.is_available() else 'cpu'}" in log
    assert max(status["sessions_per_step"] for status in statuses) > 1.0, statuses
    for sender, latency, signal, status in zip(senders, latencies, signals, statuses):
        delays = sender.delays()
        blocks = signal.size // BLOCK
        assert sorted(delays) == list(range(blocks)) and sender.repeats == 0
        assert max(delays.values()) <= latency + OVERLOAD_SLACK, f"{max(delays.values()):.3f} s > {latency:.3f} s"
        assert status["iterations_avg"] > 0, status
        output = np.concatenate([sender.samples[seq] for seq in range(blocks)])
        assert best_lag(output, signal) == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_is_refused_in_one_line(tmp_path):
    result = subprocess.run([*SERVER_COMMAND, "--port", "0", "--device", "cuda", "--cache-dir", str(tmp_path / "c"),
                             "--styles-dir", str(tmp_path / "s")], capture_output=True, text=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "--device cuda: no CUDA device" in lines[0] and "Traceback" not in result.stderr


def test_batch_off_steps_each_session_alone(tmp_path):
    with running_server(tmp_path, "--batch", "off") as srv:
        sender = RealTimeSender(srv.host, srv.port, RATE, BLOCK)
        sender.request("/connect", RATE, 1, BLOCK, reply="/connected")
        sender.send(0, list(saw(1.0, 220).reshape(-1, BLOCK)))
        time.sleep(0.5)
        status = dict(zip(STATUS, sender.request("/status", reply="/status/reply").params))
        sender.request("/disconnect", reply="/done")
        sender.close()
        assert "live steps: each session alone, on the CPU" in srv.log_text()
    assert status["sessions_per_step"] == 0.0 and status["iterations_avg"] > 0

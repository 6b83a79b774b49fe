"""Step benchmark: one live optimiser step, alone and batched across 1, 2, 4 and 8 sessions.

A live step (``engine/batch.py``) runs every due session's 0.75 s window through one pool
network of the default preset, takes the gram error's gradient, backpropagates it and moves
each session's correction by Adam. This prints its time, the FLOPs it executes (counted by
torch's ``FlopCounterMode`` on one step, never on a timed one), the achieved GFLOP/s, and that
rate as a share of an sgemm peak measured in the same run, before and after. The first row is
a session stepping alone the way ``StreamProcessor._learn`` does without a stepper. Usage::

    python -m bench.step                 # one torch thread, as the server's stepper runs
    python -m bench.step --threads 2 --markdown
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from gramophone.engine.batch import StepJob, batched_step
from gramophone.engine.network import get_pool
from gramophone.engine.objective import content_loss, gram, style_loss
from gramophone.engine.presets import get_preset
from gramophone.engine.stream import StreamConfig

from .common import Column, add_threads_option, apply_threads, matmul_peak_gflops, table

RATE = 48_000
BATCHES = (1, 2, 4, 8)


def jobs_for(sessions: int, nets, grams: torch.Tensor, channels: int, frames: int) -> list[StepJob]:
    """``sessions`` mono windows of log-magnitudes, each with its own correction and Adam."""
    generator = torch.Generator().manual_seed(sessions)
    jobs = []
    for _ in range(sessions):
        window = 3 * torch.rand(1, channels, frames, generator=generator)
        correction = torch.zeros(1, channels, 1, requires_grad=True)
        jobs.append(StepJob(window, window + 0.5, correction, torch.optim.Adam([correction], lr=0.02), grams, nets,
                            1.0, 0.3, 1, math.inf))
    return jobs


def step_alone(job: StepJob, index: int) -> None:
    """One session's step as ``StreamProcessor._learn`` takes it without a stepper."""
    corrected = torch.minimum(job.window + job.correction, job.limits)
    loss = style_loss(gram(job.nets[index](corrected)), job.grams[index]) + 0.3 * content_loss(corrected, job.window)
    job.adam.zero_grad(set_to_none=True)
    loss.backward()
    job.adam.step()


def timed(step, repeats: int) -> tuple[float, float]:
    """FLOPs of one call of ``step(index)``, and its median seconds over ``repeats`` calls (after a warm-up)."""
    for index in range(8):
        step(index)
    with FlopCounterMode(display=False) as counter:
        step(0)
    times = []
    for index in range(repeats):
        began = time.perf_counter()
        step(index)
        times.append(time.perf_counter() - began)
    return float(counter.get_total_flops()), sorted(times)[len(times) // 2]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=48, help="timed steps per row (default 48)")
    parser.add_argument("--markdown", action="store_true")
    add_threads_option(parser)
    args = parser.parse_args(argv)
    apply_threads(args.threads or 1)
    preset = get_preset("default")
    analysis = preset.analysis
    nets = get_pool(analysis.channels, preset.network, analysis.max_freq_hz)
    frames = max(preset.network.receptive_field,
                 round(StreamConfig().window_seconds * RATE / analysis.hop_length(RATE)))
    generator = torch.Generator().manual_seed(0)
    clip = 3 * torch.rand(1, analysis.channels, 400, generator=generator)
    grams = torch.stack([gram(net(clip))[0] for net in nets]).detach()
    peak = matmul_peak_gflops()
    print(f"sgemm peak at the start: {peak:.0f} GFLOP/s ({torch.get_num_threads()} torch thread(s))", flush=True)
    rows = []
    alone = jobs_for(1, nets, grams, analysis.channels, frames)[0]
    flops, seconds = timed(lambda index: step_alone(alone, index % len(nets)), args.repeats)
    rows.append({"sessions": "1, alone", "flops": flops, "seconds": seconds, "per_session": seconds})
    for sessions in BATCHES:
        jobs = jobs_for(sessions, nets, grams, analysis.channels, frames)
        window, limits = torch.cat([job.window for job in jobs]), torch.cat([job.limits for job in jobs])
        flops, seconds = timed(lambda index: batched_step(jobs, nets[index % len(nets)], index % len(nets),
                                                          window, limits), args.repeats)
        rows.append({"sessions": str(sessions), "flops": flops, "seconds": seconds, "per_session": seconds / sessions})
    peak_after = matmul_peak_gflops()
    for row in rows:
        row.update(ms=1000 * row["seconds"], per_session_ms=1000 * row["per_session"], mflop=row["flops"] / 1e6,
                   gflops=row["flops"] / row["seconds"] / 1e9)
        row["share"] = row["gflops"] / max(peak, peak_after)
    print(table(rows, [Column("sessions", "sessions per step"), Column("ms", "ms per step", "{:.2f}"),
                       Column("per_session_ms", "ms per session", "{:.2f}"), Column("mflop", "MFLOP", "{:.0f}"),
                       Column("gflops", "GFLOP/s", "{:.1f}"), Column("share", "of peak", "{:.0%}")], args.markdown))
    print(f"\nwindow of {frames} frames × {analysis.channels} channels through a {preset.network.filters}-filter, "
          f"kernel-{preset.network.kernel} network over {preset.network.input_bands} mel bands; sgemm peak "
          f"{peak:.0f} GFLOP/s at the start, {peak_after:.0f} at the end (the share is of the higher; a drop means "
          "other load on the machine)")


if __name__ == "__main__":
    main()

"""Streaming benchmark: live mode per sample rate and chunk size, against offline quality.

Blocks are fed as if they arrived in real time (``bench.common.render_stream``: idle time
skipped, late blocks keep their arrival time; ``--realtime`` sleeps instead). Per rate ×
chunk, averaged over the pairs: RTF (time inside ``push`` ÷ audio length, and the
processor's peak per chunk), optimiser steps per chunk reached under the deadline, the
reported and the measured worst latency, late chunks, and the held-out measures with the
quality ratio = streaming held-out gain ÷ offline default held-out gain on the same clip.
Usage::

    python -m bench.stream                 # 22.05/44.1/48 kHz × chunks 4/8/16/32, speech pairs, 10 s
    python -m bench.stream --quick         # 48 kHz, chunks 8 and 16, one pair
    python -m bench.stream --rates 48000 --chunks 8 --pairs male-female --profile   # where a chunk's time goes
    python -m bench.stream --latency low --rates 48000 --chunks 2 --block-size 256  # serve --latency low
"""

from __future__ import annotations

import argparse

import numpy as np

from gramophone.engine.latency import LATENCIES
from gramophone.engine.presets import Preset, get_preset

from .common import (Column, add_batch_option, add_threads_option, apply_threads, measure, render_offline,
                     render_stream, table)
from .pairs import PAIR_NAMES, SPEECH_PAIRS, Pair, make_pairs

COLUMNS = [
    Column("rate", "rate Hz"),
    Column("chunk", "chunk frames"),
    Column("latency_ms", "latency ms", "{:.0f}"),
    Column("measured_ms", "measured ms", "{:.0f}"),
    Column("rtf", "RTF", "{:.2f}"),
    Column("rtf_peak", "peak chunk RTF", "{:.2f}"),
    Column("iterations", "steps/chunk", "{:.1f}"),
    Column("late", "late chunks", "{:.0%}"),
    Column("held_out_gain", "held-out gain", "{:.2f}"),
    Column("ratio", "quality ratio", "{:.2f}"),
    Column("mfcc_gain", "MFCC gain", "{:.2f}"),
    Column("stoi", "STOI", "{:.2f}"),
]
GOALS = "goals at 48 kHz (default live settings): RTF ≤ 0.5, latency ≤ 250 ms, quality ratio ≥ 0.8, STOI ≥ 0.85; " \
        "low-latency setting ≤ 100 ms"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", nargs="+", type=int, default=[22050, 44100, 48000])
    parser.add_argument("--chunks", nargs="+", type=int, default=[4, 8, 16, 32], help="chunk sizes in STFT frames")
    parser.add_argument("--pairs", nargs="+", choices=PAIR_NAMES, default=list(SPEECH_PAIRS))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--block-size", type=int, default=512)
    parser.add_argument("--preset", help="default: the --latency setting's")
    parser.add_argument("--budget", type=float, help="the live budget parameter (default: the parameter's default)")
    parser.add_argument("--realtime", action="store_true", help="pace blocks with real sleeps")
    parser.add_argument("--latency", choices=LATENCIES, default="default",
                        help="a serve --latency setting's preset, training window, step schedule and budget "
                             "(--preset, --chunks and --budget still apply)")
    add_batch_option(parser)
    parser.add_argument("--quick", action="store_true", help="48 kHz, chunks 8 and 16, one pair")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--profile", action="store_true",
                        help="instead, stream the first pair at the first rate and chunk under torch.profiler")
    add_threads_option(parser)
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    if args.quick:
        args.rates, args.chunks, args.pairs = [48000], [8, 16], ["male-female"]
    latency = LATENCIES[args.latency]
    preset = get_preset(latency.preset if args.preset is None else args.preset)
    pairs = make_pairs(args.pairs, args.seconds)
    settings = {} if args.budget is None else {"budget": args.budget}
    if args.profile:
        profile_stream(pairs[0], preset, args.rates[0], args.chunks[0], args.block_size, settings)
        return
    offline = {pair.name: measure(pair, render_offline(pair, preset)).held_out_gain for pair in pairs}
    print("offline held-out gain: " + ", ".join(f"{name} {gain:.2f}" for name, gain in offline.items()), flush=True)
    rows = []
    for rate in args.rates:
        for chunk in args.chunks:
            runs = []
            for pair in pairs:
                render = render_stream(pair, preset, rate, chunk, block_size=args.block_size, settings=settings,
                                       realtime=args.realtime, latency=latency, batched=args.batch == "on")
                report = measure(pair, render)
                runs.append({
                    "latency_ms": render.latency_ms,
                    "measured_ms": render.measured_latency_ms,
                    "rtf": render.rtf(args.seconds),
                    "rtf_peak": render.rtf_peak,
                    "iterations": render.iterations,
                    "late": render.late_chunks / max(render.chunks, 1),
                    "held_out_gain": report.held_out_gain,
                    "ratio": report.held_out_gain / offline[pair.name] if offline[pair.name] > 0 else None,
                    "mfcc_gain": report.mfcc_gain,
                    "stoi": report.stoi,
                })
            row = {"rate": rate, "chunk": chunk}
            for key in runs[0]:
                values = [run[key] for run in runs if run[key] is not None]
                row[key] = (max(values) if key in ("measured_ms", "rtf_peak") else float(np.mean(values))) if values else None
            rows.append(row)
            print(f"{rate} Hz, chunk {chunk}: latency {row['latency_ms']:.0f} ms, RTF {row['rtf']:.2f}, "
                  f"held-out gain {row['held_out_gain']:.2f}", flush=True)
    print(table(rows, COLUMNS, args.markdown))
    print(f"\n{args.block_size}-sample blocks, {args.seconds:g} s clips, mean over {len(pairs)} pair(s) "
          f"(worst measured latency and peak RTF). {GOALS}")


def profile_stream(pair: Pair, preset: Preset, rate: int, chunk: int, block_size: int, settings: dict) -> None:
    """Print torch.profiler's operator table for one live stream (prepare's warm-up included)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        render = render_stream(pair, preset, rate, chunk, block_size=block_size, settings=settings)
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    print(f"{pair.name}, {rate} Hz, chunk {chunk}: {render.iterations:.1f} steps per chunk, "
          f"{render.iterations * render.chunks:.0f} steps in all")


if __name__ == "__main__":
    main()

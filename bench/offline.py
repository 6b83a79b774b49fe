"""Offline benchmark: speed, machine use, memory and held-out quality per preset and pair.

Each preset × pair runs in its own subprocess so its peak memory (``ru_maxrss``) is its
own; the matmul peak is measured in this process first, in the same run. Usage::

    python -m bench.offline                      # default and ulyanov on every pair
    python -m bench.offline --quick              # default on one speech pair
    python -m bench.offline --presets article --iterations 200 --markdown

``article`` runs 10 000 steps of a 4096 × 4096 two-layer net (hours on 2 cores): cap it
with ``--iterations``; a capped run is marked ``*`` in the table.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import soundfile as sf

from gramophone.engine.presets import PRESETS, get_preset

from .common import (OUT, Column, add_threads_option, apply_threads, matmul_peak_gflops, measure, optimiser_flops,
                     render_offline, style_target, table)
from .pairs import PAIR_NAMES, make_pair

REPO = Path(__file__).resolve().parent.parent

COLUMNS = [
    Column("pair", "pair"),
    Column("preset", "preset"),
    Column("iterations", "iters", "{:.0f}"),
    Column("seconds", "time s", "{:.1f}"),
    Column("rtf", "RTF", "{:.2f}"),
    Column("iterations_per_second", "it/s", "{:.1f}"),
    Column("gflops", "GFLOP/s", "{:.0f}"),
    Column("peak_share", "% peak", "{:.0%}"),
    Column("peak_mb", "peak MB", "{:.0f}"),
    Column("held_out_dry", "held-out dry", "{:.3f}"),
    Column("held_out_wet", "held-out wet", "{:.3f}"),
    Column("held_out_gain", "held-out gain", "{:.2f}"),
    Column("mfcc_gain", "MFCC gain", "{:.2f}"),
    Column("stoi", "STOI", "{:.2f}"),
    Column("own_gain", "own-net gain", "{:.2f}"),
]


def max_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(job: dict) -> dict:
    """One preset on one pair, in a fresh process: time, FLOPs, memory, measures."""
    apply_threads(job["threads"])
    pair = make_pair(job["pair"], job["seconds"])
    preset = get_preset(job["preset"]).with_overrides(iterations=job["iterations"])
    style_target(pair, preset)  # learning the style is not part of the optimiser's time
    baseline_mb = max_rss_mb()
    render = render_offline(pair, preset)
    peak_mb = max_rss_mb()
    folder = OUT / "offline"
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / f"{pair.name}-{job['seconds']:g}s-{preset.name}.wav", render.audio, render.sample_rate)
    flops = optimiser_flops(pair, preset, int(render.iterations))
    report = measure(pair, render, preset)
    duration = sf.info(pair.content).duration
    return {
        "pair": pair.name,
        "preset": preset.name + ("*" if job["iterations"] is not None else ""),
        "iterations": render.iterations,
        "seconds": render.seconds,
        "rtf": render.rtf(duration),
        "iterations_per_second": render.iterations / render.seconds if render.seconds else None,
        "gflops": flops / render.seconds / 1e9 if render.seconds else None,
        "peak_mb": peak_mb,
        "baseline_mb": baseline_mb,
        **report.as_dict(),
    }


def run_job(job: dict) -> dict:
    """``worker(job)`` in a subprocess; its last stdout line is the JSON result."""
    done = subprocess.run([sys.executable, "-m", "bench.offline", "--worker", json.dumps(job)], cwd=REPO,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{job['preset']} on {job['pair']} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", choices=list(PRESETS), default=["default", "ulyanov"])
    parser.add_argument("--pairs", nargs="+", choices=PAIR_NAMES, default=["male-female", "female-male", "pluck-organ"])
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length")
    parser.add_argument("--iterations", type=int, help="override every preset's iteration count")
    parser.add_argument("--quick", action="store_true", help="the default preset on one speech pair")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table for the README")
    add_threads_option(parser)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.quick:
        args.presets, args.pairs = ["default"], ["male-female"]
    apply_threads(args.threads)
    peak = matmul_peak_gflops()
    print(f"sgemm peak at the start: {peak:.0f} GFLOP/s", flush=True)
    rows = []
    for preset in args.presets:
        for pair in args.pairs:
            row = run_job({"preset": preset, "pair": pair, "seconds": args.seconds, "iterations": args.iterations,
                           "threads": args.threads})
            row["peak_share"] = row["gflops"] / peak if row["gflops"] else None
            rows.append(row)
            print(f"{row['preset']} on {row['pair']}: {row['seconds']:.1f} s, held-out gain {row['held_out_gain']:.2f}",
                  flush=True)
    peak_after = matmul_peak_gflops()
    print(table(rows, COLUMNS, markdown=args.markdown))
    print(f"\n{args.seconds:g} s clips; sgemm peak {peak:.0f} GFLOP/s at the start, {peak_after:.0f} at the end (a drop "
          "means other load on the machine: timings are then pessimistic); RTF = optimiser time ÷ clip length; "
          "gains = 1 − wet/dry distance to the style (held-out nets, MFCC, own nets); STOI against the content.")


if __name__ == "__main__":
    main()

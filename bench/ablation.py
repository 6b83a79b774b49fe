"""Offline ablations: the default preset with one stage or setting changed at a time, pair by pair.

Which stage costs what: held-out, MFCC and timbre gain for every pair, and for speech STOI and
ESTOI (pystoi's extended STOI, a second intelligibility measure no stage is tuned on). Means over
the pairs first, then each pair.

    python -m bench.ablation --pairs male-female female-male british-american german-french \\
        room-male-female noisy-female-male --variants default no-steps no-levels no-match_eq
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import replace

import numpy as np
from pystoi import stoi

from gramophone import metrics
from gramophone.engine.presets import Preset, get_preset

from .common import Column, add_threads_option, apply_threads, measure, render_offline, table
from .pairs import PAIR_NAMES, Pair, make_pairs


def _without(stage: str) -> Callable[[Preset], Preset]:
    def change(preset: Preset) -> Preset:
        if preset.stage(stage) is None:
            raise ValueError(f"the default preset has no {stage} stage")
        return replace(preset, stages=tuple(settings for settings in preset.stages if settings.stage != stage))
    return change


VARIANTS: dict[str, Callable[[Preset], Preset]] = {
    "default": lambda preset: preset,
    "no-steps": lambda preset: replace(preset, iterations=0),
    "no-levels": _without("levels"),
    "no-frame_hold": _without("frame_hold"),
    "no-match_eq": _without("match_eq"),
    "no-limiter": _without("limiter"),
    "no-ceiling": lambda preset: replace(preset, ceiling=None),
    "no-neighbours": lambda preset: preset.with_stage("colour", neighbours=0.0),
    "content-0.5": lambda preset: replace(preset, content_weight=0.5),
}
MEASURES = ("held_out", "mfcc", "timbre", "stoi", "estoi")


def extended_stoi(pair: Pair, audio: np.ndarray, sample_rate: int) -> float:
    """ESTOI of ``audio`` against the pair's content, both as ``gramophone.metrics`` prepares them."""
    content, _, rate = pair.load()
    clean, degraded = metrics.normalise(content, rate), metrics.normalise(audio, sample_rate)
    length = min(clean.size, degraded.size)
    return float(stoi(clean[:length], degraded[:length], metrics.EVAL_RATE, extended=True))


def run_variant(name: str, pairs: list[Pair]) -> list[dict]:
    """One row per pair for the variant ``name`` of the default preset."""
    preset = VARIANTS[name](get_preset("default"))
    rows = []
    for pair in pairs:
        render = render_offline(pair, preset)
        report = measure(pair, render)
        rows.append({"variant": name, "pair": pair.name, "held_out": report.held_out_gain, "mfcc": report.mfcc_gain,
                     "timbre": report.timbre_gain, "stoi": report.stoi,
                     "estoi": extended_stoi(pair, render.audio, render.sample_rate) if pair.speech else None})
    return rows


def mean_row(rows: list[dict]) -> dict:
    """The means over pairs (STOI and ESTOI over the speech pairs)."""
    mean = {"variant": rows[0]["variant"], "pair": "mean"}
    for key in MEASURES:
        values = [row[key] for row in rows if row[key] is not None]
        mean[key] = float(np.mean(values)) if values else None
    return mean


COLUMNS = [Column("variant", "variant"), Column("pair", "pair"),
           *(Column(key, key.replace("_", "-"), "{:.3f}") for key in MEASURES)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", choices=PAIR_NAMES, default=list(PAIR_NAMES))
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["default", "no-steps"])
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length")
    parser.add_argument("--markdown", action="store_true")
    add_threads_option(parser)
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    pairs = make_pairs(args.pairs, args.seconds)
    rows = []
    for name in args.variants:
        per_pair = run_variant(name, pairs)
        rows += [mean_row(per_pair), *per_pair]
    print(table(rows, COLUMNS, args.markdown))


if __name__ == "__main__":
    main()

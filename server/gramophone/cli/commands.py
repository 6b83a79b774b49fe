"""What the offline subcommands do: ``stylize`` and ``style learn|list|show``."""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..audio import AudioError, load_audio, save_audio, validate_audio
from ..engine.cache import StyleCache
from ..live.library import BUILTIN_DIR, BUILTIN_SUFFIXES
from ..engine.optimize import Step
from ..engine.presets import Preset, get_preset
from ..engine.style import StyleTarget, mix_targets
from ..engine.offline import stylize


def resolve_device(name: str) -> str:
    """``auto`` picks CUDA when present; asking for CUDA without it is a one-line error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device on this machine; use --device cpu")
    return name


def stylize_preset(args: argparse.Namespace) -> Preset:
    preset = get_preset(args.preset)
    network = preset.network if args.seed == preset.network.seed else dataclasses.replace(preset.network, seed=args.seed)
    return preset.with_overrides(
        style_weight=args.style_weight, content_weight=args.content_weight, iterations=args.iterations,
        learning_rate=args.lr, optimizer=args.optimizer, init=args.init, phase=args.phase, colour=args.colour,
        network=network, pitch=args.pitch, formant=args.formant, pitch_follow=args.pitch_follow,
        formant_follow=args.formant_follow,
    )


def load_styles(specs: list[str], preset: Preset, cache: StyleCache) -> tuple[StyleTarget, list[tuple[np.ndarray, int]]]:
    """Style files (learned through the cache) or names of learned styles; several are mixed equally.

    Returns the target and the style audio (for the report and the plot; empty for names).
    """
    targets, clips = [], []
    for spec in specs:
        path = Path(spec)
        clip = path if path.exists() or path.suffix else builtin_style_path(spec)
        if clip is not None:
            audio, sample_rate = load_audio(clip)
            clips.append((audio, sample_rate))
            targets.append(cache.learn([(audio, sample_rate)], preset, name=clip.stem))
            continue
        try:
            target = cache.load_named(spec)
        except KeyError:
            raise AudioError(f"{spec}: no such file, learned style or built-in style "
                             f"({', '.join(builtin_style_names())}); check the name") from None
        if not target.compatible_with(preset):
            raise ValueError(f"style {spec!r} was learned with other settings than preset {preset.name!r}; learn it again")
        targets.append(target)
    target = targets[0] if len(targets) == 1 else mix_targets([(t, 1.0) for t in targets])
    return target, clips


def builtin_style_names() -> list[str]:
    return sorted(path.stem for path in BUILTIN_DIR.iterdir() if path.suffix.lower() in BUILTIN_SUFFIXES)


def builtin_style_path(name: str) -> Path | None:
    """The clip of the built-in style ``name`` (shipped in ``gramophone/data/styles``), if there is one."""
    for suffix in BUILTIN_SUFFIXES:
        path = BUILTIN_DIR / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def check_output(path: Path) -> None:
    check_output_folder(path)
    if path.suffix.lower() not in (".wav", ".flac"):
        raise ValueError(f"{path}: write .wav or .flac")


def run_stylize(args: argparse.Namespace) -> int:
    check_output(args.output)
    if args.plot is not None:
        check_output_folder(args.plot)
    preset = stylize_preset(args)
    device = resolve_device(args.device)
    content, sample_rate = load_audio(args.content, sample_rate=args.sample_rate)
    # Bad content must fail before the progress bar draws, so the error stays one line.
    content = validate_audio(content, str(args.content), min_samples=preset.analysis.n_fft(sample_rate))
    cache = StyleCache(args.cache_dir)
    target, style_clips = load_styles(args.styles, preset, cache)
    bar = tqdm(total=preset.iterations, disable=args.quiet, unit="it", desc="stylize", file=sys.stderr)
    losses: list[Step] = []

    def progress(step: Step) -> None:
        losses.append(step)
        bar.set_postfix(style=f"{step.style:.4f}", content=f"{step.content:.4f}", refresh=False)
        bar.update(1)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = stylize(content, sample_rate, target, preset, seed=args.seed, callback=progress, device=device)
    finally:
        signal.signal(signal.SIGINT, previous)
        bar.close()
    if result.interrupted:
        print(f"gramophone: stopped after {result.optimisation.iterations} iterations; writing the result so far",
              file=sys.stderr)
    save_audio(args.output, result.audio, result.sample_rate, bits=args.bits)
    seconds = content.shape[1] / sample_rate
    print(f"wrote {args.output} ({seconds:.1f} s at {result.sample_rate} Hz; optimiser {result.seconds:.1f} s, "
          f"RTF {result.seconds / seconds:.2f})", file=sys.stderr)
    if args.plot is not None:
        from .plot import plot_result
        plot_result(args.plot, result, style_clips, preset, losses)
    if args.report:
        print_report(content, sample_rate, result, style_clips)
    return 0


def check_output_folder(path: Path) -> None:
    if not path.parent.is_dir():
        raise ValueError(f"{path}: the folder {path.parent} does not exist; create it first")


def print_report(content: np.ndarray, content_rate: int, result, style_clips: list[tuple[np.ndarray, int]]) -> None:
    """Quality measures of the dry content and the wet output against the style, on rendered audio."""
    from ..metrics import measure
    if not style_clips:
        print("report: needs the style's audio (give style files, not learned names)", file=sys.stderr)
        return
    style, style_rate = style_clips[0]
    report = measure(content.mean(axis=0), style.mean(axis=0), result.audio.mean(axis=0), content_rate,
                     style_rate=style_rate, output_rate=result.sample_rate)
    print(f"{'measure':<26}{'dry':>10}{'wet':>10}{'gain':>10}")
    print(f"{'held-out gram distance':<26}{report.held_out_dry:>10.4f}{report.held_out_wet:>10.4f}"
          f"{report.held_out_gain:>10.3f}")
    print(f"{'MFCC statistics distance':<26}{report.mfcc_dry:>10.4f}{report.mfcc_wet:>10.4f}{report.mfcc_gain:>10.3f}")
    if report.stoi is not None:
        print(f"{'STOI (wet vs content)':<26}{1.0:>10.3f}{report.stoi:>10.3f}")


def run_style(args: argparse.Namespace) -> int:
    cache = StyleCache(args.cache_dir)
    if args.style_command == "learn":
        preset = get_preset(args.preset)
        clips = [load_audio(path) for path in args.files]
        began = time.monotonic()
        target = cache.learn(clips, preset, name=args.name)
        path = cache.save_named(target)
        print(f"learned style {args.name!r} from {len(clips)} clip(s) in {time.monotonic() - began:.2f} s → {path}")
    elif args.style_command == "list":
        for name in cache.names():
            print(describe(cache.load_named(name)))
    else:
        try:
            target = cache.load_named(args.name)
        except KeyError:
            raise ValueError(f"no learned style named {args.name!r}; see 'gramophone style list'") from None
        print(describe(target, detail=True))
    return 0


def describe(target: StyleTarget, detail: bool = False) -> str:
    analysis, network = target.key["analysis"], target.key["network"]
    line = (f"{target.name}: {target.frames} frames, {network['pool']} × {network['filters']} filters × kernel "
            f"{network['kernel']}, window {analysis['window_ms']:.1f} ms")
    if detail:
        line += f"\n  learned at {target.sample_rate} Hz\n  audio sha256 {target.source_hash}\n  settings {target.key}"
    return line

"""What the offline subcommands do: ``stylize`` and ``style learn|list|show``."""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from ..audio import AudioError, load_audio, save_audio, validate_audio
from ..builtin_styles import builtin_style_files
from ..engine.presets import Preset, get_preset

if TYPE_CHECKING:
    from ..engine.cache import StyleCache
    from ..engine.optimize import Step
    from ..engine.style import StyleTarget

# A clip given as a style, or the name of a learned one.
StyleSource = tuple[str, tuple[np.ndarray, int]] | str


def resolve_device(name: str) -> str:
    """``auto`` picks CUDA when present; asking for CUDA without it is a one-line error."""
    import torch

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


def read_styles(specs: list[str], preset: Preset) -> list[StyleSource]:
    """Each style spec as a checked clip (a file or a built-in style) or the name of a learned style."""
    builtin = builtin_style_files()
    sources: list[StyleSource] = []
    for spec in specs:
        path = Path(spec)
        clip = path if path.exists() or path.suffix else builtin.get(spec)
        if clip is None:
            sources.append(spec)
            continue
        audio, sample_rate = load_audio(clip)
        audio = validate_audio(audio, str(clip), min_samples=preset.analysis.n_fft(sample_rate))
        sources.append((clip.stem, (audio, sample_rate)))
    return sources


def learn_styles(sources: list[StyleSource], preset: Preset, cache: StyleCache) -> StyleTarget:
    """The target of the style clips (learned through the cache) and learned styles; several are mixed equally."""
    from ..engine.style import mix_targets

    targets = []
    for source in sources:
        if not isinstance(source, str):
            name, clip = source
            targets.append(cache.learn([clip], preset, name=name))
            continue
        try:
            target = cache.load_named(source)
        except KeyError:
            raise AudioError(f"{source}: no such file, learned style or built-in style "
                             f"({', '.join(builtin_style_files())}); check the name") from None
        if not target.compatible_with(preset):
            raise ValueError(f"style {source!r} was learned with other settings than preset {preset.name!r}; learn it again")
        targets.append(target)
    return targets[0] if len(targets) == 1 else mix_targets([(target, 1.0) for target in targets])


def check_output(path: Path) -> None:
    check_output_folder(path)
    if path.suffix.lower() not in (".wav", ".flac"):
        raise ValueError(f"{path}: write .wav or .flac")


def run_stylize(args: argparse.Namespace) -> int:
    check_output(args.output)
    if args.plot is not None:
        check_output_folder(args.plot)
    preset = stylize_preset(args)
    content, sample_rate = load_audio(args.content, sample_rate=args.sample_rate)
    # Bad content must fail before the progress bar draws, so the error stays one line.
    content = validate_audio(content, str(args.content), min_samples=preset.analysis.n_fft(sample_rate))
    sources = read_styles(args.styles, preset)
    # The engine (torch takes seconds to import) only now, so bad input is told at once.
    from ..engine.cache import StyleCache
    from ..engine.offline import stylize

    device = resolve_device(args.device)
    target = learn_styles(sources, preset, StyleCache(args.cache_dir))
    style_clips = [source[1] for source in sources if not isinstance(source, str)]
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
    from ..engine.cache import StyleCache

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
            print(describe(cache.meta_named(name)))
    else:
        try:
            cache.load_named(args.name)  # read whole: a damaged file is told here, not shown as if it were fine
            meta = cache.meta_named(args.name)
        except KeyError:
            raise ValueError(f"no learned style named {args.name!r}; see 'gramophone style list'") from None
        print(describe(meta, detail=True))
    return 0


def describe(meta: dict, detail: bool = False) -> str:
    """One line about a saved style from its metadata (``StyleCache.meta_named``); with ``detail``, its settings too."""
    analysis, network = meta["key"]["analysis"], meta["key"]["network"]
    line = (f"{meta['name']}: {meta['frames']} frames, {network['pool']} × {network['filters']} filters × kernel "
            f"{network['kernel']}, window {analysis['window_ms']:.1f} ms")
    if detail:
        line += f"\n  learned at {meta['sample_rate']} Hz\n  audio sha256 {meta['source_hash']}\n  settings {meta['key']}"
    return line

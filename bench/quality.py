"""Quality benchmark and listening report: every pair through every path, against the targets.

Paths: the dry content, the offline default preset (plus any ``--presets``), and the live
stream at 48 kHz at the default chunk, at the largest chunk that keeps the reported latency
within 300 ms and within 150 ms, and at ``serve --latency short`` (the ≤ 100 ms setting) and
``serve --latency low`` (the ≤ 50 ms setting). Live steps go through the batch stepper, as
``serve`` ships (``--batch off``: each stream steps alone). Each is scored with the
held-out measures of ``gramophone.metrics``; the targets table takes the mean over pairs
(STOI over the speech pairs) and the worst RTF. The independent judge (timbre on
the HTK front end, F0 and formants, which no stage is tuned on) is reported beside them,
and its table sets every live path against the offline default, measure by measure.
Usage::

    python -m bench.quality                       # all pairs, 10 s
    python -m bench.quality --quick --html report/report.html
    python -m bench.quality --markdown            # tables for docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from gramophone import metrics
from gramophone.engine.latency import LATENCIES
from gramophone.engine.presets import PRESETS, VOICE_CONTROLS, get_preset
from gramophone.engine.stream import StreamConfig
from gramophone.params import PARAMETERS

from .common import (Column, Render, add_batch_option, add_threads_option, apply_threads, chunk_for_latency, measure,
                     render_offline, render_stream, table)
from .pairs import PAIR_NAMES, Pair, make_pairs


@dataclass(frozen=True)
class PathSpec:
    """One way of producing the wet signal."""

    name: str
    kind: str  # "dry", "offline" or "live"
    preset: str = "default"
    max_latency_ms: float | None = None
    sample_rate: int = 48000
    chunk_frames: int | None = None  # live: this chunk, else the largest within max_latency_ms
    latency: str = "default"  # live: the serve --latency setting (its window, step schedule and budget)

    @property
    def key(self) -> str:
        """A short name for ``--live``: the chunk, the latency bound or the latency setting."""
        if self.latency != "default":
            return self.latency
        return f"{self.max_latency_ms:g}ms" if self.max_latency_ms is not None else "default-chunk"


@dataclass(frozen=True)
class Target:
    """Issue 6's bar for one path."""

    held_out_gain: float
    mfcc_gain: float
    stoi: float
    rtf: float


LISTENING_RMS = 0.05  # −26 dBFS: every clip in the listening report is played at this level
DRY = PathSpec("dry", "dry")
PATHS = (
    DRY,
    PathSpec("offline default", "offline"),
    PathSpec("live 48 kHz default chunk", "live", chunk_frames=StreamConfig().chunk_frames),
    PathSpec("live 48 kHz ≤300 ms", "live", max_latency_ms=300),
    PathSpec("live 48 kHz ≤150 ms", "live", max_latency_ms=150),
    PathSpec("live 48 kHz ≤100 ms (--latency short)", "live", chunk_frames=LATENCIES["short"].chunk_frames,
             latency="short"),
    PathSpec("live 48 kHz ≤50 ms (--latency low)", "live", preset=LATENCIES["low"].preset,
             chunk_frames=LATENCIES["low"].chunk_frames, latency="low"),
)
TARGETS = {
    "offline default": Target(0.55, 0.75, 0.85, 1.0),
    "live 48 kHz ≤300 ms": Target(0.40, 0.65, 0.85, 0.5),
    "live 48 kHz ≤150 ms": Target(0.30, 0.60, 0.85, 0.5),
}


@dataclass
class Outcome:
    """One pair through one path: the audio, its measures and its cost."""

    pair: Pair
    path: PathSpec
    audio: np.ndarray
    sample_rate: int
    report: metrics.QualityReport
    rtf: float | None = None
    detail: dict[str, float] = field(default_factory=dict)

    def row(self) -> dict:
        return {"pair": self.pair.name, "path": self.path.name, "rtf": self.rtf, **self.detail, **self.report.as_dict()}


def peak(audio: np.ndarray) -> float:
    """The highest sample magnitude: above 1, a 16-bit file or a sound card clips."""
    return float(np.max(np.abs(audio)))


def run_path(pair: Pair, path: PathSpec, iterations: int | None = None, realtime: bool = False,
             voice: dict[str, float] | None = None, batched: bool = True) -> Outcome:
    """``pair`` through ``path``; ``iterations`` overrides the preset's (offline) or per-chunk (live) steps,
    ``voice`` the pitch and formant controls (the voice stage's offline, the parameters live)."""
    voice = voice or {}
    content, _, rate = pair.load()
    duration = content.size / rate
    if path.kind == "dry":
        render = Render(content, rate, 0.0, 0)
        return Outcome(pair, path, content, rate, measure(pair, render, voice=True), detail={"peak": peak(content)})
    preset = get_preset(path.preset)
    if path.kind == "offline":
        render = render_offline(pair, preset.with_overrides(iterations=iterations, **voice))
        detail = {"iterations": render.iterations, "peak": peak(render.audio)}
    else:
        settings = ({} if iterations is None else {"iterations": iterations}) | voice
        chunk = path.chunk_frames or chunk_for_latency(pair, preset, path.sample_rate, path.max_latency_ms,
                                                       settings=settings)
        render = render_stream(pair, preset, path.sample_rate, chunk, settings=settings, realtime=realtime,
                               latency=LATENCIES[path.latency], batched=batched)
        detail = {"chunk_frames": chunk, "latency_ms": render.latency_ms, "iterations": render.iterations,
                  "late_chunks": render.late_chunks, "chunks": render.chunks, "peak": peak(render.audio)}
    return Outcome(pair, path, render.audio, render.sample_rate, measure(pair, render, preset, voice=True),
                   render.rtf(duration), detail)


def run(pairs: Sequence[Pair], paths: Sequence[PathSpec] = PATHS, iterations: int | None = None,
        realtime: bool = False, voice: dict[str, float] | None = None, batched: bool = True) -> list[Outcome]:
    """Every pair through every path, printing progress."""
    outcomes = []
    for pair in pairs:
        for path in paths:
            outcome = run_path(pair, path, iterations, realtime, voice, batched)
            print(f"{pair.name} / {path.name}: held-out gain {outcome.report.held_out_gain:.2f}, "
                  f"timbre gain {outcome.report.timbre_gain:.2f}", flush=True)
            outcomes.append(outcome)
    return outcomes


def target_rows(outcomes: Sequence[Outcome]) -> list[dict]:
    """Per path with a target: mean gains over pairs, mean STOI over speech pairs, worst RTF, pass/fail."""
    rows = []
    for name, target in TARGETS.items():
        mine = [outcome for outcome in outcomes if outcome.path.name == name]
        if not mine:
            continue
        speech = [outcome.report.stoi for outcome in mine if outcome.report.stoi is not None]
        row = {
            "path": name,
            "held_out_gain": float(np.mean([outcome.report.held_out_gain for outcome in mine])),
            "mfcc_gain": float(np.mean([outcome.report.mfcc_gain for outcome in mine])),
            "stoi": float(np.mean(speech)) if speech else None,
            "rtf": max(outcome.rtf for outcome in mine),
            "peak": max(outcome.detail["peak"] for outcome in mine),
        }
        checks = {  # measure: (passed, bound as printed)
            "held_out_gain": (row["held_out_gain"] >= target.held_out_gain, f"≥ {target.held_out_gain:g}"),
            "mfcc_gain": (row["mfcc_gain"] >= target.mfcc_gain, f"≥ {target.mfcc_gain:g}"),
            "stoi": (row["stoi"] is None or row["stoi"] >= target.stoi, f"≥ {target.stoi:g}"),
            "rtf": (row["rtf"] <= target.rtf, f"≤ {target.rtf:g}"),
        }
        for key, (passed, bound) in checks.items():
            row[f"{key}_verdict"] = f"{'pass' if passed else 'FAIL'} ({bound})"
        row["verdict"] = "pass" if all(passed for passed, _ in checks.values()) else "FAIL"
        rows.append(row)
    return rows


# The measures the independent judge sets live against offline: (report field, header).
JUDGED = (("held_out_gain", "held-out"), ("mfcc_gain", "MFCC"), ("timbre_gain", "timbre"), ("f0_gain", "F0"),
          ("formant_gain", "formant"))
REFERENCE_PATH = "offline default"
MIN_REFERENCE_GAIN = 0.05  # a ratio to an offline gain nearer 0 than this is noise


def _ratio(live: dict[str, float], offline: dict[str, float]) -> str | None:
    """Live ÷ offline, of the means over the pairs both measure, and the worst pair's; ``None`` near an offline 0."""
    shared = [pair for pair in live if pair in offline]
    offline_mean = float(np.mean([offline[pair] for pair in shared])) if shared else 0.0
    if offline_mean < MIN_REFERENCE_GAIN:
        return None
    ratio = np.mean([live[pair] for pair in shared]) / offline_mean
    worst, pair = min((live[pair] / offline[pair], pair) for pair in shared if offline[pair] >= MIN_REFERENCE_GAIN)
    return f"{ratio:.2f} (worst {worst:.2f}, {pair})"


def judge_rows(outcomes: Sequence[Outcome]) -> list[dict]:
    """Per non-dry path, each measure's mean over the pairs that have it; for live paths also live ÷ offline.

    Issue 19 asks live ≥ 0.8 of offline at the default live latency and ≥ 0.7 at ≤ 100 ms on
    every measure; "—" where the offline gain is under ``MIN_REFERENCE_GAIN``, so no ratio divides noise.
    """
    def gains(path: str, key: str) -> dict[str, float]:
        return {outcome.pair.name: getattr(outcome.report, key) for outcome in outcomes
                if outcome.path.name == path and getattr(outcome.report, key) is not None}

    rows = []
    for path in dict.fromkeys(outcome.path for outcome in outcomes if outcome.path.kind != "dry"):
        row: dict = {"path": path.name}
        for key, _ in JUDGED:
            mine = gains(path.name, key)
            row[key] = float(np.mean(list(mine.values()))) if mine else None
            if path.kind == "live":
                row[f"{key}_ratio"] = _ratio(mine, gains(REFERENCE_PATH, key))
        rows.append(row)
    return rows


JUDGE_COLUMNS = [Column("path", "path")] + [column for key, header in JUDGED for column in
                                            (Column(key, f"{header} gain", "{:.2f}", missing="n/a"),
                                             Column(f"{key}_ratio", "÷ offline"))]


def voice_notes(outcomes: Sequence[Outcome]) -> list[str]:
    """Why an F0 or formant gain reads n/a: one line per pair and reason, naming the paths unless it is all of them."""
    paths: dict[tuple[str, str], list[str]] = {}
    for outcome in outcomes:
        if outcome.report.voice_note:
            paths.setdefault((outcome.pair.name, outcome.report.voice_note), []).append(outcome.path.name)
    lines = []
    for (pair, note), names in paths.items():
        every = len(names) == sum(outcome.pair.name == pair for outcome in outcomes)
        lines.append(f"{pair}{'' if every else ' / ' + ', '.join(names)}: {note}")
    return lines


TARGET_COLUMNS = [
    Column("path", "path"),
    Column("held_out_gain", "held-out gain", "{:.2f}"),
    Column("held_out_gain_verdict", ""),
    Column("mfcc_gain", "MFCC gain", "{:.2f}"),
    Column("mfcc_gain_verdict", ""),
    Column("stoi", "STOI", "{:.2f}"),
    Column("stoi_verdict", ""),
    Column("rtf", "worst RTF", "{:.2f}"),
    Column("rtf_verdict", ""),
    Column("verdict", "all"),
    Column("peak", "highest peak", "{:.2f}"),
]
PAIR_COLUMNS = [
    Column("pair", "pair"),
    Column("path", "path"),
    Column("held_out_gain", "held-out gain", "{:.2f}"),
    Column("mfcc_gain", "MFCC gain", "{:.2f}"),
    Column("stoi", "STOI", "{:.2f}"),
    Column("own_gain", "own-net gain", "{:.2f}"),
    Column("timbre_gain", "timbre gain", "{:.2f}"),
    Column("f0_gain", "F0 gain", "{:.2f}", missing="n/a"),
    Column("formant_gain", "formant gain", "{:.2f}", missing="n/a"),
    Column("voiced_output", "voiced", "{:.2f}"),
    Column("rtf", "RTF", "{:.2f}"),
    Column("iterations", "iters", "{:.1f}"),
    Column("chunk_frames", "chunk", "{:.0f}"),
    Column("latency_ms", "latency ms", "{:.0f}"),
    Column("late_chunks", "late", "{:.0f}"),
    Column("peak", "peak", "{:.2f}"),
]


def spectrogram_png(audio: np.ndarray, sample_rate: int, path: Path, title: str) -> None:
    """The evaluation spectrogram (dB, log frequency) of a clip, as a small PNG."""
    import librosa.display
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mono = metrics.normalise(audio, sample_rate)
    decibels = librosa.amplitude_to_db(np.expm1(metrics.log_spectrogram(mono)), ref=np.max, top_db=80)
    figure, axes = plt.subplots(figsize=(6, 2.4), dpi=80)
    librosa.display.specshow(decibels, sr=metrics.EVAL_RATE, hop_length=metrics.HOP, x_axis="time", y_axis="log",
                             ax=axes)
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _measures(outcome: Outcome) -> str:
    report, parts = outcome.report, []
    parts.append(f"held-out gain {report.held_out_gain:.2f} ({report.held_out_dry:.3f} → {report.held_out_wet:.3f})")
    parts.append(f"MFCC gain {report.mfcc_gain:.2f}")
    if report.stoi is not None:
        parts.append(f"STOI {report.stoi:.2f}")
    if report.own_gain is not None:
        parts.append(f"own-network gain {report.own_gain:.2f}")
    parts.append(f"independent: timbre gain {report.timbre_gain:.2f}")
    for name, gain in (("F0", report.f0_gain), ("formant", report.formant_gain)):
        parts.append(f"{name} gain {'n/a' if gain is None else f'{gain:.2f}'}")
    if report.voice_note:
        parts.append(f"(voice: {report.voice_note})")
    if outcome.rtf is not None:
        parts.append(f"RTF {outcome.rtf:.2f}")
    parts.extend(f"{key.replace('_', ' ')} {value:.3g}" for key, value in outcome.detail.items())
    return "<br>".join(html.escape(part) for part in parts)


def write_html(outcomes: Sequence[Outcome], page: Path, voice: dict[str, float] | None = None) -> Path:
    """One page: per pair its style clip, then per path a player, a spectrogram and the measures.

    Audio and images go to ``<page stem>_files/`` beside the page and are referenced
    relatively, so the folder can be moved or served as it is.
    """
    page = Path(page)
    assets = page.with_name(f"{page.stem}_files")
    assets.mkdir(parents=True, exist_ok=True)

    def media(stem: str, audio: np.ndarray, rate: int, title: str) -> str:
        # Every clip at one loudness, as the measures hear them; it also keeps outputs that
        # went louder than the content (up to +9 dBFS on pluck → organ) from clipping in 16 bits.
        level = float(np.sqrt(np.mean(np.square(audio))))
        sf.write(assets / f"{stem}.wav", audio * (LISTENING_RMS / level) if level > 0 else audio, rate, subtype="PCM_16")
        spectrogram_png(audio, rate, assets / f"{stem}.png", title)
        return (f'<audio controls preload="none" src="{assets.name}/{stem}.wav"></audio><br>'
                f'<img src="{assets.name}/{stem}.png" alt="{html.escape(title)} spectrogram">')

    body = ["<h1>Gramophone listening report</h1>",
            "<p>Gains are 1 − wet/dry distance to the style under held-out networks and MFCC statistics "
            "(0 = untouched, 1 = the style's statistics); STOI is intelligibility against the content. "
            "Every clip plays at the same loudness (−26 dBFS RMS), as the measures hear it.</p>",
            "<p>Voice (every wet path): " + html.escape(", ".join(
                f"{name} {(voice or {}).get(name, PARAMETERS[name].default):g}" for name in VOICE_CONTROLS)) + "</p>",
            "<h2>Targets</h2>", _html_table(target_rows(outcomes), TARGET_COLUMNS),
            "<h2>Independent judge</h2>", _html_table(judge_rows(outcomes), JUDGE_COLUMNS)]
    for pair in dict.fromkeys(outcome.pair for outcome in outcomes):
        _, style, rate = pair.load()
        body.append(f"<h2>{html.escape(pair.name)}</h2><table>")
        body.append(f"<tr><th>style</th><td>{media(f'{pair.name}-style', style, rate, f'{pair.name}: style')}</td>"
                    "<td>the target</td></tr>")
        for outcome in (o for o in outcomes if o.pair == pair):
            stem = f"{pair.name}-{_slug(outcome.path.name)}"
            title = f"{pair.name}: {outcome.path.name}"
            body.append(f"<tr><th>{html.escape(outcome.path.name)}</th>"
                        f"<td>{media(stem, outcome.audio, outcome.sample_rate, title)}</td><td>{_measures(outcome)}</td></tr>")
        body.append("</table>")
    style = "body{font-family:sans-serif;margin:2em}td,th{padding:.4em;vertical-align:top;text-align:left}"
    page.write_text(f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>Gramophone listening report</title>'
                    f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n", encoding="utf-8")
    return page


def _html_table(rows: Sequence[dict], columns: Sequence[Column]) -> str:
    head = "".join(f"<th>{html.escape(column.header)}</th>" for column in columns)
    cells = ["".join(f"<td>{html.escape(column.cell(row))}</td>" for column in columns) for row in rows]
    return f"<table><tr>{head}</tr>{''.join(f'<tr>{line}</tr>' for line in cells)}</table>"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", choices=PAIR_NAMES, default=list(PAIR_NAMES))
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length")
    parser.add_argument("--presets", nargs="*", choices=[name for name in PRESETS if name != "default"], default=[],
                        help="reference presets to run offline as well (slow)")
    parser.add_argument("--iterations", type=int, help="override offline iterations and live steps per chunk")
    parser.add_argument("--realtime", action="store_true", help="pace live blocks with real sleeps")
    add_batch_option(parser)
    parser.add_argument("--live", nargs="*", choices=[path.key for path in PATHS[2:]],
                        help="only these live paths (default: all)")
    parser.add_argument("--quick", action="store_true", help="one speech and one non-speech pair")
    parser.add_argument("--html", type=Path, help="write the listening report here")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--voice", nargs="*", default=[], metavar="NAME=VALUE",
                        help="pitch, formant, pitch_follow, formant_follow for every wet path, e.g. pitch_follow=1")
    add_threads_option(parser)
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    if args.quick:
        args.pairs = ["male-female", "pluck-organ"]
    live = [path for path in PATHS[2:] if args.live is None or path.key in args.live]
    paths = [*PATHS[:2], *(PathSpec(f"offline {name}", "offline", name) for name in args.presets), *live]
    voice = {}
    for item in args.voice:
        name, _, value = item.partition("=")
        if name not in VOICE_CONTROLS or not value:
            parser.error(f"--voice takes NAME=VALUE with NAME one of {', '.join(VOICE_CONTROLS)}, got {item!r}")
        voice[name] = float(value)
    outcomes = run(make_pairs(args.pairs, args.seconds), paths, args.iterations, args.realtime, voice,
                   args.batch == "on")
    print(table([outcome.row() for outcome in outcomes], PAIR_COLUMNS, args.markdown))
    print()
    print(table(target_rows(outcomes), TARGET_COLUMNS, args.markdown))
    print()
    print(table(judge_rows(outcomes), JUDGE_COLUMNS, args.markdown))
    notes = voice_notes(outcomes)
    if notes:
        print("\nF0 / formant n/a:" + "".join(f"\n{'- ' if args.markdown else '  '}{note}" for note in notes))
    if args.html:
        print(f"listening report: {write_html(outcomes, args.html, voice)}")


if __name__ == "__main__":
    main()

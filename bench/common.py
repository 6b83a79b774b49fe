"""What the benchmarks share: running a preset on a pair, measuring it, machine peak, a server process, tables."""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from pythonosc.osc_message_builder import OscMessageBuilder
from torch.utils.flop_counter import FlopCounterMode

from gramophone import metrics
from gramophone.dsp.analysis import analyse
from gramophone.audio import resample
from gramophone.engine.network import get_pool
from gramophone.params import Parameters
from gramophone.engine.latency import LATENCIES, LatencySetting
from gramophone.engine.presets import Preset, get_preset
from gramophone.osc.protocol import encode_audio
from gramophone.engine.stream import StreamConfig, StreamProcessor
from gramophone.engine.batch import BatchStepper
from gramophone.cli.serve import make_stepper
from gramophone.engine.style import StyleTarget, learn_style
from gramophone.engine.offline import stylize

from .pairs import Pair

OUT = Path(__file__).resolve().parent / "out"
LISTENING = re.compile(r"listening on udp (\S+):(\d+)")


@dataclass
class Render:
    """One stylised clip and what it cost."""

    audio: np.ndarray  # mono float32
    sample_rate: int
    seconds: float  # wall time the engine spent on it (colouring + optimisation, or all chunks)
    iterations: float  # optimiser steps (per chunk, on average, for streams)

    def rtf(self, duration: float) -> float:
        return self.seconds / duration


_TARGETS: dict[tuple[str, str], StyleTarget] = {}


def style_target(pair: Pair, preset: Preset) -> StyleTarget:
    """The pair's style learned for ``preset``'s analysis and networks (once per process)."""
    key = (str(pair.style), repr(sorted(preset.target_key().items())))
    if key not in _TARGETS:
        style, rate = sf.read(pair.style, dtype="float32")
        _TARGETS[key] = learn_style([(style[None], rate)], preset, name=pair.name)
    return _TARGETS[key]


def render_offline(pair: Pair, preset: Preset) -> Render:
    """``stylize`` the pair's content with ``preset``; the time counted is the engine's own."""
    content, _, rate = pair.load()
    result = stylize(content[None], rate, style_target(pair, preset), preset)
    return Render(result.audio[0], result.sample_rate, result.seconds, result.optimisation.iterations)


@dataclass
class StreamRender(Render):
    """A streamed clip: ``seconds`` is the time spent inside ``push``; latencies in ms."""

    latency_ms: float = 0.0  # what the processor reports
    measured_latency_ms: float = 0.0  # worst time from a block's arrival to its output
    late_chunks: int = 0
    chunks: int = 0
    rtf_peak: float = 0.0


def stream_processor(pair: Pair, preset: Preset, chunk_frames: int, settings: dict[str, float] | None = None,
                     mode: str = "live", latency: LatencySetting = LATENCIES["default"],
                     stepper: BatchStepper | None = None) -> StreamProcessor:
    """A processor for the pair's style with the given chunk size and live parameter values, on the
    training window and step schedule of a ``serve --latency`` setting (its budget unless ``settings`` has one);
    with ``stepper`` its live steps go through it, as a server's do."""
    params = Parameters()
    if latency.budget is not None:
        params.set("budget", latency.budget)
    for name, value in (settings or {}).items():
        params.set(name, value)
    config = StreamConfig(chunk_frames=chunk_frames, window_seconds=latency.window_seconds,
                          steps_after_output=latency.steps_after_output)
    return StreamProcessor(params, style_target(pair, preset), preset, mode=mode, config=config, stepper=stepper)


def chunk_for_latency(pair: Pair, preset: Preset, sample_rate: int, max_latency_ms: float, block_size: int = 512,
                      settings: dict[str, float] | None = None) -> int:
    """The largest chunk (in frames, up to 64) whose reported latency fits ``max_latency_ms``.

    Latency grows with the chunk, so a bisection needs a handful of ``prepare`` calls.
    """
    def fits(chunk_frames: int) -> bool:
        processor = stream_processor(pair, preset, chunk_frames, settings)
        processor.prepare(sample_rate, 1, block_size)
        return processor.latency_samples * 1000 / sample_rate <= max_latency_ms

    if not fits(1):
        raise ValueError(f"no chunk size reaches {max_latency_ms} ms at {sample_rate} Hz with {block_size}-sample blocks")
    low, high = 1, 64  # fits(low) holds
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return low


def render_stream(pair: Pair, preset: Preset, sample_rate: int, chunk_frames: int, *, block_size: int = 512,
                  mode: str = "live", settings: dict[str, float] | None = None, realtime: bool = False,
                  latency: LatencySetting = LATENCIES["default"], batched: bool = False) -> StreamRender:
    """Push the pair's content through a ``StreamProcessor`` block by block, as if live.

    ``batched`` steps it through a ``BatchStepper`` as ``serve`` does by default (``--batch on``),
    on the CPU with the stepper's own thread; otherwise the stream steps alone (``--batch off``).

    Block ``k`` arrives ``(k + 1) × block`` after the start. With ``realtime`` the loop
    sleeps until then; otherwise the idle time is skipped (the clock is shifted) while a
    late block keeps its past arrival time, so deadlines, backlog and latency are exactly
    those of a real-time feed, without the waiting. Steps put off until after the output (as
    ``latency`` may say) are taken once a block's outputs are collected, as a server takes
    them once it has sent them.
    """
    stepper = make_stepper("cpu", "on") if batched else None
    try:
        return _render_stream(pair, stream_processor(pair, preset, chunk_frames, settings, mode, latency, stepper),
                              sample_rate, block_size, realtime)
    finally:
        if stepper is not None:
            stepper.close()


def _render_stream(pair: Pair, processor: StreamProcessor, sample_rate: int, block_size: int,
                   realtime: bool) -> StreamRender:
    content, _, rate = pair.load()
    audio = resample(content[None], rate, sample_rate)[0]
    processor.prepare(sample_rate, 1, block_size)
    blocks = np.pad(audio, (0, -audio.size % block_size)).reshape(-1, block_size)
    period = block_size / sample_rate
    outputs: dict[int, np.ndarray] = {}
    arrivals: list[float] = []
    busy = worst = shift = 0.0
    start = time.monotonic()
    for seq, block in enumerate(blocks):
        arrival = start + (seq + 1) * period + shift
        early = arrival - time.monotonic()
        if early > 0 and realtime:
            time.sleep(early)
        elif early > 0:
            shift -= early
            arrival -= early
        arrivals.append(arrival)
        began = time.monotonic()
        ready = processor.push(seq, block, arrival=arrival)
        done = time.monotonic()
        busy += done - began
        for out_seq, out in ready:
            outputs[out_seq] = out
            worst = max(worst, done - arrivals[out_seq])
        processor.learn_pending()
        busy += time.monotonic() - done
    stats = processor.stats()
    outputs.update(processor.flush())  # the tail needs input that never comes: not timed
    wet = np.concatenate([outputs[seq] for seq in range(len(blocks))])[: audio.size]
    return StreamRender(wet, sample_rate, busy, stats.iterations_avg, latency_ms=processor.latency_samples * 1000 / sample_rate,
                        measured_latency_ms=worst * 1000, late_chunks=stats.late_chunks, chunks=stats.chunks,
                        rtf_peak=stats.rtf_peak)


def optimiser_flops(pair: Pair, preset: Preset, iterations: int) -> float:
    """FLOPs of a run of ``iterations`` steps, extrapolated from counted runs of 1 and 2 steps.

    Counting with torch's ``FlopCounterMode`` slows a run down, so the timed run is never
    counted; a step's cost is the same whatever its index, so two short runs suffice.
    """
    content, _, rate = pair.load()
    target = style_target(pair, preset)
    counts = []
    for steps in (1, 2):
        with FlopCounterMode(display=False) as counter:
            stylize(content[None], rate, target, preset.with_overrides(iterations=steps))
        counts.append(counter.get_total_flops())
    per_step = counts[1] - counts[0]
    return float(counts[0] - per_step + per_step * iterations)


def own_networks(preset: Preset) -> tuple[list[torch.nn.Module], metrics.FeatureInput]:
    """The preset's own pool and analysis, for the own-network distance."""
    nets = get_pool(preset.analysis.channels, preset.network, preset.analysis.max_freq_hz)

    def features(audio: np.ndarray, sample_rate: int) -> np.ndarray:
        rate = preset.sample_rate or sample_rate
        if rate != sample_rate:
            audio = metrics.normalise(audio, sample_rate, rate)
        return analyse(audio[None], rate, preset.analysis).logmag[0]

    return nets, features


def measure(pair: Pair, render: Render, preset: Preset | None = None, voice: bool = False) -> metrics.QualityReport:
    """The held-out measures of a render against its pair (and the preset's own nets if given; ``voice``: F0, formants)."""
    content, style, rate = pair.load()
    nets, features = own_networks(preset) if preset is not None else (None, None)
    return metrics.measure(content, style, render.audio, rate, output_rate=render.sample_rate, speech=pair.speech,
                           voice=voice, own_nets=nets, own_features=features)


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads``: torch's intra-op threads. On a shared machine, 1 thread can beat 2 by far:
    an OpenMP barrier stalls whenever a neighbour holds the other core."""
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")


def add_batch_option(parser: argparse.ArgumentParser) -> None:
    """``--batch on|off``: a rendered stream's live steps through the batch stepper, as ``serve --batch``."""
    parser.add_argument("--batch", choices=("on", "off"), default="on",
                        help="live steps through the batch stepper, as serve's --batch (default on, as it ships)")


def apply_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def matmul_peak_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Best sgemm rate of this machine right now, in GFLOP/s (the roofline a run is judged by)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - began)
    return 2 * size**3 / best / 1e9


@dataclass(frozen=True)
class CpuTimes:
    """The machine's CPU time so far, all cores, in clock ticks (``/proc/stat``), and its share stolen.

    On a virtual machine the host can take a core away (steal): a timing row taken while a
    quarter of the time was stolen says more about the host than about the program, and the
    load average does not show it.
    """

    total: int
    steal: int

    @classmethod
    def now(cls) -> CpuTimes | None:
        """The counts now; None where there is no ``/proc/stat`` (not Linux)."""
        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        except OSError:
            return None
        ticks = [int(value) for value in fields[:8]]  # user … steal; guest time is inside user already
        return cls(sum(ticks), ticks[7])

    def steal_since(self, earlier: CpuTimes | None) -> float | None:
        """The share of CPU time stolen between ``earlier`` and these counts."""
        if earlier is None or self.total <= earlier.total:
            return None
        return (self.steal - earlier.steal) / (self.total - earlier.total)


def chunk_seconds(sample_rate: int, latency: LatencySetting = LATENCIES["default"]) -> float:
    """How long one live chunk of a ``serve --latency`` setting lasts (``chunk_frames`` STFT hops of its preset)."""
    return latency.chunk_frames * get_preset(latency.preset).analysis.hop_length(sample_rate) / sample_rate


def message(address: str, *args) -> bytes:
    """One OSC message, its type tags as python-osc guesses them (int → i, float → f, str → s)."""
    builder = OscMessageBuilder(address)
    for arg in args:
        builder.add_arg(arg)
    return builder.build().dgram


def audio_message(seq: int, block: np.ndarray) -> bytes:
    """``/content seq f f f …`` (float lists are what Max and Pd send)."""
    return encode_audio("/content", seq, block, "floats")


class Server:
    """``python -m gramophone serve`` on a free port (``extra``: more serve options), stopped by PID."""

    def __init__(self, folder: Path, *extra: str) -> None:
        self.log = folder / "server.log"
        self.styles = folder / "styles"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "gramophone", "serve", "--port", "0", "--max-sessions", "32",
                                          "--cache-dir", str(folder / "cache"), "--styles-dir", str(self.styles), *extra],
                                         stdout=out, stderr=subprocess.STDOUT)
        for _ in range(1200):
            found = LISTENING.search(self.log.read_text())
            if found:
                self.host, self.port = found.group(1), int(found.group(2))
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise SystemExit(f"the server did not start:\n{self.log.read_text()}")

    def stop(self) -> None:
        os.kill(self.proc.pid, signal.SIGINT)
        self.proc.wait(60)


@dataclass(frozen=True)
class Column:
    """One table column: a key of the row dicts, a header, a format and what a missing value reads."""

    key: str
    header: str
    fmt: str = "{}"
    missing: str = "—"

    def cell(self, row: dict) -> str:
        value = row.get(self.key)
        return self.missing if value is None else self.fmt.format(value)


def table(rows: Sequence[dict], columns: Sequence[Column], markdown: bool = False) -> str:
    """Rows as an aligned plain-text table, or as a Markdown table to paste into the README."""
    cells = [[column.cell(row) for column in columns] for row in rows]
    headers = [column.header for column in columns]
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
        return "\n".join(lines + ["| " + " | ".join(line) + " |" for line in cells])
    widths = [max(len(text) for text in column) for column in zip(headers, *cells)]

    def line(texts: Sequence[str]) -> str:
        return "  ".join(text.rjust(width) for text, width in zip(texts, widths))

    return "\n".join([line(headers), line(["-" * width for width in widths]), *map(line, cells)])


def report_goals(results: list[tuple[bool, str]]) -> None:
    """Print each goal as pass or FAIL; exit 1 when one is missed."""
    print()
    for met, text in results:
        print(f"{'pass' if met else 'FAIL'}  {text}")
    if not all(met for met, _ in results):
        sys.exit(1)

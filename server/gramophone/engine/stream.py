"""Live, chunked style transfer with a fixed reported latency: ``StreamProcessor``.

Read it like a plugin (JUCE's AudioProcessor): ``prepare(sample_rate, channels,
block_size)``, then ``push(seq, block)`` per block, ``latency_samples``, ``reset()``.

How a block becomes stylised audio:

1. Input samples are cut into STFT frames on one continuous grid (Hann window, hop =
   window / 4); frame ``j`` spans samples ``[jH − (N − H), jH + H)``. The chain's spectrum
   stage (``stages/voice.py``: pitch and formant) shifts those frames in place on the grid,
   so it adds no latency; at rest it passes them untouched.
2. Every ``chunk_frames`` complete frames form a chunk. The chunk's log-magnitudes are
   coloured in closed form toward the style (against running statistics of the input),
   then a learned correction is added: one log-magnitude offset per frequency channel,
   carried from chunk to chunk. Each chunk's Adam steps move that correction so the last
   ``window_seconds`` of coloured input, corrected, match the pool's style grams. A chunk
   of a few hundred milliseconds cannot carry a whole style's statistics, and rewriting
   its frames one by one fools the networks; a correction shared across time, trained on
   a window longer than the chunk, carries the effect of every past step forward. Both
   stay under the style's range (``ceiling.py``) when the preset asks. Then the chunk's
   quiet levels are mapped onto the style's, channel by channel, from a running histogram
   of the output (``levels.py``), no frame may be louder than the style's loudest, and the
   quiet bins are equalised toward the style's long-term spectrum, from a running spectrum of
   the audio delivered so far (``match_eq.py``, which hears every finished chunk).
3. The edited frames are resynthesised with the input's own phase (random where the edit
   filled a bin the input left nearly empty: ``analysis.fill_phase``) and overlap-added on
   the same grid, so chunk boundaries leave no seam; with the effect off the overlap-add
   reconstructs the input exactly. The finished samples pass a look-ahead limiter that
   keeps them within full scale (``limiter.py``); it reads only finished samples, so it
   adds no latency.
4. Output block ``seq`` is released, aligned with input block ``seq``, as soon as every
   frame covering it is done; wet/dry, gain and bypass are smoothed per sample.

In live mode a chunk's steps stop at its deadline (``budget`` × the chunk's duration
after its last sample arrived, up to a fifth earlier where chunks have lately come out
later than the latency's reserve holds); a chunk that cannot take a single step in time goes out
with the correction learned so far and counts as late, so no backlog ever builds up.
With ``steps_after_output`` a live chunk goes out at once with the correction learned so
far, and its steps run afterwards (``learn_pending``, which the server calls once it has
sent the blocks), under the same deadline: the steps add nothing to the latency, and each
chunk's correction lags one chunk behind. The correction is shared across time and moves
little from one chunk to the next, so the lag costs little; the latency's reserve then
covers a chunk's whole work, not only its finishing.
In render mode every chunk takes exactly ``iterations`` steps: the same input, settings
and style always give the same output. A live processor given a ``BatchStepper``
(``batch.py``) hands its chunks' steps to it, to be taken together with other streams' chunks
due at the same time, under the same deadline.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from ..capacity import Demand
from ..dsp.analysis import AnalysisConfig, apply_logmag, hann, magnitude_scale, to_grid
from ..params import Parameters
from ..stages import Context, VoiceControls, build_chain
from .adam import Adam
from .batch import BatchStepper, StepJob
from .network import get_pool
from .objective import content_loss, gram, style_loss
from .presets import Preset, get_preset
from .step_time import Overrun, StepTime
from .style import StyleTarget, mix_targets

MODES = ("live", "render")
MIN_BLOCK, MAX_BLOCK = 32, 8192
SMOOTHING_SECONDS = 0.02  # wet, gain and bypass ramps: long enough to avoid zipper noise
STATS_WINDOW = 200  # chunks the peak real-time factor is taken over
# The reported latency = the schedule (blocks arriving in real time, each chunk's steps ending
# ``budget`` × its duration after its last sample) + a reserve for the work after the steps.
# The reserve is the median finishing time of a few chunks measured at ``prepare``
# (synthesis, level maps, limiter), times FINISH_SAFETY, plus MARGIN_SECONDS: the server's
# watchdog answers a block dry from 6 ms before its due time (server.SEND_GUARD_SECONDS), and
# sending, thread hand-offs and an input block arriving a little late need a few more. The
# median, so that one chunk slowed by a busy machine at connect time does not lengthen the
# session's latency for good. Where chunks come out slower than that beside other sessions, their
# steps end earlier instead (``Overrun``, at most MAX_EARLY_SHARE of their time).
FINISH_SAFETY = 2.0
MARGIN_SECONDS = 0.011
# With the steps before the output, a chunk's steps end at its deadline and its finishing runs
# beside other sessions' steps: on 2 cores, one chunk in two hundred of two sessions' was ready
# 11-13 ms past its deadline where the allowance measured alone held 5-6 ms, and its first
# blocks went back dry (7-9 in each of four 2-minute runs of bench.soak --phases 2). The reserve
# holds this much more for that tail, beyond what the steps ending early (``Overrun``) keep for
# the usual overrun: 0, 1, 9 and 10 dry in four runs (the rest come in bursts while the host
# takes the machine's cores away, which no reserve of a few milliseconds covers).
SHARED_FINISH_SECONDS = 0.005
# A live server pads a stalled input with silence once its next block is this late: late enough
# to ride out a sender's jitter, early enough that every block already sent comes back on time.
# With the steps before the output it is a share of the chunk's budget (the padded chunk takes
# fewer steps); with the steps after it, time the reserve holds for it.
PAD_GRACE_SHARE = 0.5
INPUT_GRACE_SECONDS = 0.005
# With the steps after the output, steps run back to back after every short chunk and keep the
# interpreter busier, so the server's watchdog wakes later: it answers such a session's unfinished
# blocks this much earlier, and the reserve holds the same time, so a finished chunk is not claimed
# any sooner.
EARLY_DRY_SECONDS = 0.005
WARM_UP_CHUNKS = 3  # chunks whose finishing time is measured at prepare (after one discarded)
# The share of its budget's steps a stream must keep for its effect to stay near what it has
# alone (about that share of its held-out gain): what a session's demand counts of its steps.
KEPT_STEP_SHARE = 0.8
# The most a chunk's steps end early to keep its finishing inside the reserve (``Overrun``), as a
# share of the time its budget gives them: what admission leaves a session (``demand``) still holds.
MAX_EARLY_SHARE = 1 - KEPT_STEP_SHARE


@dataclass(frozen=True)
class StreamConfig:
    """The streaming knobs that are not live parameters."""

    chunk_frames: int = 8  # the latency–CPU knob: frames processed together
    steps_after_output: bool = False  # live: a chunk goes out first and takes its steps after (no latency for them)
    window_seconds: float = 0.75  # recent input the correction is trained on (a step's cost grows with it)
    fade_seconds: float = 0.3  # style switches crossfade their targets over this long

    def __post_init__(self) -> None:
        if not 1 <= self.chunk_frames <= 256:
            raise ValueError("chunk_frames must be within 1–256")
        if self.window_seconds <= 0 or self.fade_seconds < 0:
            raise ValueError("window_seconds must be positive and fade_seconds not negative")


@dataclass
class StreamStats:
    """Counters for ``/status``."""

    rtf_avg: float
    rtf_peak: float
    iterations_avg: float
    late_chunks: int
    lost_blocks: int
    queued_blocks: int
    chunks: int
    latency_samples: int


class Ramp:
    """A per-sample linear ramp toward a target value (JUCE's SmoothedValue)."""

    def __init__(self, value: float, length: int) -> None:
        self.value = self.target = value
        self.length = max(length, 1)
        self.step = 0.0

    def set(self, target: float) -> None:
        if target != self.target:
            self.target = target
            self.step = (target - self.value) / self.length

    def next(self, count: int) -> np.ndarray:
        """The next ``count`` values."""
        if self.value == self.target:
            return np.full(count, self.value, dtype=np.float32)
        values = self.value + self.step * np.arange(1, count + 1)
        values = np.minimum(values, self.target) if self.step > 0 else np.maximum(values, self.target)
        self.value = float(values[-1])
        return values.astype(np.float32)


class StreamProcessor:
    """Block-in, aligned-block-out style transfer for one audio stream."""

    def __init__(
        self,
        params: Parameters,
        style: StyleTarget,
        preset: str | Preset = "default",
        mode: str = "live",
        config: StreamConfig = StreamConfig(),
        stepper: BatchStepper | None = None,
    ) -> None:
        self.params = params
        self.stepper = stepper  # live steps go through it, batched with other streams', when given
        self.preset = get_preset(preset) if isinstance(preset, str) else preset
        style.require(self.preset)
        self.config = config
        self.mode = mode
        self._style = style
        self._lock = threading.Lock()  # the stream's state, held while a chunk is processed
        self._stats_lock = threading.Lock()  # only the counters: stats() never waits for a chunk
        self._prepared = False
        self._forced: dict[str, float] = {}  # parameter values the warm-up imposes on its chunks
        # each chunk's work after its steps, and all its work, while the warm-up times them
        self._finish_times: list[tuple[float, float]] | None = None

    # -- configuration -------------------------------------------------------------

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be 'live' or 'render', got {mode!r}")
        self._mode = mode

    def prepare(self, sample_rate: int, channels: int, block_size: int, max_latency: int | None = None) -> None:
        """Fix the stream's format and clear its state (call before the first ``push``).

        With ``max_latency`` (samples: a plugin whose latency the host already compensates),
        the optimiser's ``budget`` is lowered as far as needed for the latency to fit, down
        to the parameter's minimum; ValueError if even that does not fit.
        """
        if not 8000 <= sample_rate <= 192000:
            raise ValueError(f"sample rate must be within 8000–192000 Hz, got {sample_rate}")
        if channels not in (1, 2):
            raise ValueError(f"channels must be 1 or 2, got {channels}")
        if not MIN_BLOCK <= block_size <= MAX_BLOCK:
            raise ValueError(f"block size must be within {MIN_BLOCK}–{MAX_BLOCK} samples, got {block_size}")
        analysis: AnalysisConfig = self.preset.analysis
        if analysis.overlap < 4:
            raise ValueError("streaming needs an analysis overlap of 4 or 8 (exact Hann overlap-add)")
        self.sample_rate, self.channels, self.block_size = sample_rate, channels, block_size
        self.n_fft = analysis.n_fft(sample_rate)
        self.hop = analysis.hop_length(sample_rate)
        self.window = hann(self.n_fft).astype(np.float32)
        self.overlap_gain = float(np.sum(self.window**2) / self.hop)  # Σ w² over the frames covering a sample
        self.scale = magnitude_scale(analysis, sample_rate)
        self.nets = get_pool(analysis.channels, self.preset.network, analysis.max_freq_hz)
        self.min_window = self.preset.network.receptive_field  # frames a network needs for one output
        self.window_frames = max(self.min_window, round(self.config.window_seconds * sample_rate / self.hop))
        self._chain = build_chain(self.preset.stages, self.preset.ceiling, analysis, self.preset.colour_bands,
                                  self.config.chunk_frames, sample_rate, live=True)
        chunk_seconds = self.config.chunk_frames * self.hop / sample_rate
        self.fade_chunks = max(1, round(self.config.fade_seconds / chunk_seconds))
        self.prepared_budget = self.params.get("budget")
        self._prepared = True
        self._step_time = StepTime(0.0, floor=math.inf)  # one optimiser step, for the live deadline; the warm-up seeds it
        self.chunk_work_seconds = 0.0  # a chunk's work but its steps: the warm-up measures it
        self._overrun = Overrun()  # how far past its deadline a live chunk is ready
        self._finish_allowance = math.inf  # what the reserve holds for that; set once it is sized
        self._clear_counters()
        self.reset()
        finishing, self.chunk_work_seconds = self._warm_up()
        # with the steps after the output, all of a chunk's work lies between its arrival and its output
        if self.config.steps_after_output:
            self.reserve_seconds = (FINISH_SAFETY * self.chunk_work_seconds + MARGIN_SECONDS + INPUT_GRACE_SECONDS
                                    + EARLY_DRY_SECONDS)
        else:
            self._finish_allowance = FINISH_SAFETY * finishing
            self.reserve_seconds = self._finish_allowance + MARGIN_SECONDS + SHARED_FINISH_SECONDS
        reserve = math.ceil(self.reserve_seconds * sample_rate)
        if max_latency is not None:
            self.prepared_budget = self._fitting_budget(max_latency, reserve)
        self.latency_samples = self._latency(self.prepared_budget) + reserve
        self._clear_counters()
        self.reset()

    def _warm_up(self) -> tuple[float, float]:
        """Run the real optimiser over every network of the pool, twice, then time a chunk's finishing work.

        The first use of each network, of Adam and of the loss costs torch tens to hundreds
        of milliseconds of set-up; paying it here keeps it out of the first live chunks, and
        the second round seeds the deadline's estimate of a step. Returns the median time a
        chunk took after its steps (synthesis, level maps, limiter) over a few chunks of a
        loud test signal, which sizes the latency's reserve, and the median of all a chunk's
        work but its steps (analysis, colouring and the finishing), which sizes its demand.
        """
        self._history = torch.zeros(self.channels, self.preset.analysis.channels, self.window_frames)
        self._limits = torch.full_like(self._history, math.inf)
        values = self.params.snapshot() | {"iterations": len(self.nets), "style_weight": 1.0}
        mode, self._mode = self._mode, "render"
        try:
            for _ in range(2):
                began = time.monotonic()
                self._learn(self._style, values, deadline=math.inf)
                baseline = (time.monotonic() - began) / len(self.nets)
        finally:
            self._mode = mode
        self._step_time = StepTime.measured(baseline)  # the cold first round left out
        return self._time_finishing()

    def _time_finishing(self) -> tuple[float, float]:
        """The median finishing and whole times of WARM_UP_CHUNKS chunks without steps (the first, cold, one discarded)."""
        self.reset()
        chunk_samples = self.config.chunk_frames * self.hop
        blocks = -(-((WARM_UP_CHUNKS + 2) * chunk_samples + self.n_fft) // self.block_size)
        signal = _test_signal(self.sample_rate, self.channels, blocks * self.block_size)
        mode, self._mode = self._mode, "live"
        self._forced = {"style_weight": 1.0, "colour": 1.0}  # every finishing stage at full strength
        self._finish_times = []
        try:
            with self._lock:
                for start in range(0, signal.shape[1], self.block_size):
                    # arrival long past: every deadline has gone, so no step runs, only the finishing work
                    self._take(None, signal[:, start:start + self.block_size], -math.inf)
            times = np.array(self._finish_times[1:WARM_UP_CHUNKS + 1])
        finally:
            self._mode, self._forced, self._finish_times = mode, {}, None
        finishing, whole = np.median(times, axis=0)
        return float(finishing), float(whole)

    def reset(self) -> None:
        """Forget all audio and running statistics (between songs); format, style and counters stay, and
        so do the estimates of the machine (a step's time, a chunk's overrun)."""
        self._require_prepared()
        with self._lock:
            channels = self.channels
            self._expected_seq: int | None = None
            self._input = np.zeros((channels, self.n_fft - self.hop), dtype=np.float32)  # the silent past
            self._input_start = -(self.n_fft - self.hop)  # absolute index of _input[:, 0]
            self._received = 0  # samples received so far (absolute)
            self._next_frame = 0
            self._ola = np.zeros((channels, self.n_fft), dtype=np.float32)
            self._ola_start = -(self.n_fft - self.hop)
            self._finished = 0  # output samples final so far
            self._wet = np.zeros((channels, 0), dtype=np.float32)
            self._wet_start = 0
            self._pending: deque[tuple[int, np.ndarray, int]] = deque()  # (seq, dry block, first sample)
            self._history = torch.zeros(channels, self.preset.analysis.channels, 0)  # recent coloured frames
            self._limits = torch.zeros(channels, self.preset.analysis.channels, 0)  # and their ceilings
            self._correction = torch.zeros(1, self.preset.analysis.channels, 1, requires_grad=True)
            self._adam = Adam(lr=self.params.get("learning_rate"))
            self._chain.reset()
            self._phase_rng = np.random.default_rng(0)  # fill_phase's draws: a render repeats exactly
            self._net_cursor = 0
            self._fade_from: StyleTarget | None = None
            self._fade_step = 0
            self._wet_ramp = Ramp(self._wet_target(), int(SMOOTHING_SECONDS * self.sample_rate))
            self._gain_ramp = Ramp(10 ** (self.params.get("gain_db") / 20), int(SMOOTHING_SECONDS * self.sample_rate))
            self._pending_steps: tuple[StyleTarget, dict, float] | None = None  # the last chunk's, with the output first
            self._unheard: list[np.ndarray] = []  # audio delivered since the chain last listened (``_hear``)

    def _clear_counters(self) -> None:
        """Reset the statistics ``/status`` reports (the step-time estimates stay)."""
        self._rtf: deque[float] = deque(maxlen=STATS_WINDOW)
        self._rtf_sum = 0.0
        self._iterations_total = 0
        self._chunks = 0
        self._late = 0
        self._lost = 0

    def set_style(self, style: StyleTarget) -> None:
        """Switch style; the targets crossfade over ``fade_seconds`` from the next chunk."""
        style.require(self.preset)
        with self._lock:
            if self._prepared:
                self._fade_from = self._current_style()
                self._fade_step = 0
            self._style = style

    @property
    def budget_seconds(self) -> float:
        """The most a chunk's optimiser may take in live mode (``budget`` × the chunk's duration)."""
        return self.prepared_budget * self.config.chunk_frames * self.hop / self.sample_rate

    @property
    def input_grace_seconds(self) -> float:
        """How late a live block may arrive before a server pads its place with silence (a stall)."""
        return INPUT_GRACE_SECONDS if self.config.steps_after_output else PAD_GRACE_SHARE * self.budget_seconds

    @property
    def early_dry_seconds(self) -> float:
        """How much earlier than other sessions' a server's watchdog answers this one's unfinished blocks dry."""
        return EARLY_DRY_SECONDS if self.config.steps_after_output else 0.0

    @property
    def demand(self) -> Demand:
        """The cores this stream needs in real time to stay wet: its chunks' work besides the
        optimiser, measured at ``prepare``, and KEPT_STEP_SHARE of its steps' budget."""
        chunk_seconds = self.config.chunk_frames * self.hop / self.sample_rate
        return Demand(steps=KEPT_STEP_SHARE * self.prepared_budget, other=self.chunk_work_seconds / chunk_seconds)

    @property
    def style(self) -> StyleTarget:
        return self._style

    # -- processing ------------------------------------------------------------------

    def push(self, seq: int, block: np.ndarray, arrival: float | None = None) -> list[tuple[int, np.ndarray]]:
        """Take input block ``seq`` (interleaved float32); return every output block now ready.

        ``arrival`` is the ``time.monotonic()`` instant the block was received (now if
        omitted); live deadlines count from it. A gap in ``seq`` is filled with silence
        and counted as lost; a block older than one already taken is refused.
        """
        self._require_prepared()
        samples = np.asarray(block, dtype=np.float32).reshape(-1)
        if samples.size != self.block_size * self.channels:
            raise ValueError(f"block has {samples.size} samples, expected {self.block_size * self.channels} "
                             f"({self.block_size} × {self.channels} channels)")
        if not np.all(np.isfinite(samples)):
            raise ValueError("block contains NaN or infinite samples")
        arrival = time.monotonic() if arrival is None else arrival
        with self._computing(), self._lock:
            self._fill_gap_before(seq, arrival)
            self._take(seq, samples.reshape(self.block_size, self.channels).T.copy(), arrival)
            return self._release()

    def skip(self, seq: int, arrival: float | None = None) -> list[tuple[int, np.ndarray]]:
        """Take block ``seq`` out of the stream unprocessed: a live server answered it dry already.

        The blocks after it follow on directly, so a session that fell behind catches up instead
        of processing audio whose answers have gone. Returns what a gap before it released.
        """
        self._require_prepared()
        with self._computing(), self._lock:
            self._fill_gap_before(seq, time.monotonic() if arrival is None else arrival)
            return self._release()

    def _fill_gap_before(self, seq: int, arrival: float) -> None:
        """Silence for the blocks missing before ``seq`` (counted lost); refuse one already taken."""
        if self._expected_seq is not None and seq < self._expected_seq:
            raise ValueError(f"block {seq} arrived after block {self._expected_seq - 1}; dropped")
        if self._expected_seq is not None:
            for _missing in range(self._expected_seq, seq):
                self._lost += 1
                self._take(None, np.zeros((self.channels, self.block_size), dtype=np.float32), arrival)
        self._expected_seq = seq + 1

    def push_silence(self, arrival: float | None = None) -> list[tuple[int, np.ndarray]]:
        """One block of silence that no output answers: the input stalled mid-chunk.

        A live server calls it when a sender stops, at the moment the next block would have
        arrived in real time, so the blocks already sent come back within the latency. The
        sender's next block follows the silence; ``seq`` numbering is untouched.
        """
        self._require_prepared()
        with self._computing(), self._lock:
            self._take(None, np.zeros((self.channels, self.block_size), dtype=np.float32),
                       time.monotonic() if arrival is None else arrival)
            return self._release()

    def flush(self) -> list[tuple[int, np.ndarray]]:
        """End of stream: release every block still inside, then reset for a new stream."""
        self._require_prepared()
        out: list[tuple[int, np.ndarray]] = []
        with self._computing(), self._lock:
            silence = np.zeros((self.channels, self.block_size), dtype=np.float32)
            while self._pending:
                self._take(None, silence, time.monotonic())
                out.extend(self._release())
        self.reset()
        return out

    def process(self, audio: np.ndarray, sample_rate: int, block_size: int = 1024) -> np.ndarray:
        """Whole-array convenience in render mode (pedalboard's ``process``): same shape out."""
        audio = np.atleast_2d(np.asarray(audio, dtype=np.float32))
        channels, length = audio.shape
        mode = self.mode
        self.mode = "render"
        try:
            self.prepare(sample_rate, channels, block_size)
            padded = np.pad(audio, ((0, 0), (0, -length % block_size)))
            blocks = []
            for seq in range(padded.shape[1] // block_size):
                part = padded[:, seq * block_size:(seq + 1) * block_size]
                blocks.extend(self.push(seq, part.T.reshape(-1)))
            blocks.extend(self.flush())
        finally:
            self.mode = mode
        out = np.concatenate([block.reshape(block_size, channels).T for _, block in sorted(blocks)], axis=1)
        return out[:, :length]

    def stats(self) -> StreamStats:
        with self._stats_lock:
            chunks = max(self._chunks, 1)
            return StreamStats(
                rtf_avg=self._rtf_sum / chunks,
                rtf_peak=max(self._rtf, default=0.0),
                iterations_avg=self._iterations_total / chunks,
                late_chunks=self._late,
                lost_blocks=self._lost,
                queued_blocks=len(self._pending),
                chunks=self._chunks,
                latency_samples=self.latency_samples,
            )

    # -- internals -------------------------------------------------------------------

    def _computing(self):
        """The stepper's compute slot for this thread's chunk work (a no-op without a stepper)."""
        return self.stepper.computing() if self.stepper is not None else contextlib.nullcontext()

    def _require_prepared(self) -> None:
        if not self._prepared:
            raise RuntimeError("call prepare(sample_rate, channels, block_size) first")

    def _wet_target(self) -> float:
        return 0.0 if self.params.get("bypass") >= 0.5 else self.params.get("wet")

    def _take(self, seq: int | None, block: np.ndarray, arrival: float) -> None:
        """Append one block of input and process every chunk it completes."""
        first = self._received
        self._input = np.concatenate([self._input, block], axis=1)
        self._received += block.shape[1]
        if seq is not None:
            self._pending.append((seq, block, first))
        chunk = self.config.chunk_frames
        completed = (self._received - self.hop) // self.hop + 1 - self._next_frame  # frames whose last sample is in
        chunks = max(completed, 0) // chunk
        for index in range(chunks):
            # A budget raised after prepare() cannot stretch the latency already reported.
            budget = min(self.params.get("budget"), self.prepared_budget)
            steps_seconds = budget * chunk * self.hop / self.sample_rate
            deadline = arrival + (index + 1) * steps_seconds - self._steps_end_early(steps_seconds)
            self._process_chunk(deadline)
        if self._pending_steps is not None and chunks:
            # Steps after the output end by the time the block that completes the next chunk can
            # arrive: however much budget they are given, the next chunk does not wait for them.
            style, values, deadline = self._pending_steps
            blocks_to_next = -(-((self._next_frame + chunk) * self.hop - self._received) // block.shape[1])
            next_due = arrival + blocks_to_next * block.shape[1] / self.sample_rate
            self._pending_steps = (style, values, min(deadline, next_due))

    def _steps_end_early(self, steps_seconds: float) -> float:
        """How much earlier than its budget a live chunk's steps end, so that it is ready within the reserve."""
        if self.mode != "live" or self._steps_after:
            return 0.0
        return min(MAX_EARLY_SHARE * steps_seconds, max(0.0, self._overrun.bound() - self._finish_allowance))

    def _learns_overrun(self, began: float, deadline: float, values: dict) -> bool:
        """Whether a chunk's overrun tells what the next chunks' will be: a live chunk with its steps
        before the output, begun before its deadline, over a whole window (a window still growing
        gives every step a new shape, whose first run costs torch far more than a step)."""
        return (self.mode == "live" and not self._steps_after and began < deadline and self._plans_steps(values)
                and self._history.shape[-1] >= self.window_frames)

    def _frames(self, first: int, count: int) -> np.ndarray:
        """Complex spectra ``(channels, bins, count)`` of frames ``first …``."""
        start = first * self.hop - (self.n_fft - self.hop) - self._input_start
        span = self._input[:, start:start + (count - 1) * self.hop + self.n_fft]
        windows = np.lib.stride_tricks.sliding_window_view(span, self.n_fft, axis=1)[:, :: self.hop][:, :count]
        # torch's FFT, not NumPy's: at 48 kHz the frame (2 228 = 4 × 557) is 3-4× slower in NumPy
        spectra = torch.fft.rfft(torch.from_numpy(windows * self.window), dim=-1).numpy()
        return spectra.transpose(0, 2, 1).astype(np.complex64)

    def _current_style(self) -> StyleTarget:
        """The target in force, partway through a crossfade if one is running."""
        if self._fade_from is None or self._fade_step >= self.fade_chunks:
            return self._style
        share = (self._fade_step + 1) / (self.fade_chunks + 1)
        return mix_targets([(self._fade_from, 1 - share), (self._style, share)], name=self._style.name)

    @property
    def _steps_after(self) -> bool:
        return self.config.steps_after_output and self.mode == "live"

    def _process_chunk(self, deadline: float) -> None:
        if self.mode == "live" and self.stepper is not None and deadline > time.monotonic() and not self._steps_after:
            with self.stepper.expecting(self._adam):  # its steps may wait for this chunk's, to take them together
                self._do_chunk(deadline)
        else:
            self._do_chunk(deadline)

    def _do_chunk(self, deadline: float) -> None:
        began = time.monotonic()
        self._hear()
        count, first = self.config.chunk_frames, self._next_frame
        spectra = self._frames(first, count)
        values = self.params.snapshot() | self._forced
        style = self._current_style()
        if self._fade_from is not None:
            self._fade_step += 1
            if self._fade_step >= self.fade_chunks:
                self._fade_from = None
        voice = VoiceControls(values["pitch"], values["formant"], values["pitch_follow"], values["formant_follow"])
        # the pitch and formant shift, on the grid's own frames: the shifted voice is the content from here on
        spectra = self._chain.run("spectrum", spectra, self._chain.context(
            values["style_weight"], values["colour"], style.bands, style.features, spectra, voice))
        logmag = np.log1p(to_grid(np.abs(spectra) * self.scale, self.preset.analysis.channels)).astype(np.float32)
        context = self._chain.context(values["style_weight"], values["colour"], style.bands, style.features, logmag,
                                      voice)
        bound = self._chain.limit(context)
        limit = torch.from_numpy(np.full_like(logmag, np.inf) if bound is None else bound)
        anchor = torch.from_numpy(self._chain.run("anchor", logmag, context, bound))
        self._history = torch.cat([self._history, anchor], dim=-1)[..., -self.window_frames:]
        self._limits = torch.cat([self._limits, limit], dim=-1)[..., -self.window_frames:]
        if self._steps_after:
            steps, live_late = 0, False  # counted when they are taken (learn_pending)
            self._pending_steps = (style, values, deadline)  # a later chunk of the same push replaces it
        else:
            steps = self._learn(style, values, deadline)
            live_late = self.mode == "live" and self._plans_steps(values) and steps == 0
        finishing = time.monotonic()
        if values["style_weight"] > 0:
            edited = torch.minimum(anchor + self._correction.detach(), limit).numpy()
        else:
            edited = anchor.numpy()
        output = self._chain.run("output", edited, context, bound)
        self._synthesise(first, spectra, logmag, output, context)
        self._next_frame += count
        if self._learns_overrun(began, deadline, values):
            self._overrun.learn(max(0.0, time.monotonic() - deadline))  # early is on time: only the tail counts
        if self._finish_times is not None:
            self._finish_times.append((time.monotonic() - finishing, time.monotonic() - began))
        seconds = count * self.hop / self.sample_rate
        rtf = (time.monotonic() - began) / seconds
        with self._stats_lock:
            self._rtf.append(rtf)
            self._rtf_sum += rtf
            self._chunks += 1
            self._iterations_total += steps
            self._late += int(live_late)
        self._trim_input()

    def learn_pending(self) -> int:
        """Take the steps of the last chunk gone out, when ``steps_after_output`` put them off; returns them.

        Call it once the blocks that ``push`` released have been sent. The steps end by that
        chunk's deadline, so they are over before the next chunk can be due.
        """
        self._require_prepared()
        if self._pending_steps is None:  # nothing put off (the steps came before the output): no compute slot taken
            return 0
        with self._computing(), self._lock:
            pending, self._pending_steps = self._pending_steps, None
            if pending is None:  # a reset between the look and the lock
                return 0
            style, values, deadline = pending
            steps = self._learn(style, values, deadline)
            with self._stats_lock:
                self._iterations_total += steps
                self._late += int(self._plans_steps(values) and steps == 0)
            return steps

    def _plans_steps(self, values: dict) -> bool:
        """Whether a chunk takes steps: the effect on, steps allowed, a window a network can read.

        Steps after the output wait for the whole window: a short chunk's steps must fit before
        the next chunk, and a window still growing gives every step a new shape, whose first
        run costs torch far more than the estimate it is planned with.
        """
        needed = self.window_frames if self._steps_after else self.min_window
        return values["style_weight"] > 0 and values["iterations"] > 0 and self._history.shape[-1] >= needed

    def _learn(self, style: StyleTarget, values: dict, deadline: float) -> int:
        """Adam steps on the correction over the recent window; returns the steps taken.

        Each step takes the next network of the pool and the gram of the whole window,
        corrected, against that network's style gram; the content term keeps the
        correction small relative to the window. Adam's moments carry across chunks, as
        the correction does.
        """
        if not self._plans_steps(values):
            return 0
        iterations = int(values["iterations"])
        style_weight, content_weight = values["style_weight"], values["content_weight"]
        window = self._history
        self._adam.lr = values["learning_rate"]
        live = self.mode == "live"
        if live and self.stepper is not None:
            return self.stepper.run(StepJob(window, self._limits, self._correction, self._adam, style.grams, self.nets,
                                            style_weight, content_weight, iterations, deadline, self._step_time.floor))
        pool = len(self.nets)
        steps = 0
        for step in range(iterations):
            began = time.monotonic()
            if live and began + self._step_time.planned() >= deadline:
                break  # a step started now would end past the deadline: the chunk goes out with what it has
            index = (self._net_cursor + step) % pool
            corrected = torch.minimum(window + self._correction, self._limits)
            loss = style_weight * style_loss(gram(self.nets[index](corrected)), style.grams[index])
            if content_weight > 0:
                loss = loss + content_weight * content_loss(corrected, window)
            self._correction.grad = None
            loss.backward()
            self._adam.step(self._correction, self._correction.grad)
            steps += 1
            self._step_time.learn(time.monotonic() - began)
        if steps == 0:  # no new measure: the estimate drifts down toward the warm-up's
            self._step_time.probe()
        self._net_cursor = (self._net_cursor + steps) % pool
        return steps

    def _synthesise(self, first: int, spectra: np.ndarray, logmag: np.ndarray, edited: np.ndarray,
                    context: Context) -> None:
        """Overlap-add the chunk's frames; move finished samples, limited, to the wet buffer."""
        edited_spectra = apply_logmag(spectra, logmag, edited, self.scale, self._phase_rng)
        frames = torch.fft.irfft(torch.from_numpy(edited_spectra), n=self.n_fft, dim=1).numpy()  # torch's: see _frames
        frames = frames.transpose(0, 2, 1) * self.window  # (channels, count, n_fft)
        count = frames.shape[1]
        start = first * self.hop - (self.n_fft - self.hop)
        end = start + (count - 1) * self.hop + self.n_fft
        if end > self._ola_start + self._ola.shape[1]:
            self._ola = np.pad(self._ola, ((0, 0), (0, end - self._ola_start - self._ola.shape[1])))
        for index in range(count):
            offset = start + index * self.hop - self._ola_start
            self._ola[:, offset:offset + self.n_fft] += frames[:, index]
        done = (first + count + 1) * self.hop - self.n_fft  # samples covered by all their frames
        if done > self._finished:
            lo, hi = self._finished - self._ola_start, done - self._ola_start
            finished = self._chain.run("audio", self._ola[:, lo:hi] / self.overlap_gain, context)
            self._unheard.append(finished)
            self._wet = np.concatenate([self._wet, finished], axis=1)
            self._ola = self._ola[:, hi:]
            self._ola_start = done
            self._finished = done

    def _hear(self) -> None:
        """Let the chain hear the audio delivered since it last did (``Chain.listen``), piece by piece.

        Run at the next chunk's start, not once a chunk is finished: the next chunk is the
        first to use what the chain hears, so its output is the same, and the listening (the
        match EQ's analysis of the delivered audio, a fifth of a chunk's finishing at 48 kHz)
        stays out of the time between a chunk's deadline and its blocks going out.
        """
        for audio in self._unheard:
            self._chain.listen(audio)
        self._unheard.clear()

    def _release(self) -> list[tuple[int, np.ndarray]]:
        """Mix and hand out every pending block whose wet samples are all finished."""
        out = []
        self._wet_ramp.set(self._wet_target())
        self._gain_ramp.set(10 ** (self.params.get("gain_db") / 20))
        while self._pending and self._pending[0][2] + self.block_size <= self._finished:
            seq, dry, first = self._pending.popleft()
            lo = first - self._wet_start
            wet = self._wet[:, lo:lo + self.block_size]
            mix = self._wet_ramp.next(self.block_size)
            gain = self._gain_ramp.next(self.block_size)
            block = (dry + mix * (wet - dry)) * gain
            out.append((seq, np.ascontiguousarray(block.T).reshape(-1)))
        # Wet samples before the oldest pending block are no longer needed; those not finished yet
        # (silence taken without a seq, still inside the overlap-add) are not in the buffer to drop.
        keep = min(self._pending[0][2] if self._pending else self._finished, self._finished) - self._wet_start
        if keep > 0:
            self._wet = self._wet[:, keep:]
            self._wet_start += keep
        return out

    def _trim_input(self) -> None:
        """Drop input no future frame reads."""
        needed = self._next_frame * self.hop - (self.n_fft - self.hop)
        drop = needed - self._input_start
        if drop > 0:
            self._input = self._input[:, drop:]
            self._input_start = needed

    def _fitting_budget(self, max_latency: int, reserve: int) -> float:
        """The largest budget, at most the prepared one, whose schedule plus ``reserve`` fits ``max_latency`` samples."""
        room = max_latency - reserve
        if self._latency(self.prepared_budget) <= room:
            return self.prepared_budget
        if self.config.steps_after_output:
            raise ValueError(f"the latency cannot fit {max_latency} samples: it needs {self._latency(0) + reserve} "
                             "(allow more latency, or use fewer --chunk-frames)")
        low = self.params.specs["budget"].minimum
        if self._latency(low) > room:
            raise ValueError(f"the latency cannot fit {max_latency} samples: it needs {self._latency(low) + reserve} "
                             f"even at budget {low:g} (allow more latency, or use fewer --chunk-frames)")
        high = self.prepared_budget
        for _ in range(24):  # the schedule grows with the budget: bisect to well under a sample's worth
            middle = (low + high) / 2
            low, high = (middle, high) if self._latency(middle) <= room else (low, middle)
        return low

    def _latency(self, budget: float) -> int:
        """Worst-case samples from a block's arrival to its output, blocks arriving in real time.

        Simulated over enough blocks to cover every phase between block and chunk grids:
        output block ``b`` is ready when the chunk holding frame ``⌊((b+1)B − 1 + N − H) / H⌋``
        is done, at that chunk's completing block's arrival plus its compute budget (none
        when the steps come after the output).
        """
        budget = 0.0 if self.config.steps_after_output else budget
        block, hop, n_fft, chunk = self.block_size, self.hop, self.n_fft, self.config.chunk_frames
        period = math.lcm(block, chunk * hop) // block
        worst = 0.0
        for index in range(min(period, 4096) + 2):
            end = (index + 1) * block  # arrival of block b, in samples of real time
            frame = (end - 1 + n_fft - hop) // hop
            last_frame = (frame // chunk + 1) * chunk - 1
            needed = (last_frame + 1) * hop  # samples the chunk needs
            arrival = math.ceil(needed / block) * block
            already = (arrival - needed) // (chunk * hop)  # chunks completed by the same block before it
            ready = arrival + budget * (already + 1) * chunk * hop
            worst = max(worst, ready - end)
        return int(math.ceil(worst))


def warm_up(style: StyleTarget, preset: Preset, config: StreamConfig,
            formats: tuple[tuple[int, int], ...] = ((48000, 1), (44100, 2)),
            block_size: int = 512, seconds: float = 0.5, stepper: BatchStepper | None = None,
            streams: int = 1, demand: Parameters | None = None) -> Demand | None:
    """Pay every one-off cost of a live session's first chunks before a server answers anyone.

    Streams ``seconds`` of a test signal, live, through a fresh processor at each
    (sample rate, channels): librosa's import (numba compiles or loads its functions),
    torch's first kernels forward and backward, mono and stereo. Default parameters, so
    every stage of the effect runs whatever the server starts with. After the first
    format a new rate costs a connect nothing more than its own ``prepare``. With a
    ``stepper`` the streams step through it, and it then runs and times a batched step of
    every size up to ``streams`` mono windows. Given ``demand`` (the server's parameters),
    returns the demand of a stream of the first format under them, prepared again once
    everything is warm (the first prepare times cold code); else None.
    """
    for rate, channels in formats:
        processor = StreamProcessor(Parameters(), style, preset, config=config, stepper=stepper)
        processor.prepare(rate, channels, block_size)
        signal = _test_signal(rate, channels, int(seconds * rate))
        for seq, start in enumerate(range(0, signal.shape[1] - block_size + 1, block_size)):
            processor.push(seq, signal[:, start:start + block_size].T.reshape(-1))
            processor.learn_pending()
        processor.flush()
        if stepper is not None and (rate, channels) == formats[0]:
            stepper.warm_up(processor.nets, style.grams, preset.analysis.channels, processor.window_frames, streams)
    if demand is None:
        return None
    processor = StreamProcessor(demand, style, preset, config=config, stepper=stepper)
    processor.prepare(*formats[0], block_size)
    return processor.demand


def _test_signal(sample_rate: int, channels: int, length: int) -> np.ndarray:
    """Noise over a tone with a burst past full scale: every finishing stage has work (fill, levels, limiter)."""
    rng = np.random.default_rng(0)
    t = np.arange(length) / sample_rate
    signal = 0.2 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(length)
    signal[length // 2:length // 2 + length // 8] *= 8.0
    return np.repeat(signal[None].astype(np.float32), channels, axis=0)

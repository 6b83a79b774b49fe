"""Live optimiser steps of many streams at once: ``BatchStepper``.

A live chunk's Adam steps (``stream.StreamProcessor._learn``) are small: one 0.75 s window
through one pool network, a gram, a backward pass. Run stream by stream, their cost is fixed
overhead and weight traffic. The stepper takes the chunks of every stream that are due at
the same time (each a ``StepJob``), stacks their windows into one batch, and runs each step
through the pool network for all of them together: one convolution over the batch, one
matrix product per style against every window of it. Each stream keeps its own correction,
Adam state, style grams and deadline: a job joins a step only if that step, by the stepper's
estimate for the batch's size, ends before the job's deadline, and a job leaves as soon as it
has taken its ``iterations`` or no further step fits.

One thread steps (so a machine's cores are left to the streams' other work, and a GPU sees one
stream of kernels); the streams' worker threads hand it their jobs and wait. On a GPU the
windows, corrections and Adam state are copied there for the job and back when it ends.

The streams' other work (colouring, resynthesis) runs on their own threads, but no more of
them at once than ``slots``: more threads computing than cores only makes every one of them,
and the server's watchdog, wait longer for a core and the interpreter lock. A thread that
waits for its steps gives its slot up, and takes one back before any thread that has not
started its chunk yet.
"""

from __future__ import annotations

import copy
import itertools
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from .adam import Adam
from .step_time import StepTime

STYLE_CACHE = 8  # style grams kept on the device (a crossfade makes a new mixture every chunk)
RECENT_STEPS = 200  # steps ``BatchStats.recent`` averages over
# Before the first step of new chunks the stepper waits, up to this long and only while the first
# deadline still allows a step of them all, for the jobs of streams that have said a chunk of
# theirs is on its way (``expect``): one step of them all costs far less than one step each.
GATHER_SECONDS = 0.015
_SERIALS = itertools.count()


@dataclass(eq=False)
class StepJob:
    """One chunk's live steps: what a stream hands the stepper, and the steps it got back.

    ``window`` and ``limits`` are ``(channels, grid, frames)``; ``correction`` is the stream's
    ``(1, grid, 1)`` parameter and ``adam`` its optimiser over it (learning rate already set);
    ``grams`` the style's ``(pool, filters, filters)`` targets for ``nets``.
    """

    window: torch.Tensor
    limits: torch.Tensor
    correction: torch.Tensor
    adam: Adam
    grams: torch.Tensor
    nets: Sequence[nn.Module]
    style_weight: float
    content_weight: float
    iterations: int
    deadline: float  # time.monotonic() by which every step must have ended
    step_hint: float = 0.0  # the stream's own measure of one step alone, until the stepper has one
    steps: int = 0
    submitted: float = 0.0  # when the stepper got it
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)
    serial: int = field(init=False, default_factory=lambda: next(_SERIALS))  # never reused, unlike id()

    @property
    def rows(self) -> int:
        return self.window.shape[0]

    @property
    def key(self) -> tuple[int, int]:
        """Jobs step together when they share the pool and the window length."""
        return id(self.nets), self.window.shape[-1]


@dataclass
class BatchStats:
    """What the stepper has done: ``/status`` reports ``recent``, the log ``streams_per_step``."""

    steps: int  # batched steps run
    stream_steps: int  # steps the streams got (a step of a batch of three counts three)
    largest: int  # most streams in one step
    recent: float  # streams per step over the last RECENT_STEPS steps

    @property
    def streams_per_step(self) -> float:
        return self.stream_steps / self.steps if self.steps else 0.0


def batched_step(jobs: Sequence[StepJob], net: nn.Module, index: int,
                 window: torch.Tensor | None = None, limits: torch.Tensor | None = None) -> None:
    """One Adam step of every job through ``net``, network ``index`` of their pool, together.

    Each job's correction moves by the gradient of its own loss, as ``StreamProcessor._learn``
    weighs it: ``style_weight`` × the relative gram error plus ``content_weight`` × the relative
    error of the corrected window, each averaged over the job's channels. ``window`` and
    ``limits`` are the jobs' stacked, when already made.

    The step is written as a handful of large torch calls, because each call gives up and
    retakes the interpreter lock, which the server's other threads hold often: the gradient of
    the gram error with respect to the features ``F`` (``T`` frames) is computed directly,
    ``(4/T)(F Fᵀ/T − G) F = (4/T²) F (Fᵀ F) − (4/T) G F``, from a frames × frames product and one
    product with ``G`` per style, with no filters × filters tensor per window, and handed to
    autograd, which takes it back through the network in one call.
    """
    with torch.no_grad():
        window = torch.cat([job.window for job in jobs]) if window is None else window
        limits = torch.cat([job.limits for job in jobs]) if limits is None else limits
        corrections = torch.cat([job.correction for job in jobs])
        owners = _owners(jobs)
        if owners is not None:
            corrections = corrections.index_select(0, owners)
    corrections.requires_grad_(True)
    corrected = torch.minimum(window + corrections, limits)
    features = net(corrected)
    with torch.no_grad():
        frames = features.shape[-1]
        gradients, start = [], 0
        for group in _same_style(jobs):  # usually one: every stream of the server on the active style
            rows = sum(job.rows for job in group)
            target, part = group[0].grams[index], features[start:start + rows]
            norm = max(_norm(group[0].grams, index), 1e-12)
            scale = torch.tensor([4 * job.style_weight / job.rows / norm / frames for job in group for _ in range(job.rows)],
                                 device=features.device)
            inner = part.transpose(1, 2) @ part
            gradient = torch.baddbmm(torch.matmul(target, part), part, inner, beta=-1.0, alpha=1.0 / frames)
            gradients.append(gradient.mul_(scale[:, None, None]))
            start += rows
        outputs, grads = [features], [torch.cat(gradients) if len(gradients) > 1 else gradients[0]]
        content = [2 * job.content_weight / job.rows for job in jobs for _ in range(job.rows)]
        if any(weight > 0 for weight in content):
            norms = window.pow(2).sum(dim=(1, 2)).clamp_min(1e-12)
            weights = torch.tensor(content, device=window.device) / norms
            outputs.append(corrected)
            grads.append((corrected - window).mul_(weights[:, None, None]))
    torch.autograd.backward(outputs, grads)
    with torch.no_grad():
        gradient = corrections.grad
        if owners is not None:
            gradient = torch.zeros(len(jobs), *gradient.shape[1:], device=gradient.device).index_add_(0, owners, gradient)
        for job, grad in zip(jobs, gradient.split(1)):
            job.adam.step(job.correction, grad)


_NORMS: dict[int, tuple[torch.Tensor, list[float | None]]] = {}  # id(grams) → (grams, ‖Gᵢ‖² per network)
_NORMS_LOCK = threading.Lock()


def _norm(grams: torch.Tensor, index: int) -> float:
    """``‖grams[index]‖²``, computed once per style and network (a few styles kept)."""
    with _NORMS_LOCK:
        entry = _NORMS.get(id(grams))
        if entry is None or entry[0] is not grams:
            entry = _NORMS[id(grams)] = (grams, [None] * grams.shape[0])
            while len(_NORMS) > STYLE_CACHE:
                del _NORMS[next(iter(_NORMS))]
        if entry[1][index] is None:
            entry[1][index] = float(torch.linalg.vector_norm(grams[index]).square())
        return entry[1][index]


def _owners(jobs: Sequence[StepJob]) -> torch.Tensor | None:
    """Which job each row of the batch belongs to, where a job has more than one row (stereo); else None."""
    if all(job.rows == 1 for job in jobs):
        return None
    return torch.tensor([number for number, job in enumerate(jobs) for _ in range(job.rows)], device=jobs[0].window.device)


def _same_style(jobs: Sequence[StepJob]) -> list[list[StepJob]]:
    """Runs of consecutive jobs with the same style grams (the stepper orders a batch so they are consecutive)."""
    groups: list[list[StepJob]] = []
    for job in jobs:
        if groups and groups[-1][0].grams is job.grams:
            groups[-1].append(job)
        else:
            groups.append([job])
    return groups


class _Slots:
    """At most ``count`` threads computing at once; a thread coming back from its steps goes first."""

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError("slots must be at least 1")
        self._free = count
        self._returning = 0  # threads back from their steps, waiting for a slot
        self._cond = threading.Condition()
        self._held = threading.local()

    @property
    def held(self) -> bool:
        return getattr(self._held, "slot", False)

    def acquire(self, returning: bool = False) -> None:
        with self._cond:
            self._returning += returning
            while not self._free or (not returning and self._returning):
                self._cond.wait()
            self._free -= 1
            self._returning -= returning
        self._held.slot = True

    def release(self) -> None:
        self._held.slot = False
        with self._cond:
            self._free += 1
            self._cond.notify_all()


class _Staged:
    """A job's tensors on the stepper's device, and its own Adam there: copied in, copied back when it ends."""

    def __init__(self, job: StepJob, device: torch.device, grams: torch.Tensor) -> None:
        self.original = job
        self.correction = job.correction.detach().to(device).requires_grad_(True)
        self.job = StepJob(job.window.to(device), job.limits.to(device), self.correction, job.adam.copy(device), grams,
                           job.nets, job.style_weight, job.content_weight, job.iterations, job.deadline, job.step_hint)

    def write_back(self) -> None:
        with torch.no_grad():
            self.original.correction.copy_(self.correction.detach().cpu())
        self.original.adam.take(self.job.adam, self.original.correction.device)


class BatchStepper:
    """Runs the live steps of every stream handed to it, batched; ``run(job)`` blocks until the job ends.

    ``device``: ``"cpu"`` or a CUDA device. ``staged`` copies each job to the device and back
    (always on a GPU; on the CPU only to exercise that path in tests). ``slots``: how many of the
    streams' threads may compute at once inside ``computing()`` (None: no limit).
    """

    def __init__(self, device: str | torch.device = "cpu", staged: bool | None = None, slots: int | None = None) -> None:
        self.device = torch.device(device)
        self._slots = _Slots(slots) if slots is not None else None
        self.staged = self.device.type != "cpu" if staged is None else staged
        self._cond = threading.Condition()
        self._jobs: list[StepJob] = []
        self._staged: dict[int, _Staged] = {}  # id(job) → its copy on the device
        # The time of a step: one row's (learned from every step, whatever its size) × the batch's cost
        # relative to one row (measured by warm_up; linear in the rows where not measured).
        self._times: dict[tuple[int, int], StepTime] = {}  # key → the time of a one-row step
        self._shapes: dict[tuple[int, int], dict[int, float]] = {}  # key → rows → cost relative to one row
        self._cursors: dict[tuple[int, int], int] = {}  # key → next pool network
        self._nets: dict[int, list[nn.Module]] = {}  # id(pool) → the pool on the device
        self._grams: OrderedDict[int, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()  # id → (source, on device)
        self._stack: tuple[tuple[int, ...], torch.Tensor, torch.Tensor] | None = None  # the last batch's windows
        self._steps = self._stream_steps = self._largest = 0
        self._recent: deque[int] = deque(maxlen=RECENT_STEPS)
        self._thread: threading.Thread | None = None
        self._closing = False
        self._expected: set[int] = set()  # streams (ids of their Adam) whose chunk's job is on its way

    # -- the streams' side ---------------------------------------------------------------

    def run(self, job: StepJob) -> int:
        """Hand over ``job`` and wait until its steps end; returns the steps it took. A job runs once."""
        if job.done.is_set():
            raise ValueError("this job has run already: make one per chunk")
        if job.iterations <= 0 or job.deadline <= time.monotonic():
            return 0
        with self._cond:
            if self._closing:
                raise RuntimeError("the batch stepper is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="batch-stepper", daemon=True)
                self._thread.start()
            if self.staged:
                self._staged[id(job)] = _Staged(job, self.device, self._device_grams(job.grams))
            job.submitted = time.monotonic()
            self._expected.discard(id(job.adam))
            self._jobs.append(job)
            self._cond.notify_all()
        holding = self._slots is not None and self._slots.held
        if holding:
            self._slots.release()
        job.done.wait()
        if holding:
            self._slots.acquire(returning=True)
        if job.error is not None:
            raise job.error
        return job.steps

    @contextmanager
    def expecting(self, stream: Adam) -> Iterator[None]:
        """Tell the stepper that ``stream`` (its optimiser) is preparing a chunk whose job follows shortly."""
        with self._cond:
            self._expected.add(id(stream))
        try:
            yield
        finally:
            with self._cond:
                if id(stream) in self._expected:  # the chunk took no steps
                    self._expected.discard(id(stream))
                    self._cond.notify_all()

    @contextmanager
    def computing(self) -> Iterator[None]:
        """Hold one of the ``slots`` while a stream's thread does its chunk's work (re-entrant: held once)."""
        if self._slots is None or self._slots.held:
            yield
            return
        self._slots.acquire()
        try:
            yield
        finally:
            self._slots.release()

    def stats(self) -> BatchStats:
        with self._cond:
            recent = sum(self._recent) / len(self._recent) if self._recent else 0.0
            return BatchStats(self._steps, self._stream_steps, self._largest, recent)

    def close(self) -> None:
        """End every job's steps and stop the thread."""
        with self._cond:
            self._closing = True
            for job in list(self._jobs):
                self._finish(job)
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(5.0)

    def warm_up(self, nets: Sequence[nn.Module], grams: torch.Tensor, channels: int, frames: int,
                most_rows: int, steps: int = 3) -> None:
        """Pay each batch size's first-use costs before any stream waits on them, and measure each.

        Runs ``steps`` steps (through the pool's first networks) of a batch of 1 … ``most_rows``
        rows of a test window; the last one's time seeds that size's estimate.
        """
        generator = torch.Generator().manual_seed(0)
        measured: dict[int, float] = {}
        for rows in range(1, most_rows + 1):
            jobs = []
            for _ in range(rows):
                correction = torch.zeros(1, channels, 1, requires_grad=True)
                window = 3 * torch.rand(1, channels, frames, generator=generator)
                jobs.append(StepJob(window, torch.full_like(window, math.inf), correction,
                                    Adam(lr=0.02), grams, nets, 1.0, 0.3, 1, math.inf))
            key = jobs[0].key
            staged = [_Staged(job, self.device, self._device_grams(grams)).job for job in jobs] if self.staged else jobs
            for step in range(steps):
                began = time.monotonic()
                self._step(staged, key, step % len(nets))
                seconds = time.monotonic() - began
            measured[rows] = seconds
        shape, highest = {}, 1.0
        for rows in sorted(measured):  # a larger batch never costs less than a smaller one
            highest = shape[rows] = max(highest, measured[rows] / measured[1])
        self._shapes[key] = shape
        self._times[key] = StepTime.measured(measured[1])
        self._stack = None

    # -- the stepping thread ---------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                wait = self._gathering(time.monotonic())
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                batch, key = self._choose(time.monotonic())
                if not batch:
                    continue
                index = self._cursors.get(key, 0)
                self._cursors[key] = (index + 1) % len(batch[0].nets)
                work = [self._staged[id(job)].job if self.staged else job for job in batch]
            began = time.monotonic()
            try:
                self._step(work, key, index)
            except Exception as error:  # a bug or a bad tensor: those streams raise it, the others go on
                with self._cond:
                    for job in batch:
                        job.error = error
                        self._finish(job)
                continue
            seconds = time.monotonic() - began
            with self._cond:
                rows = sum(job.rows for job in batch)
                self._learn_estimate(key, rows, seconds)
                self._steps += 1
                self._stream_steps += len(batch)
                self._largest = max(self._largest, len(batch))
                self._recent.append(len(batch))
                for job in batch:
                    job.steps += 1
                    if job.steps >= job.iterations:
                        self._finish(job)

    def _gathering(self, now: float) -> float:
        """Seconds to wait for the jobs of streams whose chunks are on their way, before new chunks' first step (0: go)."""
        if not self._expected or any(job.steps for job in self._jobs):
            return 0.0
        first = min(self._jobs, key=lambda job: job.deadline)
        rows = sum(job.rows for job in self._jobs) + len(self._expected)
        latest = first.deadline - self._estimate(first.key, rows, first)  # a step of them all must still fit
        until = min(min(job.submitted for job in self._jobs) + GATHER_SECONDS, latest)
        return max(0.0, until - now)

    def _choose(self, now: float) -> tuple[list[StepJob], tuple[int, int]]:
        """The jobs that step next and their key; ends the jobs no step can fit.

        The job with the fewest steps so far (the earliest deadline among equals) steps, and
        with it, in the same order, every other job of its kind that the step can take while
        still ending before each member's deadline. A job that cannot take even a step alone
        is done: its chunk goes out with the correction learned so far. So is one this step
        leaves out when no step of its own could end by its deadline after this one: waiting
        for the step to end would only take time from its chunk's finishing.
        """
        for job in [job for job in self._jobs if job.deadline < now + self._estimate(job.key, job.rows, job)]:
            if job.steps == 0:
                self._probe(job.key)
            self._finish(job)
        if not self._jobs:
            return [], (0, 0)
        ordered = sorted(self._jobs, key=lambda job: (job.steps, job.deadline))
        first = ordered[0]
        key, batch, rows, due = first.key, [first], first.rows, first.deadline
        for job in ordered[1:]:
            if job.key == key and min(due, job.deadline) >= now + self._estimate(key, rows + job.rows, first):
                batch.append(job)
                rows, due = rows + job.rows, min(due, job.deadline)
        ends = now + self._estimate(key, rows, first)
        for job in ordered[1:]:  # left out, and no step of its own fits after this one: its chunk goes on now
            if job not in batch and job.deadline < ends + self._estimate(job.key, job.rows, job):
                self._finish(job)
        return sorted(batch, key=lambda job: id(job.grams)), key

    def _relative(self, key: tuple[int, int], rows: int) -> float:
        """A step of ``rows`` rows' cost relative to one row's: measured, else linear beyond the largest measure."""
        shape = self._shapes.get(key, {})
        if rows in shape:
            return shape[rows]
        below = [size for size in shape if size < rows]
        return shape[max(below)] * rows / max(below) if below else float(rows)

    def _estimate(self, key: tuple[int, int], rows: int, job: StepJob) -> float:
        """Seconds one step of ``rows`` rows takes now (the job's own hint until the stepper has a measure)."""
        step_time = self._times.get(key)
        return (job.step_hint if step_time is None else step_time.planned()) * self._relative(key, rows)

    def _learn_estimate(self, key: tuple[int, int], rows: int, seconds: float) -> None:
        sample = seconds / self._relative(key, rows)
        if key in self._times:
            self._times[key].learn(sample)
        else:
            self._times[key] = StepTime.measured(sample)

    def _probe(self, key: tuple[int, int]) -> None:
        """A job went without a step: drift the estimate down so one slow step cannot starve every later chunk."""
        if key in self._times:
            self._times[key].probe()

    def _finish(self, job: StepJob) -> None:
        if job in self._jobs:
            self._jobs.remove(job)
        staged = self._staged.pop(id(job), None)
        if staged is not None and job.error is None:
            try:
                staged.write_back()
            except Exception as error:
                job.error = error
        job.done.set()

    def _step(self, jobs: list[StepJob], key: tuple[int, int], index: int) -> None:
        """One batched step of ``jobs`` through network ``index`` of their pool (on the device)."""
        members = tuple(job.serial for job in jobs)
        if self._stack is None or self._stack[0] != members:
            self._stack = (members, torch.cat([job.window for job in jobs]), torch.cat([job.limits for job in jobs]))
        net = self._device_nets(jobs[0].nets)[index]
        batched_step(jobs, net, index, self._stack[1], self._stack[2])
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _device_nets(self, nets: Sequence[nn.Module]) -> Sequence[nn.Module]:
        if not self.staged:
            return nets
        if id(nets) not in self._nets:
            self._nets[id(nets)] = [copy.deepcopy(net).to(self.device) for net in nets]
        return self._nets[id(nets)]

    def _device_grams(self, grams: torch.Tensor) -> torch.Tensor:
        """The style's grams on the device, copied once per style (a few kept)."""
        cached = self._grams.get(id(grams))
        if cached is not None and cached[0] is grams:
            self._grams.move_to_end(id(grams))
            return cached[1]
        placed = grams.to(self.device)
        self._grams[id(grams)] = (grams, placed)
        while len(self._grams) > STYLE_CACHE:
            self._grams.popitem(last=False)
        return placed

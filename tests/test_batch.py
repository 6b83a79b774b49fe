"""The batch stepper: a batched step is each stream's own step, taken together; deadlines and
iteration counts hold per job; jobs due together share steps; the device copy round-trips; a live
processor steps through it."""

from __future__ import annotations

import dataclasses
import math
import threading
import time

import numpy as np
import pytest
import torch

from gramophone.engine.adam import Adam
from gramophone.engine.batch import BatchStepper, StepJob, batched_step
from gramophone.engine.network import get_pool
from gramophone.engine.objective import content_loss, gram, style_loss
from gramophone.engine.step_time import StepTime
from gramophone.engine.stream import StreamProcessor
from gramophone.params import Parameters
from testpresets import SMALL

pytestmark = pytest.mark.usefixtures("one_torch_thread")
GRID, FRAMES = SMALL.analysis.channels, 40


@pytest.fixture(scope="module")
def nets():
    return get_pool(GRID, SMALL.network, SMALL.analysis.max_freq_hz)


def style_grams(nets, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    clip = 3 * torch.rand(1, GRID, 200, generator=generator)
    return torch.stack([gram(net(clip))[0] for net in nets])


def make_job(nets, grams, channels: int, seed: int, content_weight: float = 0.3, style_weight: float = 1.0,
             iterations: int = 8, deadline: float = math.inf, frames: int = FRAMES) -> StepJob:
    """A job with a random window, a ceiling some bins reach, and a non-zero correction."""
    generator = torch.Generator().manual_seed(seed)
    window = 3 * torch.rand(channels, GRID, frames, generator=generator)
    limits = window + torch.rand(window.shape, generator=generator)
    correction = (0.3 * torch.randn(1, GRID, 1, generator=generator)).requires_grad_(True)
    return StepJob(window, limits, correction, Adam(lr=0.02), grams, nets,
                   style_weight, content_weight, iterations, deadline)


def step_alone(job: StepJob, index: int) -> None:
    """One step as ``StreamProcessor._learn`` takes it for a stream on its own."""
    corrected = torch.minimum(job.window + job.correction, job.limits)
    loss = job.style_weight * style_loss(gram(job.nets[index](corrected)), job.grams[index])
    if job.content_weight > 0:
        loss = loss + job.content_weight * content_loss(corrected, job.window)
    job.correction.grad = None
    loss.backward()
    job.adam.step(job.correction, job.correction.grad)


def clone(job: StepJob) -> StepJob:
    correction = job.correction.detach().clone().requires_grad_(True)
    return StepJob(job.window, job.limits, correction, Adam(lr=0.02), job.grams, job.nets,
                   job.style_weight, job.content_weight, job.iterations, job.deadline)


def test_a_batched_step_is_each_streams_own_step(nets):
    """Mono and stereo windows, two styles, other weights: four steps together move every
    correction as four steps alone do, and Adam's moments match."""
    first, second = style_grams(nets, 1), style_grams(nets, 2)
    alone = [make_job(nets, first, 1, 10), make_job(nets, second, 2, 11, content_weight=0.0),
             make_job(nets, first, 1, 12, style_weight=2.5), make_job(nets, second, 1, 13, content_weight=1.0)]
    together = [clone(job) for job in alone]
    starts = [job.correction.detach().clone() for job in alone]
    for step in range(4):
        index = step % len(nets)
        for job in alone:
            step_alone(job, index)
        batched_step(together, nets[index], index)
    for mine, theirs, start in zip(together, alone, starts):
        assert (theirs.correction.detach() - start).abs().max() > 0.01
        np.testing.assert_allclose(mine.correction.detach(), theirs.correction.detach(), atol=2e-5)
        assert mine.adam.steps == theirs.adam.steps == 4
        np.testing.assert_allclose(mine.adam.exp_avg, theirs.adam.exp_avg, rtol=1e-3, atol=1e-7)


def test_a_job_takes_its_iterations_and_no_step_past_its_deadline(nets):
    stepper = BatchStepper()
    grams = style_grams(nets, 1)
    try:
        assert stepper.run(make_job(nets, grams, 1, 1, iterations=3)) == 3
        assert stepper.run(make_job(nets, grams, 1, 2, deadline=time.monotonic() - 0.001)) == 0
        job = make_job(nets, grams, 1, 3, iterations=100_000, deadline=time.monotonic() + 0.15)
        steps = stepper.run(job)
        ended = time.monotonic()
        assert 0 < steps < 100_000  # more than any machine takes in 0.15 s: the deadline ended it
        # the last step started only where the estimate said it would fit; on a loaded machine one may overrun a little
        assert ended - job.deadline < 0.1
    finally:
        stepper.close()


def test_jobs_due_together_step_together(nets):
    """Three streams' jobs handed over at once from three threads share steps, though only one of
    the threads may compute at a time: a thread waiting for its steps gives its slot up."""
    stepper = BatchStepper(slots=1)
    grams = style_grams(nets, 1)
    jobs = [make_job(nets, grams, 1, seed, iterations=6) for seed in range(3)]
    references = [clone(job) for job in jobs]

    def chunk(job: StepJob) -> None:
        with stepper.computing():
            stepper.run(job)

    threads = [threading.Thread(target=chunk, args=(job,)) for job in jobs]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        stepper.close()
    stats = stepper.stats()
    assert all(job.steps == 6 for job in jobs)
    assert stats.stream_steps == 18 and stats.largest >= 2 and stats.steps < 18
    for job, reference in zip(jobs, references):  # each moved by its own gradient, not the batch's
        assert not torch.allclose(job.correction, reference.correction)


def test_a_job_left_out_of_a_step_goes_on_at_once_when_none_of_its_own_would_fit_after(nets):
    """A job the next step cannot take ends now, not after that step, when no step of its own
    could end by its deadline once that one has: its chunk keeps the time for its finishing."""
    grams = style_grams(nets, 1)
    stepper = BatchStepper()
    now = time.monotonic()
    first = make_job(nets, grams, 1, 1, deadline=now + 1.0)  # no step yet: it steps next
    tight = make_job(nets, grams, 1, 2, deadline=now + 0.015, frames=FRAMES + 1)  # another shape: not in its batch
    loose = make_job(nets, grams, 1, 3, deadline=now + 0.5, frames=FRAMES + 1)
    tight.steps = loose.steps = 1
    for job in (first, tight):
        stepper._shapes[job.key] = {1: 1.0}
        stepper._times[job.key] = StepTime.measured(0.010)
    stepper._jobs = [first, tight, loose]
    batch, key = stepper._choose(now)
    assert batch == [first] and key == first.key
    assert tight.done.is_set() and tight not in stepper._jobs  # a step of its own would end at 20 ms, past its 15
    assert not loose.done.is_set() and loose in stepper._jobs


def test_the_device_copy_comes_back_as_if_stepped_in_place(nets):
    """A GPU stepper copies each job to the device and back: on the CPU that round trip must
    leave the same correction and Adam state as stepping in place."""
    grams = style_grams(nets, 1)
    direct, staged = BatchStepper(), BatchStepper(staged=True)
    job = make_job(nets, grams, 2, 5, iterations=3)
    copy = clone(job)
    try:
        for stepper, each in ((direct, job), (staged, copy)):
            assert stepper.run(each) == 3
            later = dataclasses.replace(each, steps=0, done=threading.Event())  # the next chunk: the same state
            assert stepper.run(later) == 3
    finally:
        direct.close()
        staged.close()
    np.testing.assert_allclose(copy.correction.detach(), job.correction.detach(), atol=1e-6)
    assert copy.adam.steps == job.adam.steps == 6
    np.testing.assert_allclose(copy.adam.exp_avg_sq, job.adam.exp_avg_sq, rtol=1e-6)


def test_a_live_processor_steps_through_the_stepper(style_a):
    """Two live streams share one stepper: every block comes out once, in order, and the chunks took steps."""
    stepper = BatchStepper()
    params = Parameters()
    params.set("budget", 0.9)
    processors = [StreamProcessor(params, style_a, SMALL, mode="live", stepper=stepper) for _ in range(2)]
    rate, block = 22050, 256
    signal = (0.3 * np.sin(2 * np.pi * 220 * np.arange(2 * rate) / rate)).astype(np.float32)
    outputs: list[dict[int, np.ndarray]] = [{}, {}]

    def stream(number: int) -> None:
        processor = processors[number]
        start = time.monotonic()
        for seq in range(signal.size // block):
            arrival = start + (seq + 1) * block / rate
            time.sleep(max(0.0, arrival - time.monotonic()))
            outputs[number].update(processor.push(seq, signal[seq * block:(seq + 1) * block], arrival=arrival))
        outputs[number].update(processor.flush())

    try:
        for processor in processors:
            processor.prepare(rate, 1, block)
        threads = [threading.Thread(target=stream, args=(number,)) for number in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        stats = [processor.stats() for processor in processors]
    finally:
        stepper.close()
    for out, stat in zip(outputs, stats):
        assert sorted(out) == list(range(signal.size // block))
        assert all(samples.size == block for samples in out.values())
        assert stat.iterations_avg > 0
    assert stepper.stats().stream_steps > 0


def test_a_step_whose_time_varies_is_planned_with_room_for_it(nets):
    """Steps of varying time are planned at their smoothed time plus twice its smoothed deviation,
    so the slower ones still end by the deadline; chunks that get no step let that room decay."""
    job = make_job(nets, style_grams(nets, 1), 1, 1)
    steady, varying = BatchStepper(), BatchStepper()
    for stepper, samples in ((steady, [0.015] * 8), (varying, [0.010, 0.020] * 4)):
        stepper._shapes[job.key] = {1: 1.0}
        for sample in samples:
            stepper._learn_estimate(job.key, 1, sample)
    assert steady._estimate(job.key, 1, job) == pytest.approx(0.015)
    assert varying._estimate(job.key, 1, job) > 0.015 + 2 * 0.003
    for _ in range(30):  # chunks without a step
        varying._probe(job.key)
    assert varying._estimate(job.key, 1, job) < 0.011

"""The live step-time estimate: it follows measures, plans room for their spread, and probes
bring an estimate left high by one slow step back down. The chunk overrun's bound follows its
measures' spread, and one slow chunk's mark on it fades."""

from __future__ import annotations

import pytest

from gramophone.engine.step_time import OVERRUN_DEVIATIONS, PROBE_SHARE, STEP_DEVIATIONS, Overrun, StepTime


def test_steady_measures_converge_with_no_spread_to_plan_for():
    estimate = StepTime.measured(0.010)
    for _ in range(60):
        estimate.learn(0.020)
    assert estimate.seconds == pytest.approx(0.020, rel=1e-6)
    assert estimate.planned() == pytest.approx(0.020, rel=1e-4)


def test_spread_measures_plan_beyond_their_mean():
    estimate = StepTime.measured(0.010)
    for index in range(200):
        estimate.learn(0.008 if index % 2 else 0.012)
    assert 0.009 < estimate.seconds < 0.011
    assert estimate.deviation > 0.0015
    assert estimate.planned() == pytest.approx(estimate.seconds + STEP_DEVIATIONS * estimate.deviation)
    assert estimate.planned() > 0.012  # room for the slower of the two


def test_probes_bring_one_slow_step_back_down_to_the_floor_and_below():
    """A chunk without a step lowers the estimate: fast while it is far above its floor, then by
    PROBE_SHARE a probe, so a machine that got quicker than the warm-up gets a step tried again."""
    estimate = StepTime.measured(0.010)
    estimate.learn(0.500)  # one step under a burst of load
    high = estimate.planned()
    probes = 0
    while estimate.planned() > 0.010 and probes < 100:
        estimate.probe()
        probes += 1
    assert high > 0.3 and probes <= 25  # from over 300 ms planned to the floor's 10 ms within 25 chunks
    before = estimate.seconds
    estimate.probe()
    assert estimate.seconds == pytest.approx(before * (1 - 0.3 * (1 - PROBE_SHARE)))


def test_an_overrun_bound_holds_its_spread_and_one_slow_chunk_fades():
    overrun = Overrun()
    for index in range(200):
        overrun.learn(0.001 if index % 2 else 0.005)
    assert overrun.bound() == pytest.approx(overrun.seconds + OVERRUN_DEVIATIONS * overrun.deviation)
    assert overrun.bound() > 0.010  # well past the slower of the two
    steady = overrun.bound()
    overrun.learn(0.050)  # one chunk slowed by a stall
    assert overrun.bound() > steady + 0.03
    for index in range(30):
        overrun.learn(0.001 if index % 2 else 0.005)
    assert overrun.bound() == pytest.approx(steady, abs=0.001)

"""How long a live optimiser step takes, and how far past its deadline a chunk is ready, learned
as they run: what a deadline plans steps with.

One estimate serves a stream stepping alone and the batch stepper (one per shape of window it
steps). A step is planned only where its smoothed time plus STEP_DEVIATIONS of its smoothed
deviation still ends before the deadline (as TCP times a round trip, RFC 6298): the latency's
reserve is for the work after the steps, and a step slower than usual would otherwise eat into it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

STEP_DEVIATIONS = 2.0
SMOOTHING = 0.3  # the weight of a new measure in the smoothed time
DEVIATION_SMOOTHING = 0.25  # and in the smoothed deviation (RFC 6298's beta)
# A chunk that got no step pulls the estimate toward the floor (the first measure) and, once near
# it, toward this share of itself: one stray slow step, or a warm-up on a busy machine, cannot
# starve every later chunk, and a machine that stays slow pays one probing step every few chunks.
PROBE_SHARE = 0.8
# A chunk's overrun is bounded wider than a step's: a block answered dry costs more than a step,
# and the finishing of two sessions' chunks due at the same moment, slowed by each other, has a long tail.
OVERRUN_DEVIATIONS = 4.0


@dataclass
class Smoothed:
    """Seconds measured again and again, smoothed, with their smoothed deviation (RFC 6298)."""

    seconds: float = 0.0
    deviation: float = 0.0

    def learn(self, sample: float) -> None:
        """Take one more measure."""
        self.deviation += DEVIATION_SMOOTHING * (abs(sample - self.seconds) - self.deviation)
        self.seconds += SMOOTHING * (sample - self.seconds)


@dataclass
class StepTime(Smoothed):
    """The smoothed seconds of one step, its smoothed deviation, and the floor a probe drifts toward."""

    floor: float = field(kw_only=True)

    @classmethod
    def measured(cls, seconds: float) -> "StepTime":
        """An estimate that starts at a first measure, which is also its floor."""
        return cls(seconds, floor=seconds)

    def planned(self) -> float:
        """The seconds a step is planned to take."""
        return self.seconds + STEP_DEVIATIONS * self.deviation

    def probe(self) -> None:
        """A chunk got no step: drift down toward the floor or below it, and let the deviation decay."""
        self.seconds += SMOOTHING * (min(self.floor, PROBE_SHARE * self.seconds) - self.seconds)
        self.deviation -= DEVIATION_SMOOTHING * self.deviation


@dataclass
class Overrun(Smoothed):
    """How far past its steps' deadline a live chunk is ready, learned chunk by chunk.

    The latency's reserve holds the finishing work as measured at ``prepare`` (the median of a
    few chunks); beside other sessions the steps overrun their estimate and the finishing slows,
    and a chunk ready past the reserve has its first block answered dry. ``bound()`` (the
    smoothed overrun plus OVERRUN_DEVIATIONS of its deviation) is what the reserve should hold
    for it; where it holds less, the steps end earlier by the difference, and the latency stays.
    A chunk ready before its deadline is learned as 0: only the late tail is planned for.
    """

    def bound(self) -> float:
        return self.seconds + OVERRUN_DEVIATIONS * self.deviation

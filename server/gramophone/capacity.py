"""How many live sessions a server can hold: each session's demand on the cores, against what the cores give.

A live session needs, per second of audio, some core time for its optimiser's steps and some
for everything else its chunks do (analysis, colouring, resynthesis). The steps get one
core's worth whatever the cores: batched, one stepping thread takes them all; unbatched,
their Python runs under one interpreter lock, so they queue for it as much as they would for
one core (a step measured inside the server spent two thirds of its wall time waiting). The
other work gets the remaining cores (at least one). ``--max-sessions auto`` admits a session
only while both fit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# The share of a core a session's demand may count on: the rest goes to the interpreter lock's
# hand-offs, the network thread, the watchdog and the machine's own work.
USABLE_SHARE = 0.8


@dataclass(frozen=True)
class Demand:
    """Cores (core-seconds per second of audio) a real-time session needs to stay wet."""

    steps: float  # its optimiser steps
    other: float  # its chunks' other work


@dataclass(frozen=True)
class Capacity:
    """What ``cores`` give live sessions: one core's worth for every session's steps, the rest for their other work."""

    cores: int

    @property
    def step_cores(self) -> float:
        return USABLE_SHARE

    @property
    def other_cores(self) -> float:
        return USABLE_SHARE * max(1, self.cores - 1)

    def holds(self, demand: Demand, most: int = 1000) -> int:
        """How many sessions of this demand fit at once."""
        count = 0
        while count < most and self.refusal([demand] * count, demand) is None:
            count += 1
        return count

    def refusal(self, held: Iterable[Demand], new: Demand) -> str | None:
        """Why one more session (``new``) beside ``held`` would not fit; None when it does."""
        demands = [*held, new]
        steps, other = sum(d.steps for d in demands), sum(d.other for d in demands)
        if steps > self.step_cores:
            return (f"{len(demands)} sessions' steps would need {steps:.2f} of the {self.step_cores:.2f} cores "
                    "they may use")
        if other > self.other_cores:
            return (f"{len(demands)} sessions' other work would need {other:.2f} of the {self.other_cores:.2f} cores "
                    "left to it")
        return None

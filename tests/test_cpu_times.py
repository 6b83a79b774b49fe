"""The benchmarks' share of CPU time stolen by a virtual machine's host, read from ``/proc/stat``."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the benchmarks live in bench/, beside the package

from bench.common import CpuTimes  # noqa: E402


def test_the_stolen_share_is_the_steal_ticks_over_all_ticks_between_two_readings():
    assert CpuTimes(1000, 50).steal_since(CpuTimes(800, 10)) == pytest.approx(0.2)
    assert CpuTimes(1000, 50).steal_since(None) is None
    assert CpuTimes(800, 10).steal_since(CpuTimes(800, 10)) is None  # no time between them: no share


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="no /proc/stat (not Linux)")
def test_the_counts_are_read_from_this_machine_and_grow_while_it_works():
    before = CpuTimes.now()
    busy_until = time.monotonic() + 0.3
    while time.monotonic() < busy_until:
        pass
    after = CpuTimes.now()
    assert before is not None and after is not None
    assert after.total > before.total and after.steal >= before.steal
    assert 0.0 <= after.steal_since(before) <= 1.0

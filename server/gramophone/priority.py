"""Thread priorities: the threads that keep time run above the threads that compute.

On Linux each thread has its own nice value. Where the user may (root, or a raised
RLIMIT_NICE), the receiving thread and the watchdog go 10 higher, so a wake-up of theirs
preempts a chunk's compute, or another program, at once. Elsewhere, or when refused,
nothing changes. Workers stay where they are: one lowered while it holds the interpreter
lock would make the timekeepers wait behind every other program. The answer relay, a process
of its own with no lock to share, asks for real-time scheduling first.
"""

from __future__ import annotations

import os
import threading

TIMEKEEPING = -10


def renice_this_thread(delta: int) -> bool:
    """Move the calling thread's nice value by ``delta`` (clamped to -20…19); False if refused."""
    try:
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, max(-20, min(19, os.getpriority(os.PRIO_PROCESS, thread) + delta)))
    except (AttributeError, OSError):
        return False
    return True


REAL_TIME_PRIORITY = 10  # SCHED_FIFO's 1…99: above every ordinary thread, below the kernel's own and JACK's (70+)


def keep_time_in_this_thread() -> str:
    """The calling thread runs first whenever it wakes: real-time scheduling where allowed, else a raised nice.

    For a thread that only sleeps until a due time and sends: a raised nice value alone still
    lets a busy core keep it waiting a few milliseconds. Returns what was granted.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(REAL_TIME_PRIORITY))
        return "real-time"
    except (AttributeError, OSError):
        return "nice" if renice_this_thread(TIMEKEEPING) else "none"

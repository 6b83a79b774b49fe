"""NumPy's BLAS on one thread, for the small matrices of a live chunk.

A live chunk's NumPy work (the colouring's band matrices, the match EQ's mel bands) is far
too small for BLAS threads to gain anything, and OpenBLAS threads left spinning afterwards
take the cores from torch's next step: live steps ran 3× slower on 2 cores, and a server's
session took a third fewer steps a chunk. So that work runs with BLAS held to one thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from threadpoolctl import ThreadpoolController

_CONTROLLER = ThreadpoolController()
# The limit is process-wide and restored on exit to what it was on entry: two sessions inside at
# once would leave it at 1 for good (the second restores the first's 1), so one at a time.
_LOCK = threading.Lock()


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block with NumPy's BLAS on one thread (one caller at a time)."""
    with _LOCK, _CONTROLLER.limit(limits=1, user_api="blas"):
        yield

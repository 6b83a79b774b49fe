"""``--max-sessions auto``: the cores' capacity against each session's measured demand decides who is admitted.

The arithmetic of ``gramophone.capacity`` on its own, then a real server whose ``budget`` makes the
outcome certain on any machine: at 0.9 a session's steps need 0.72 of the stepping thread's 0.8
cores, so a second one is refused; at 0.1 they need 0.08 each and two fit.
"""

from __future__ import annotations

import re

import pytest

from gramophone.capacity import USABLE_SHARE, Capacity, Demand
from serverutil import OscClient, running_server

RATE, BLOCK = 48000, 512


def test_sessions_fit_while_their_steps_fit_one_core_and_their_other_work_the_rest():
    capacity = Capacity(cores=2)
    session = Demand(steps=0.32, other=0.15)
    assert capacity.refusal([session], session) is None
    assert "3 sessions' steps would need 0.96 of the 0.80 cores" in capacity.refusal([session, session], session)
    assert capacity.holds(session) == 2
    assert Capacity(cores=16).holds(session) == 2  # more cores do not take more steps: one interpreter runs them
    heavy_other = Demand(steps=0.01, other=0.3)
    assert capacity.holds(heavy_other) == 2
    assert "3 sessions' other work would need 0.90 of the 0.80 cores" in capacity.refusal([heavy_other] * 2, heavy_other)
    assert Capacity(cores=8).holds(heavy_other) == int(7 * USABLE_SHARE / 0.3)
    assert Capacity(cores=1).holds(heavy_other) == 2  # one core: the other work still counts on a core's share


@pytest.mark.slow
def test_auto_admits_what_the_cores_hold_and_refuses_the_rest_with_a_fail(tmp_path):
    with running_server(tmp_path, "--max-sessions", "auto", "--param", "budget=0.9") as srv:
        with OscClient(srv.host, srv.port) as first, OscClient(srv.host, srv.port) as second, \
                OscClient(srv.host, srv.port) as third:
            first.request("/connect", RATE, 1, BLOCK, reply="/connected")
            address, reason = second.request("/connect", RATE, 1, BLOCK, reply="/fail").params[:2]
            assert address == "/connect" and reason.startswith("server full: 1 session; 2 sessions' steps would need "
                                                               "1.44 of the 0.80 cores") and "(--max-sessions auto)" in reason
            first.request("/disconnect", reply="/done")
            second.request("/connect", RATE, 1, BLOCK, reply="/connected")  # the place freed is taken again
            second.request("/param/budget", 0.1, reply="/param/budget")
            second.request("/disconnect", reply="/done")
            first.request("/connect", RATE, 1, BLOCK, reply="/connected")  # budget 0.1: 0.08 cores of steps each
            second.request("/connect", RATE, 1, BLOCK, reply="/connected")
            for client in (first, second):
                client.request("/disconnect", reply="/done")
        log = srv.log_text()
    room = re.search(r"--max-sessions auto: room for (\d+) sessions like the warm-up's", log)
    assert room and int(room.group(1)) >= 1, log[-2000:]


def test_a_bad_max_sessions_is_one_line_exit_2(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "gramophone", "serve", "--port", "0", "--max-sessions", "lots",
                             "--cache-dir", str(tmp_path / "cache"), "--styles-dir", str(tmp_path / "styles")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--max-sessions must be a number or auto, got 'lots'" in result.stderr
    assert "Traceback" not in result.stderr

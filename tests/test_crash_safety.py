"""Crash safety: ``kill -9`` of a real server while it learns or records a style leaves the
cache loadable. After a restart the style is whole or absent and learns again, nothing a
killed write left behind is listed or kept, and no final file name ever holds part of a style.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from gramophone.atomic import LEFTOVER
from gramophone.engine.cache import NAME_PATTERN, StyleCache
from gramophone.engine.presets import get_preset
from gramophone.engine.style import StyleTarget, learn_style
from serverutil import OscClient, ServerProcess, running_server

SEED = 20240607
RANDOM_KILLS = 4
KILL_WINDOW = 0.6  # s: the random kills fall before, during and after a load's writes (a whole load takes about 0.3 s)
CAUGHT = ("targets", "styles")  # the folders the deterministic kills watch: the cache target is written first
TAKES = [*(f"random{i}" for i in range(RANDOM_KILLS)), *(f"caught-{folder}" for folder in CAUGHT)]
BLOCK = 512
BLOCKS = 4
Kill = Callable[[ServerProcess, OscClient], str]  # kills the server while it learns a style; returns the style's name


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, speech_pair: tuple[Path, Path]) -> Path:
    """Server folders the tests share (one cache: only the first start learns the default style).

    The styles folder holds the espeak style clip once per take at another gain, so every take
    is new audio and learning it writes both a cache target and a named style.
    """
    clip, rate = sf.read(speech_pair[1], dtype="float32")
    root = tmp_path_factory.mktemp("crash")
    (root / "styles").mkdir()
    for index, name in enumerate(TAKES):
        sf.write(root / "styles" / f"{name}.wav", clip * 0.95 ** index, rate)
    return root


@pytest.mark.slow
def test_kills_at_random_moments_and_mid_write_leave_each_style_whole_or_absent(root: Path) -> None:
    """Loads and recordings in turn, each killed after a random (seeded) delay; then the worst
    moments: the cache target half written, then the named style half written. One chain of
    starts, each checking what the kill before it left."""
    rng = random.Random(SEED)
    random_kills = [partial(kill_after, root, f"random{take}", take % 2 == 1, rng.uniform(0, KILL_WINDOW))
                    for take in range(RANDOM_KILLS)]
    kill_each_then_restart(root, [*random_kills, *(partial(kill_mid_write, root, folder) for folder in CAUGHT)])


def test_leftovers_of_dead_writers_are_removed_and_never_listed(tmp_path: Path) -> None:
    cache = StyleCache(tmp_path)
    dead = [leftover_of_a_killed_writer(cache.directory / folder / "x.npz") for folder in ("targets", "styles")]
    live = cache.directory / "styles" / f".y.npz.{os.getpid()}.inprogr.tmp"  # this process is writing it
    older = cache.directory / "styles" / ".z.npz.k3j4h5ab.npz"  # how the previous version named its temporary files
    for path in (live, older):
        path.write_bytes(b"half")
    assert all(path.exists() for path in dead) and cache.names() == []
    assert StyleCache(tmp_path).names() == []
    assert not any(path.exists() for path in dead) and live.exists() and older.exists()


@pytest.mark.parametrize("keep", [0.0, 0.001, 0.5, 0.999])
def test_a_named_style_cut_short_reads_as_absent_with_a_warning(tmp_path: Path, target: StyleTarget,
                                                                  caplog: pytest.LogCaptureFixture,
                                                                  keep: float) -> None:
    cache = StyleCache(tmp_path)
    path = cut_short(cache.save_named(target), keep)
    with caplog.at_level(logging.WARNING, logger="gramophone.engine.cache"):
        cache = StyleCache(tmp_path)
    assert any("cut short" in record.getMessage() for record in caplog.records)
    assert cache.names() == [] and not path.exists() and path.with_name(f"{path.name}.damaged").exists()
    with pytest.raises(KeyError):
        cache.load_named(target.name)
    cache.save_named(target)
    assert cache.names() == [target.name] and cache.load_named(target.name).complete


@pytest.mark.parametrize("keep", [0.0, 0.5])
def test_a_cache_target_cut_short_is_recomputed_with_a_warning(tmp_path: Path, target: StyleTarget,
                                                               clip: tuple[np.ndarray, int],
                                                               caplog: pytest.LogCaptureFixture, keep: float) -> None:
    cache = StyleCache(tmp_path)
    path = cut_short(target.save(cache.key_path([clip], get_preset("default"))), keep)
    with caplog.at_level(logging.WARNING, logger="gramophone.engine.cache"):
        learned = cache.learn([clip], get_preset("default"))
    assert any("recomputing" in record.getMessage() for record in caplog.records)
    assert learned.complete and StyleTarget.load(path).complete


# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip(speech_pair: tuple[Path, Path]) -> tuple[np.ndarray, int]:
    """One second of the espeak style clip, ``(1, samples)``."""
    audio, rate = sf.read(speech_pair[1], dtype="float32")
    return audio[np.newaxis, :rate], rate


@pytest.fixture(scope="module")
def target(clip: tuple[np.ndarray, int]) -> StyleTarget:
    return learn_style([clip], get_preset("default"), name="short")


def cut_short(path: Path, keep: float) -> Path:
    """Truncate a file to ``keep`` of its length, as a write killed without atomic replacement leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[:int(keep * len(data))])
    return path


def leftover_of_a_killed_writer(path: Path) -> Path:
    """Start writing ``path`` in another process and SIGKILL it mid-write; return the temporary file it left."""
    script = ("import os, signal, sys\nfrom gramophone.atomic import atomic_write\n"
              "with atomic_write(sys.argv[1]) as temporary:\n"
              "    temporary.write_bytes(b'half')\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    assert subprocess.run([sys.executable, "-c", script, str(path)]).returncode == -signal.SIGKILL
    [leftover] = [entry for entry in path.parent.iterdir() if LEFTOVER.match(entry.name)]
    return leftover


def kill_each_then_restart(root: Path, kills: list[Kill]) -> None:
    """Run each kill on a started server; the next start (one more after the last) checks what it left."""
    killed = None
    for kill_at in [*kills, None]:
        with running_server(root) as srv, OscClient(srv.host, srv.port, "tcp") as osc:
            if killed is not None:
                assert_whole_or_absent(root, srv, osc, killed)
            killed = kill_at(srv, osc) if kill_at is not None else None
        assert_no_part_of_a_style(root / "cache")


def kill_after(root: Path, name: str, record: bool, delay: float, srv: ServerProcess, osc: OscClient) -> str:
    begin_learning(root, osc, name, record)
    time.sleep(delay)
    kill(srv)
    return name


def kill_mid_write(root: Path, folder: str, srv: ServerProcess, osc: OscClient) -> str:
    """Load a take; SIGKILL the server once a new file shows in ``cache/folder`` (watched: no hook in the package)."""
    name, watched = f"caught-{folder}", root / "cache" / folder
    before = set(os.listdir(watched))
    osc.send("/style/load", name, f"{name}.wav")
    caught = kill_when_a_file_appears(srv, watched, before)
    assert_no_part_of_a_style(root / "cache")
    assert LEFTOVER.match(caught) and (watched / caught).exists(), f"the kill came after the write: {caught}"
    return name


def begin_learning(root: Path, osc: OscClient, name: str, record: bool) -> None:
    """Send ``/style/load`` of the take's file, or record the same audio and send ``/style/record/stop``."""
    if not record:
        osc.send("/style/load", name, f"{name}.wav")
        return
    audio, rate = sf.read(root / "styles" / f"{name}.wav", dtype="float32")
    osc.request("/connect", rate, 1, BLOCK, reply="/connected")
    osc.request("/style/record/start", name, reply="/done")
    for seq, start in enumerate(range(0, len(audio), 4096)):
        osc.send("/style/audio", seq, audio[start:start + 4096].astype("<f4").tobytes())
    osc.send("/style/record/stop")


def kill(srv: ServerProcess) -> None:
    os.kill(srv.pid, signal.SIGKILL)
    srv.proc.wait()


def kill_when_a_file_appears(srv: ServerProcess, folder: Path, before: set[str], timeout: float = 60.0) -> str:
    """SIGKILL the server as soon as an entry not in ``before`` shows in ``folder``; return its name."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if new := set(os.listdir(folder)) - before:
            kill(srv)
            return new.pop()
    raise AssertionError(f"nothing new in {folder} within {timeout} s:\n{srv.log_text()}")


def assert_no_part_of_a_style(cache: Path) -> None:
    """Every file under a final name holds a whole target; the only others are temporary files."""
    for path in [*(cache / "targets").iterdir(), *(cache / "styles").iterdir()]:
        if not LEFTOVER.match(path.name):
            StyleTarget.load(path)  # ValueError if it is part of one


def assert_whole_or_absent(root: Path, srv: ServerProcess, osc: OscClient, name: str) -> None:
    """After a restart: no leftovers, ``name`` streams or is unknown, and it learns again and streams."""
    cache = root / "cache"
    assert [path.name for path in (*cache.glob("targets/.*"), *cache.glob("styles/.*"))] == []
    listed = style_list(osc)
    assert "voice" in listed and all(NAME_PATTERN.match(style) for style in listed), listed
    if name in listed:
        select_and_stream(root, osc, name)
    else:
        assert "unknown style" in osc.request("/style/select", name, reply="/fail").params[1]
    learn_again(osc, name)
    select_and_stream(root, osc, name)
    log = srv.log_text()
    assert not any(words in log for words in ("Traceback", " ERROR ", "cut short", "recomputing")), log


def style_list(osc: OscClient) -> list[str]:
    return osc.request("/style/list", reply="/style/list/reply").params


def learn_again(osc: OscClient, name: str) -> None:
    assert osc.request("/style/load", name, f"{name}.wav", reply="/done", timeout=60).params == ["/style/load", name]


def select_and_stream(root: Path, osc: OscClient, name: str) -> None:
    """Make ``name`` the active style and stream a few blocks of its take through it."""
    assert osc.request("/style/select", name, reply="/done").params == ["/style/select", name]
    audio, rate = sf.read(root / "styles" / f"{name}.wav", dtype="float32", frames=BLOCKS * BLOCK)
    osc.request("/connect", rate, 1, BLOCK, reply="/connected")
    for seq in range(BLOCKS):
        osc.send("/content", seq, audio[seq * BLOCK:(seq + 1) * BLOCK].astype("<f4").tobytes())
    osc.send("/flush")
    replies = [osc.expect("/audio", timeout=30).params for _ in range(BLOCKS)]
    assert [seq for seq, _ in replies] == list(range(BLOCKS))
    assert all(np.isfinite(np.frombuffer(samples, "<f4")).all() and len(samples) == 4 * BLOCK for _, samples in replies)
    assert osc.expect("/done").params == ["/flush"]
    osc.request("/disconnect", reply="/done")

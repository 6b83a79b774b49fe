"""The ``gramophone`` command line end to end, as a subprocess: stylize, plot, report, the
style store, every bad input the engine refuses, and Ctrl-C."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

CONTENT_SECONDS = 1.5


def gramophone_command() -> list[str]:
    script = shutil.which("gramophone")
    return [script] if script else [sys.executable, "-m", "gramophone"]


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    """One torch thread (the machine is shared) and a private default cache."""
    return dict(os.environ, OMP_NUM_THREADS="1", GRAMOPHONE_CACHE=str(tmp_path_factory.mktemp("default-cache")))


def gramophone(env: dict[str, str], *args: str | Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*gramophone_command(), *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=timeout)


@pytest.fixture(scope="module")
def files(speech_pair, tmp_path_factory) -> dict[str, Path]:
    """Short good clips and one file for every kind of bad input."""
    folder = tmp_path_factory.mktemp("cli-inputs")
    content, rate = sf.read(speech_pair[0], dtype="float32")
    style, style_rate = sf.read(speech_pair[1], dtype="float32")
    paths = {name: folder / f"{name}.wav" for name in
             ("content", "style", "empty", "silent", "nan", "short", "zero_bytes", "text")}
    sf.write(paths["content"], content[: int(CONTENT_SECONDS * rate)], rate)
    sf.write(paths["style"], style[: int(1.5 * style_rate)], style_rate)
    sf.write(paths["empty"], np.zeros(0, dtype=np.float32), rate)
    sf.write(paths["silent"], np.zeros(rate, dtype=np.float32), rate)
    with_nan = content[:rate].copy()
    with_nan[1000] = np.nan
    sf.write(paths["nan"], with_nan, rate, subtype="FLOAT")
    sf.write(paths["short"], content[5000:5500], rate)  # shorter than one 1024-sample window
    paths["zero_bytes"].write_bytes(b"")
    paths["text"].write_text("this is not audio\n")
    paths["missing"] = folder / "missing.wav"
    return paths


def assert_one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gramophone: error:")
    return lines[0]


# -- the happy path ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stylized(env, files, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    folder = tmp_path_factory.mktemp("cli-out")
    result = gramophone(env, "stylize", files["content"], files["style"], "-o", folder / "out.wav",
                        "--iterations", "3", "--plot", folder / "plot.png", "--report",
                        "--cache-dir", folder / "cache")
    return result, folder


def test_stylize_writes_a_file_of_the_contents_length(stylized, files):
    result, folder = stylized
    assert result.returncode == 0, result.stderr
    written = sf.info(folder / "out.wav")
    content = sf.info(files["content"])
    assert written.frames == content.frames and written.samplerate == content.samplerate
    assert written.subtype == "PCM_16"
    audio, _ = sf.read(folder / "out.wav")
    assert np.sqrt(np.mean(audio**2)) > 1e-3
    assert "wrote" in result.stderr and "Traceback" not in result.stderr


def test_stylize_draws_a_progress_bar(stylized):
    result, _ = stylized
    assert "3/3" in result.stderr


def test_plot_writes_a_png(stylized):
    _, folder = stylized
    data = (folder / "plot.png").read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000


def test_report_prints_the_quality_table(stylized):
    result, _ = stylized
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["measure", "dry", "wet", "gain"]
    held_out = next(line for line in lines if line.startswith("held-out gram distance"))
    dry, wet, gain = (float(value) for value in held_out.split()[-3:])
    assert dry > 0 and wet > 0 and gain == pytest.approx(1 - wet / dry, abs=2e-3)
    assert any(line.startswith("MFCC statistics distance") for line in lines)
    assert any(line.startswith("STOI") for line in lines)


def test_stylize_with_lbfgs_float_output_and_another_rate(env, files, tmp_path):
    out = tmp_path / "out.wav"
    result = gramophone(env, "stylize", files["content"], files["style"], "-o", out, "--optimizer", "lbfgs",
                        "--iterations", "2", "--bits", "float", "--sample-rate", "16000", "--quiet",
                        "--cache-dir", tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    info = sf.info(out)
    assert info.subtype == "FLOAT" and info.samplerate == 16000
    assert abs(info.frames - round(CONTENT_SECONDS * 16000)) <= 1
    assert "it/s" not in result.stderr  # --quiet: no bar


def test_style_learn_list_show_and_use_by_name(env, files, tmp_path):
    cache = tmp_path / "cache"
    learned = gramophone(env, "style", "learn", files["style"], "--name", "female", "--cache-dir", cache)
    assert learned.returncode == 0, learned.stderr
    assert (cache / "styles" / "female.npz").is_file()
    listing = gramophone(env, "style", "list", "--cache-dir", cache)
    assert listing.returncode == 0 and listing.stdout.startswith("female:")
    shown = gramophone(env, "style", "show", "female", "--cache-dir", cache)
    assert shown.returncode == 0
    assert "sha256" in shown.stdout and "22050 Hz" in shown.stdout
    out = tmp_path / "by-name.wav"
    used = gramophone(env, "stylize", files["content"], "female", "-o", out, "--iterations", "2", "--quiet",
                      "--cache-dir", cache)
    assert used.returncode == 0, used.stderr
    assert sf.info(out).frames == sf.info(files["content"]).frames
    unknown = gramophone(env, "style", "show", "nobody", "--cache-dir", cache)
    assert "nobody" in assert_one_line_error(unknown)
    # listing reads each style's metadata only: neither torch nor SciPy's signal module is loaded for it
    probe = ("import sys\nfrom gramophone.cli.main import main\nassert main(['style', 'list', '--cache-dir', sys.argv[1]]) == 0\n"
             "print(sorted(name for name in ('torch', 'scipy.signal') if name in sys.modules))")
    listed = subprocess.run([sys.executable, "-c", probe, str(cache)], env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == ["female: " + listing.stdout.split("female: ", 1)[1].splitlines()[0], "[]"]


def test_help_works_everywhere(env):
    for args in (["--help"], ["stylize", "--help"], ["style", "learn", "--help"]):
        result = gramophone(env, *args)
        assert result.returncode == 0 and "usage:" in result.stdout


# -- bad input: one line, exit code 2, no traceback, nothing written ---------------------------------

BAD_INPUTS = {
    # name: (content, style, extra arguments, words expected in the message); the style side
    # goes through the style cache, so a few of its cases are here too
    "missing content": ("missing", "style", [], "no such file"),
    "non-audio content": ("text", "style", [], "not a readable audio file"),
    "zero-byte content": ("zero_bytes", "style", [], "not a readable audio file"),
    "empty content": ("empty", "style", [], "empty"),
    "silent content": ("silent", "style", [], "silent"),
    "NaN content": ("nan", "style", [], "NaN"),
    "short content": ("short", "style", [], "shorter than one analysis window"),
    "silent style": ("content", "silent", [], "silent"),
    "NaN style": ("content", "nan", [], "NaN"),
    "unknown preset": ("content", "style", ["--preset", "nope"], "unknown preset"),
    "negative style weight": ("content", "style", ["--style-weight", "-1"], "negative"),
    "negative content weight": ("content", "style", ["--content-weight", "-0.5"], "negative"),
    "output folder missing": ("content", "style", ["-o", "{tmp}/no/such/folder/out.wav"], "does not exist"),
    "plot folder missing": ("content", "style", ["--plot", "{tmp}/nowhere/plot.png"], "does not exist"),
}


@pytest.fixture(scope="module")
def bad_runs(env, files, tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """Every bad-input case, run a few at a time (each start pays for importing torch)."""
    from concurrent.futures import ThreadPoolExecutor

    def run_case(case: str) -> tuple[subprocess.CompletedProcess, Path]:
        content, style, extra, _ = BAD_INPUTS[case]
        folder = tmp_path_factory.mktemp("bad")
        out_dir = folder / "out"
        out_dir.mkdir()
        extra = [arg.replace("{tmp}", str(folder)) for arg in extra]
        output = [] if "-o" in extra else ["-o", str(out_dir / "out.wav")]
        result = gramophone(env, "stylize", files[content], files[style], *output, *extra, "--iterations", "2",
                            "--cache-dir", folder / "cache")
        return result, folder

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(BAD_INPUTS, pool.map(run_case, BAD_INPUTS)))


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(bad_runs, case):
    result, folder = bad_runs[case]
    message = assert_one_line_error(result)
    assert BAD_INPUTS[case][3] in message, message
    assert list((folder / "out").iterdir()) == []  # no output, no partial or temporary file
    assert not (folder / "no").exists() and not (folder / "nowhere").exists()


def test_style_learn_bad_input_is_one_line(env, files, tmp_path):
    result = gramophone(env, "style", "learn", files["silent"], "--name", "quiet", "--cache-dir", tmp_path)
    assert "silent" in assert_one_line_error(result)
    assert not (tmp_path / "styles" / "quiet.npz").exists()


# -- Ctrl-C ----------------------------------------------------------------------------------------


def test_ctrl_c_writes_the_result_so_far_and_exits_0(env, files, tmp_path):
    """SIGINT once the progress bar shows a finished iteration: the optimisation stops, the
    result so far is written, and the exit code is 0 (the output is usable)."""
    out = tmp_path / "out.wav"
    process = subprocess.Popen([*gramophone_command(), "stylize", str(files["content"]), str(files["style"]),
                                "-o", str(out), "--iterations", "100000", "--cache-dir", str(tmp_path / "cache")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    seen = b""
    deadline = time.monotonic() + 180
    try:
        while not re.search(rb"\| [1-9]\d*/100000", seen):  # an iteration has finished (tqdm skips some counts)
            chunk = process.stderr.read1(4096)
            assert chunk, f"the process ended before the progress bar started: {seen.decode(errors='replace')}"
            seen += chunk
            assert time.monotonic() < deadline, "no progress within 180 s"
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = (seen + stderr).decode(errors="replace")
    assert process.returncode == 0, text
    assert "Traceback" not in text
    assert "stopped after" in text and "writing the result so far" in text
    assert sf.info(out).frames == sf.info(files["content"]).frames
    assert [p.name for p in tmp_path.iterdir() if p.name != "cache"] == ["out.wav"]


def test_stylize_help_states_the_default_presets_weights():
    """The offline knobs' help gives the default preset's values (it once said content weight 1, not 0.3)."""
    from gramophone.cli.main import build_parser
    from gramophone.engine.presets import get_preset

    stylize = build_parser()._subparsers._group_actions[0].choices["stylize"]
    helps = {action.dest: action.help for action in stylize._actions}
    preset = get_preset("default")
    assert f"{preset.style_weight:g} for default" in helps["style_weight"]
    assert f"{preset.content_weight:g} for default" in helps["content_weight"]
    assert f"{preset.colour:g} for default" in helps["colour"]

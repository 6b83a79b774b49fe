"""The Python client library and every ``gramophone-client`` command against a real ``gramophone serve``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import speak
from serverutil import ServerProcess, running_server

from gramophone.params import PARAMETERS
from gramophone_client import Client, ParamError, StreamError, StyleError, render
from gramophone_client.cli import main
from gramophone_client.jitter import JitterBuffer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About a second of espeak speech (22 050 Hz): short, because render mode is slower than real time here."""
    path = speak(tmp_path_factory.mktemp("clip") / "clip.wav", "Gramophone, play it again.", "en-us")
    audio, rate = sf.read(path, dtype="float32")
    sf.write(path, audio[: int(1.2 * rate)], rate, subtype="FLOAT")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("server")
    (tmp / "styles").mkdir()
    speak(tmp / "styles" / "peter.wav", "Peter Piper picked a peck of pickled peppers.", "en-us+f3")
    with running_server(tmp, "--log-level", "info") as srv:
        yield srv


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Client]:
    """A UDP client; every parameter is back at its default afterwards (they are server-wide)."""
    with Client(server.host, server.port, timeout=10) as c:
        yield c
        for name, spec in PARAMETERS.items():
            c.param(name, spec.default)


def run_cli(server: ServerProcess, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main([*args, "--port", str(server.port)])
    out, err = capsys.readouterr()
    return code, out, err


def test_ping_status_and_sync(client: Client) -> None:
    assert 0 < client.ping() < 5
    client.sync()
    status = client.status()
    assert status.sessions >= 0 and status.late_chunks >= 0


def test_params_match_the_server_ranges_and_clamp(client: Client) -> None:
    rows = client.params()
    assert set(rows) == set(PARAMETERS)
    for name, spec in PARAMETERS.items():
        assert (rows[name].minimum, rows[name].maximum, rows[name].default) == pytest.approx((spec.minimum, spec.maximum, spec.default))
    assert client.param("style_weight", 1000) == 100
    assert client.param("style_weight") == 100
    assert client.param("iterations", 3.7) == 4
    with pytest.raises(ParamError, match="unknown parameter"):
        client.param("loudness", 1)


def test_parameter_changes_reach_other_sessions(server: ServerProcess, client: Client) -> None:
    seen: list[tuple[str, float]] = []
    with Client(server.host, server.port, on_param=lambda name, value: seen.append((name, value))) as listener:
        listener.connect(22050, 1, 512)
        client.param("wet", 0.25)
        deadline = time.monotonic() + 5
        while ("wet", 0.25) not in seen and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ("wet", 0.25) in seen and listener.param_values["wet"] == 0.25
        listener.disconnect()


@pytest.mark.parametrize(("tcp", "encoding"), [(False, "blob"), (False, "floats"), (True, "blob")])
def test_null_transform_returns_the_input_aligned(server: ServerProcess, client: Client, clip: Path,
                                                  tcp: bool, encoding: str) -> None:
    audio, rate = sf.read(clip, dtype="float32")
    client.param("style_weight", 0)
    with Client(server.host, server.port, tcp=tcp, encoding=encoding, timeout=10) as streamer:  # type: ignore[arg-type]
        out, report = render(streamer, audio, rate, block_size=512)
        streamer.disconnect()
    assert out.shape == (len(audio), 1) and report.blocks == -(-len(audio) // 512)
    np.testing.assert_allclose(out[:, 0], audio, atol=1e-4)


def test_a_block_of_the_wrong_size_raises_a_stream_error(client: Client) -> None:
    client.connect(22050, 1, 256)
    client.send_block(0, np.zeros(100, np.float32))
    with pytest.raises(StreamError, match="expected 256 samples"):
        client.receive_block(timeout=5)
    client.disconnect()


def test_style_lifecycle(client: Client, clip: Path) -> None:
    client.style_load("peter", "peter.wav")
    audio, rate = sf.read(clip, dtype="float32", always_2d=True)
    client.connect(rate, 1, 1024)
    client.style_record("recorded", audio)
    client.disconnect()
    assert {"peter", "recorded"} <= set(client.style_list())
    client.style_mix({"peter": 0.5, "recorded": 0.5})
    client.style_select("peter")
    client.style_delete("recorded")
    assert "recorded" not in client.style_list()
    with pytest.raises(StyleError, match="unknown style"):
        client.style_select("recorded")
    with pytest.raises(StyleError):
        client.style_load("escape", "../../etc/passwd")


def test_cli_control_commands(server: ServerProcess, capsys: pytest.CaptureFixture[str], clip: Path) -> None:
    code, out, _ = run_cli(server, capsys, "ping", "--count", "2")
    assert code == 0 and out.count("pong from") == 2 and "median" in out
    code, out, _ = run_cli(server, capsys, "status")
    assert code == 0 and "sessions" in out and "real-time factor" in out and "lost blocks" in out
    code, out, _ = run_cli(server, capsys, "param")
    assert code == 0 and all(name in out for name in PARAMETERS)
    assert run_cli(server, capsys, "param", "gain_db", "-100")[1].strip() == "gain_db = -60"
    assert run_cli(server, capsys, "param", "gain_db")[1].strip() == "gain_db = -60"
    assert run_cli(server, capsys, "param", "gain_db", "0")[0] == 0
    for args in (("load", "cli-peter", "peter.wav"), ("record", "cli-rec", str(clip)),
                 ("mix", "cli-peter", "0.3", "cli-rec", "0.7"), ("select", "cli-peter")):
        code, out, err = run_cli(server, capsys, "style", *args)
        assert (code, out.strip()) == (0, f"style {args[0]}: done"), err
    code, out, _ = run_cli(server, capsys, "style", "list")
    assert {"cli-peter", "cli-rec"} <= set(out.split())
    assert run_cli(server, capsys, "style", "delete", "cli-rec")[0] == 0
    assert run_cli(server, capsys, "style", "select", "voice")[0] == 0


def test_cli_errors_are_one_line(server: ServerProcess, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(server, capsys, "param", "loudness", "1")
    assert code == 1 and err.count("\n") == 1 and err.startswith("gramophone-client: /param/loudness: unknown parameter")
    code, _, err = run_cli(server, capsys, "style", "select", "nothing-like-it")
    assert code == 1 and "unknown style" in err and err.count("\n") == 1
    code = main(["ping", "--port", "9", "--timeout", "0.3"])
    err = capsys.readouterr().err
    assert code == 1 and "is `gramophone serve` running" in err and err.count("\n") == 1


def test_cli_render_stylises_identically_over_udp_and_tcp(server: ServerProcess, tmp_path: Path, clip: Path) -> None:
    """The console script itself; render mode is reproducible, and the default style changes the audio."""
    outputs = []
    for transport in ([], ["--tcp"]):
        out = tmp_path / f"out{len(outputs)}.wav"
        result = subprocess.run(
            [shutil.which("gramophone-client") or sys.executable, "render", str(clip), "-o", str(out),
             "--port", str(server.port), "--block", "512", *transport],
            capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert "real time" in result.stdout and "block" in result.stderr  # the summary and the progress bar
        outputs.append(sf.read(out, dtype="float32")[0])
    audio = sf.read(clip, dtype="float32")[0]
    assert outputs[0].shape == audio.shape
    np.testing.assert_array_equal(outputs[0], outputs[1])
    change = np.sqrt(np.mean((outputs[0] - audio) ** 2) / np.mean(audio**2))
    assert change > 0.1, f"the default style barely changed the audio (relative difference {change:.3f})"


def test_cli_render_live_reports_late_and_lost(server: ServerProcess, client: Client, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str], clip: Path) -> None:
    """Paced in real time in live mode: with the effect off, on-time and dry blocks both equal the input."""
    client.param("style_weight", 0)
    out = tmp_path / "live.wav"
    code, stdout, err = run_cli(server, capsys, "render", str(clip), "-o", str(out), "--live", "--quiet")
    assert code == 0, err
    assert "late and" in stdout and "lost of" in stdout
    np.testing.assert_allclose(sf.read(out, dtype="float32")[0], sf.read(clip, dtype="float32")[0], atol=1e-4)


def test_jitter_buffer_plays_dry_for_missing_replies_without_a_jump() -> None:
    """A missing reply plays that block's dry input; the wet/dry switch leaves no step in the signal."""
    frames = 256
    signal = np.sin(np.arange(frames * 12) / 20.0).astype(np.float32)[:, None]
    jitter = JitterBuffer(delay_blocks=2, frames=frames, channels=1)
    played = []
    for seq in range(12):
        block = signal[seq * frames:(seq + 1) * frames]
        if seq >= 1 and seq - 1 not in (4, 5):  # the replies to blocks 4 and 5 never come
            jitter.add_reply(seq - 1, 0.5 * signal[(seq - 1) * frames:seq * frames])
        played.append(jitter.cycle(seq, block)[0])
    jitter.add_reply(4, signal[:frames])  # far too late
    out = np.concatenate(played)[2 * frames:, 0]
    expected = signal[: len(out), 0] * np.where(np.isin(np.arange(len(out)) // frames, (4, 5)), 1.0, 0.5)
    np.testing.assert_allclose(out[4 * frames + 64:6 * frames], signal[4 * frames + 64:6 * frames, 0], atol=1e-6)
    assert np.abs(np.diff(out)).max() < 2.5 * np.abs(np.diff(expected)).max()
    assert (jitter.wet_blocks, jitter.dry_blocks, jitter.late_replies) == (8, 2, 1)


def test_open_stage_control_layout_matches_the_parameters() -> None:
    layout = json.loads((Path(__file__).resolve().parents[1] / "clients" / "controllers"
                         / "gramophone-open-stage-control.json").read_text())
    widgets = {w["id"]: w for w in layout["content"]["widgets"]}
    for name, spec in PARAMETERS.items():
        widget = widgets[name]
        assert widget["address"] == f"/param/{name}" and widget["default"] == spec.default
        if widget["type"] == "knob":
            assert widget["range"] == {"min": spec.minimum, "max": spec.maximum}
    assert any(w["type"] == "button" and w["address"] == "/style/select" for w in widgets.values())

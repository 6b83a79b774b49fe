"""Audio I/O: reading every supported format, validation of bad clips, atomic writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from gramophone import audio as audio_module
from gramophone.audio import AudioError, load_audio, resample, rms, save_audio, validate_audio


def sine(rate: int, seconds: float = 0.5, freq: float = 440.0, amplitude: float = 0.5, channels: int = 1) -> np.ndarray:
    """``(channels, samples)`` float32 sine, each channel at a different frequency."""
    t = np.arange(int(rate * seconds)) / rate
    return np.stack([amplitude * np.sin(2 * np.pi * freq * (c + 1) * t) for c in range(channels)]).astype(np.float32)


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert message and "\n" not in message
    return message


# -- reading ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "subtype"),
    [(".wav", "PCM_16"), (".wav", "PCM_24"), (".wav", "FLOAT"), (".flac", "PCM_16"), (".ogg", "VORBIS"),
     (".aiff", "PCM_16")],
)
def test_reads_every_supported_format_as_channels_by_samples(tmp_path, suffix, subtype):
    rate = 44100
    clip = sine(rate, channels=2)
    path = tmp_path / f"clip{suffix}"
    sf.write(path, clip.T, rate, subtype=subtype)
    audio, sr = load_audio(path)
    assert sr == rate
    assert audio.dtype == np.float32
    assert audio.shape == clip.shape
    tolerance = 0.05 if subtype == "VORBIS" else 1e-3  # lossy codec
    assert rms(audio - clip) < tolerance * rms(clip) + 1e-4


def test_mono_file_reads_as_one_channel(tmp_path):
    path = tmp_path / "mono.wav"
    sf.write(path, sine(22050)[0], 22050)
    audio, _ = load_audio(path)
    assert audio.shape == (1, 11025)


def test_mono_option_averages_the_channels(tmp_path):
    clip = sine(22050, channels=2)
    path = tmp_path / "stereo.wav"
    sf.write(path, clip.T, 22050, subtype="FLOAT")
    audio, _ = load_audio(path, mono=True)
    assert audio.shape == (1, clip.shape[1])
    np.testing.assert_allclose(audio[0], clip.mean(axis=0), atol=1e-6)


@pytest.mark.parametrize(("source", "target"), [(22050, 48000), (48000, 44100), (44100, 16000)])
def test_resampling_on_load_keeps_duration_and_pitch(tmp_path, source, target):
    path = tmp_path / "tone.wav"
    sf.write(path, sine(source, seconds=1.0, freq=440.0)[0], source, subtype="FLOAT")
    audio, sr = load_audio(path, sample_rate=target)
    assert sr == target
    assert abs(audio.shape[1] - target) <= 1
    spectrum = np.abs(np.fft.rfft(audio[0]))
    peak_hz = np.argmax(spectrum) * target / audio.shape[1]
    assert abs(peak_hz - 440.0) < 2.0


def test_resample_is_identity_at_the_same_rate():
    clip = sine(22050)
    assert resample(clip, 22050, 22050) is clip


# -- bad files --------------------------------------------------------------------------


def test_missing_file_is_an_audio_error(tmp_path):
    with pytest.raises(AudioError) as error:
        load_audio(tmp_path / "nothing.wav")
    assert "no such file" in one_line(error)


def test_folder_is_an_audio_error(tmp_path):
    with pytest.raises(AudioError) as error:
        load_audio(tmp_path)
    assert "folder" in one_line(error)


@pytest.mark.parametrize("content", [b"", b"this is a text file, not audio\n", b"RIFF\x00\x00\x00\x00WAVEjunk"])
def test_non_audio_file_is_an_audio_error(tmp_path, content):
    path = tmp_path / "fake.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError) as error:
        load_audio(path)
    message = one_line(error)
    assert "not a readable audio file" in message and "WAV" in message


# -- validation -------------------------------------------------------------------------


def test_validate_accepts_a_good_clip_and_returns_2d_float32():
    clip = validate_audio(sine(22050)[0].astype(np.float64), "clip", min_samples=1024)
    assert clip.dtype == np.float32 and clip.shape == (1, 11025)


@pytest.mark.parametrize(
    ("clip", "words"),
    [
        (np.zeros((1, 0), dtype=np.float32), "empty"),
        (np.zeros(0, dtype=np.float32), "empty"),
        (np.zeros((1, 22050), dtype=np.float32), "silent"),
        (np.full((1, 22050), 1e-7, dtype=np.float32), "silent"),
        (sine(22050)[:, :500], "shorter than one analysis window"),
    ],
    ids=["empty-2d", "empty-1d", "zeros", "below-100dB", "short"],
)
def test_validate_rejects_unusable_clips(clip, words):
    with pytest.raises(AudioError) as error:
        validate_audio(clip, "clip", min_samples=1024)
    message = one_line(error)
    assert words in message and message.startswith("clip")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_validate_rejects_non_finite_samples(bad):
    clip = sine(22050)
    clip[0, 1234] = bad
    with pytest.raises(AudioError) as error:
        validate_audio(clip, "clip", min_samples=1024)
    assert "NaN or infinite" in one_line(error)


# -- writing ----------------------------------------------------------------------------


@pytest.mark.parametrize(("suffix", "bits", "subtype"), [(".wav", "16", "PCM_16"), (".wav", "24", "PCM_24"),
                                                          (".wav", "float", "FLOAT"), (".flac", "16", "PCM_16"),
                                                          (".flac", "24", "PCM_24")])
def test_save_round_trip(tmp_path, suffix, bits, subtype):
    clip = sine(48000, channels=2)
    path = save_audio(tmp_path / f"out{suffix}", clip, 48000, bits=bits)
    info = sf.info(path)
    assert info.subtype == subtype and info.samplerate == 48000 and info.channels == 2
    audio, sr = load_audio(path)
    assert audio.shape == clip.shape
    np.testing.assert_allclose(audio, clip, atol=1e-4 if bits == "16" else 1e-6)


def test_save_accepts_1d_audio(tmp_path):
    path = save_audio(tmp_path / "mono.wav", sine(22050)[0], 22050)
    assert sf.info(path).channels == 1


def test_integer_formats_clip_but_float_keeps_overs(tmp_path):
    loud = sine(22050, amplitude=1.5)
    save_audio(tmp_path / "int.wav", loud, 22050, bits="16")
    save_audio(tmp_path / "float.wav", loud, 22050, bits="float")
    clipped, _ = load_audio(tmp_path / "int.wav")
    kept, _ = load_audio(tmp_path / "float.wav")
    assert np.max(np.abs(clipped)) <= 1.0
    assert np.max(np.abs(kept)) == pytest.approx(1.5, abs=1e-3)


@pytest.mark.parametrize(
    ("name", "bits", "words"),
    [("missing/out.wav", "16", "does not exist"), ("out.mp3", "16", ".wav or .flac"),
     ("out.flac", "float", "FLAC"), ("out.wav", "12", "bit depth")],
)
def test_save_rejects_bad_requests_without_writing(tmp_path, name, bits, words):
    with pytest.raises(AudioError) as error:
        save_audio(tmp_path / name, sine(22050), 22050, bits=bits)
    assert words in one_line(error)
    assert list(tmp_path.rglob("*")) == []


def test_failed_write_leaves_no_partial_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = save_audio(tmp_path / "out.wav", sine(22050), 22050)
    before = path.read_bytes()

    def broken_write(file, *args, **kwargs):
        Path(file).write_bytes(b"half a file")  # a partial temporary file exists when the failure hits
        raise OSError("disk full")

    monkeypatch.setattr(audio_module.sf, "write", broken_write)
    with pytest.raises(OSError):
        save_audio(path, sine(22050, freq=880.0), 22050)
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]
    assert path.read_bytes() == before


def test_rms_of_a_sine():
    assert rms(sine(48000, seconds=1.0, amplitude=1.0)) == pytest.approx(1 / np.sqrt(2), rel=1e-3)

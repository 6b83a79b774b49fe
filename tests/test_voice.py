"""Pitch and formant: the voice stage, offline and live, judged by gramophone.metrics' F0 and formants and STOI.

Real audio: the espeak-ng pair of conftest (a male content voice, a female style voice).
"""

from __future__ import annotations

import numpy as np
import pytest

from gramophone import Parameters, StreamProcessor, get_preset, learn_style, metrics, stylize
from gramophone.dsp.voice import PitchShifter, frame_pitch, semitones
from gramophone.stages import FormantProfile, PitchProfile, VoiceSettings

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DRY = get_preset("default").with_overrides(style_weight=0.0)


def voice(audio: np.ndarray, rate: int) -> metrics.VoiceStats:
    return metrics.voice_statistics(metrics.normalise(np.asarray(audio)[0], rate))


def stoi(content: np.ndarray, output: np.ndarray, rate: int) -> float:
    a, b = metrics.normalise(content[0], rate), metrics.normalise(output[0], rate)
    return float(metrics.pystoi_stoi(a, b, metrics.EVAL_RATE))


@pytest.fixture(scope="module")
def female(speech):
    style, rate = speech["style"]
    return learn_style([(style, rate)], get_preset("default"))


@pytest.fixture(scope="module")
def measured(speech):
    """The pair's own voice statistics (pyin and Praat, the independent judge)."""
    return {role: voice(*speech[role]) for role in ("content", "style")}


def harmonic_tone(f0: float, rate: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return sum(0.3 / k * np.sin(2 * np.pi * f0 * k * t) for k in range(1, int(5000 / f0))).astype(np.float32)


def test_frame_pitch_reads_a_harmonic_tone_and_not_noise():
    import librosa

    rate, n_fft, hop = 22050, 1024, 256
    for f0 in (90.0, 150.0, 280.0):
        magnitude = np.abs(librosa.stft(harmonic_tone(f0, rate), n_fft=n_fft, hop_length=hop))[None]
        pitch = frame_pitch(magnitude, n_fft, rate)[0, 4:-4]
        assert np.all(np.abs(pitch - semitones(f0)) < 0.1)
    noise = np.random.default_rng(0).standard_normal(rate).astype(np.float32) * 0.1
    assert np.all(np.isnan(frame_pitch(np.abs(librosa.stft(noise, n_fft=n_fft, hop_length=hop))[None], n_fft, rate)))


def test_the_shifter_at_rest_passes_the_frames_untouched():
    frames = (np.random.default_rng(1).standard_normal((2, 513, 8)) * (1 + 1j)).astype(np.complex64)
    shifter = PitchShifter(1024, 256, 22050)
    assert shifter.process(frames, np.ones(8), np.ones(8)) is frames


def test_pitch_12_at_style_weight_0_is_a_clean_octave_up_offline(speech, female, measured):
    content, rate = speech["content"]
    out = stylize(content, rate, female, DRY.with_overrides(pitch=12.0)).audio
    shifted = voice(out, rate)
    assert shifted.f0_median - measured["content"].f0_median == pytest.approx(12.0, abs=0.5)
    assert np.all(np.abs(shifted.formants - measured["content"].formants) < 1.0)  # the envelope stayed
    assert stoi(content, out, rate) >= 0.8


def test_formant_3_moves_the_formants_and_not_the_pitch(speech, female, measured):
    content, rate = speech["content"]
    out = stylize(content, rate, female, DRY.with_overrides(formant=3.0)).audio
    moved = voice(out, rate)
    assert abs(moved.f0_median - measured["content"].f0_median) < 0.3
    shift = moved.formants - measured["content"].formants
    assert np.all(shift > 1.0) and np.mean(shift) > 1.5
    assert stoi(content, out, rate) >= 0.85


def test_pitch_follow_moves_a_male_voice_to_the_female_style_pitch(speech, female, measured):
    content, rate = speech["content"]
    assert measured["style"].f0_median - measured["content"].f0_median > 10  # the pair is an octave apart
    out = stylize(content, rate, female, DRY.with_overrides(pitch_follow=1.0)).audio
    assert abs(voice(out, rate).f0_median - measured["style"].f0_median) < 1.5


def test_an_unvoiced_style_makes_the_follows_do_nothing(speech):
    content, rate = speech["content"]
    noise = np.random.default_rng(2).standard_normal((1, 3 * rate)).astype(np.float32) * 0.1
    texture = learn_style([(noise, rate)], get_preset("default"))
    assert texture.features["pitch"][1] == 0.0 and texture.features["formant"][0] == 0.0
    dry = stylize(content, rate, texture, DRY).audio
    followed = stylize(content, rate, texture, DRY.with_overrides(pitch_follow=1.0, formant_follow=1.0)).audio
    np.testing.assert_array_equal(dry, followed)


def test_a_mixture_follows_only_its_voiced_part(female):
    voiced = female.features["pitch"]
    unvoiced = np.zeros(2, dtype=np.float32)
    mixed = PitchProfile.mix([(voiced, 0.5), (unvoiced, 0.5)])
    assert mixed[0] == pytest.approx(voiced[0]) and mixed[1] == pytest.approx(voiced[1] / 2)
    profile = FormantProfile.mix([(female.features["formant"], 0.5), (np.zeros_like(female.features["formant"]), 0.5)])
    np.testing.assert_allclose(profile[1:], female.features["formant"][1:], rtol=1e-5)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="pitch must be within"):
        VoiceSettings(pitch=30.0)
    with pytest.raises(ValueError, match="no voice stage"):
        get_preset("article").with_overrides(pitch=3.0)


def stream(content: np.ndarray, rate: int, style, params: Parameters, automate=None, block: int = 512,
           mode: str = "render") -> tuple[np.ndarray, int, int]:
    """The content through a stream, ``automate(seq, params)`` before each block: the output, and the
    latency reported at ``prepare`` and after the last block."""
    processor = StreamProcessor(params, style, "default", mode=mode)
    processor.prepare(rate, 1, block)
    prepared = processor.latency_samples
    padded = np.pad(content[0], (0, -content.shape[1] % block))
    out = []
    for seq in range(padded.size // block):
        if automate is not None:
            automate(seq, params)
        out.extend(processor.push(seq, padded[seq * block:(seq + 1) * block]))
    latency = processor.stats().latency_samples
    out.extend(processor.flush())
    assert [seq for seq, _ in sorted(out, key=lambda item: item[0])] == list(range(padded.size // block))
    return np.concatenate([b for _, b in sorted(out, key=lambda item: item[0])])[None, :content.shape[1]], prepared, latency


def envelope_lag(a: np.ndarray, b: np.ndarray, rate: int) -> int:
    """The lag, in 10 ms frames, at which b's RMS envelope best matches a's."""
    frame = rate // 100
    env = [np.sqrt(np.mean(x[0, :x.shape[1] // frame * frame].reshape(-1, frame) ** 2, axis=1)) for x in (a, b)]
    env = [e - e.mean() for e in env]
    lags = range(-10, 11)
    return max(lags, key=lambda lag: float(np.dot(env[0][10:-10], np.roll(env[1], -lag)[10:-10])))


def test_live_pitch_12_is_an_octave_up_and_keeps_the_latency(speech, female, measured):
    content, rate = speech["content"]
    out, prepared, latency = stream(content, rate, female, _pitched(12.0)[0], mode="live")
    assert latency == prepared
    assert envelope_lag(content, out, rate) == 0  # the shift delays nothing: the words stay where they were
    assert voice(out, rate).f0_median - measured["content"].f0_median == pytest.approx(12.0, abs=0.5)
    assert stoi(content, out, rate) >= 0.8  # block seq out is aligned with block seq in


def test_pitch_automation_glides_without_a_click():
    rate = 48000
    tone = harmonic_tone(220.0, rate, seconds=3.0)[None]
    style = learn_style([(tone, rate)], get_preset("default"))

    def curvature(audio: np.ndarray) -> float:  # a click is a spike in the second difference
        return float(np.abs(np.diff(audio[0, rate // 2:], n=2)).max())

    steady = max(curvature(stream(tone, rate, style, params)[0]) for params in _pitched(-7.0, 12.0))
    automated = _pitched(0.0)[0]

    def automate(seq: int, params: Parameters) -> None:
        params.set("pitch", (0.0, 12.0, -7.0, 12.0)[(seq // 40) % 4])  # a jump every 0.43 s

    out, prepared, latency = stream(tone, rate, style, automated, automate)
    assert latency == prepared
    assert curvature(out) < 1.5 * steady


def _pitched(*values: float) -> list[Parameters]:
    """Parameters at style weight 0 and each pitch."""
    out = []
    for value in values:
        params = Parameters()
        params.set("style_weight", 0.0)
        params.set("pitch", value)
        out.append(params)
    return out


def test_a_pitch_jump_glides_frame_by_frame_at_the_slew():
    import librosa

    from gramophone.dsp.bands import BandStats
    from gramophone.stages import Context, VoiceControls

    rate, analysis = 22050, get_preset("default").analysis
    n_fft, hop = analysis.n_fft(rate), analysis.hop_length(rate)
    settings = VoiceSettings()
    stage = settings.build(analysis, 40, 8, rate)
    frames = librosa.stft(harmonic_tone(150.0, rate, 2.0), n_fft=n_fft, hop_length=hop)[None].astype(np.complex64)
    bands = BandStats(mean=np.zeros(1), covariance=np.eye(1), count=1.0)
    out = []
    for start in range(0, frames.shape[-1], 8):
        pitch = 0.0 if start < 40 else 12.0
        context = Context(pull=0.0, colour=0.0, bands=bands, features={}, content=frames[..., start:start + 8],
                          voice=VoiceControls(pitch=pitch))
        out.append(stage.apply(frames[..., start:start + 8], context))
    track = frame_pitch(np.abs(np.concatenate(out, axis=-1)), n_fft, rate)[0, 30:] - semitones(150.0)
    assert np.nanmax(np.diff(track)) < 1.0  # a glide of under a semitone a frame (11.6 ms), not a jump
    assert np.nanmedian(track[40:-6]) == pytest.approx(12.0, abs=0.1)  # there after the glide (edges aside)

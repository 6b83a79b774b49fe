"""The held-out quality measures: their fixed points, level invariance and ordering.

The independent judge's voice measures are checked on espeak-ng voices and sox pitch shifts:
known shifts, known voice orders, and n/a where there is no voice to measure.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import CONTENT_TEXT, require_tool, speak
from gramophone import metrics


@pytest.fixture(scope="module")
def clips(speech_pair: tuple[Path, Path]) -> tuple[np.ndarray, np.ndarray, int]:
    content, rate = sf.read(speech_pair[0], dtype="float32")
    style, style_rate = sf.read(speech_pair[1], dtype="float32")
    assert rate == style_rate
    return content, style, rate


def splice(content: np.ndarray, style: np.ndarray, share: float) -> np.ndarray:
    """The first ``1 - share`` of the content followed by the last ``share`` of the style.

    Per-frame grams average over frames, so a splice lies between the two clips' grams;
    a sample-wise mix would not (two voices at once are a third, denser sound).
    """
    head = content[: int(round(content.size * (1 - share)))]
    tail = style[style.size - int(round(style.size * share)) :]
    return np.concatenate([head, tail])


def test_null_transform_scores_zero_gain_and_full_stoi(clips):
    content, style, rate = clips
    report = metrics.measure(content, style, content.copy(), rate)
    assert report.held_out_gain == pytest.approx(0.0, abs=1e-6)
    assert report.mfcc_gain == pytest.approx(0.0, abs=1e-6)
    assert report.timbre_gain == pytest.approx(0.0, abs=1e-6)
    assert report.stoi == pytest.approx(1.0, abs=1e-6)
    assert report.held_out_dry > 0 and report.mfcc_dry > 0 and report.timbre_dry > 0


def test_style_itself_scores_gain_one(clips):
    content, style, rate = clips
    report = metrics.measure(content, style, style.copy(), rate)
    assert report.held_out_gain == pytest.approx(1.0, abs=1e-6)
    assert report.mfcc_gain == pytest.approx(1.0, abs=1e-4)
    assert report.timbre_gain == pytest.approx(1.0, abs=1e-4)
    assert report.stoi < 0.5  # other words: not intelligible as the content


def test_level_does_not_count(clips):
    content, style, rate = clips
    output = splice(content, style, 0.4)
    reference = metrics.measure(content, style, output, rate)
    louder = metrics.measure(content * 0.1, style * 3.0, output * 4.0, rate)
    for name, value in reference.as_dict().items():
        if isinstance(value, float):
            assert getattr(louder, name) == pytest.approx(value, rel=1e-4, abs=1e-5), name


def test_sample_rate_and_channels_do_not_count(clips):
    import librosa

    content, style, rate = clips
    output = splice(content, style, 0.5)
    reference = metrics.measure(content, style, output, rate)
    stereo_48k = librosa.resample(output, orig_sr=rate, target_sr=48000)
    stereo_48k = np.stack([stereo_48k, stereo_48k], axis=1)
    report = metrics.measure(content, style, stereo_48k, rate, output_rate=48000)
    assert report.held_out_gain == pytest.approx(reference.held_out_gain, abs=0.02)
    assert report.mfcc_gain == pytest.approx(reference.mfcc_gain, abs=0.02)
    assert report.timbre_gain == pytest.approx(reference.timbre_gain, abs=0.02)
    assert report.stoi == pytest.approx(reference.stoi, abs=0.02)


def test_gains_grow_as_the_output_becomes_the_style(clips):
    content, style, rate = clips
    shares = (0.0, 0.25, 0.5, 0.75, 1.0)
    reports = [metrics.measure(content, style, splice(content, style, share), rate) for share in shares]
    held_out = [report.held_out_gain for report in reports]
    mfcc = [report.mfcc_gain for report in reports]
    timbre = [report.timbre_gain for report in reports]
    stoi = [report.stoi for report in reports]
    assert held_out == sorted(held_out) and mfcc == sorted(mfcc) and timbre == sorted(timbre)
    assert stoi == sorted(stoi, reverse=True)
    assert 0.1 < held_out[2] < 0.9 and 0.1 < mfcc[2] < 0.9 and 0.1 < timbre[2] < 0.9


def test_noise_scores_negative_gain(clips):
    content, style, rate = clips
    noise = np.random.default_rng(0).standard_normal(content.size).astype(np.float32)
    assert metrics.measure(content, style, noise, rate).held_out_gain < 0


def test_own_networks_are_measured_alongside(clips):
    content, style, rate = clips
    torch.manual_seed(0)
    own = [torch.nn.Sequential(torch.nn.Conv1d(1025, 64, 11, bias=False), torch.nn.ReLU()).requires_grad_(False)]
    null = metrics.measure(content, style, content, rate, own_nets=own)
    same = metrics.measure(content, style, style, rate, own_nets=own)
    assert null.own_gain == pytest.approx(0.0, abs=1e-6) and same.own_gain == pytest.approx(1.0, abs=1e-6)

    calls = []

    def features(audio: np.ndarray, sample_rate: int) -> np.ndarray:
        calls.append(sample_rate)
        return metrics.log_spectrogram(audio)

    custom = metrics.measure(content, style, content, rate, own_nets=own, own_features=features)
    assert custom.own_gain == pytest.approx(0.0, abs=1e-6) and calls == [rate, rate]


def test_evaluators_are_held_out_and_fixed():
    nets = metrics.build_evaluators()
    shapes = {(net[0].out_channels, net[0].kernel_size[0]) for net in nets}
    assert not shapes & {(512, 11), (4096, 11), (4096, 3)}
    assert all(spec.seed > 15 for spec in metrics.EVALUATORS)
    again = metrics.build_evaluators()
    assert all(torch.equal(a[0].weight, b[0].weight) for a, b in zip(nets, again))


def test_style_statistics_are_cached(clips):
    content, style, rate = clips
    evaluator = metrics.Evaluator(cache_size=4)
    first = evaluator.stats(style, rate)
    assert evaluator.stats(style.copy(), rate) is first
    assert evaluator.stats(style, rate + 1) is not first


def test_silent_clip_is_refused(clips):
    content, style, rate = clips
    with pytest.raises(ValueError, match="silent"):
        metrics.measure(content, style, np.zeros_like(content), rate)


def test_nan_and_too_short_clips_are_refused(clips):
    content, style, rate = clips
    broken = content.copy()
    broken[100] = np.nan
    with pytest.raises(ValueError, match="finite"):
        metrics.measure(content, style, broken, rate, voice=True)
    with pytest.raises(ValueError, match=r"0\.30 s long; the measures need at least 0\.5 s"):
        metrics.measure(content, style, content[: int(0.3 * rate)], rate, voice=True)


def test_timbre_measure_shares_no_setting_with_the_mfcc_measure():
    import inspect

    assert metrics.TIMBRE_RATE != metrics.EVAL_RATE and metrics.TIMBRE_N_FFT != metrics.N_FFT
    assert metrics.TIMBRE_HOP != metrics.HOP and metrics.TIMBRE_COEFFICIENTS != metrics.N_MFCC
    default_bands = inspect.signature(__import__("librosa").filters.mel).parameters["n_mels"].default
    assert metrics.TIMBRE_BANDS != default_bands  # the MFCC measure's bands are librosa's default
    frames = metrics.timbre_features(np.random.default_rng(1).standard_normal(metrics.EVAL_RATE).astype(np.float32))
    assert frames.shape == (metrics.TIMBRE_COEFFICIENTS - 1, 1 + metrics.TIMBRE_RATE // metrics.TIMBRE_HOP)


# The voice measures.


def sox_pitch(source: Path, target: Path, semitones: float) -> Path:
    """``source`` shifted by ``semitones`` with sox (WSOLA and resampling: the formants move too)."""
    subprocess.run([require_tool("sox"), str(source), str(target), "pitch", f"{100 * semitones:g}"], check=True)
    return target


def read(path: Path) -> tuple[np.ndarray, int]:
    audio, rate = sf.read(path, dtype="float32")
    return audio, rate


def voice_of(audio: np.ndarray, rate: int) -> metrics.VoiceStats:
    evaluator = metrics.default_evaluator()
    return evaluator.voice(evaluator.stats(audio, rate))


@pytest.fixture(scope="module")
def male(speech_pair: tuple[Path, Path]) -> Path:
    return speech_pair[0]  # en-us, CONTENT_TEXT


@pytest.mark.slow
@pytest.mark.parametrize("semitones", [4.0, -3.0])
def test_f0_distance_follows_a_known_pitch_shift(male: Path, audio_dir: Path, semitones: float):
    original = voice_of(*read(male))
    shifted = voice_of(*read(sox_pitch(male, audio_dir / f"male_pitch{semitones:+g}.wav", semitones)))
    assert shifted.f0_median - original.f0_median == pytest.approx(semitones, abs=0.4)
    assert metrics.f0_distance(shifted, original) == pytest.approx(abs(semitones), abs=0.5)
    if semitones > 0:  # sox moves the envelope with the pitch; Praat follows it upward (a 5 kHz ceiling)
        assert np.all(shifted.formants - original.formants > 0.4 * semitones)
        assert metrics.formant_distance(shifted, original) == pytest.approx(semitones, rel=0.4)


@pytest.mark.slow
def test_a_female_voice_has_higher_pitch_and_formants_than_a_male_one(male: Path, audio_dir: Path):
    female = speak(audio_dir / "content_female.wav", CONTENT_TEXT, "en-us+f3")  # the same words
    low, high = voice_of(*read(male)), voice_of(*read(female))
    assert high.f0_median - low.f0_median > 6  # espeak: about 100 Hz against 210 Hz
    for stats in (low, high):
        assert np.all(np.diff(stats.formants) > 0)  # F1 < F2 < F3
    assert high.formants.mean() - low.formants.mean() > 1.0 and high.formants[2] - low.formants[2] > 1.0
    assert low.voiced_share > metrics.VOICED_SHARE_MIN and high.voiced_share > metrics.VOICED_SHARE_MIN


@pytest.mark.slow
def test_voice_gains_are_zero_for_the_content_and_one_for_the_style(clips):
    content, style, rate = clips
    null = metrics.measure(content, style, content.copy(), rate, voice=True)
    same = metrics.measure(content, style, style.copy(), rate, voice=True)
    assert null.voice_note is None and same.voice_note is None
    assert null.f0_gain == pytest.approx(0.0, abs=1e-9) and null.formant_gain == pytest.approx(0.0, abs=1e-9)
    assert same.f0_gain == pytest.approx(1.0, abs=1e-9) and same.formant_gain == pytest.approx(1.0, abs=1e-9)
    assert null.f0_dry > 6 and null.formant_dry > metrics.MIN_DRY_SEMITONES


@pytest.mark.slow
def test_a_pitch_shift_halfway_to_the_style_scores_half_the_f0_gain(clips, male: Path, audio_dir: Path):
    content, style, rate = clips
    gap = voice_of(style, rate).f0_median - voice_of(content, rate).f0_median
    halfway, halfway_rate = read(sox_pitch(male, audio_dir / "male_halfway.wav", round(gap / 2, 1)))
    report = metrics.measure(content, style, halfway, rate, output_rate=halfway_rate, voice=True)
    assert report.f0_gain == pytest.approx(0.5, abs=0.1)
    assert report.stoi > 0.5  # the same words


@pytest.mark.slow
def test_an_unvoiced_style_gives_no_voice_gains(clips):
    content, style, rate = clips
    brown = np.cumsum(np.random.default_rng(2).standard_normal(content.size))
    brown = (brown - np.convolve(brown, np.ones(2205) / 2205, mode="same")).astype(np.float32)  # no drift
    report = metrics.measure(content, brown, content, rate, voice=True)
    assert report.f0_gain is None and report.formant_gain is None and report.f0_dry is None
    assert report.voiced_style < metrics.VOICED_SHARE_MIN < report.voiced_content
    assert report.voice_note.startswith("style unvoiced")
    assert report.held_out_gain == pytest.approx(0.0, abs=1e-6)  # the other measures are unaffected


@pytest.mark.slow
def test_pitched_material_that_is_not_speech_gives_no_voice_gains(tone_file: Path):
    tone, rate = read(tone_file)
    fifth = np.sin(2 * np.pi * 660 * np.arange(tone.size) / rate).astype(np.float32)
    report = metrics.measure(tone, fifth, tone, rate, speech=False, voice=True)
    assert report.voiced_content > 0.9 and report.voiced_style > 0.9  # pyin hears a pitch in a tone
    assert report.f0_gain is None and report.formant_gain is None and report.voice_note == "not speech"


@pytest.mark.slow
def test_a_style_within_a_semitone_of_the_content_gives_no_voice_gains(clips, male: Path, audio_dir: Path):
    content, _, rate = clips
    near, near_rate = read(sox_pitch(male, audio_dir / "male_pitch+0.5.wav", 0.5))
    report = metrics.measure(content, near, content, rate, style_rate=near_rate, voice=True)
    assert report.f0_dry < metrics.MIN_DRY_SEMITONES and report.f0_gain is None
    assert "f0: content" in report.voice_note and "under 1 st" in report.voice_note


@pytest.mark.slow
def test_a_48_khz_stereo_output_reads_the_same_voice(clips):
    import librosa

    content, style, rate = clips
    stereo_48k = librosa.resample(content, orig_sr=rate, target_sr=48000)
    report = metrics.measure(content, style, np.stack([stereo_48k, stereo_48k], axis=1), rate, output_rate=48000,
                             voice=True)
    assert report.f0_gain == pytest.approx(0.0, abs=0.03) and report.formant_gain == pytest.approx(0.0, abs=0.1)
    assert report.voiced_output == pytest.approx(report.voiced_content, abs=0.02)


def test_voice_measures_are_opt_in(clips):
    content, style, rate = clips
    report = metrics.measure(content, style, content, rate)
    assert report.f0_gain is None and report.voiced_content is None and report.voice_note is None


def test_the_bench_sets_live_against_offline_and_says_why_a_voice_gain_is_na(clips):
    import dataclasses

    from bench import quality
    from bench.pairs import Pair

    content, style, rate = clips
    base = metrics.measure(content, style, splice(content, style, 0.5), rate)
    voice = Pair("voice", Path("c.wav"), Path("s.wav"), speech=True)
    organ = Pair("organ", Path("c.wav"), Path("s.wav"), speech=False)
    live = quality.PathSpec("live", "live", max_latency_ms=300)
    gains = {(voice, quality.PATHS[1]): (0.6, 0.5), (voice, live): (0.45, 0.2), (organ, quality.PATHS[1]): (0.4, None),
             (organ, live): (0.36, None)}
    outcomes = [quality.Outcome(pair, path, content, rate, dataclasses.replace(
        base, held_out_gain=held_out, f0_gain=f0, voice_note=None if f0 else "not speech"), 0.1, {"peak": 1.0})
        for (pair, path), (held_out, f0) in gains.items()]
    offline, streamed = quality.judge_rows(outcomes)
    assert offline["held_out_gain"] == pytest.approx(0.5) and "held_out_gain_ratio" not in offline
    assert streamed["held_out_gain_ratio"] == "0.81 (worst 0.75, voice)"  # 0.405 / 0.5; 0.45 / 0.6
    assert streamed["f0_gain_ratio"] == "0.40 (worst 0.40, voice)"
    assert quality.voice_notes(outcomes) == ["organ: not speech"]
    assert quality.Column("f0_gain", "F0", "{:.2f}", missing="n/a").cell({"f0_gain": None}) == "n/a"

"""The held-out quality measures: their fixed points, level invariance and ordering."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

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
    assert report.stoi == pytest.approx(1.0, abs=1e-6)
    assert report.held_out_dry > 0 and report.mfcc_dry > 0


def test_style_itself_scores_gain_one(clips):
    content, style, rate = clips
    report = metrics.measure(content, style, style.copy(), rate)
    assert report.held_out_gain == pytest.approx(1.0, abs=1e-6)
    assert report.mfcc_gain == pytest.approx(1.0, abs=1e-4)
    assert report.stoi < 0.5  # other words: not intelligible as the content


def test_level_does_not_count(clips):
    content, style, rate = clips
    output = splice(content, style, 0.4)
    reference = metrics.measure(content, style, output, rate)
    louder = metrics.measure(content * 0.1, style * 3.0, output * 4.0, rate)
    for name, value in reference.as_dict().items():
        if value is not None:
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
    assert report.stoi == pytest.approx(reference.stoi, abs=0.02)


def test_gains_grow_as_the_output_becomes_the_style(clips):
    content, style, rate = clips
    shares = (0.0, 0.25, 0.5, 0.75, 1.0)
    reports = [metrics.measure(content, style, splice(content, style, share), rate) for share in shares]
    held_out = [report.held_out_gain for report in reports]
    mfcc = [report.mfcc_gain for report in reports]
    stoi = [report.stoi for report in reports]
    assert held_out == sorted(held_out) and mfcc == sorted(mfcc)
    assert stoi == sorted(stoi, reverse=True)
    assert 0.1 < held_out[2] < 0.9 and 0.1 < mfcc[2] < 0.9


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

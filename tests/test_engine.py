"""The style engine: networks, gram normalisation, optimisers, stylize, targets, mixtures, cache.

Most tests use a small preset (64 filters, a pool of 2) on two-second clips so the file
runs in well under a minute; the held-out quality test uses the real default preset.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.signal import butter, sosfilt

from gramophone.engine import cache as cache_module
from gramophone import metrics
from gramophone.dsp.analysis import analyse
from gramophone.audio import AudioError, load_audio
from gramophone.engine.cache import StyleCache, check_name
from gramophone.dsp.bands import BandBasis, frame_energy_db
from gramophone.stages import LevelsSettings
from gramophone.stages import colour as colour_module
from gramophone.stages.colour import SILENT_ENVELOPE_DB
from gramophone.stages.levels import LevelTable, to_db
from gramophone.stages.match_eq import long_term_spectrum
from gramophone.engine.network import FeatureNet, NetworkConfig, build_pool, get_pool
from gramophone.engine.objective import content_loss, gram, style_loss
from gramophone.engine.optimize import Objective, optimise
from gramophone.engine.presets import get_preset
from gramophone.engine.style import StyleTarget, learn_style, mix_targets
from gramophone.engine.offline import stylize
from levelutil import level_distance
from testpresets import OTHER, SMALL, lacking, quick_warm_up, without



pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def clips(speech_pair) -> dict[str, tuple[np.ndarray, int]]:
    """Two-second crops of the espeak pair at 22 050 Hz, ``(channels, samples)``."""
    content, rate = load_audio(speech_pair[0])
    style, style_rate = load_audio(speech_pair[1])
    return {"content": (content[:, : 2 * rate], rate), "style": (style[:, : 2 * style_rate], style_rate)}


@pytest.fixture(scope="module")
def style_a(clips) -> StyleTarget:
    return learn_style([clips["style"]], SMALL, name="A")


@pytest.fixture(scope="module")
def style_b(clips) -> StyleTarget:
    return learn_style([clips["content"]], SMALL, name="B")


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# -- networks ---------------------------------------------------------------------------


def test_same_seed_builds_the_same_weights():
    config = NetworkConfig(filters=16, kernel=5, layers=2, pool=3, bias=True, seed=7)
    first, second = build_pool(40, config), build_pool(40, config)
    assert len(first) == 3
    for a, b in zip(first, second):
        for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(pa, pb), name


@pytest.mark.parametrize("init", ["ulyanov", "torch", "he"])
def test_different_seeds_give_different_weights(init):
    config = NetworkConfig(filters=16, kernel=5, init=init)
    a, b = FeatureNet(40, config, seed=1), FeatureNet(40, config, seed=2)
    assert not torch.allclose(a.body[0].weight, b.body[0].weight)
    # and a pool's members differ from each other
    pool = build_pool(40, dataclasses.replace(config, pool=2))
    assert not torch.allclose(pool[0].body[0].weight, pool[1].body[0].weight)


def test_network_shapes_and_frozen_weights():
    config = NetworkConfig(filters=24, kernel=7, layers=2)
    net = FeatureNet(30, config, seed=0)
    out = net(torch.randn(2, 30, 50))
    assert out.shape == (2, 24, 50 - config.frames_lost)
    assert config.receptive_field == 13
    assert all(not p.requires_grad for p in net.parameters())
    padded = FeatureNet(30, dataclasses.replace(config, padding=True), seed=0)
    assert padded(torch.randn(1, 30, 50)).shape[-1] == 50


def test_a_network_with_input_bands_reads_mel_band_averages():
    config = NetworkConfig(filters=16, kernel=5, input_bands=12)
    net = FeatureNet(65, config, seed=0, max_freq_hz=11025.0)
    projection, conv = net.body[0], net.body[1]
    assert projection.weight.shape == (12, 65, 1) and conv.weight.shape == (16, 12, 5)
    np.testing.assert_allclose(projection.weight.sum(dim=1).numpy(), 1.0, atol=1e-5)  # each band an average
    flat = torch.full((1, 65, 9), 2.0)  # a flat spectrum averages to the same value in every band
    torch.testing.assert_close(projection(flat), torch.full((1, 12, 9), 2.0))
    assert net(torch.randn(2, 65, 30)).shape == (2, 16, 26)
    assert all(not p.requires_grad for p in net.parameters())
    with pytest.raises(ValueError, match="max_freq_hz"):
        FeatureNet(65, config, seed=0)


def test_get_pool_shares_one_pool_per_config():
    config = NetworkConfig(filters=8, kernel=3, pool=2, seed=123)
    assert get_pool(20, config) is get_pool(20, config)
    assert get_pool(20, config) is not get_pool(21, config)


@pytest.mark.parametrize("kwargs", [{"activation": "gelu"}, {"init": "xavier"}, {"filters": 0}, {"pool": 0},
                                    {"input_bands": -1}])
def test_bad_network_config_is_rejected(kwargs):
    with pytest.raises(ValueError):
        NetworkConfig(**kwargs)


# -- gram normalisation ---------------------------------------------------------------------


def test_gram_is_length_invariant():
    """A clip repeated twice has the same gram: G = F Fᵀ / T."""
    features = torch.randn(1, 12, 37)
    torch.testing.assert_close(gram(torch.cat([features, features], dim=-1)), gram(features))


def test_learned_target_is_length_invariant(clips, style_a):
    """The same clip given twice, or played twice in a row, gives (nearly) the same target."""
    twice = learn_style([clips["style"], clips["style"]], SMALL)
    torch.testing.assert_close(twice.grams, style_a.grams)
    audio, rate = clips["style"]
    repeated = learn_style([(np.concatenate([audio, audio], axis=1), rate)], SMALL)
    assert relative(repeated.grams, style_a.grams) < 0.1  # only the seam frames differ
    assert repeated.frames > 1.9 * style_a.frames


def test_learned_envelopes_are_the_style_band_frames_without_its_silence(clips, monkeypatch):
    audio, rate = clips["style"]
    gapped = np.concatenate([audio, np.zeros_like(audio)], axis=1)  # as long again in digital silence
    target = learn_style([(gapped, rate)], SMALL)
    basis = BandBasis.build(SMALL.analysis.channels, SMALL.analysis.max_freq_hz, SMALL.colour_bands)
    spectrum = analyse(gapped, rate, SMALL.analysis)
    bands = (basis.to_bands @ spectrum.logmag)[0]
    sounding = frame_energy_db(spectrum.logmag)[0] > float(target.features["frame_hold"]) - SILENT_ENVELOPE_DB
    assert 0.3 < sounding.mean() < 0.6  # the silent half is left out
    np.testing.assert_allclose(target.features["colour"], bands[:, sounding], atol=1e-5)
    monkeypatch.setattr(colour_module, "MAX_ENVELOPES", 50)
    thinned = learn_style([(gapped, rate)], SMALL).features["colour"]
    assert thinned.shape == (SMALL.colour_bands, 50)
    np.testing.assert_allclose(thinned[:, [0, -1]], bands[:, sounding][:, [0, -1]], atol=1e-5)  # spread end to end


def test_learned_target_is_stable_across_sample_rate(clips, style_a, style_b):
    from gramophone.audio import resample

    audio, rate = clips["style"]
    at_48k = learn_style([(resample(audio, rate, 48000), 48000)], SMALL)
    other_voice = relative(style_b.grams, style_a.grams)
    assert relative(at_48k.grams, style_a.grams) < 0.2 * other_voice


def test_gram_scales_with_the_square_of_the_features():
    features = torch.randn(2, 8, 20)
    torch.testing.assert_close(gram(3.0 * features), 9.0 * gram(features))


def test_relative_losses_are_zero_at_the_target_and_one_when_everything_is_gone():
    target_gram = gram(torch.randn(1, 8, 30))
    spectrogram = torch.rand(1, 20, 30)
    assert float(style_loss(target_gram, target_gram)) == 0.0
    assert float(content_loss(spectrogram, spectrogram)) == 0.0
    assert float(style_loss(torch.zeros_like(target_gram), target_gram)) == pytest.approx(1.0)
    assert float(content_loss(torch.zeros_like(spectrogram), spectrogram)) == pytest.approx(1.0)


def test_relative_losses_do_not_depend_on_scale():
    now, target = gram(torch.randn(1, 8, 30)), gram(torch.randn(1, 8, 30))
    assert float(style_loss(100.0 * now, 100.0 * target)) == pytest.approx(float(style_loss(now, target)), rel=1e-5)
    a, b = torch.rand(1, 20, 30), torch.rand(1, 20, 30)
    assert float(content_loss(7.0 * a, 7.0 * b)) == pytest.approx(float(content_loss(a, b)), rel=1e-5)


def test_style_loss_averages_over_audio_channels():
    target = gram(torch.randn(1, 8, 30))
    now = torch.stack([target[0], 2 * target[0]])  # channel 0 exact, channel 1 off by 100 %
    assert float(style_loss(now, target)) == pytest.approx(0.5, rel=1e-5)


def test_own_style_loss_of_content_starts_near_one(clips, style_a):
    """The normalisation keeps the starting style loss a number around 1, not 1e9."""
    spectrum = analyse(clips["content"][0], clips["content"][1], SMALL.analysis)
    nets = get_pool(SMALL.analysis.channels, SMALL.network)
    start = float(style_loss(gram(nets[0](torch.from_numpy(spectrum.logmag))), style_a.grams[0]))
    assert 0.01 < start < 10


# -- optimisers ----------------------------------------------------------------------------


def _objective(clips, style: StyleTarget) -> tuple[Objective, torch.Tensor]:
    spectrum = analyse(clips["content"][0][:, :22050], clips["content"][1], SMALL.analysis)
    content = torch.from_numpy(spectrum.logmag)
    nets = get_pool(SMALL.analysis.channels, SMALL.network)
    return Objective.for_content(nets, style.grams, content, 1.0, 1.0), content


def _pool_style_loss(objective: Objective, spectrogram: torch.Tensor) -> float:
    with torch.no_grad():
        return sum(objective.terms(i, spectrogram)[0].item() for i in range(len(objective.nets)))


@pytest.mark.parametrize(("method", "rate"), [("adam", 0.08), ("lbfgs", 1.0)])
def test_losses_fall(clips, style_a, method, rate):
    objective, content = _objective(clips, style_a)
    steps = []
    result = optimise(content, objective, 12 if method == "adam" else 5, rate, method, callback=steps.append)
    assert result.iterations == len(steps) > 0 and not result.interrupted
    assert _pool_style_loss(objective, result.spectrogram) < 0.7 * _pool_style_loss(objective, content)
    if method == "lbfgs":  # one consistent objective: the reported loss falls step by step
        assert steps[-1].loss < steps[0].loss
    assert steps[0].content >= 0.0 and result.spectrogram.shape == content.shape


def test_callback_can_stop_the_run(clips, style_a):
    objective, content = _objective(clips, style_a)
    result = optimise(content, objective, 50, 0.08, callback=lambda step: step.iteration < 3)
    assert result.iterations == 3 and result.interrupted


def test_a_past_deadline_takes_no_step(clips, style_a):
    import time

    objective, content = _objective(clips, style_a)
    result = optimise(content, objective, 50, 0.08, deadline=time.monotonic() - 1)
    assert result.iterations == 0 and result.out_of_time
    torch.testing.assert_close(result.spectrogram, content)


def test_unknown_optimizer_is_rejected(clips, style_a):
    objective, content = _objective(clips, style_a)
    with pytest.raises(ValueError):
        optimise(content, objective, 2, 0.1, method="sgd")


# -- stylize ----------------------------------------------------------------------------


def test_stylize_keeps_length_and_is_deterministic(clips, style_a):
    audio, rate = clips["content"]
    first = stylize(audio, rate, style_a, SMALL, seed=0)
    second = stylize(audio, rate, style_a, SMALL, seed=0)
    assert first.audio.shape == audio.shape and first.sample_rate == rate
    assert first.optimisation.iterations == SMALL.iterations
    np.testing.assert_array_equal(first.audio, second.audio)
    assert np.abs(first.audio - audio).max() > 1e-3  # it did something


def test_stylize_from_noise_depends_on_the_seed_only(clips, style_a):
    audio, rate = clips["content"]
    preset = SMALL.with_overrides(init="noise", iterations=3, phase="griffinlim", griffin_lim_iterations=4,
                                  griffin_lim_init="random")
    a, b = (stylize(audio, rate, style_a, preset, seed=s).audio for s in (5, 5))
    c = stylize(audio, rate, style_a, preset, seed=6).audio
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_stylize_with_style_weight_zero_returns_the_content(clips, style_a):
    audio, rate = clips["content"]
    result = stylize(audio, rate, style_a, SMALL.with_overrides(style_weight=0.0, iterations=2), seed=0)
    np.testing.assert_allclose(result.audio, audio, atol=1e-4)


def test_stylize_output_never_passes_full_scale(clips, style_a):
    """At style weight 0 the output is the content resynthesised: a passage over full scale
    comes out at full scale, and the rest as it went in."""
    audio, rate = clips["content"]
    loud = audio * (1.6 / np.abs(audio).max())
    out = stylize(loud, rate, style_a, SMALL.with_overrides(style_weight=0.0, iterations=2), seed=0).audio
    assert np.abs(out).max() <= 1.0 + 1e-6
    untouched = np.abs(out - loud) < 1e-4
    assert 0.2 < untouched.mean() < 1  # measured: 0.79 of the samples


def test_stylize_rejects_a_target_of_other_settings(clips):
    target = learn_style([clips["style"]], OTHER)
    with pytest.raises(ValueError, match="other analysis or network settings"):
        stylize(*clips["content"], target, SMALL)


def test_stylize_rejects_bad_content(clips, style_a):
    with pytest.raises(AudioError):
        stylize(np.zeros((1, 22050), dtype=np.float32), 22050, style_a, SMALL)
    with pytest.raises(AudioError):
        stylize(clips["content"][0][:, :100], 22050, style_a, SMALL)


def test_style_distance_on_rendered_audio_falls_under_held_out_evaluators(speech_pair):
    """The real default preset on the espeak pair, judged by networks it never optimised.

    Both the shipped recipe (colouring, then gram steps) and the gram steps on their own
    (no colouring) must move the rendered audio toward the style, so neither only fools
    the engine's own networks.
    """
    preset = get_preset("default")
    content, rate = load_audio(speech_pair[0])
    style, style_rate = load_audio(speech_pair[1])
    target = learn_style([(style, style_rate)], preset)

    def report(**overrides) -> metrics.QualityReport:
        result = stylize(content, rate, target, preset.with_overrides(**overrides))
        return metrics.measure(content[0], style[0], result.audio[0], rate, style_rate=style_rate)

    shipped = report(iterations=20)
    grams_only = report(iterations=20, colour=0.0)
    print(f"held-out gain: colour + grams {shipped.held_out_gain:.3f}, grams only {grams_only.held_out_gain:.3f}")
    assert shipped.held_out_gain > 0.05, shipped
    assert grams_only.held_out_gain > 0.05, grams_only
    assert shipped.mfcc_gain > 0.05 and grams_only.mfcc_gain > 0.05
    assert shipped.stoi > 0.6


# -- targets and mixtures ----------------------------------------------------------------


def test_target_records_what_it_depends_on(clips, style_a):
    assert style_a.compatible_with(SMALL) and not style_a.compatible_with(OTHER)
    assert style_a.grams.shape == (2, 64, 64)
    assert style_a.sample_rate == clips["style"][1]
    assert len(style_a.source_hash) == 64
    assert style_a.key["network"]["filters"] == 64


def test_learning_needs_a_clip():
    with pytest.raises(AudioError):
        learn_style([], SMALL)


def test_mixture_blends_the_ceilings_loudest_frames_and_level_histograms(style_a, style_b):
    half = mix_targets([(style_a, 1), (style_b, 1)])
    for stage in ("ceiling", "frame_hold", "levels", "match_eq"):
        np.testing.assert_allclose(half.features[stage], (style_a.features[stage] + style_b.features[stage]) / 2,
                                   rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(half.features["levels"].sum(axis=1), 1.0, rtol=1e-5)  # still a distribution per channel  # still a distribution per channel


def test_mixture_pools_the_envelopes_by_weight(style_a, style_b):
    """Both styles' envelopes, thinned so that their counts follow the weights."""
    a, b = style_a.features["colour"], style_b.features["colour"]
    mixed = mix_targets([(style_a, 3), (style_b, 1)]).features["colour"]
    columns_a, columns_b = {tuple(column) for column in a.T}, {tuple(column) for column in b.T}
    from_a = sum(tuple(column) in columns_a for column in mixed.T)
    from_b = sum(tuple(column) in columns_b for column in mixed.T)
    assert from_a + from_b == mixed.shape[1]  # nothing but the styles' own envelopes
    assert from_a / mixed.shape[1] == pytest.approx(0.75, abs=0.01)
    assert mixed.shape[1] == pytest.approx(min(a.shape[1] / 0.75, b.shape[1] / 0.25), abs=1)  # as many as both allow
    only_a = mix_targets([(style_a, 1.0), (style_b, 0.0)]).features["colour"]
    np.testing.assert_array_equal(only_a, a)


def test_mixture_with_weight_one_and_zero_is_the_first_target(style_a, style_b):
    mixed = mix_targets([(style_a, 1.0), (style_b, 0.0)])
    torch.testing.assert_close(mixed.grams, style_a.grams)
    np.testing.assert_allclose(mixed.bands.mean, style_a.bands.mean)
    np.testing.assert_allclose(mixed.bands.covariance, style_a.bands.covariance, atol=1e-9)
    assert mixed.key == style_a.key


def test_equal_mixture_lies_between_its_parts(style_a, style_b):
    half = mix_targets([(style_a, 0.5), (style_b, 0.5)])
    lo, hi = torch.minimum(style_a.grams, style_b.grams), torch.maximum(style_a.grams, style_b.grams)
    assert torch.all(half.grams >= lo - 1e-5) and torch.all(half.grams <= hi + 1e-5)
    apart = float((style_a.grams - style_b.grams).norm())
    assert float((half.grams - style_a.grams).norm()) == pytest.approx(apart / 2, rel=1e-4)
    # weights are normalised: 2 and 2 is the same mixture as 0.5 and 0.5
    torch.testing.assert_close(mix_targets([(style_a, 2.0), (style_b, 2.0)]).grams, half.grams)
    assert half.source_hash not in (style_a.source_hash, style_b.source_hash)


def test_mixture_rejects_incompatible_or_bad_weights(clips, style_a, style_b):
    other = learn_style([clips["style"]], OTHER)
    with pytest.raises(ValueError, match="different settings"):
        mix_targets([(style_a, 1.0), (other, 1.0)])
    with pytest.raises(ValueError):
        mix_targets([(style_a, 1.0), (style_b, -0.5)])
    with pytest.raises(ValueError):
        mix_targets([(style_a, 0.0), (style_b, 0.0)])
    with pytest.raises(ValueError):
        mix_targets([])


def test_target_save_and_load_round_trip(tmp_path, style_a):
    path = style_a.save(tmp_path / "a.npz")
    loaded = StyleTarget.load(path)
    assert torch.equal(loaded.grams, style_a.grams) and loaded.grams.dtype == torch.float32
    np.testing.assert_array_equal(loaded.bands.mean, style_a.bands.mean)
    np.testing.assert_array_equal(loaded.bands.covariance, style_a.bands.covariance)
    assert loaded.bands.count == style_a.bands.count
    for field in ("name", "key", "source_hash", "sample_rate", "frames"):
        assert getattr(loaded, field) == getattr(style_a, field), field
    assert loaded.features.keys() == style_a.features.keys() and loaded.complete
    for stage, feature in style_a.features.items():
        np.testing.assert_array_equal(loaded.features[stage], feature)
    assert loaded.compatible_with(SMALL)
    assert [p.name for p in tmp_path.iterdir()] == ["a.npz"]  # no temporary left


OLDER_FORMATS = {1: ("ceiling", "levels", "frame_hold", "colour", "match_eq"),
                 2: ("levels", "frame_hold", "colour", "match_eq"), 3: ("frame_hold", "colour", "match_eq"),
                 4: ("colour", "match_eq"), 5: ("match_eq",), 6: ()}  # the stages whose feature each did not store
LEGACY_NAMES = {"colour": "envelopes", "ceiling": "ceiling", "levels": "levels", "frame_hold": "loudest_db",
                "match_eq": "spectrum"}  # formats 2–6 stored each stage's feature under these names


def _as_older_format(path: Path, version: int) -> None:
    """Rewrite a saved target as format ``version`` wrote it."""
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files if not name.startswith("feature_")}
        arrays |= {LEGACY_NAMES[stage]: data[f"feature_{stage}"] for stage in LEGACY_NAMES
                   if stage not in OLDER_FORMATS[version]}
    meta = json.loads(str(arrays["meta"]))
    del meta["stages"]
    arrays["meta"] = np.array(json.dumps(meta | {"format": version}))
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


@pytest.mark.parametrize("version", sorted(OLDER_FORMATS))
def test_a_target_saved_in_an_older_format_still_loads_and_stylises(tmp_path, clips, style_a, version):
    path = style_a.save(tmp_path / "a.npz")
    _as_older_format(path, version)
    old = StyleTarget.load(path)
    assert old.complete == (version == 6) and not set(OLDER_FORMATS[version]) & old.features.keys()
    for stage in old.features:
        np.testing.assert_array_equal(old.features[stage], style_a.features[stage])
    audio, rate = clips["content"]
    assert stylize(audio, rate, old, SMALL).audio.shape == audio.shape


@pytest.mark.parametrize(("stage", "value"), [("colour", np.zeros(8)), ("colour", np.zeros((3, 10))),
                                            ("colour", np.zeros((16, 0))), ("match_eq", np.zeros(40)),
                                            ("match_eq", np.zeros((128, 2))), ("match_eq", np.full(128, np.nan)),
                                            ("ceiling", np.full(513, np.inf))])
def test_a_target_with_an_array_of_the_wrong_shape_loads_without_it(tmp_path, clips, style_a, stage, value):
    path = style_a.save(tmp_path / "a.npz")
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files} | {f"feature_{stage}": value}
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    loaded = StyleTarget.load(path)
    assert stage not in loaded.features and not loaded.complete
    audio, rate = clips["content"]
    assert stylize(audio, rate, loaded, SMALL).audio.shape == audio.shape


def _lowpass(audio: np.ndarray, rate: int, cutoff_hz: float) -> np.ndarray:
    return sosfilt(butter(4, cutoff_hz, fs=rate, output="sos"), audio).astype(np.float32)


def test_a_style_learns_its_long_term_spectrum_clip_by_clip(clips, style_a):
    audio, rate = clips["style"]
    own, _ = long_term_spectrum(audio, rate)
    np.testing.assert_allclose(style_a.features["match_eq"], own, atol=1e-5)
    lowpassed = _lowpass(audio, rate, 1000.0)
    muffled, _ = long_term_spectrum(lowpassed, rate)
    assert np.abs(muffled - own).max() > 10  # the premise: two clips of different spectra
    both = learn_style([(audio, rate), (lowpassed, rate)], SMALL).features["match_eq"]
    np.testing.assert_allclose(both, (own + muffled) / 2, atol=1e-4)  # as long as each other: equal weights


def test_a_mixture_blends_the_long_term_spectra_by_weight(style_a, style_b):
    mixed = mix_targets([(style_a, 3), (style_b, 1)]).features["match_eq"]
    np.testing.assert_allclose(mixed, 0.75 * style_a.features["match_eq"] + 0.25 * style_b.features["match_eq"], atol=1e-5)


def test_stylize_equalises_the_quiet_bins_toward_the_style_spectrum(clips, style_a):
    """Offline, the rendered clip's long-term spectrum ends closer to the style's than without the match EQ."""
    audio, rate = clips["content"]
    spectra = {flag: long_term_spectrum(stylize(audio, rate, style_a, (SMALL if flag else without(SMALL, "match_eq"))).audio,
                                        rate)[0] for flag in (False, True)}
    distance = {flag: float(np.abs(spectrum - style_a.features["match_eq"]).mean()) for flag, spectrum in spectra.items()}
    assert distance[True] < 0.8 * distance[False], distance
    dry = stylize(audio, rate, style_a, dataclasses.replace(SMALL, style_weight=0.0))
    unequalised = stylize(audio, rate, style_a, dataclasses.replace(without(SMALL, "match_eq"), style_weight=0.0))
    np.testing.assert_array_equal(dry.audio, unequalised.audio)  # style weight 0: no EQ either


def test_stylize_holds_the_output_under_the_style_range(clips):
    """A style far quieter than the content: colouring and steps alone would leave it loud."""
    style_audio, style_rate = clips["style"]
    quiet = learn_style([(style_audio * 0.01, style_rate)], SMALL, name="quiet")
    audio, rate = clips["content"]
    held = stylize(audio, rate, quiet, SMALL)
    assert np.all(held.output_logmag <= quiet.features["ceiling"][:, None] + 1e-6)
    free = stylize(audio, rate, quiet, without(SMALL, "ceiling", "frame_hold"))
    assert np.sqrt(np.mean(held.audio**2)) < 0.2 * np.sqrt(np.mean(free.audio**2))


def test_stylize_holds_every_frame_under_the_style_loudest(chord_and_arpeggio):
    chord, arpeggio, rate = chord_and_arpeggio
    style = learn_style([(arpeggio, rate)], SMALL, name="arpeggio")
    held = stylize(chord, rate, style, SMALL)
    assert frame_energy_db(held.output_logmag).max() <= style.features["frame_hold"] + 1e-3
    free = stylize(chord, rate, lacking(style, "frame_hold"), SMALL)  # as an older target
    assert frame_energy_db(free.output_logmag).max() > style.features["frame_hold"] + 4  # measured: 6.1 dB over


def test_stylize_maps_the_quiet_levels_toward_the_style_and_leaves_the_loud_ones(clips, style_a):
    preset = quick_warm_up(SMALL, 0.1)  # two-second clips: no long ramp-in
    style_a = lacking(style_a, "frame_hold")  # the frame bound scales whole frames: not this test's
    audio, rate = clips["content"]
    mapped = stylize(audio, rate, style_a, preset).output_logmag
    plain = stylize(audio, rate, style_a, without(preset, "levels")).output_logmag
    loud = to_db(plain) >= LevelTable(style_a.features["levels"]).top - LevelsSettings().quiet_db + LevelsSettings().blend_db
    assert loud.any() and (~loud).any()
    np.testing.assert_allclose(mapped[loud], plain[loud], atol=1e-4)
    assert level_distance(mapped, style_a) < 0.75 * level_distance(plain, style_a)  # measured: 0.57


@pytest.mark.parametrize("kind", ["garbage", "foreign", "empty"])
def test_loading_something_else_is_a_value_error(tmp_path, kind):
    path = tmp_path / "x.npz"
    if kind == "garbage":
        path.write_bytes(b"\x00not a zip file at all")
    elif kind == "foreign":
        np.savez(path, weights=np.ones(3))
    else:
        path.write_bytes(b"")
    with pytest.raises(ValueError, match="not a Gramophone style target"):
        StyleTarget.load(path)


# -- cache -----------------------------------------------------------------------------------


def _no_temporaries(directory: Path) -> None:
    assert [p for p in directory.rglob(".*")] == []


def test_second_learn_hits_the_cache(tmp_path, clips, monkeypatch):
    cache = StyleCache(tmp_path)
    first = cache.learn([clips["style"]], SMALL, name="one")
    path = cache.key_path([clips["style"]], SMALL)
    assert path.exists()
    stamp = path.stat().st_mtime_ns

    def no_learning(*args, **kwargs):
        raise AssertionError("learn_style called although the target is cached")

    monkeypatch.setattr(cache_module, "learn_style", no_learning)
    second = cache.learn([clips["style"]], SMALL, name="two")
    assert second.name == "two"
    assert torch.equal(second.grams, first.grams)
    assert path.stat().st_mtime_ns == stamp
    _no_temporaries(tmp_path)


def test_cache_keys_differ_by_audio_and_settings(tmp_path, clips):
    cache = StyleCache(tmp_path)
    style, content = [clips["style"]], [clips["content"]]
    keys = {cache.key_path(style, SMALL), cache.key_path(content, SMALL), cache.key_path(style, OTHER)}
    assert len(keys) == 3


@pytest.mark.parametrize("damage", ["truncated", "garbage", "foreign", "other-settings", "format-1", "format-2",
                                    "format-3", "format-4", "format-5"])
def test_damaged_cache_file_is_recomputed_with_a_warning(tmp_path, clips, style_a, caplog, damage):
    cache = StyleCache(tmp_path)
    path = cache.key_path([clips["style"]], SMALL)
    if damage == "truncated":
        style_a.save(path)
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "garbage":
        path.write_bytes(os.urandom(300))
    elif damage == "foreign":
        np.savez(path, meta=np.array('{"format": 99}'), grams=np.zeros((2, 2)))
    elif damage.startswith("format-"):  # an older file: loadable, but the cache can do better
        style_a.save(path)
        _as_older_format(path, int(damage[-1]))
    else:
        learn_style([clips["style"]], OTHER).save(path)
    with caplog.at_level(logging.WARNING, logger="gramophone.engine.cache"):
        target = cache.learn([clips["style"]], SMALL, name="A")
    assert any(record.levelno == logging.WARNING and "recomputing" in record.getMessage() for record in caplog.records)
    torch.testing.assert_close(target.grams, style_a.grams)
    # the bad file was replaced by a good one
    replaced = StyleTarget.load(path)
    torch.testing.assert_close(replaced.grams, style_a.grams)
    assert replaced.complete
    _no_temporaries(tmp_path)


def test_failed_cache_write_leaves_no_temporary(tmp_path, clips, monkeypatch):
    cache = StyleCache(tmp_path)

    def full_disk(handle, **arrays):
        handle.write(b"partial")
        raise OSError("no space left on device")

    monkeypatch.setattr("gramophone.engine.style.np.savez", full_disk)
    with pytest.raises(OSError):
        cache.learn([clips["style"]], SMALL)
    assert list((tmp_path / "targets").iterdir()) == []
    _no_temporaries(tmp_path)


def test_named_styles(tmp_path, style_a, style_b):
    cache = StyleCache(tmp_path)
    assert cache.names() == []
    cache.save_named(style_a)
    cache.save_named(style_b)
    assert cache.names() == ["A", "B"]
    loaded = cache.load_named("A")
    assert torch.equal(loaded.grams, style_a.grams)
    with pytest.raises(KeyError):
        cache.load_named("missing")
    cache.delete_named("B")
    assert cache.names() == ["A"]
    _no_temporaries(tmp_path)


def test_a_level_histogram_of_another_resolution_is_dropped_on_load(tmp_path, style_a):
    path = style_a.save(tmp_path / "a.npz")
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    arrays["feature_levels"] = np.repeat(arrays["feature_levels"], 2, axis=1) / 2  # as if saved with bins half as wide
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    assert "levels" not in StyleTarget.load(path).features  # so the cache recomputes it instead of misreading it


def test_a_named_style_in_an_older_format_loads_with_a_warning(tmp_path, style_a, caplog):
    cache = StyleCache(tmp_path)
    cache.save_named(style_a)
    with caplog.at_level(logging.WARNING, logger="gramophone.engine.cache"):
        cache.load_named("A")
    assert not caplog.records  # the current format: no warning
    _as_older_format(cache.named_path("A"), 2)
    with caplog.at_level(logging.WARNING, logger="gramophone.engine.cache"):
        old = cache.load_named("A")
    assert "levels" not in old.features and torch.equal(old.grams, style_a.grams)
    assert any("learn it again" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("name", ["../escape", "", ".hidden", "a/b", "x" * 65])
def test_unsafe_style_names_are_rejected(name):
    with pytest.raises(ValueError):
        check_name(name)


def test_cache_folder_defaults_to_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAMOPHONE_CACHE", str(tmp_path / "here"))
    cache = StyleCache()
    assert cache.directory == tmp_path / "here" and (tmp_path / "here" / "targets").is_dir()

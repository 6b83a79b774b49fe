"""Style targets (``engine/style.py``): what they learn, mixtures, save and load, older formats."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from scipy.signal import butter, sosfilt

from gramophone.dsp.analysis import analyse
from gramophone.audio import AudioError
from gramophone.dsp.bands import BandBasis, frame_energy_db
from gramophone.stages import colour as colour_module
from gramophone.stages.colour import SILENT_ENVELOPE_DB
from gramophone.stages.match_eq import long_term_spectrum
from gramophone.engine.style import StyleTarget, learn_style, mix_targets
from gramophone.engine.offline import stylize
from olderformats import OLDER_FORMATS, as_older_format
from testpresets import OTHER, SMALL


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


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


@pytest.mark.parametrize("version", sorted(OLDER_FORMATS))
def test_a_target_saved_in_an_older_format_still_loads_and_stylises(tmp_path, clips, style_a, version):
    path = style_a.save(tmp_path / "a.npz")
    as_older_format(path, version)
    old = StyleTarget.load(path)
    # no older format carries the pitch and formant features (they came later, as features of format 7), so none is complete
    assert not old.complete and not set(OLDER_FORMATS[version]) & old.features.keys()
    assert {"pitch", "formant"}.isdisjoint(old.features)
    for stage in old.features:
        np.testing.assert_array_equal(old.features[stage], style_a.features[stage])
    audio, rate = clips["content"]
    assert stylize(audio, rate, old, SMALL).audio.shape == audio.shape


@pytest.mark.parametrize(("stage", "value"), [("colour", np.zeros(8)), ("colour", np.zeros((3, 10))),
                                            ("colour", np.zeros((16, 0))), ("match_eq", np.zeros(40)),
                                            ("match_eq", np.zeros((128, 2))), ("match_eq", np.full(128, np.nan)),
                                            ("ceiling", np.full(513, np.inf)), ("pitch", np.zeros(3)),
                                            ("pitch", np.array([0.0, 2.0])), ("formant", np.zeros(5))])
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

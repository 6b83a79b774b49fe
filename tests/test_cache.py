"""The on-disk cache of style targets and the named styles (``engine/cache.py``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from gramophone.engine.cache import StyleCache, check_name
from gramophone.engine.style import StyleTarget, learn_style
from olderformats import as_older_format
from testpresets import OTHER, SMALL


pytestmark = pytest.mark.usefixtures("one_torch_thread")


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

    monkeypatch.setattr("gramophone.engine.style.learn_style", no_learning)  # the cache imports it when it learns
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
        as_older_format(path, int(damage[-1]))
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
    as_older_format(cache.named_path("A"), 2)
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

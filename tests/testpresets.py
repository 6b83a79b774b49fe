"""The small presets the engine and stream tests share: the default recipe on a pool of two small networks."""

from __future__ import annotations

import dataclasses

from gramophone.engine.network import NetworkConfig
from gramophone.engine.presets import PRESETS, Preset

SMALL = dataclasses.replace(PRESETS["default"], name="small", iterations=6,
                            network=NetworkConfig(filters=64, kernel=11, pool=2, seed=0))
OTHER = dataclasses.replace(SMALL, name="other", network=NetworkConfig(filters=32, kernel=5, pool=2, seed=0))


def without(preset: Preset, *stages: str) -> Preset:
    """``preset`` with the named stages (or ``"ceiling"``, the bound) left out."""
    kept = tuple(settings for settings in preset.stages if settings.stage not in stages)
    return dataclasses.replace(preset, stages=kept, ceiling=None if "ceiling" in stages else preset.ceiling)


def quick_warm_up(preset: Preset, seconds: float) -> Preset:
    """``preset`` with its running stages (colouring, level map) ramping in over ``seconds``: for short clips."""
    return preset.with_stage("colour", warmup_seconds=seconds).with_stage("levels", warmup_seconds=seconds)


def lacking(style, *stages: str):
    """A style target without the named stages' features, as an older file would load."""
    return dataclasses.replace(style, features={name: feature for name, feature in style.features.items()
                                                if name not in stages})

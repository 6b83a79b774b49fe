"""Named recipes: analysis, networks, losses and optimiser settings.

- ``default``: ours, tuned for a strong held-out effect at better than real time (see
  docs/research-log.md): the voice's pitch and formant shift first (at rest by default), then a closed-form colouring of the spectral envelope toward the style,
  each frame then halfway to the style's nearest envelopes, then Adam from the content against a pool of eight small random networks, one per step,
  each reading 128 mel-band averages of the grid (the same effect as reading all 513
  channels, at about half the cost); held under the style's range, and each channel's
  quiet levels mapped onto the style's; the quiet bins then equalised toward the style's
  long-term spectrum (offline over the rendered clip, live from a running spectrum of the
  audio delivered so far).
- ``low-latency``: the default on a 21 ms analysis, for ``serve --latency low``: a frame
  needs half the look-ahead, and the networks see a coarser spectrum (less effect offline);
  live it leaves the match EQ out.
- ``article``: the article's network and settings (``../shared/seed/recipe.md``), minus
  its two bugs: the spectrogram is not clamped to [0, 1] before each step (on log1p
  magnitudes that capped every bin at e − 1) and the loss weights are applied once, not
  twice (which made them 1e9 and 8 instead of 1000 and 2).
- ``ulyanov``: Ulyanov & Lebedev's 2016 audio texture recipe: one wide layer, L-BFGS from
  noise, Griffin-Lim from random phase.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..dsp.analysis import AnalysisConfig
from ..stages import (CeilingSettings, ColourSettings, FrameHoldSettings, LevelsSettings, LimiterSettings,
                      MatchEQSettings, StageSettings, VoiceControls, VoiceSettings)
from .network_config import NetworkConfig

LOSSES = ("relative", "article", "ulyanov")
VOICE_CONTROLS = ("pitch", "formant", "pitch_follow", "formant_follow")  # the voice stage's, set through with_overrides


@dataclass(frozen=True)
class Preset:
    """Everything that decides how a clip is stylised, except the clips themselves."""

    name: str
    description: str
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    loss: str = "relative"  # how losses are normalised: see objective.py; the references use their own
    style_weight: float = 1.0
    content_weight: float = 1.0
    optimizer: str = "adam"
    iterations: int = 100
    learning_rate: float = 0.08
    init: str = "content"
    colour_bands: int = 40  # mel bands of the style's band statistics (part of a style target's key)
    # The spectral stages in order (stages/: anchor, output and audio stages), each with its settings ...
    stages: tuple[StageSettings, ...] = (LimiterSettings(),)
    # ... and the style's range per channel, the bound beside them and inside the optimiser (None: no bound)
    ceiling: CeilingSettings | None = None
    phase: str = "content"
    griffin_lim_iterations: int = 32
    griffin_lim_init: str = "content"
    sample_rate: int | None = None  # None: work at the content's own rate

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}")
        if self.optimizer not in ("adam", "lbfgs"):
            raise ValueError("optimizer must be 'adam' or 'lbfgs'")
        if self.init not in ("content", "noise"):
            raise ValueError("init must be 'content' or 'noise'")
        if self.phase not in ("content", "griffinlim"):
            raise ValueError("phase must be 'content' or 'griffinlim'")
        if self.style_weight < 0 or self.content_weight < 0:
            raise ValueError("weights must not be negative")
        if self.iterations < 0 or self.learning_rate <= 0:
            raise ValueError("iterations must be >= 0 and learning_rate > 0")
        names = [settings.stage for settings in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"a preset lists each stage once, got {', '.join(names)}")

    @property
    def colour(self) -> float:
        """The colouring's strength offline (0 without a colouring stage)."""
        settings = self.stage("colour")
        return settings.strength if settings is not None else 0.0

    def stage(self, name: str) -> StageSettings | None:
        """The settings of the stage called ``name``, or None if the preset has none."""
        return next((settings for settings in self.stages if settings.stage == name), None)

    def with_stage(self, name: str, **changes) -> "Preset":
        """A copy with the settings of stage ``name`` changed (ValueError if it has no such stage)."""
        if self.stage(name) is None:
            raise ValueError(f"preset {self.name!r} has no {name} stage")
        return replace(self, stages=tuple(replace(settings, **changes) if settings.stage == name else settings
                                          for settings in self.stages))

    def with_overrides(self, **overrides) -> "Preset":
        """A copy with some settings changed (``None`` values are ignored).

        ``colour`` sets the colouring's strength; ``pitch``, ``formant``, ``pitch_follow`` and
        ``formant_follow`` the voice stage's controls (ValueError if the preset has none).
        """
        overrides = {key: value for key, value in overrides.items() if value is not None}
        colour = overrides.pop("colour", None)
        voice = {key: overrides.pop(key) for key in VOICE_CONTROLS if key in overrides}
        preset = replace(self, **overrides)
        preset = preset if colour is None else preset.with_stage("colour", strength=colour)
        return preset.with_stage("voice", **voice) if voice else preset

    @property
    def voice(self) -> VoiceControls:
        """The voice stage's controls offline (all at rest without a voice stage)."""
        settings = self.stage("voice")
        return settings.controls() if settings is not None else VoiceControls()

    def target_key(self) -> dict:
        """The settings a style target depends on (for cache keys and compatibility checks)."""
        return {"analysis": self.analysis.to_dict(), "network": self.network.to_dict(), "colour_bands": self.colour_bands}


ARTICLE_WINDOW_MS = 2048 / 22050 * 1000  # n_fft 2048 at librosa's default rate

PRESETS: dict[str, Preset] = {
    "default": Preset(
        name="default",
        description="colouring toward the style (and halfway to its nearest envelopes), then Adam from the content "
                    "over a pool of 8 random 512-filter nets reading 128 mel bands, held under the style's range, "
                    "quiet levels mapped onto the style's, quiet bins equalised toward its long-term spectrum",
        analysis=AnalysisConfig(window_ms=1024 / 22050 * 1000, overlap=4, max_freq_hz=11025.0),
        network=NetworkConfig(filters=512, kernel=11, pool=8, seed=0, input_bands=128),
        style_weight=1.0,
        content_weight=0.3,
        iterations=40,
        learning_rate=0.08,
        stages=(VoiceSettings(), ColourSettings(strength=1.0, neighbours=0.5), LevelsSettings(), FrameHoldSettings(),
                MatchEQSettings(), LimiterSettings()),
        ceiling=CeilingSettings(),
    ),
    "article": Preset(
        name="article",
        description="the article: 2 conv layers 1025→4096→4096 (kernel 3), Adam lr 1e-4 × 10 000, Griffin-Lim 500",
        analysis=AnalysisConfig(window_ms=ARTICLE_WINDOW_MS, overlap=4, max_freq_hz=11025.0),
        network=NetworkConfig(filters=4096, kernel=3, layers=2, final_activation=False, padding=True, bias=True,
                              init="torch", pool=1, seed=0),
        loss="article",
        style_weight=1000.0,
        content_weight=2.0,
        iterations=10000,
        learning_rate=1e-4,
        phase="griffinlim",
        griffin_lim_iterations=500,
        griffin_lim_init="random",
        sample_rate=22050,
    ),
    "ulyanov": Preset(
        name="ulyanov",
        description="Ulyanov 2016: 1 conv 1025→4096 (kernel 11), L-BFGS 300 from noise, Griffin-Lim 500",
        analysis=AnalysisConfig(window_ms=ARTICLE_WINDOW_MS, overlap=4, max_freq_hz=11025.0),
        network=NetworkConfig(filters=4096, kernel=11, pool=1, seed=0),
        loss="ulyanov",
        style_weight=1.0,
        content_weight=0.01,
        optimizer="lbfgs",
        iterations=300,
        learning_rate=1.0,
        init="noise",
        phase="griffinlim",
        griffin_lim_iterations=500,
        griffin_lim_init="random",
        sample_rate=22050,
    ),
}

# The default on a window under half as long: a frame needs under half the look-ahead, for a coarser
# view of the spectrum. 1024 samples at 48 kHz, so that two frames make 512 samples and chunks fall on
# the grid of 256- and 512-sample blocks (at 23.2 ms the schedule alone is 11 ms longer). The networks
# read 80 mel bands: 128 would leave empty triangles on its 236 channels, and a step costs less. A
# stream leaves the match EQ out: on this grid the quiet bins lie beside a voice's harmonics, and live it
# cost held-out gain (british → american 0.36 → 0.20; docs/research-log.md, "The match EQ live, from
# the delivered audio").
PRESETS["low-latency"] = replace(
    PRESETS["default"].with_stage("match_eq", live=False), name="low-latency",
    description="the default on a 21 ms analysis (236 channels, networks reading 80 mel bands), for live "
                "latencies under 50 ms (serve --latency low)",
    analysis=AnalysisConfig(window_ms=1024 / 48000 * 1000, overlap=4, max_freq_hz=11025.0),
    network=replace(PRESETS["default"].network, input_bands=80),
)


def get_preset(name: str) -> Preset:
    """The preset called ``name``; ValueError listing the choices otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None

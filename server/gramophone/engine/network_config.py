"""What a feature network is, without torch: presets, style keys and the command line's
checks read it before the engine (and torch) is imported."""

from __future__ import annotations

from dataclasses import asdict, dataclass

ACTIVATIONS = ("relu", "tanh", "none")
INITS = ("ulyanov", "torch", "he")


@dataclass(frozen=True)
class NetworkConfig:
    """A small description of the feature networks.

    ``layers`` convolutions of ``filters`` outputs each; ``activation`` follows every
    convolution except, when ``final_activation`` is false, the last (the article reads
    its features straight from the second convolution). ``pool`` networks are built from
    seeds ``seed … seed + pool - 1``; the optimiser uses one per step in turn, because a
    single small random network is easily fooled (see docs/research-log.md).
    """

    filters: int = 512
    kernel: int = 11
    layers: int = 1
    activation: str = "relu"
    final_activation: bool = True
    padding: bool = False
    bias: bool = False
    init: str = "ulyanov"
    pool: int = 8
    seed: int = 0
    input_bands: int = 0  # 0: read every grid channel; n: read n mel-band averages of them

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}")
        if min(self.filters, self.kernel, self.layers, self.pool) < 1:
            raise ValueError("filters, kernel, layers and pool must be at least 1")
        if self.input_bands < 0:
            raise ValueError("input_bands must be 0 (every channel) or a band count")

    @property
    def receptive_field(self) -> int:
        """Frames of input one output frame depends on."""
        return self.layers * (self.kernel - 1) + 1

    @property
    def frames_lost(self) -> int:
        """Frames an unpadded network drops at the edges, in total."""
        return 0 if self.padding else self.receptive_field - 1

    def to_dict(self) -> dict:
        return asdict(self)

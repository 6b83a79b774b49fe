"""The layering of docs/architecture.md, checked by importing in a fresh interpreter and reading sys.modules.

The protocol, the DSP, the stages, the presets, the parameters and audio I/O never pull in torch (the
client and the protocol layer import them without the engine); the engine never imports
the network code (``osc``, ``live``) or the command line.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import importlib, json, pkgutil, sys
name = sys.argv[1]
module = importlib.import_module(name)
if hasattr(module, "__path__"):
    for info in pkgutil.walk_packages(module.__path__, name + "."):
        importlib.import_module(info.name)
print(json.dumps(sorted(sys.modules)))
"""


def imported_by(module: str) -> set[str]:
    """Every module loaded by importing ``module`` and, for a package, all its modules."""
    result = subprocess.run([sys.executable, "-c", PROBE, module], capture_output=True, text=True, check=True,
                            timeout=120)
    return set(json.loads(result.stdout))


@pytest.mark.parametrize("module", ["gramophone.osc", "gramophone.dsp", "gramophone.stages", "gramophone.params",
                                    "gramophone.capacity", "gramophone.audio", "gramophone.engine.presets", "gramophone.engine.latency",
                                    "gramophone.builtin_styles", "gramophone_client.osc",
                                    "gramophone_client.transport"])
def test_torch_free_layers_never_load_torch(module):
    assert "torch" not in imported_by(module)


def test_the_engine_never_imports_the_network_or_the_command_line():
    loaded = imported_by("gramophone.engine")
    assert "torch" in loaded and "gramophone.engine.stream" in loaded  # the probe did walk the engine
    assert not {name for name in loaded if name.startswith(("gramophone.osc", "gramophone.live", "gramophone.cli"))}


def test_the_public_names_load_lazily():
    probe = "import sys, gramophone; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                          timeout=120).stdout.strip() == "False"
    from gramophone import StreamProcessor, stylize

    assert stylize.__module__ == "gramophone.engine.offline"
    assert StreamProcessor.__module__ == "gramophone.engine.stream"


def test_the_command_line_checks_its_input_before_it_loads_torch(tmp_path):
    """A bad file or preset is told in a moment: torch (seconds to import) is not loaded for it."""
    (tmp_path / "style.wav").write_bytes(b"not audio")
    probe = ("import sys\nfrom gramophone.cli.main import main\n"
             "codes = [main(['stylize', *case.split(), '-o', sys.argv[1] + '/out.wav']) for case in sys.argv[2:]]\n"
             "print(codes, 'torch' in sys.modules)")
    cases = [f"{tmp_path}/missing.wav voice", f"{tmp_path}/style.wav voice", f"{tmp_path}/style.wav voice --preset nope"]
    result = subprocess.run([sys.executable, "-c", probe, str(tmp_path), *cases], capture_output=True, text=True,
                            check=True, timeout=120)
    assert result.stdout.split() == ["[2,", "2,", "2]", "False"], result.stderr


def test_a_live_stream_never_loads_torch_dynamo():
    """torch.optim imports torch._dynamo (over a second of every start-up): the live steps, alone or
    batched, use the engine's own Adam."""
    probe = ("import sys\nimport numpy as np\nfrom gramophone import get_preset, learn_style\n"
             "from gramophone.engine.batch import BatchStepper\nfrom gramophone.engine.stream import StreamConfig, warm_up\n"
             "rate = 22050\nclip = 0.1 * np.random.default_rng(0).standard_normal((1, rate)).astype(np.float32)\n"
             "preset = get_preset('default').with_overrides(iterations=2)\n"
             "warm_up(learn_style([(clip, rate)], preset), preset, StreamConfig(), formats=((rate, 1),), seconds=0.3,\n"
             "        stepper=BatchStepper(), streams=2)\n"
             "print('torch._dynamo' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr

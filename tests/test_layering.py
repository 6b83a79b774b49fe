"""The layering of docs/architecture.md, checked by importing in a fresh interpreter and reading sys.modules.

The protocol, the DSP, the stages, the parameters and audio I/O never pull in torch (the
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
                                    "gramophone.capacity", "gramophone.audio", "gramophone_client.osc",
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

"""The ``Gramophone`` SuperCollider class, compiled and run by headless sclang against a real server."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_tool
from serverutil import ServerProcess, running_server

pytestmark = [pytest.mark.interop, pytest.mark.slow]

CLASS_DIR = Path(__file__).resolve().parents[1] / "clients" / "supercollider"

SCRIPT = """
fork {
	var g, x, y;
	try {
		g = Gramophone("127.0.0.1", PORT, 512);
		"PING %".format(g.ping).postln;
		"APPLIED %".format(g.param(\\style_weight, 0)).postln;
		"CLAMPED %".format(g.param(\\gain_db, -1000)).postln;
		g.param(\\gain_db, 0);
		"RANGE %".format(g.allParams[\\wet][\\max]).postln;
		x = Array.fill(11025, { |i| sin(i * 0.05) * 0.5 });
		y = g.processArray(x, 22050);
		"ALIGNED % %".format((y - x).abs.maxItem < 1e-4, y.size).postln;
		"SESSIONS %".format(g.status[\\sessions]).postln;
		"STYLES %".format(g.styleList.includes('voice')).postln;
		try { g.styleSelect(\\nope) } { |e| "FAILED %".format(e.errorString).postln };
		g.param(\\style_weight, 1);
		g.free;
	} { |e| "ERROR %".format(e.errorString).postln };
	0.exit;
};
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("sc-server"), "--log-level", "info") as srv:
        yield srv


def sclang(script: Path, tmp_path: Path) -> str:
    """Run ``script`` with the class folder on the class path; sclang needs a private HOME and no display."""
    config = tmp_path / "sclang_conf.yaml"
    config.write_text(f"includePaths:\n    - {CLASS_DIR}\nexcludePaths: []\npostInlineWarnings: false\n")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "QTWEBENGINE_DISABLE_SANDBOX": "1",
           "HOME": tempfile.mkdtemp(dir=tmp_path)}
    result = subprocess.run([require_tool("sclang"), "-l", str(config), str(script)], env=env,
                            capture_output=True, text=True, timeout=120)
    return result.stdout + result.stderr


def test_class_compiles_and_streams_an_array(server: ServerProcess, tmp_path: Path) -> None:
    script = tmp_path / "test.scd"
    script.write_text(SCRIPT.replace("PORT", str(server.port)))
    log = sclang(script, tmp_path)
    assert "ERROR" not in log and "DoesNotUnderstand" not in log and "Parse error" not in log, log
    assert "PING 0." in log
    assert "APPLIED 0.0" in log and "CLAMPED -60.0" in log and "RANGE 1.0" in log
    assert "ALIGNED true 11025" in log
    assert "SESSIONS 0" in log and "STYLES true" in log
    assert "FAILED Gramophone: /style/select unknown style" in log

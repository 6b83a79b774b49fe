"""The Max patch and its help patcher, checked structurally (Max does not run here).

Every box must be a real Max object with the inlet and outlet counts Max gives it (taken
from patchers saved by Max itself), and every patch cord must join an existing outlet to an
existing inlet.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

MAX_DIR = Path(__file__).resolve().parents[1] / "clients" / "max"

# class -> (inlets, outlets) as Max 8 saves them, for objects whose counts do not depend on arguments
FIXED = {
    "adc~": (1, 1), "buffer~": (1, 2), "count~": (2, 1), "dspstate~": (1, 4), "edge~": (1, 2), "ezdac~": (2, 0),
    "index~": (2, 1), "peek~": (3, 1), "poke~": (3, 0), "+~": (2, 1), "-~": (2, 1), "%~": (2, 1), "<~": (2, 1),
    "i": (2, 1), "+": (2, 1), "-": (2, 1), "*": (2, 1), "%": (2, 1), "!=": (2, 1), "sel": (2, 2),
    "listfunnel": (1, 1), "loadbang": (1, 1), "prepend": (1, 1), "print": (1, 0), "udpreceive": (1, 1),
    "udpsend": (1, 0), "uzi": (2, 3), "zl.group": (2, 2), "zl.slice": (2, 2),
}
UI = {"message": (2, 1), "comment": (1, 0), "inlet": (0, 1), "outlet": (1, 0), "live.dial": (1, 2)}


def arguments(text: str) -> list[str]:
    """Creation arguments, without @attributes."""
    words = text.split()[1:]
    return words[: next((i for i, w in enumerate(words) if w.startswith("@")), len(words))]


def expected_counts(text: str, abstractions: dict[str, tuple[int, int]]) -> tuple[int, int]:
    name, args = text.split()[0], arguments(text)
    if name in FIXED:
        if name == "sel":
            assert len(args) == 1, "sel with several arguments has other counts"
        return FIXED[name]
    if name in ("t", "trigger"):
        return 1, len(args)
    if name == "route":
        return len(args) + 1, len(args) + 1
    if name == "pack":
        return len(args), 1
    if name == "unpack":
        return 1, len(args)
    if name == "expr":
        return len(set(re.findall(r"\$[fis](\d+)", text))), 1
    if name in abstractions:
        return abstractions[name]
    raise AssertionError(f"{name!r} is not a Max object this test knows")


def load(name: str) -> dict:
    return json.loads((MAX_DIR / name).read_text())["patcher"]


def io_counts(patcher: dict) -> tuple[int, int]:
    """The inlets and outlets an abstraction shows, from its inlet and outlet boxes."""
    classes = [b["box"]["maxclass"] for b in patcher["boxes"]]
    return classes.count("inlet"), classes.count("outlet")


@pytest.mark.parametrize("name", ["gramophone.maxpat", "gramophone.maxhelp"])
def test_every_object_and_cord_exists(name: str) -> None:
    patcher = load(name)
    abstractions = {"gramophone": io_counts(load("gramophone.maxpat"))}
    boxes = {}
    for entry in patcher["boxes"]:
        box = entry["box"]
        assert box["id"] not in boxes, f"duplicate id {box['id']}"
        boxes[box["id"]] = box
        cls = box["maxclass"]
        counts = expected_counts(box["text"], abstractions) if cls == "newobj" else UI.get(cls)
        assert counts is not None, f"unknown maxclass {cls}"
        assert (box["numinlets"], box["numoutlets"]) == counts, f"{box.get('text', cls)}: {counts} expected"
        assert len(box.get("outlettype", [])) == box["numoutlets"], box.get("text", cls)
    assert patcher["lines"], "no patch cords"
    for entry in patcher["lines"]:
        (src, outlet), (dst, inlet) = entry["patchline"]["source"], entry["patchline"]["destination"]
        assert src in boxes and dst in boxes
        assert 0 <= outlet < boxes[src]["numoutlets"], f"{boxes[src].get('text')} has no outlet {outlet}"
        assert 0 <= inlet < boxes[dst]["numinlets"], f"{boxes[dst].get('text')} has no inlet {inlet}"


def test_abstraction_speaks_the_protocol() -> None:
    patcher = load("gramophone.maxpat")
    texts = [b["box"].get("text", "") for b in patcher["boxes"]]
    classes = {b["box"]["maxclass"] for b in patcher["boxes"]}
    assert "udpsend #1 #2" in texts and "udpreceive #3" in texts
    assert "pack 0. 1 1024 #3" in texts and "prepend /connect" in texts  # /connect sr 1 1024 reply_port
    assert any(t.startswith("buffer~") for t in texts) and "live.dial" in classes
    assert {"route /audio /connected", "prepend set /content", "/mode live"} <= set(texts)
    dials = {b["box"]["varname"] for b in patcher["boxes"] if b["box"]["maxclass"] == "live.dial"}
    assert {"style_weight", "wet", "gain_db"} <= dials
    assert all(f"prepend /param/{d}" in texts for d in dials)
    indices = sorted(b["box"]["index"] for b in patcher["boxes"] if b["box"]["maxclass"] == "inlet")
    assert indices == [1, 2]


def test_dials_have_the_server_ranges() -> None:
    from gramophone.params import PARAMETERS

    for entry in load("gramophone.maxpat")["boxes"]:
        box = entry["box"]
        if box["maxclass"] == "live.dial":
            spec, values = PARAMETERS[box["varname"]], box["saved_attribute_attributes"]["valueof"]
            assert (values["parameter_mmin"], values["parameter_mmax"]) == (spec.minimum, spec.maximum)
            assert values["parameter_initial"] == [spec.default]

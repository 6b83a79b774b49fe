"""The OSCQuery namespace: every OSC address of docs/protocol.md as a JSON tree.

Built from the two tables the server itself validates with, ``params.PARAMETERS`` and
``protocol.SIGNATURES``, plus the live values (parameters, styles), so the description a
control app reads cannot drift from what the server accepts.  docs/protocol.md's parameter
table is generated here too (``python -m gramophone.osc.namespace``) and tested against it.
Torch-free, like the protocol layer.
"""

from __future__ import annotations

from typing import Any

from ..params import PARAMETERS, ParamSpec
from .protocol import PARAM_PREFIX, SIGNATURES

STYLE_NAMES = "/style/names"  # a container with one node per style: PATH_ADDED / PATH_REMOVED when they change
# The OSCQuery attributes a node may carry; a query for any other is a bad request.
ATTRIBUTES = ("FULL_PATH", "CONTENTS", "TYPE", "ACCESS", "VALUE", "RANGE", "DESCRIPTION", "UNIT", "CLIPMODE")
READ, WRITE = 1, 2  # ACCESS bits
TAGS = {"int": "i", "number": "f", "string": "s", "audio": "b"}  # "any" (a token echoed back) has no fixed tag
DESCRIPTIONS = {
    "/connect": "make the sender a session: sample_rate (8000–192000), channels (1 or 2), block_size (32–8192) "
                "[, reply_port]; answered by /connected session_id latency_samples",
    "/disconnect": "send every /audio still in the stream, then end the session",
    "/mode": "live (default: each chunk stops at its deadline) or render (exactly `iterations` steps per chunk)",
    "/content": "one block of audio: seq, then block_size × channels samples (a float32-LE blob or floats); "
                "answered by /audio seq samples",
    "/flush": "end of a file: every pending /audio, then /done /flush",
    "/reset": "forget the stream's audio and statistics (between songs)",
    "/params": "every parameter as /params/reply name value min max default, then /done /params",
    "/style/load": "learn a style NAME from FILE, a path inside the server's styles folder",
    "/style/record/start": "start recording the session's /style/audio as a new style NAME",
    "/style/audio": "append samples (seq, samples) to the sender's recording",
    "/style/record/stop": "learn the recording as a named style",
    "/style/select": "make a style active for every session (streams crossfade to it)",
    "/style/mix": "make a weighted mixture active: name weight [name weight …]",
    "/style/list": "every style name, as /style/list/reply name …",
    "/style/delete": "forget a style (not the active one)",
    "/status": "load and health, as /status/reply sessions rtf_avg rtf_peak iterations_avg latency_ms "
               "late_chunks lost_blocks queued_blocks late_blocks",
    "/ping": "answered at once by /pong [token]",
    "/sync": "answered by /synced id once every earlier message of the sender has been handled",
    "/notify": "1: also receive /param/NAME broadcasts without a session; 0: stop",
    "/version": "answered by /version/reply \"gramophone\" version http_port",
    "/log": "put a message in the server's log: level (debug, info, warning, error), message",
}


def param_node(spec: ParamSpec, value: float) -> dict[str, Any]:
    """A parameter: one float (integers and switches as well, as /param replies carry them)."""
    node: dict[str, Any] = {
        "FULL_PATH": PARAM_PREFIX + spec.name, "TYPE": "f", "ACCESS": READ | WRITE, "VALUE": [value],
        "RANGE": [{"MIN": spec.minimum, "MAX": spec.maximum}], "CLIPMODE": ["both"],
        "DESCRIPTION": spec.doc + (" (whole numbers)" if spec.integer else ""),
    }
    if spec.unit:
        node["UNIT"] = [spec.unit]
    return node


def method_node(address: str, styles: list[str], active: str | None) -> dict[str, Any]:
    """A command: its required arguments' tags; style names where a style name goes."""
    signature = SIGNATURES[address]
    node: dict[str, Any] = {"FULL_PATH": address, "ACCESS": WRITE, "DESCRIPTION": DESCRIPTIONS[address]}
    if signature.required and all(f.kind in TAGS for f in signature.required):
        node["TYPE"] = "".join(TAGS[f.kind] for f in signature.required)
    if address == "/mode":
        node["RANGE"] = [{"VALS": ["live", "render"]}]
    elif address == "/notify":
        node["RANGE"] = [{"MIN": 0, "MAX": 1}]
    elif address == "/log":
        node["RANGE"] = [{"VALS": ["debug", "info", "warning", "error"]}, {}]
    elif address in ("/style/select", "/style/delete"):
        node["RANGE"] = [{"VALS": styles}]
    if address == "/style/select":
        node["ACCESS"] = READ | WRITE
        node["VALUE"] = [active or ""]  # "" while a mix is active
    return node


def style_node(name: str) -> dict[str, Any]:
    return {"FULL_PATH": f"{STYLE_NAMES}/{name}", "ACCESS": 0,
            "DESCRIPTION": f"the style {name!r}: /style/select and /style/mix accept it"}


def build_tree(values: dict[str, float], styles: list[str], active: str | None) -> dict[str, Any]:
    """The whole namespace, ``GET /``'s answer."""
    root = container("/", "Gramophone: live neural audio style transfer over OSC (docs/protocol.md)")
    for address in SIGNATURES:
        place(root, address, method_node(address, styles, active))
    for name, spec in PARAMETERS.items():
        place(root, PARAM_PREFIX + name, param_node(spec, values[name]))
    styles_node = place(root, STYLE_NAMES, container(STYLE_NAMES, "every style the server knows"))
    for name in styles:
        styles_node["CONTENTS"][name] = style_node(name)
    return root


def container(path: str, description: str = "") -> dict[str, Any]:
    node: dict[str, Any] = {"FULL_PATH": path, "ACCESS": 0, "CONTENTS": {}}
    if description:
        node["DESCRIPTION"] = description
    return node


def place(root: dict[str, Any], address: str, node: dict[str, Any]) -> dict[str, Any]:
    """Put ``node`` at ``address``, making the containers above it; returns ``node``."""
    parent, parts = root, address.strip("/").split("/")
    for depth, part in enumerate(parts[:-1]):
        path = "/" + "/".join(parts[: depth + 1])
        parent = parent["CONTENTS"].setdefault(part, container(path))
    parent["CONTENTS"][parts[-1]] = node
    return node


def find(root: dict[str, Any], path: str) -> dict[str, Any] | None:
    """The node at ``path`` (``/`` is the root), or None."""
    node = root
    for part in (p for p in path.split("/") if p):
        node = node.get("CONTENTS", {}).get(part)
        if node is None:
            return None
    return node


def param_table() -> str:
    """docs/protocol.md's parameter table, from the parameter specs."""
    lines = ["| name | range | default | unit | meaning |", "| --- | --- | --- | --- | --- |"]
    for spec in PARAMETERS.values():
        kind = " (integer)" if spec.integer else ""
        lines.append(f"| `{spec.name}` | {spec.minimum:g} – {spec.maximum:g}{kind} | {spec.default:g} | {spec.unit} | {spec.doc} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(param_table())

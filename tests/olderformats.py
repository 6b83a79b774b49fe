"""Saved style targets rewritten as the older formats wrote them, for the load-compatibility tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


OLDER_FORMATS = {1: ("ceiling", "levels", "frame_hold", "colour", "match_eq"),
                 2: ("levels", "frame_hold", "colour", "match_eq"), 3: ("frame_hold", "colour", "match_eq"),
                 4: ("colour", "match_eq"), 5: ("match_eq",), 6: ()}  # the stages whose feature each did not store
LEGACY_NAMES = {"colour": "envelopes", "ceiling": "ceiling", "levels": "levels", "frame_hold": "loudest_db",
                "match_eq": "spectrum"}  # formats 2–6 stored each stage's feature under these names


def as_older_format(path: Path, version: int) -> None:
    """Rewrite a saved target as format ``version`` wrote it."""
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files if not name.startswith("feature_")}
        arrays |= {LEGACY_NAMES[stage]: data[f"feature_{stage}"] for stage in LEGACY_NAMES
                   if stage not in OLDER_FORMATS[version]}
    meta = json.loads(str(arrays["meta"]))
    del meta["stages"]
    arrays["meta"] = np.array(json.dumps(meta | {"format": version}))
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)

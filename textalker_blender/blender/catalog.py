"""Cheap look-ups the panel needs on every redraw: bundled weights path and style names.

Panel drawing must not load torch or the model, so the style names are read from the
safetensors header only (`safe_open(..., framework="numpy")` parses the JSON header; no tensor
is read) and cached per (path, modification time).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
# Same file as core.pipeline.DEFAULT_WEIGHTS; not imported from there because that imports torch.
DEFAULT_WEIGHTS_PATH = ASSETS_DIR / "textalker_bundled.safetensors"
SAMPLE_SPEECH_PATH = ASSETS_DIR / "sample_speech.wav"


@dataclass(frozen=True)
class StyleName:
    id: int
    key: str
    name: str


_cache: dict[tuple[str, float], dict[str, str]] = {}


def weights_path() -> Path:
    return DEFAULT_WEIGHTS_PATH


def _header_metadata(path: str | os.PathLike | None) -> dict[str, str]:
    """The weights' safetensors metadata, cached per (path, modification time); empty when the
    file is missing or unreadable (panel drawing must not break; generation reports the file)."""
    path = Path(path) if path else weights_path()
    try:
        stamp = path.stat().st_mtime
    except OSError:
        return {}
    cache_key = (str(path), stamp)
    if cache_key not in _cache:
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as handle:
                _cache[cache_key] = dict(handle.metadata() or {})
        except Exception:
            _cache[cache_key] = {}
    return _cache[cache_key]


def read_style_names(path: str | os.PathLike | None = None) -> tuple[StyleName, ...]:
    """Styles recorded in the weights' metadata (`style_names`, `style_keys`: JSON lists);
    empty when the file is missing or unreadable."""
    metadata = _header_metadata(path)
    try:
        names = [str(n) for n in json.loads(metadata.get("style_names", "[]"))]
        keys = json.loads(metadata["style_keys"]) if "style_keys" in metadata else None
    except (ValueError, TypeError):  # a broken header must not break panel drawing; generation reports it
        names, keys = [], None
    if keys is None or len(keys) != len(names):
        from ..core.style import unique_keys  # numpy only: the same keys the Pipeline derives

        keys = unique_keys(names)
    return tuple(StyleName(i, str(k), n) for i, (k, n) in enumerate(zip(keys, names)))


def read_default_wrinkle_style(path: str | os.PathLike | None = None) -> int:
    """Id of the weights' default wrinkle style (their most lined, `core.creases.most_lined_style`),
    from the crease curves in the header; 0 when the file has none or cannot be read."""
    from ..core.creases import Crease, most_lined_style  # numpy only

    try:
        styles = [[Crease.from_dict(c) for c in creases]
                  for creases in json.loads(_header_metadata(path).get("style_creases", "[]"))]
    except (ValueError, KeyError, TypeError):  # the panel must draw; generation reports a broken file
        return 0
    return most_lined_style(styles)

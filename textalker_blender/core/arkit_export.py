"""ARKit weights as files: CSV in the Live Link Face layout, and JSON for game engines and tools.

CSV (one row per frame; format in docs/ARKIT.md)::

    Timecode,BlendShapeCount,EyeBlinkLeft,EyeLookDownLeft,...,TongueOut
    00:00:00:00.000,52,0.00000,0.01250,...,0.00000

- Column names are the ARKit names with a capital first letter, in Apple's order, as Live Link
  Face writes them. Live Link Face adds 9 head/eye rotation columns (HeadYaw ... RightEyeRoll)
  and counts them in BlendShapeCount (61); the generator makes no head or eye rotation, so
  these files stop after TongueOut and say 52. Readers that look columns up by name (Unreal's
  Live Link Face importer, pandas) read both.
- Timecode `HH:MM:SS:FF.fff` counts frames from the first frame of the speech, non-drop-frame,
  at the nominal rate round(fps) (29.97 counts 30 frames a second); `.fff` is the sub-frame,
  always 0 here. The exact fps is not in a CSV file: pass it to `read_csv` (or let it infer the
  nominal rate from the timecodes of a clip longer than a second). JSON carries it exactly.

JSON::

    {"format": "textalker-arkit", "version": 1, "fps": 30.0, "frame_start": 1,
     "names": ["eyeBlinkLeft", ...], "frames": [[0.0, 0.0125, ...], ...]}

`frame_start` is the Blender frame of the first row (informative; the CSV timecode starts at 0).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .arkit import ARKIT_NAMES, arkit_name_of
from .errors import TexTalkerError

__all__ = ["ArkitTrack", "JSON_FORMAT", "read_csv", "read_json", "write_csv", "write_json", "write_track"]

JSON_FORMAT = "textalker-arkit"
JSON_VERSION = 1
DECIMALS = 5  # 1e-5 of the unit range: far below what moves a vertex visibly, keeps files small
_TIMECODE = re.compile(r"^(\d+):(\d{2}):(\d{2}):(\d+)(?:\.(\d+))?$")


@dataclass
class ArkitTrack:
    """Weights (T, 52) in `ARKIT_NAMES` order, at `fps`; `frame_start` is the first row's frame."""

    weights: np.ndarray
    fps: float
    frame_start: int = 0
    missing: list[str] = field(default_factory=list)  # ARKit units absent from a file read (zeros)

    def __post_init__(self):
        self.weights = np.asarray(self.weights, dtype=np.float32)
        if self.weights.ndim != 2 or self.weights.shape[1] != len(ARKIT_NAMES):
            raise TexTalkerError(
                f"ARKit weights must be (frames, {len(ARKIT_NAMES)}) in ARKit order, got {self.weights.shape}"
            )
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise TexTalkerError(f"fps must be positive, got {self.fps}")

    @property
    def names(self) -> tuple[str, ...]:
        return ARKIT_NAMES

    @property
    def n_frames(self) -> int:
        return len(self.weights)


def _csv_header_name(name: str) -> str:
    return name[0].upper() + name[1:]


def _timecode(frame_index: int, nominal_fps: int) -> str:
    seconds, frames = divmod(int(frame_index), nominal_fps)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}:{frames:02d}.000"


def _prepare_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        raise TexTalkerError(f"The ARKit export path is a folder, not a file: {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _formatted(weights: np.ndarray) -> np.ndarray:
    # Rounding first keeps "-0.00000" out of the files.
    return np.round(np.clip(np.asarray(weights, dtype=np.float64), 0.0, 1.0), DECIMALS) + 0.0


def write_csv(path: str | os.PathLike, weights: np.ndarray, fps: float) -> Path:
    """Writes weights (T, 52, ARKit order) as a Live Link Face style CSV; returns the path."""
    track = ArkitTrack(weights, float(fps))
    path = _prepare_path(path)
    nominal = max(1, int(round(track.fps)))
    values = _formatted(track.weights)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Timecode", "BlendShapeCount", *(_csv_header_name(n) for n in ARKIT_NAMES)])
        for index, row in enumerate(values):
            writer.writerow([_timecode(index, nominal), len(ARKIT_NAMES), *(f"{v:.{DECIMALS}f}" for v in row)])
    return path


def _timecode_fields(text: str) -> tuple[int, int, int, int]:
    match = _TIMECODE.match(text.strip())
    if not match:
        raise TexTalkerError(f"Not a timecode (HH:MM:SS:FF.fff): {text!r}")
    hours, minutes, seconds, frames = (int(match.group(i)) for i in range(1, 5))
    return hours, minutes, seconds, frames


def read_csv(path: str | os.PathLike, fps: float | None = None) -> ArkitTrack:
    """Reads a CSV written by `write_csv` or by Live Link Face (extra columns are ignored, ARKit
    columns are found by name in any spelling `arkit_name_of` knows, missing units read 0).

    Without `fps`, the nominal rate is inferred from the timecodes (largest frame field + 1),
    which needs a clip spanning at least one full second."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise TexTalkerError(f"{path} is empty")
    header = [cell.strip() for cell in rows[0]]
    columns: dict[str, int] = {}
    for index, name in enumerate(header):
        arkit = arkit_name_of(name)
        if arkit is not None and arkit not in columns:
            columns[arkit] = index
    if not columns:
        raise TexTalkerError(f"{path} has no ARKit columns (header: {', '.join(header[:5])}...)")
    body = [row for row in rows[1:] if any(cell.strip() for cell in row)]
    weights = np.zeros((len(body), len(ARKIT_NAMES)), dtype=np.float32)
    for row_index, row in enumerate(body):
        for unit, column in columns.items():
            try:
                weights[row_index, ARKIT_NAMES.index(unit)] = float(row[column])
            except (IndexError, ValueError):
                raise TexTalkerError(f"{path}, row {row_index + 2}: no number for {header[column]}") from None
    if fps is None:
        if "Timecode" not in header:
            raise TexTalkerError(f"{path} has no Timecode column: give the fps")
        column = header.index("Timecode")
        stamps = [_timecode_fields(row[column]) for row in body]
        if len({stamp[:3] for stamp in stamps}) < 3:
            raise TexTalkerError(f"{path} is too short to infer its frame rate from the timecodes: give the fps")
        fps = float(max(stamp[3] for stamp in stamps) + 1)
    missing = [name for name in ARKIT_NAMES if name not in columns]
    return ArkitTrack(weights, float(fps), 0, missing)


def write_json(path: str | os.PathLike, weights: np.ndarray, fps: float, frame_start: int = 0) -> Path:
    """Writes weights (T, 52, ARKit order) as JSON: fps, frame_start, names, frames (rows)."""
    track = ArkitTrack(weights, float(fps), int(frame_start))
    path = _prepare_path(path)
    document = {
        "format": JSON_FORMAT,
        "version": JSON_VERSION,
        "fps": track.fps,
        "frame_start": track.frame_start,
        "names": list(ARKIT_NAMES),
        "frames": _formatted(track.weights).tolist(),
    }
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(document, handle, separators=(",", ":"))
    return path


def read_json(path: str | os.PathLike) -> ArkitTrack:
    """Reads a file written by `write_json` (names may come in any order or spelling)."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise TexTalkerError(f"{path} is not JSON: {error}") from None
    if not isinstance(document, dict) or document.get("format") != JSON_FORMAT:
        raise TexTalkerError(f"{path} is not a TexTalker ARKit file (format {JSON_FORMAT!r})")
    if int(document.get("version", 0)) > JSON_VERSION:
        raise TexTalkerError(f"{path} has format version {document['version']}; this add-on reads {JSON_VERSION}")
    names = [arkit_name_of(str(name)) for name in document["names"]]
    frames = np.asarray(document["frames"], dtype=np.float32).reshape(-1, len(names))
    weights = np.zeros((len(frames), len(ARKIT_NAMES)), dtype=np.float32)
    for column, name in enumerate(names):
        if name is not None:
            weights[:, ARKIT_NAMES.index(name)] = frames[:, column]
    missing = [name for name in ARKIT_NAMES if name not in names]
    return ArkitTrack(weights, float(document["fps"]), int(document.get("frame_start", 0)), missing)


def write_track(path: str | os.PathLike, weights: np.ndarray, fps: float, frame_start: int = 0) -> Path:
    """CSV or JSON by the path's extension (.csv / .json); anything else is refused."""
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return write_csv(path, weights, fps)
    if suffix == ".json":
        return write_json(path, weights, fps, frame_start)
    raise TexTalkerError(f"ARKit export path must end in .csv or .json: {path}")

"""Memory and disk checks made before a generation starts, so a long clip is refused with a clear
message instead of crashing Blender with an out-of-memory error or filling the disk half-way.

The numbers are upper bounds computed from the clip's duration (read from the file header, no
decoding) and the model's output sizes:

- memory of a streamed run (the add-on: `Pipeline.generate_chunks`, each chunk's maps written to
  EXR files as it comes): the offsets of every frame waiting for Blender (half floats,
  `core.frame_store`), a fixed working set (model, one chunk, the audio and its latents), then
  the shape keys Blender holds (float32, V x 3 per frame, plus the key and its F-curve);
- memory of a whole-clip run (`Pipeline.generate`, `whole_clip=True`): every frame's offsets
  (float32) and wrinkle map (float16) at the scene rate, plus the same working set;
- disk: one half-float RGB EXR per frame; ZIP usually halves it, but noise-like maps barely
  compress, so the uncompressed size (plus header) is the bound.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .config import MODEL_FPS
from .errors import ResourceError

EXR_HEADER_BYTES = 4096  # attributes, offset table and padding of one small EXR file
# Keep this much memory free for Blender itself and the rest of the system.
MEMORY_RESERVE_BYTES = 1 * 1024**3
# The model's working memory besides the per-frame arrays: weights, one chunk of decoded frames
# and the decoder's activations, torch's allocator caches. Measured with
# tools/measure_long_audio.py (see docs/ROBUSTNESS.md for the latest numbers).
WORKING_BYTES = 512 * 1024**2
# Per model frame (30 fps) while the latents are sampled: 16 kHz float32 audio (2.1 KB) with the
# loader's resampling copies, the audio features and the latents (~1 KB each).
MODEL_FRAME_BYTES = 16 * 1024
# Per shape key besides its coordinates: the KeyBlock, its F-curve and three keyframes.
SHAPE_KEY_OVERHEAD_BYTES = 4096
# Keep this much disk free after writing: a full disk breaks the user's own saves and renders.
DISK_RESERVE_BYTES = 256 * 1024**2


@dataclass(frozen=True)
class RunEstimate:
    """Upper bounds of what one generation needs."""

    duration_s: float
    n_frames: int  # frames at the scene rate
    memory_bytes: int  # peak growth: the run's arrays plus the shape keys Blender will hold
    disk_bytes: int  # the EXR sequence

    def describe(self) -> str:
        return (
            f"{self.duration_s / 60:.1f} min = {self.n_frames} frames: about "
            f"{format_bytes(self.memory_bytes)} of memory and {format_bytes(self.disk_bytes)} of "
            "disk for the wrinkle maps"
        )


def format_bytes(n_bytes: float) -> str:
    for unit, size in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n_bytes >= size:
            return f"{n_bytes / size:.1f} {unit}"
    return f"{int(n_bytes)} bytes"


def exr_bytes_per_frame(map_resolution: int) -> int:
    return map_resolution * map_resolution * 3 * 2 + EXR_HEADER_BYTES


def estimate_run(
    duration_s: float,
    fps: float,
    n_points: int,
    map_resolution: int,
    shape_key_vertices: int = 0,
    write_wrinkles: bool = True,
    whole_clip: bool = False,
) -> RunEstimate:
    """Bounds for `duration_s` seconds at `fps` with `n_points` sampled points per frame, maps of
    `map_resolution`^2 pixels, and `shape_key_vertices` vertices keyed per frame (0: none).

    `whole_clip`: the run keeps every frame's offsets and map in memory (`Pipeline.generate`)
    instead of streaming them (the add-on's path, where only half-float offsets wait)."""
    n_frames = max(1, math.ceil(duration_s * fps))
    n_model = max(1, math.ceil(duration_s * MODEL_FPS))
    frame_map = map_resolution * map_resolution * 3 * 2
    if whole_clip:
        per_frame = n_points * 3 * 4 + frame_map
    else:
        per_frame = n_points * 3 * 2  # core.frame_store: half floats until Blender takes them
    pipeline = n_frames * per_frame + n_model * MODEL_FRAME_BYTES + WORKING_BYTES
    shape_keys = n_frames * (shape_key_vertices * 3 * 4 + SHAPE_KEY_OVERHEAD_BYTES) if shape_key_vertices else 0
    disk = n_frames * exr_bytes_per_frame(map_resolution) if write_wrinkles else 0
    return RunEstimate(float(duration_s), n_frames, int(pipeline + shape_keys), int(disk))


def available_memory_bytes() -> int | None:
    """Memory the system can still give (Linux MemAvailable; psutil where installed), or None."""
    try:
        import psutil  # not a dependency: used when another add-on brought it

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None  # Windows without psutil: the check is skipped


def existing_ancestor(folder: str | os.PathLike) -> Path:
    """`folder` itself or its nearest parent that exists (where a new folder would be made)."""
    path = Path(os.path.abspath(folder))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_disk_bytes(folder: str | os.PathLike) -> int:
    return int(shutil.disk_usage(existing_ancestor(folder)).free)


def check_memory(estimate: RunEstimate, available: int | None = None) -> None:
    """ResourceError when the run would not fit in the memory left (None: unknown, no check)."""
    available = available_memory_bytes() if available is None else available
    if available is None:
        return
    if estimate.memory_bytes + MEMORY_RESERVE_BYTES > available:
        raise ResourceError(
            f"Not enough memory: the audio is {estimate.describe()}, and only "
            f"{format_bytes(available)} is free. Split the audio into shorter clips."
        )


def check_disk_space(folder: str | os.PathLike, needed_bytes: int, free: int | None = None,
                     what: str = "the wrinkle maps") -> None:
    """ResourceError when writing `needed_bytes` under `folder` would leave less than
    DISK_RESERVE_BYTES free there; the message states the reserve, since it is often the whole
    shortfall (a disk with more free space than the files need)."""
    if needed_bytes <= 0:
        return
    free = free_disk_bytes(folder) if free is None else free
    if needed_bytes + DISK_RESERVE_BYTES > free:
        raise ResourceError(
            f"Not enough disk space for {what}: they need {format_bytes(needed_bytes)} in "
            f"{existing_ancestor(folder)}, and TexTalker leaves at least "
            f"{format_bytes(DISK_RESERVE_BYTES)} free so the disk never fills up; it has "
            f"{format_bytes(free)} free ({format_bytes(needed_bytes + DISK_RESERVE_BYTES - free)} short). "
            "Free some space, choose another output folder, or use shorter audio."
        )


def check_writable(folder: str | os.PathLike, what: str = "the wrinkle maps",
                   hint: str = "the output folder in the add-on preferences, or save the .blend elsewhere") -> None:
    """ResourceError unless files can be created in `folder` (made if missing, then removed again).

    A real write is tried, because permission bits do not tell the whole story (read-only mounts,
    network shares, the root user)."""
    target = Path(os.path.abspath(folder))
    for _ in range(_PROBE_ATTEMPTS):
        try:
            _probe_write(target)
            return
        except (FileExistsError, FileNotFoundError) as error:
            # Another run probing the same new folder made it or removed it between our steps:
            # try again rather than report a race as a permission problem.
            failure = error
        except OSError as error:
            failure = error
            break
    reason = failure.strerror or type(failure).__name__
    raise ResourceError(
        f"Cannot write {what} to {target}: {reason}. Choose a folder you can write to ({hint})."
    ) from None


_PROBE_ATTEMPTS = 5


def _probe_write(target: Path) -> None:
    """Creates the missing folders of `target` and a temporary file in it, then removes the
    folders it made (leaving those another process made)."""
    created: list[Path] = []
    try:
        missing = []
        path = target
        while not path.exists() and path != path.parent:
            missing.append(path)
            path = path.parent
        for path in reversed(missing):
            try:
                path.mkdir()
            except FileExistsError:
                if not path.is_dir():
                    raise
                continue
            created.append(path)
        with tempfile.NamedTemporaryFile(dir=target, prefix=".textalker_probe_"):
            pass
    finally:
        for path in reversed(created):
            try:
                path.rmdir()
            except OSError:
                pass

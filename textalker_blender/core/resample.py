"""Frame-rate conversion from MODEL_FPS to the scene's fps by linear interpolation in time.

A frame stands for the centre of its display interval: frame i of a sequence at `fps` shows time
(i + 0.5) / fps (the dataset generator samples its curves at frame centres too, and Blender shows
frame i during [i, i + 1) / fps). The number of output frames is ceil(duration * fps), so the
animation covers the whole sound strip at any frame rate (23.976, 24, 25, 29.97, 30, 50, 60 ...).
"""

from __future__ import annotations

import math

import numpy as np

# Durations are sample counts / rate; guard ceil() against float noise such as 2.0000000001.
_FRAME_EPS = 1e-6


def output_frame_count(duration_s: float, fps: float) -> int:
    """Frames needed to cover `duration_s` seconds at `fps` (at least one)."""
    if not (fps > 0 and math.isfinite(fps)):
        raise ValueError(f"fps must be a positive number, not {fps!r}")
    if duration_s < 0 or not math.isfinite(duration_s):
        raise ValueError(f"duration must be a non-negative number, not {duration_s!r}")
    return max(1, math.ceil(duration_s * fps - _FRAME_EPS))


def source_positions(n_out: int, src_fps: float, dst_fps: float, n_src: int) -> np.ndarray:
    """Fractional source frame index of each output frame's centre time, clamped to the source."""
    times = (np.arange(n_out, dtype=np.float64) + 0.5) / dst_fps
    return np.clip(times * src_fps - 0.5, 0.0, n_src - 1)


def resample_frames(
    frames: np.ndarray, src_fps: float, dst_fps: float, n_out: int | None = None
) -> np.ndarray:
    """Linearly interpolate `frames` (T, ...) sampled at `src_fps` to `dst_fps`.

    `n_out` defaults to covering the same duration (T / src_fps seconds). The dtype is kept.
    """
    frames = np.asarray(frames)
    n_src = frames.shape[0]
    if n_src == 0:
        raise ValueError("cannot resample zero frames")
    if n_out is None:
        n_out = output_frame_count(n_src / src_fps, dst_fps)
    if math.isclose(src_fps, dst_fps, rel_tol=0, abs_tol=1e-9) and n_out <= n_src:
        return frames[:n_out].copy()
    position = source_positions(n_out, src_fps, dst_fps, n_src)
    lower = np.floor(position).astype(np.int64)
    upper = np.minimum(lower + 1, n_src - 1)
    weight = (position - lower).astype(np.float32)
    weight = weight.reshape((-1,) + (1,) * (frames.ndim - 1))
    out = np.empty((n_out,) + frames.shape[1:], dtype=frames.dtype)
    # Chunked so long, high-resolution sequences never need a float32 copy of everything at once.
    chunk = max(1, int(2**26 // max(1, int(np.prod(frames.shape[1:])))))
    for start in range(0, n_out, chunk):
        stop = min(n_out, start + chunk)
        a = frames[lower[start:stop]].astype(np.float32)
        b = frames[upper[start:stop]].astype(np.float32)
        w = weight[start:stop]
        out[start:stop] = (a + (b - a) * w).astype(frames.dtype)
    return out

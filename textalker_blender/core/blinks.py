"""Blink timing: measured from face motion for training, sampled for generation.

Blinks barely depend on speech, so a denoiser conditioned on audio alone learns their average,
which is "eyes open" (docs/RESULTS.md: the upper face moved a tenth of the truth's amount). With
`ModelConfig.blink_condition` the denoiser gets one more per-frame input, the eyelid closure in
[0, 1]:

- training: `eyelid_closure` measures it from the ground-truth vertex offsets, projected onto the
  template's `eyeBlinkLeft` / `eyeBlinkRight` units (works for any data in the template topology,
  no blink labels needed);
- generation: `sample_blink_track` draws blink onsets from a renewal process at the speaking
  style's measured rate (`blink_statistics`, stored per style in the weights), or the rate the
  artist sets, and shapes each blink like the training data's (fast close, slower open).

The model still draws the eyelids, brows and skin itself; the track only says when.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BLINK_UNITS = ("eyeBlinkLeft", "eyeBlinkRight")
# A frame counts as "eyes closed" above this closure (onsets = upward crossings).
CLOSED_THRESHOLD = 0.5
# Where measured statistics are missing (an unseen style, weights without statistics): a
# typical adult blink while talking, ~15 per minute, ~0.17 s each.
DEFAULT_RATE_PER_MIN = 15.0
DEFAULT_DURATION_S = 0.17
# The share of a blink spent closing (the rest is the hold and the slower opening).
CLOSING_FRACTION = 0.35
HOLD_S = 0.02
MAX_RATE_PER_MIN = 120.0


def check_rate(value) -> float:
    """A blink rate as given by a caller or typed by a user (a number or its text) -> blinks per
    minute; ValueError unless it is a finite number in 0..MAX_RATE_PER_MIN (a bool is not one).
    The one check behind the Pipeline, the add-on API and both command lines."""
    return check_per_minute(value, "blink rate", "blinks per minute", MAX_RATE_PER_MIN)


def check_per_minute(value, what: str, unit: str, maximum: float) -> float:
    """A rate per minute (`what`, in `unit`) -> float; ValueError unless it is a finite number in
    0..maximum (a bool is not one). Blinks and brow emphases (core/brows.py) share it."""
    try:
        rate = math.nan if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        rate = math.nan
    if not (math.isfinite(rate) and 0.0 <= rate <= maximum):
        raise ValueError(f"{what} must be between 0 and {maximum:g} {unit}, not {value!r}")
    return rate


@dataclass(frozen=True)
class BlinkStatistics:
    rate_per_min: float
    duration_s: float

    def to_dict(self) -> dict:
        return {"rate_per_min": round(float(self.rate_per_min), 4), "duration_s": round(float(self.duration_s), 4)}

    @classmethod
    def from_dict(cls, data: dict) -> BlinkStatistics:
        return cls(float(data["rate_per_min"]), float(data["duration_s"]))


DEFAULT_STATISTICS = BlinkStatistics(DEFAULT_RATE_PER_MIN, DEFAULT_DURATION_S)


def eyelid_closure(template, head_offsets: np.ndarray) -> np.ndarray:
    """Head vertex offsets (T, V, 3) in metres -> eyelid closure (T,) in [0, 1]: the mean of the
    least-squares `eyeBlinkLeft` / `eyeBlinkRight` weights (`TemplateHead.estimate_unit_weights`)."""
    weights = template.estimate_unit_weights(np.asarray(head_offsets, np.float32))
    columns = [template.unit_index(name) for name in BLINK_UNITS]
    return np.clip(weights[..., columns].mean(axis=-1), 0.0, 1.0).astype(np.float32)


def _events(closure: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """(first, last + 1) frame ranges where closure > threshold."""
    above = np.concatenate([[False], np.asarray(closure) > threshold, [False]])
    edges = np.flatnonzero(np.diff(above.astype(np.int8)))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def blink_statistics(tracks: list[np.ndarray], fps: float) -> BlinkStatistics:
    """Rate and duration of the blinks in closure tracks (one subject's utterances).

    Rate: blinks (closure crossing `CLOSED_THRESHOLD`) per minute of all tracks. Duration: the
    time above a tenth of the threshold of those blinks, converted to `blink_shape`'s duration. A subject
    without blinks gets rate 0 and the default duration."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, not {fps}")
    frames = sum(len(t) for t in tracks)
    if frames == 0:
        return DEFAULT_STATISTICS
    count, widths = 0, []
    for track in tracks:
        closed = _events(track, CLOSED_THRESHOLD)
        count += len(closed)
        for first, stop in _events(track, 0.1 * CLOSED_THRESHOLD):
            if any(first <= c < stop for c, _ in closed):
                widths.append((stop - first) / fps)
    if not widths:
        return BlinkStatistics(count / (frames / fps / 60.0), DEFAULT_DURATION_S)
    # The raised-cosine flanks spend acos(1 - 2 x level) / pi of their time below `level`:
    # undo that so that `blink_shape` with this duration has the measured width.
    level = 0.1 * CLOSED_THRESHOLD
    inside = 1.0 - float(np.arccos(1.0 - 2.0 * level) / np.pi)
    width = float(np.mean(widths))
    duration = max((width - HOLD_S) / inside + HOLD_S, 1.0 / fps)
    return BlinkStatistics(count / (frames / fps / 60.0), duration)


def blink_shape(times: np.ndarray, onset: float, duration_s: float, depth: float = 1.0) -> np.ndarray:
    """Closure of one blink at `times` (s): raised-cosine close over CLOSING_FRACTION of the
    duration, a short hold, a raised-cosine open over the rest."""
    times = np.asarray(times, np.float64)
    closing = CLOSING_FRACTION * duration_s
    peak_end = onset + closing + HOLD_S
    end = onset + max(duration_s, closing + HOLD_S + 1e-3)
    out = np.zeros_like(times)
    attack = (times >= onset) & (times < onset + closing)
    out[attack] = 0.5 - 0.5 * np.cos(np.pi * (times[attack] - onset) / max(closing, 1e-6))
    out[(times >= onset + closing) & (times <= peak_end)] = 1.0
    release = (times > peak_end) & (times <= end)
    out[release] = 0.5 + 0.5 * np.cos(np.pi * (times[release] - peak_end) / max(end - peak_end, 1e-6))
    return out * depth


def sample_blink_track(n_frames: int, fps: float, rate_per_min: float, duration_s: float,
                       rng: np.random.Generator) -> np.ndarray:
    """Closure track (n_frames,) in [0, 1] with blinks at `rate_per_min` on average.

    Onsets form a stationary Poisson process with a refractory gap of one blink (the process the
    training data follows: exponential gaps after each blink), so a clip's start is no special
    time. Each blink closes to a depth of 0.85-1."""
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, not {n_frames}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, not {fps}")
    rate_per_min = check_rate(rate_per_min)
    if duration_s <= 0:
        raise ValueError(f"blink duration must be positive, not {duration_s}")
    track = np.zeros(n_frames, np.float32)
    if rate_per_min == 0 or n_frames == 0:
        return track
    times = (np.arange(n_frames) + 0.5) / fps
    # The gap after a blink is duration + an exponential wait; the wait's mean is chosen so that
    # the track has `rate_per_min` blinks per minute on average.
    mean_gap = max(60.0 / rate_per_min - duration_s, 0.05)
    onset = float(rng.exponential(mean_gap))
    while onset < n_frames / fps:
        shape = blink_shape(times, onset, duration_s, float(rng.uniform(0.85, 1.0)))
        np.maximum(track, shape.astype(np.float32), out=track)
        onset += duration_s + float(rng.exponential(mean_gap))
    return track

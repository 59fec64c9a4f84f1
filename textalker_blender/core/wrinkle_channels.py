"""What the three channels of a wrinkle map mean, and the albedo ratio and fold activation they give.

Two encodings exist (`ModelConfig.wrinkle_encoding` says which one a bundle was trained on):

- "fold_shade_flush" (current): channel 0 is the fold activation a in [0, 1] (how folded the skin
  is there: it scales the wrinkle style's high-resolution crease detail, core/creases.py),
  channel 1 the shading s >= 0 (broad darkening of the folded region) and channel 2 the flush
  f >= 0 (redness of the folded skin). The albedo ratio is grey/red only by construction:
  R = 1 - s, G = (1 - s)(1 - FLUSH_TINT[1] f), B = (1 - s)(1 - FLUSH_TINT[2] f); a decoder cannot
  make blue or green speckles.
- "log_ratio_rgb" (bundles trained before crease detail): the natural log of a per-channel RGB
  albedo ratio, and no fold activation.

Outside the face every channel is 0 in the first encoding (ratio exactly 1, no fold).
"""
from __future__ import annotations

import numpy as np

ENCODINGS = ("fold_shade_flush", "log_ratio_rgb")
CURRENT_ENCODING = "fold_shade_flush"
LEGACY_ENCODING = "log_ratio_rgb"
# How much a unit of flush lowers green and blue against red: skin flushing with blood reddens
# (haemoglobin absorbs green and blue), it does not turn any other hue.
FLUSH_TINT = np.array([0.0, 0.55, 0.65], np.float32)


def check_encoding(encoding: str) -> str:
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown wrinkle encoding {encoding!r}; known: {', '.join(ENCODINGS)}")
    return encoding


def channels_from_parts(fold: np.ndarray, shade: np.ndarray, flush: np.ndarray) -> np.ndarray:
    """(..., ) fold, shade and flush -> (..., 3) float32 wrinkle channels."""
    return np.stack([fold, shade, flush], axis=-1).astype(np.float32)


def ratio_from_channels(channels: np.ndarray, encoding: str = CURRENT_ENCODING) -> np.ndarray:
    """(..., 3) wrinkle channels -> (..., 3) float32 albedo ratio (1 = unchanged)."""
    channels = np.asarray(channels, np.float32)
    if check_encoding(encoding) == LEGACY_ENCODING:
        return np.exp(channels)
    shade = np.clip(channels[..., 1:2], 0.0, 1.0)
    flush = np.clip(channels[..., 2:3], 0.0, 1.0)
    return ((1.0 - shade) * (1.0 - FLUSH_TINT * flush)).astype(np.float32)


def fold_from_channels(channels: np.ndarray, encoding: str = CURRENT_ENCODING) -> np.ndarray | None:
    """(..., 3) wrinkle channels -> (...) float32 fold activation in [0, 1], or None when the
    encoding has none."""
    if check_encoding(encoding) == LEGACY_ENCODING:
        return None
    return np.clip(np.asarray(channels, np.float32)[..., 0], 0.0, 1.0)

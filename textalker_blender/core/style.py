"""Style pivots: per-subject mean latents for speaking (motion) and wrinkle style.

A pivot p = mean_t z_t of one subject's latents. The denoiser predicts the offset z - p, so at
inference any speaking pivot p_f[i] and any wrinkle pivot p_w[j] can be combined freely.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StyleInfo:
    id: int
    key: str
    name: str


def style_key(name: str) -> str:
    """A stable identifier from a display name: 'Untrained style 1' -> 'untrained_style_1'."""
    key = re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")
    return key or "style"


@dataclass
class StylePivots:
    speaking: np.ndarray  # (S, Dz_f) float32
    wrinkle: np.ndarray  # (S, Dz_w) float32
    names: list[str]
    keys: list[str] | None = None

    def __post_init__(self) -> None:
        self.speaking = np.asarray(self.speaking, dtype=np.float32)
        self.wrinkle = np.asarray(self.wrinkle, dtype=np.float32)
        self.names = list(self.names)
        if self.keys is None:
            self.keys = unique_keys(self.names)
        count = len(self.names)
        if self.speaking.ndim != 2 or self.wrinkle.ndim != 2:
            raise ValueError("pivots must be 2-D arrays (styles, latent dim)")
        if not (self.speaking.shape[0] == self.wrinkle.shape[0] == len(self.keys) == count):
            raise ValueError("speaking pivots, wrinkle pivots, names and keys differ in length")
        if len(set(self.keys)) != count:
            raise ValueError("style keys must be unique")

    def __len__(self) -> int:
        return len(self.names)

    @property
    def infos(self) -> list[StyleInfo]:
        return [StyleInfo(i, k, n) for i, (k, n) in enumerate(zip(self.keys, self.names))]

    def index(self, style: int | str) -> int:
        """Style id (int) or key/name (str) -> row index; ValueError if unknown."""
        if isinstance(style, (int, np.integer)) and not isinstance(style, bool):
            if 0 <= int(style) < len(self):
                return int(style)
            raise ValueError(f"style id {style} out of range 0..{len(self) - 1}")
        if isinstance(style, str):
            if style in self.keys:
                return self.keys.index(style)
            if style in self.names:
                return self.names.index(style)
        raise ValueError(f"unknown style {style!r}; known: {', '.join(self.keys)}")

    @classmethod
    def from_latents(
        cls,
        motion_latents: Sequence[np.ndarray],
        wrinkle_latents: Sequence[np.ndarray],
        names: Iterable[str],
    ) -> StylePivots:
        """One subject per entry: (T_i, Dz_f) and (T_i, Dz_w) latents -> their means."""
        speaking = np.stack([np.asarray(z, np.float64).mean(axis=0) for z in motion_latents])
        wrinkle = np.stack([np.asarray(z, np.float64).mean(axis=0) for z in wrinkle_latents])
        return cls(speaking.astype(np.float32), wrinkle.astype(np.float32), list(names))


def unique_keys(names: Sequence[str]) -> list[str]:
    keys: list[str] = []
    for name in names:
        key = base = style_key(name)
        suffix = 2
        while key in keys:
            key = f"{base}_{suffix}"
            suffix += 1
        keys.append(key)
    return keys

"""Maps of the "joint codebook" ablation: motion and wrinkle maps as one 6-channel map.

The paper's joint-codebook variant encodes the motion map and the texture map with ONE VQ (one
shared codebook) instead of two. Its maps share one UV layout; here they do not: the motion map
uses the motion atlas (the face's moving UV islands packed side by side) and the wrinkle map one
rectangle around the main face island, stretched (docs/UV.md). So the joint map is built in the
motion layout at the motion resolution:
- channels 0-2: the motion map as it is (metres);
- channels 3-5: the wrinkle map's channels (core/wrinkle_channels.py; 0 is neutral in both
  encodings) resampled into the motion layout: every motion texel
  centre reads the wrinkle map bilinearly at its mesh UV (texels whose UV lies outside the wrinkle
  rectangle read 0 = neutral).
Decoding goes the other way: every wrinkle texel centre reads channels 3-5 bilinearly at its mesh
UV in the motion layout (texels outside the motion atlas read 0 = neutral; the Pipeline sets the
ratio to exactly 1 off the face anyway). Both directions are `UVSampler`s, i.e. sparse matrices
built once. The round trip costs wrinkle detail (two bilinear resamplings); it is measured by
`round_trip_error` and reported in docs/TRAINING.md ("Ablations").
"""

from __future__ import annotations

import numpy as np

from .uv import UVSampler, as_layout, texel_centre_uvs
from .wrinkle_channels import CURRENT_ENCODING, ratio_from_channels

JOINT_CHANNELS = 6


def _layout_resampler(source_layout, source_resolution: int, target_layout, target_resolution: int) -> UVSampler:
    """A sampler reading maps in `source_layout` at every texel centre of `target_layout`."""
    uvs = texel_centre_uvs(as_layout(target_layout), target_resolution).reshape(-1, 2)
    # Texels of no island have NaN UVs: move them far outside [0, 1] so they read zero.
    uvs = np.where(np.isfinite(uvs), uvs, -10.0)
    return UVSampler(uvs, as_layout(source_layout), source_resolution)


class JointMapCodec:
    """Motion map + wrinkle log-ratio map <-> one 6-channel map in the motion layout."""

    def __init__(self, motion_layout, wrinkle_layout, motion_resolution: int, wrinkle_resolution: int):
        self.motion_resolution = int(motion_resolution)
        self.wrinkle_resolution = int(wrinkle_resolution)
        self.wrinkle_to_motion = _layout_resampler(
            wrinkle_layout, self.wrinkle_resolution, motion_layout, self.motion_resolution
        )
        self.motion_to_wrinkle = _layout_resampler(
            motion_layout, self.motion_resolution, wrinkle_layout, self.wrinkle_resolution
        )

    @classmethod
    def from_layouts(cls, uv_layouts: dict | None, motion_resolution: int, wrinkle_resolution: int) -> JointMapCodec:
        """From a config's `uv_layouts` ({"motion": dict, "wrinkle": dict})."""
        if not uv_layouts or "motion" not in uv_layouts or "wrinkle" not in uv_layouts:
            raise ValueError("the joint codebook needs the config's uv_layouts (motion and wrinkle)")
        return cls(uv_layouts["motion"], uv_layouts["wrinkle"], motion_resolution, wrinkle_resolution)

    def join(self, motion_maps, wrinkle_maps):
        """(..., Hm, Wm, 3) metres + (..., Hw, Ww, 3) wrinkle channels -> (..., Hm, Wm, 6); numpy or torch."""
        wrinkle_in_motion = self.wrinkle_to_motion.sample(wrinkle_maps)
        wrinkle_in_motion = wrinkle_in_motion.reshape(*wrinkle_in_motion.shape[:-2], self.motion_resolution, self.motion_resolution, 3)
        if isinstance(motion_maps, np.ndarray):
            return np.concatenate([motion_maps, wrinkle_in_motion.astype(motion_maps.dtype, copy=False)], axis=-1)
        import torch

        return torch.cat([motion_maps, wrinkle_in_motion.to(motion_maps.dtype)], dim=-1)

    def split(self, joint_maps):
        """(..., Hm, Wm, 6) -> (motion maps (..., Hm, Wm, 3), wrinkle maps (..., Hw, Ww, 3))."""
        motion = joint_maps[..., :3]
        wrinkle = self.motion_to_wrinkle.sample(joint_maps[..., 3:])
        wrinkle = wrinkle.reshape(*wrinkle.shape[:-2], self.wrinkle_resolution, self.wrinkle_resolution, 3)
        return motion, wrinkle

    def round_trip_error(self, wrinkle_maps: np.ndarray, mask: np.ndarray | None = None,
                         encoding: str = CURRENT_ENCODING) -> dict:
        """Wrinkle maps -> motion layout -> wrinkle layout, compared in albedo-ratio units (over
        `mask` (Hw, Ww) texels if given): what the layout change alone costs the joint-codebook
        variant."""
        wrinkle_maps = np.asarray(wrinkle_maps, np.float32)
        zeros = np.zeros((*wrinkle_maps.shape[:-3], self.motion_resolution, self.motion_resolution, 3), np.float32)
        _, back = self.split(self.join(zeros, wrinkle_maps))
        error = ratio_from_channels(back, encoding) - ratio_from_channels(wrinkle_maps, encoding)
        if mask is not None:
            error = error[..., np.asarray(mask, bool), :]
        mse = float(np.mean(error**2))
        return {
            "ratio_mae": float(np.mean(np.abs(error))),
            "ratio_max": float(np.abs(error).max(initial=0.0)),
            "psnr_db": float(10.0 * np.log10(1.0 / max(mse, 1e-20))),
        }

"""Joint-codebook maps (the "joint codebook" ablation): the motion map (metres) and the wrinkle
log-ratio map resampled into the motion layout, concatenated to 6 channels (core/joint_codebook.py
says how and why). Used by the VQ stage (kind "joint"), the LDM stage and the ablations.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .data import to_physical

from textalker_blender.core.joint_codebook import JointMapCodec  # noqa: E402

_codecs: dict[tuple, JointMapCodec] = {}


def joint_codec_for(dataset) -> JointMapCodec:
    """The joint-map codec of a dataset reader's template and map resolutions (cached)."""
    template = dataset.template
    key = (template.motion_layout.fingerprint, template.wrinkle_layout.fingerprint,
           dataset.motion_resolution, dataset.wrinkle_resolution)
    if key not in _codecs:
        _codecs[key] = JointMapCodec(template.motion_layout, template.wrinkle_layout,
                                     dataset.motion_resolution, dataset.wrinkle_resolution)
    return _codecs[key]


def joint_maps(dataset, motion: np.ndarray, wrinkle_ratio: np.ndarray) -> np.ndarray:
    """Reader maps (motion metres, wrinkle *ratio*) -> joint maps (B, H, W, 6) in physical units."""
    return joint_codec_for(dataset).join(to_physical("motion", motion), to_physical("wrinkle", wrinkle_ratio))


def render_joint_frames(dataset, utterances: np.ndarray, frames: np.ndarray, weights) -> np.ndarray:
    """Like `data.render_frames`, for kind "joint": (B, H, W, 6), batch order kept."""
    subjects = np.array([dataset.entries[int(u)]["subject"] for u in utterances])
    out = None
    for subject in dict.fromkeys(subjects.tolist()):
        rows = np.nonzero(subjects == subject)[0]
        stacked = np.stack([weights[int(utterances[r])][int(frames[r])] for r in rows])
        _, motion, wrinkle = dataset.render(subject, stacked)
        maps = joint_maps(dataset, motion, wrinkle)
        if out is None:
            out = np.empty((len(utterances), *maps.shape[1:]), np.float32)
        out[rows] = maps
    return out


@torch.no_grad()
def joint_reconstruction_errors(vq, maps: np.ndarray, mask: np.ndarray, batch: int = 64) -> dict:
    """Validation of a joint VQ in physical units, per half: motion MAE/max in mm and wrinkle
    ratio MAE/max over the active texels, PSNR of the ratio (peak 1.0) over all texels (both in
    the motion layout, i.e. before resampling back to the wrinkle layout)."""
    vq.eval()
    sums = {"motion_abs": 0.0, "motion_max": 0.0, "ratio_abs": 0.0, "ratio_max": 0.0, "ratio_sq": 0.0}
    count_active = count_all = 0
    device = vq.map_offset.device
    for start in range(0, len(maps), batch):
        target = torch.from_numpy(maps[start : start + batch].astype(np.float32)).to(device)
        recon = vq.decode(vq.encode(target))
        motion_error = (recon[..., :3] - target[..., :3]).cpu().numpy()
        ratio_error = (recon[..., 3:].exp() - target[..., 3:].exp()).cpu().numpy()
        motion_active, ratio_active = motion_error[:, mask], ratio_error[:, mask]
        sums["motion_abs"] += float(np.abs(motion_active).sum())
        sums["motion_max"] = max(sums["motion_max"], float(np.abs(motion_active).max(initial=0.0)))
        sums["ratio_abs"] += float(np.abs(ratio_active).sum())
        sums["ratio_max"] = max(sums["ratio_max"], float(np.abs(ratio_active).max(initial=0.0)))
        sums["ratio_sq"] += float((ratio_error**2).sum())
        count_active += motion_active.size
        count_all += ratio_error.size
    vq.train()
    mse = sums["ratio_sq"] / max(count_all, 1)
    return {
        "val_mae_mm": sums["motion_abs"] / max(count_active, 1) * 1000.0,
        "val_max_mm": sums["motion_max"] * 1000.0,
        "val_ratio_mae": sums["ratio_abs"] / max(count_active, 1),
        "val_ratio_max": sums["ratio_max"],
        "val_psnr_db": 10.0 * math.log10(1.0 / max(mse, 1e-20)),
    }


@torch.inference_mode()
def encode_joint_latents(dataset, joint_vq, motion: np.ndarray, wrinkle_ratio: np.ndarray, batch: int) -> np.ndarray:
    """One utterance's reader maps -> joint-VQ latents (T, Dz_joint) float32 (LDM latent cache)."""
    maps = joint_maps(dataset, motion, wrinkle_ratio)
    device = joint_vq.map_offset.device
    parts = [joint_vq.encode(torch.from_numpy(maps[s : s + batch]).to(device)).cpu() for s in range(0, len(maps), batch)]
    return torch.cat(parts).numpy().astype(np.float32)

"""The paper's ablations as trainable configurations (docs/TRAINING.md, "Ablations").

| name | config | what changes | VQ runs |
| --- | --- | --- | --- |
| `reference` | `bundled.json` | nothing: the full TexTalker, trained with the same step budget | bundled motion + wrinkle |
| `motion_only` | `ablation_motion_only.json` | `modalities: "motion"`: the LDM models z_f only; texture = 1 | bundled motion + wrinkle |
| `wrinkle_only` | `ablation_wrinkle_only.json` | `modalities: "wrinkle"`: the LDM models z_w only; offsets = 0 | bundled motion + wrinkle |
| `joint_codebook` | `ablation_joint_codebook.json` | `joint_codebook_vq`: one VQ over both maps (6 channels) | a new "joint" VQ run |
| `onehot` | `ablation_onehot.json` | `style_mode: "onehot"`: learned style embeddings, no pivots | bundled motion + wrinkle |

The motion-only and wrinkle-only bundles still carry both VQs (the LDM stage encodes both maps and
the pivots keep both widths); the unused one is never run. `train_ablation` trains one of them
into `RUNS/<name>/` and exports `RUNS/<name>.safetensors`; `tools/train_ablations.py` runs them all.

Joint-codebook maps (kind "joint"): the motion map (metres) and the wrinkle log-ratio map resampled
into the motion layout, concatenated to 6 channels (core/joint_codebook.py says how and why).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from .common import REPO_ROOT, Distributed, load_training_config, read_log
from .data import to_physical

from textalker_blender.core.joint_codebook import JointMapCodec  # noqa: E402

CONFIG_DIR = REPO_ROOT / "tools" / "configs"
ABLATION_CONFIGS = {
    "reference": CONFIG_DIR / "bundled.json",
    "motion_only": CONFIG_DIR / "ablation_motion_only.json",
    "wrinkle_only": CONFIG_DIR / "ablation_wrinkle_only.json",
    "joint_codebook": CONFIG_DIR / "ablation_joint_codebook.json",
    "onehot": CONFIG_DIR / "ablation_onehot.json",
}
ABLATION_NAMES = tuple(ABLATION_CONFIGS)


# ---------------------------------------------------------------------------- joint maps
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


# ---------------------------------------------------------------------------- orchestration
AUDIO_INPUT_FIELDS = ("audio_encoder", "n_mels", "mel_n_fft", "mel_hop")


def reuse_latent_cache(source_ldm_run: Path, target_ldm_run: Path, motion_run: Path, wrinkle_run: Path,
                       config_path: Path | None = None) -> bool:
    """Hard-link the latent cache of an LDM run made with the same VQ checkpoints and the same
    audio input (encoder and log-mel settings of `config_path`'s model) into a new run, so it
    skips the encoding (~12 min on 2 cores for the full set). Returns True if it did. Cache files
    are only ever replaced (never written in place), so sharing inodes is safe."""
    from .ldm_stage import _cache_key

    source = Path(source_ldm_run) / "cache"
    target = Path(target_ldm_run) / "cache"
    key_path = source / "vq.json"
    if target.exists() or not key_path.is_file():
        return False
    recorded = json.loads(key_path.read_text())
    if recorded != _cache_key(Path(motion_run), Path(wrinkle_run), recorded.get("audio", "bundled")):
        return False
    if config_path is not None:
        source_model = json.loads((Path(source_ldm_run) / "config.json").read_text())["model"]
        model = load_training_config(config_path).model.to_dict()
        if any(source_model.get(field) != model[field] for field in AUDIO_INPUT_FIELDS):
            return False
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, target, copy_function=os.link)
    return True


def ema_is_reliable(steps: int, decay: float) -> bool:
    """An EMA of `steps` updates still holds decay^steps of the initial weights: export it only
    when that share is below e^-3 (5 %), i.e. steps * (1 - decay) >= 3 (3,000 steps at 0.999).
    Short ablation runs therefore export their raw weights, the same rule for every variant."""
    return decay > 0 and steps * (1.0 - decay) >= 3.0


def train_ablation(
    name: str,
    data_root: str | Path,
    runs_root: str | Path,
    motion_run: str | Path,
    wrinkle_run: str | Path,
    ldm_steps: int | None = None,
    joint_vq_steps: int | None = None,
    cache_from: str | Path | None = None,
    max_minutes: float | None = None,
    dist: Distributed | None = None,
    progress_bar: bool = True,
    export: bool = True,
    config_path: str | Path | None = None,
    use_ema: bool | None = None,
    motion_decoder: str | Path | None = None,
) -> dict:
    """Train (or resume) one ablation into `runs_root/<name>/` and export
    `runs_root/<name>.safetensors`. The joint-codebook one first trains its VQ
    (`runs_root/joint_codebook/joint_vq`); the others reuse the given (bundled) VQ runs and,
    with `cache_from` (an LDM run folder on the same VQs), its latent cache. `config_path`
    replaces the ablation's config file (tests use tiny sizes). `use_ema` None: export the EMA
    weights only if the run is long enough for them (`ema_is_reliable`), else the raw weights.
    `motion_decoder`: a stage-1b refinement of `motion_run`'s decoder, exported into every
    ablation that decodes motion with that VQ (not the joint codebook, which has its own VQ), so
    the ablations and the bundle read vertices from the same decoder."""
    from .export import export_bundle
    from .ldm_stage import train_ldm
    from .vq_stage import train_vq

    if name not in ABLATION_CONFIGS:
        raise ValueError(f"unknown ablation {name!r}; choose from {', '.join(ABLATION_NAMES)}")
    dist = dist or Distributed()
    config_path = Path(config_path) if config_path is not None else ABLATION_CONFIGS[name]
    runs_root = Path(runs_root)
    folder = runs_root / name
    ldm_run = folder / "ldm"
    summary: dict = {"name": name, "config": str(config_path)}
    if load_training_config(config_path).model.joint_codebook_vq is not None:
        joint_run = folder / "joint_vq"
        vq_summary = train_vq(load_training_config(config_path), data_root, joint_run, "joint", dist,
                              steps=joint_vq_steps, max_minutes=max_minutes, progress_bar=progress_bar)
        summary["joint_vq"] = vq_summary
        if vq_summary["stopped"] != "steps reached":
            return {**summary, "stopped": "joint VQ " + vq_summary["stopped"]}
        vq_runs = (joint_run, None)
    else:
        vq_runs = (Path(motion_run), Path(wrinkle_run))
        if cache_from is not None:
            summary["cache_reused"] = reuse_latent_cache(Path(cache_from), ldm_run, *vq_runs, config_path=config_path)
    ldm_summary = train_ldm(load_training_config(config_path), data_root, ldm_run, vq_runs[0], vq_runs[1],
                            dist, steps=ldm_steps, max_minutes=max_minutes, progress_bar=progress_bar)
    summary["ldm"] = ldm_summary
    summary["stopped"] = ldm_summary["stopped"]
    if export and dist.is_main and ldm_summary["stopped"] == "steps reached":
        if use_ema is None:
            use_ema = ema_is_reliable(ldm_summary["step"], float(load_training_config(config_path).ldm["ema_decay"]))
        generates_motion = load_training_config(config_path).model.generates_motion
        refined = motion_decoder if (vq_runs[1] is not None and generates_motion) else None
        summary["export"] = export_bundle(ldm_run, runs_root / f"{name}.safetensors", use_ema=use_ema,
                                          update_manifest=True, motion_decoder=refined)
        summary["export"]["ema"] = bool(use_ema)
    validation = [r for r in read_log(ldm_run / "log.jsonl") if r.get("event") == "validation"]
    if validation:
        summary["last_validation"] = validation[-1]
    return summary

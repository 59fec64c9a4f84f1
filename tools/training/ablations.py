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
import os
import shutil
from pathlib import Path

from .artefacts import latent_cache_key
from .common import REPO_ROOT, Distributed, load_training_config, read_log
from .export import export_bundle
from .ldm_stage import train_ldm
from .vq_stage import train_vq

CONFIG_DIR = REPO_ROOT / "tools" / "configs"
ABLATION_CONFIGS = {
    "reference": CONFIG_DIR / "bundled.json",
    "motion_only": CONFIG_DIR / "ablation_motion_only.json",
    "wrinkle_only": CONFIG_DIR / "ablation_wrinkle_only.json",
    "joint_codebook": CONFIG_DIR / "ablation_joint_codebook.json",
    "onehot": CONFIG_DIR / "ablation_onehot.json",
}
ABLATION_NAMES = tuple(ABLATION_CONFIGS)


# ---------------------------------------------------------------------------- orchestration
AUDIO_INPUT_FIELDS = ("audio_encoder", "n_mels", "mel_n_fft", "mel_hop")


def reuse_latent_cache(source_ldm_run: Path, target_ldm_run: Path, motion_run: Path, wrinkle_run: Path,
                       config_path: Path | None = None) -> bool:
    """Hard-link the latent cache of an LDM run made with the same VQ checkpoints and the same
    audio input (encoder and log-mel settings of `config_path`'s model) into a new run, so it
    skips the encoding (~12 min on 2 cores for the full set). Returns True if it did. Cache files
    are only ever replaced (never written in place), so sharing inodes is safe."""
    source = Path(source_ldm_run) / "cache"
    target = Path(target_ldm_run) / "cache"
    key_path = source / "vq.json"
    if target.exists() or not key_path.is_file():
        return False
    recorded = json.loads(key_path.read_text())
    if recorded != latent_cache_key(Path(motion_run), Path(wrinkle_run), recorded.get("audio", "bundled")):
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

"""What one training stage leaves for the next: run-folder file names and their loaders.

Stage 1 (`vq_stage`) writes `checkpoint/vq.safetensors`; stage 1b (`refine_stage`) writes a
refined motion VQ the same way; stage 2 (`ldm_stage`) reads both VQs, keys its latent cache by
their SHA-256 and writes `checkpoint/model.safetensors` (+ `ema.safetensors`); `export` reads those.
Every stage imports these names from here, so no stage imports another.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save as safetensors_bytes

from .common import RunFolder, TrainingConfig, training_config_from_dict

from textalker_blender.core.vq import VQAutoencoder  # noqa: E402
from textalker_blender.core.weights import canonical_safetensors_bytes, sha256_file  # noqa: E402

VQ_WEIGHTS = "vq.safetensors"
DISCRIMINATOR_WEIGHTS = "discriminator.safetensors"
MODEL_WEIGHTS = "model.safetensors"
EMA_WEIGHTS = "ema.safetensors"


def write_vq_weights(folder: Path, vq: VQAutoencoder, metadata: dict[str, str]) -> None:
    """`folder/vq.safetensors` with canonical bytes (sorted metadata): stage 2 keys its latent cache
    on this file's SHA-256, so the same weights must give the same bytes."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in vq.state_dict().items()}
    metadata = {"config": json.dumps(dataclasses.asdict(vq.config)), **metadata}
    (Path(folder) / VQ_WEIGHTS).write_bytes(canonical_safetensors_bytes(safetensors_bytes(tensors, metadata=metadata)))


def vq_config_for(config: TrainingConfig, kind: str):
    if kind == "joint":
        if config.model.joint_codebook_vq is None:
            raise ValueError("kind 'joint' needs a config with model.joint_codebook_vq (tools/configs/ablation_joint_codebook.json)")
        return config.model.joint_codebook_vq
    return config.model.motion_vq if kind == "motion" else config.model.wrinkle_vq


def load_trained_vq(run_path: str | Path, device="cpu") -> tuple[VQAutoencoder, dict]:
    """A trained VQ from its run folder (for stage 2 and export)."""
    run = RunFolder(run_path)
    recorded = run.read_recorded()
    config = training_config_from_dict(recorded)
    kind = recorded["kind"]
    vq = VQAutoencoder(vq_config_for(config, kind))
    vq.load_state_dict(load_file(str(run.checkpoint / VQ_WEIGHTS), device="cpu"))
    progress = json.loads((run.checkpoint / "progress.json").read_text())
    return vq.to(device).eval(), {"kind": kind, "config": config, "step": progress["step"]}


def load_refined_motion_vq(run_path: str | Path, device="cpu") -> tuple[VQAutoencoder, dict]:
    """The refined motion VQ of a refinement run (for export)."""
    run = RunFolder(run_path)
    if not run.has_checkpoint():
        raise FileNotFoundError(f"{run.path} has no refinement checkpoint")
    recorded = run.read_recorded()
    if recorded.get("stage") != "refine":
        raise ValueError(f"{run.path} is not a decoder-refinement run (tools/refine_decoder.py)")
    config = training_config_from_dict(recorded)
    vq = VQAutoencoder(config.model.motion_vq)
    vq.load_state_dict(load_file(str(run.checkpoint / VQ_WEIGHTS), device="cpu"))
    progress = json.loads((run.checkpoint / "progress.json").read_text())
    return vq.to(device).eval(), {"step": progress["step"], "source_sha256": recorded.get("motion_vq_sha256"),
                                  "train_encoder": bool(config.refine.get("train_encoder", False)),
                                  "motion_vq_run": recorded.get("motion_vq_run")}


def frozen_tensor_names(vq: VQAutoencoder) -> list[str]:
    """State-dict names of everything but the decoder (encoder, codebook, normalisation)."""
    return [name for name in vq.state_dict() if not name.startswith("decoder.")]


def same_codes(a: VQAutoencoder, b: VQAutoencoder) -> bool:
    """True when two motion VQs give every map the same code (all non-decoder tensors equal)."""
    sa, sb = a.state_dict(), b.state_dict()
    names = frozen_tensor_names(a)
    # Codebook usage statistics are bookkeeping for dead-code revival, not part of the mapping.
    names = [n for n in names if not n.endswith(".usage")]
    return set(names) <= set(sb) and all(torch.equal(sa[n].cpu(), sb[n].cpu()) for n in names)


def latent_cache_key(motion_run: Path, wrinkle_run: Path | None, audio_kind: str) -> dict:
    """`wrinkle_run` None: joint-codebook ablation, `motion_run` is its one ("joint") VQ run."""
    return {
        "motion_vq": sha256_file(Path(motion_run) / "checkpoint" / VQ_WEIGHTS),
        "wrinkle_vq": sha256_file(Path(wrinkle_run) / "checkpoint" / VQ_WEIGHTS) if wrinkle_run is not None else None,
        "audio": audio_kind,
    }

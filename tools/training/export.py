"""Assemble the shipped weights file from a finished (or paused) LDM run.

The LDM run's checkpoint already holds the whole model in the bundle format (both VQs, the audio
front end, the denoiser with its latent normalisation, the style pivots and their names); export
picks the EMA weights (unless told otherwise), marks the file trained, records the dataset and
the training provenance in the metadata, writes it via `core.weights.save_weights` and records
its SHA-256 in the manifest.json next to it.
"""

from __future__ import annotations

import json
from pathlib import Path

from .common import RunFolder
from .ldm_stage import EMA_WEIGHTS, MODEL_WEIGHTS

from textalker_blender.core.model import TexTalkerModel  # noqa: E402
from textalker_blender.core.weights import load_weights, save_weights  # noqa: E402


def export_bundle(run_path: str | Path, out: str | Path, use_ema: bool = True, update_manifest: bool = True) -> dict:
    run = RunFolder(run_path)
    if not run.has_checkpoint():
        raise FileNotFoundError(f"{run.path} has no LDM checkpoint to export")
    source = run.checkpoint / (EMA_WEIGHTS if use_ema and (run.checkpoint / EMA_WEIGHTS).is_file() else MODEL_WEIGHTS)
    weights = load_weights(source, verify=False)
    model = TexTalkerModel.from_weights(weights)
    recorded = run.read_recorded()
    progress = json.loads((run.checkpoint / "progress.json").read_text())
    dataset = recorded.get("dataset") or weights.metadata.get("dataset", "unknown")
    metadata = model.metadata(trained=True, dataset=dataset)
    training = json.loads(weights.metadata.get("training", "{}"))
    training.update({
        "ldm_step": progress["step"],
        "weights": source.name,
        "ldm_config": recorded.get("ldm", {}),
        "motion_vq_run": Path(recorded.get("motion_vq_run", "")).name,
        "wrinkle_vq_run": Path(recorded.get("wrinkle_vq_run") or "").name,
    })
    metadata["training"] = json.dumps(training, sort_keys=True)
    digest = save_weights(out, model.weight_tensors(), metadata, update_manifest=update_manifest)
    return {"out": str(out), "sha256": digest, "source": str(source), "styles": model.pivots.names,
            "dataset": dataset, "ldm_step": progress["step"]}

"""Assemble the shipped weights file from a finished (or paused) LDM run.

The LDM run's checkpoint already holds the whole model in the bundle format (both VQs, the audio
front end, the denoiser with its latent normalisation, the style pivots and their names); export
picks the EMA weights (unless told otherwise), marks the file trained, records the dataset and
the training provenance in the metadata, writes it via `core.weights.save_weights` and records
its SHA-256 in the manifest.json next to it. With `motion_decoder` (a stage-1b run of
tools/refine_decoder.py) the motion VQ's decoder is replaced by the refined one, after checking
that the refinement started from this bundle's motion VQ (same encoder, codebook, normalisation).
"""

from __future__ import annotations

import json
from pathlib import Path

from .common import RunFolder
from .artefacts import EMA_WEIGHTS, MODEL_WEIGHTS, load_refined_motion_vq, same_codes

from textalker_blender.core.model import STYLE_WRINKLE_BIAS, TexTalkerModel  # noqa: E402
from textalker_blender.core.weights import load_weights, save_weights  # noqa: E402


def export_bundle(run_path: str | Path, out: str | Path, use_ema: bool = True, update_manifest: bool = True,
                  motion_decoder: str | Path | None = None, sampling_steps: int | None = None) -> dict:
    run = RunFolder(run_path)
    if not run.has_checkpoint():
        raise FileNotFoundError(f"{run.path} has no LDM checkpoint to export")
    source = run.checkpoint / (EMA_WEIGHTS if use_ema and (run.checkpoint / EMA_WEIGHTS).is_file() else MODEL_WEIGHTS)
    weights = load_weights(source, verify=False)
    model = TexTalkerModel.from_weights(weights)
    recorded = run.read_recorded()
    progress = json.loads((run.checkpoint / "progress.json").read_text())
    dataset = recorded.get("dataset") or weights.metadata.get("dataset", "unknown")
    refined = None
    if motion_decoder is not None:
        if model.motion_vq is None:
            raise ValueError(f"{run.path} is a joint-codebook model: it has no motion VQ to refine")
        refined_vq, refined = load_refined_motion_vq(motion_decoder)
        if refined["train_encoder"]:
            raise ValueError(f"{motion_decoder} refined the encoder and codebook too: its codes differ from the ones "
                             f"{run.path} learned; train stage 2 on it (train_ldm.py --motion-vq {motion_decoder}) instead")
        if not same_codes(model.motion_vq, refined_vq):
            raise ValueError(f"{motion_decoder} refined another motion VQ than the one {run.path} was trained on "
                             "(encoder, codebook or normalisation differ)")
        model.motion_vq.decoder.load_state_dict(refined_vq.decoder.state_dict())
    if sampling_steps is not None:
        # The add-on's default DDIM step count (a user can still pick another per run); chosen
        # after training from the sampler sweep of tools/evaluate.py, so it is set at export.
        model.config.sampling_steps = int(sampling_steps)
        model.config.validate()
    metadata = model.metadata(trained=True, dataset=dataset)
    training = json.loads(weights.metadata.get("training", "{}"))
    if refined is not None:
        training["motion_decoder_refine_step"] = refined["step"]
        training["motion_decoder_run"] = Path(motion_decoder).name
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
            "dataset": dataset, "ldm_step": progress["step"],
            "motion_decoder_refine_step": None if refined is None else refined["step"]}


def restyle_creases(bundle: str | Path, data_root: str | Path, out: str | Path | None = None,
                    update_manifest: bool = True) -> dict:
    """Rewrite a weights file's wrinkle-style crease curves from the dataset's training subjects,
    leaving every tensor as it is.

    A style's crease curves set the depth of the detail map its fold maps scale; the fold maps
    the model generates do not depend on those depths (tools/synthetic_textalk4d/creases.py draws
    the curves and the activations apart). So when the crease generator's depths change, the
    weights file takes the new curves without retraining. The styles are matched to the subjects
    by their names, so a dataset other than the one the model was trained on is refused."""
    from safetensors import safe_open

    from tools.synthetic_textalk4d.creases import make_creases

    bundle, out = Path(bundle), Path(out or bundle)
    with safe_open(str(bundle), framework="pt") as handle:
        metadata = dict(handle.metadata())
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    if "style_creases" not in metadata:
        raise ValueError(f"{bundle} has no crease curves (weights without fold maps)")
    names = json.loads(metadata["style_names"])
    train, subjects = _styles_to_subjects(names, data_root)
    styles = [[c.to_dict() for c in make_creases(train.template, train.subjects[s].wrinkle)] for s in subjects]
    metadata["style_creases"] = json.dumps(styles, separators=(",", ":"))
    training = json.loads(metadata.get("training", "{}"))
    training["style_creases_from"] = "tools/synthetic_textalk4d/creases.py at export (restyle_creases)"
    metadata["training"] = json.dumps(training, sort_keys=True)
    digest = save_weights(out, tensors, metadata, update_manifest=update_manifest)
    return {"out": str(out), "sha256": digest, "styles": names,
            "deepest_mm": [max((c["depth_mm"] for c in creases), default=0.0) for creases in styles]}


def _styles_to_subjects(names: list[str], data_root: str | Path, **reader_options):
    """The training split and the training subject of each style (matched by name); refuses a
    dataset the weights were not trained on."""
    from tools.synthetic_textalk4d.reader import SyntheticTextalk4D

    from .ldm_stage import describe_subject

    train = SyntheticTextalk4D(data_root, "train", **reader_options)
    by_name = {describe_subject(subject): name for name, subject in train.subjects.items()}
    missing = [name for name in names if name not in by_name]
    if missing:
        raise ValueError(f"{data_root} has no training subject for the styles {missing}: "
                         "it is not the dataset these weights were trained on")
    return train, [by_name[name] for name in names]


def fit_wrinkle_bias(bundle: str | Path, data_root: str | Path, out: str | Path | None = None,
                     utterance_stride: int = 6, frame_stride: int = 3, update_manifest: bool = True,
                     log=print) -> dict:
    """Fit each wrinkle style's bias map (`core.model.STYLE_WRINKLE_BIAS`) and write it into the
    weights file, leaving every other tensor as it is.

    A style's bias is the mean error of the file's own wrinkle autoencoder on that style's
    training frames (ground-truth channels minus their encode-decode round trip), i.e. the
    least-squares per-style correction of its decoder: the static skin detail (a subject's own
    shading and flush) its codes blur on every frame. Measured on test-A (docs/RESULTS.md, "VQ
    bound"), adding it back lifts the albedo PSNR of the round trip above the no-audio style
    mean, which the autoencoder alone does not reach. Every `utterance_stride`-th training
    utterance and every `frame_stride`-th frame of it are used (deterministic)."""
    import numpy as np
    import torch

    from tools.training.data import to_physical

    bundle, out = Path(bundle), Path(out or bundle)
    weights = load_weights(bundle, verify=False)
    model = TexTalkerModel.from_weights(weights)
    if model.wrinkle_vq is None or not model.config.generates_texture:
        raise ValueError(f"{bundle} has no wrinkle autoencoder (a joint-codebook or motion-only model)")
    resolution = model.config.wrinkle_vq.resolution
    train, subjects = _styles_to_subjects(model.pivots.names, data_root, maps=False,
                                          wrinkle_resolution=resolution)
    by_subject: dict[str, list[int]] = {}
    for index, entry in enumerate(train.entries):
        by_subject.setdefault(entry["subject"], []).append(index)
    vq = model.wrinkle_vq.eval()
    biases, frames = [], 0
    with torch.inference_mode():
        for style, subject in enumerate(subjects):
            total, count = 0.0, 0
            for index in by_subject[subject][::utterance_stride]:
                unit_weights = train.weights(index)[::frame_stride]
                truth = to_physical("wrinkle", train.geometry(subject).wrinkle_maps(unit_weights).astype(np.float32))
                for start in range(0, len(truth), 64):
                    batch = torch.from_numpy(truth[start:start + 64])
                    total = total + (batch - vq.decode(vq.encode(batch))).double().sum(dim=0)
                count += len(truth)
            biases.append((total / max(count, 1)).float())
            frames += count
            log(f"wrinkle bias: style {style + 1}/{len(subjects)} ({subject}) from {count} frames")
    model.set_wrinkle_bias(torch.stack(biases))
    tensors = dict(weights.tensors)
    tensors[STYLE_WRINKLE_BIAS] = model.style_wrinkle_bias.to(torch.float16)
    metadata = dict(weights.metadata)
    training = json.loads(metadata.get("training", "{}"))
    training["wrinkle_bias"] = {"frames": frames, "utterance_stride": utterance_stride, "frame_stride": frame_stride,
                                "from": "tools/export_bundle.py --fit-wrinkle-bias (fit_wrinkle_bias)"}
    metadata["training"] = json.dumps(training, sort_keys=True)
    digest = save_weights(out, tensors, metadata, update_manifest=update_manifest)
    return {"out": str(out), "sha256": digest, "styles": model.pivots.names, "frames": frames,
            "mean_abs_bias": float(model.style_wrinkle_bias.abs().mean())}

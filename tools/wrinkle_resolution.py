#!/usr/bin/env python3
"""Which wrinkle resolution? Measures the two designs issue #18 allows, on the synthetic
TexTalk4D ground truth and the model's own decoder (docs/MODEL.md, "Wrinkle resolution").

    .venv/bin/python tools/wrinkle_resolution.py --data data/synthetic_textalk4d [--json FILE]

Quality. For test-A utterances of several subjects, at each one's most creased frames, the true
crease height h = activation x groove (mm) is computed at 2048 px over the wrinkle rectangle (the
dataset's own crease field at that resolution). It is then represented two ways and compared on
the face texels at 2048 px:

- direct R px: the model decodes h itself at R px (R = 128, 256, 512, 1024): the truth
  area-averaged to R px, then bilinear back to 2048 (the best any decoder at R px could do);
- fold 128 px x detail 2048 px (the shipped design): the dataset's 128 px fold activation,
  bilinear to 2048, times the wrinkle style's static 2048 px detail map.

Reported: the groove depth kept in the groove cores (sum of estimate / sum of truth over texels
at least half as deep as the frame's deepest point), the slope kept (mean |grad h| over texels
whose truth is deeper than 0.05 mm: what a Bump node shades) and the RMS error over the face.

Speed. The wrinkle decoder of the given weights (default: the bundled ones) decodes 300 frames
(10 s at 30 fps) at its resolution, and the same architecture at 512 px (its latent grid 4x
larger per side, random weights: timing only), single process, `--threads` threads.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
FINE = 2048
DIRECT_RESOLUTIONS = (128, 256, 512, 1024)
GROOVE_MM = 0.05  # texels whose true groove is deeper than this are "in a crease"


def _zoom_to(image: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a (R, R) map over the same rectangle (texel centres aligned)."""
    from scipy.ndimage import zoom

    return zoom(image, size / image.shape[0], order=1, mode="nearest", grid_mode=True)


def _area_average(image: np.ndarray, size: int) -> np.ndarray:
    factor = image.shape[0] // size
    return image.reshape(size, factor, size, factor).mean(axis=(1, 3))


def _slope(height: np.ndarray) -> np.ndarray:
    gy, gx = np.gradient(height)
    return np.hypot(gx, gy)


def compare(truth: np.ndarray, estimate: np.ndarray, face: np.ndarray) -> dict:
    """Depth kept, slope kept and RMS error of `estimate` against `truth` (mm, (T, N, N))."""
    creased = (truth < -GROOVE_MM) & face[None]
    # Groove cores: texels at least half as deep as the frame's deepest point (where a crease
    # line is drawn); a blurred groove keeps its volume but loses its depth there.
    cores = (truth <= 0.5 * truth.min(axis=(1, 2), keepdims=True)) & face[None]
    depth_kept = float(estimate[cores].sum() / truth[cores].sum())
    slope_truth = np.stack([_slope(t) for t in truth])
    slope_estimate = np.stack([_slope(e) for e in estimate])
    slope_kept = float(slope_estimate[creased].mean() / slope_truth[creased].mean())
    rms = float(np.sqrt(np.mean((estimate - truth)[:, face] ** 2)))
    return {"depth_kept": depth_kept, "slope_kept": slope_kept, "rms_mm": rms}


def measure_quality(data: Path, n_subjects: int, frames_per_clip: int) -> dict:
    from textalker_blender.core.creases import CreaseField, texel_positions
    from tools.synthetic_textalk4d.creases import group_activations
    from tools.synthetic_textalk4d.reader import SyntheticTextalk4D

    dataset = SyntheticTextalk4D(data, split="test-A", maps=False)
    template = dataset.template
    chosen: dict[str, int] = {}
    for index, entry in enumerate(dataset.entries):
        if entry["subject"] not in chosen and len(chosen) < n_subjects:
            chosen[entry["subject"]] = index
    truths, estimates = [], {f"direct {r} px": [] for r in DIRECT_RESOLUTIONS}
    estimates["fold 128 px x detail 2048 px"] = []
    faces = []
    clips = []
    for subject, index in chosen.items():
        geometry = dataset.geometry(subject)
        weights = dataset.weights(index)
        groups = group_activations(weights, template.unit_names, dataset.subjects[subject].wrinkle)
        fold_coarse = geometry.fold_activations(weights)  # (T, 128 * 128)
        frames = np.argsort(fold_coarse.sum(axis=1))[-frames_per_clip:]
        positions, valid = texel_positions(template, geometry.neutral, FINE)
        flat_valid = valid.reshape(-1)
        field = CreaseField(geometry.creases, positions.reshape(-1, 3)[flat_valid])
        truth = np.zeros((len(frames), FINE * FINE), np.float32)
        truth[:, flat_valid] = field.height_mm(groups[frames])
        truth = truth.reshape(len(frames), FINE, FINE)
        detail = geometry.detail_mm(FINE)
        n = geometry.wrinkle_resolution
        factored = np.stack([_zoom_to(fold_coarse[f].reshape(n, n), FINE) * detail for f in frames])
        estimates["fold 128 px x detail 2048 px"].append(factored * valid[None])
        for r in DIRECT_RESOLUTIONS:
            estimates[f"direct {r} px"].append(
                np.stack([_zoom_to(_area_average(t, r), FINE) for t in truth]) * valid[None])
        truths.append(truth)
        faces.append(valid)
        clips.append({"utterance": entry_id(dataset, index), "subject": subject,
                      "deepest_mm": float(-truth.min()), "frames": [int(f) for f in frames]})
    results = {}
    for name, parts in estimates.items():
        scores = [compare(t, e, f) for t, e, f in zip(truths, parts, faces)]
        results[name] = {key: float(np.mean([s[key] for s in scores])) for key in scores[0]}
    texel_mm = 1000.0 * _wrinkle_rectangle_width_m(template)
    return {"clips": clips, "designs": results,
            "mm_per_texel": {str(r): texel_mm / r for r in (*DIRECT_RESOLUTIONS, FINE)}}


def entry_id(dataset, index: int) -> str:
    return dataset.entries[index]["id"]


def _wrinkle_rectangle_width_m(template) -> float:
    """Width of the wrinkle rectangle on the face in metres (surface length per UV unit x the
    rectangle's UV width)."""
    from tools.synthetic_textalk4d.geometry import metres_per_uv

    u0, _, u1, _ = template.wrinkle_layout.rectangle_source()
    return metres_per_uv(template) * (u1 - u0)


def measure_speed(weights: Path | None, threads: int, frames: int = 300, repeats: int = 3) -> dict:
    import dataclasses

    import torch

    from textalker_blender.core.model import TexTalkerModel
    from textalker_blender.core.pipeline import DEFAULT_WEIGHTS
    from textalker_blender.core.vq import VQAutoencoder
    from textalker_blender.core.weights import load_weights

    torch.set_num_threads(threads)
    model = TexTalkerModel.from_weights(load_weights(weights or DEFAULT_WEIGHTS, verify=False))
    shipped = model.wrinkle_vq.eval()
    config = shipped.config
    scale = 512 // config.resolution
    large = VQAutoencoder(dataclasses.replace(config, resolution=512)).eval()
    results = {}
    for name, vq in ((f"{config.resolution} px (shipped decoder)", shipped), ("512 px (same architecture)", large)):
        latent = torch.randn(frames, int(np.prod(vq.latent_shape)))
        times = []
        with torch.no_grad():
            for _ in range(repeats):
                started = time.perf_counter()
                for start in range(0, frames, 32):  # the pipeline's decode batch
                    vq.decode(latent[start : start + 32])
                times.append(time.perf_counter() - started)
        results[name] = {"seconds": float(min(times)), "latent": list(vq.latent_shape)}
    results["512 px latent cells / shipped"] = scale * scale
    return results


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO_ROOT / "data" / "synthetic_textalk4d")
    parser.add_argument("--weights", type=Path, default=None, help="default: the bundled weights")
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--frames", type=int, default=4, help="most creased frames per clip")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results = {"quality": measure_quality(args.data, args.subjects, args.frames),
               "speed": measure_speed(args.weights, args.threads)}
    results["seconds"] = time.perf_counter() - started
    text = json.dumps(results, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    print()
    print("| design | groove depth kept | slope kept | RMS error mm |")
    print("| --- | ---: | ---: | ---: |")
    for name, score in results["quality"]["designs"].items():
        print(f"| {name} | {100 * score['depth_kept']:.0f} % | {100 * score['slope_kept']:.0f} % | {score['rms_mm']:.4f} |")
    return results


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Evaluate TexTalker against baselines on the synthetic TexTalk4D; write docs/RESULTS.md.

    .venv/bin/python tools/evaluate.py --data data/synthetic_textalk4d \
        --weights textalker_blender/assets/textalker_bundled.safetensors \
        --baselines-dir /work/textalker_runs/baselines --out docs/RESULTS.md \
        [--ablation motion-only=PATH.safetensors ...] [--max-utterances N] [--threads 2] \
        [--skip-sampler-sweep] [--json results.json]

What it does (metric definitions in tools/evaluation/metrics.py, the page in tools/evaluation/report.py):
1. test-A (seen subjects, unseen sentences) and test-B (unseen subjects): TexTalker through the core
   Pipeline at the dataset's fps, one fixed seed, the default sampler steps. Style: a test-A
   subject's own pivot (the style whose name ends with "<subject>)"); a test-B subject has none, so
   the average of the training pivots is used (speaking and wrinkle alike), added as an extra style.
   Ground truth: the dataset's offsets and wrinkle maps (`SyntheticTextalk4D.render`).
2. Baselines on the same utterances: neutral face (zero offsets), training-mean offsets, static
   texture (ratio 1), and the learned FaceFormer-/CodeTalker-/FaceDiffuser-like models of
   tools/evaluation/baselines.py (listed as "not trained" when their run is missing).
3. ARKit (issue #9): core.arkit solved on the ground-truth offsets (weight error against the
   dataset's face-unit weights, vertex error of the reconstruction) and on TexTalker's motion.
4. Sampler steps against quality and time on a test-A subset (DDIM steps, plus the full chain).
5. Ablation bundles (`--ablation NAME=PATH`), evaluated like TexTalker on `--ablation-splits`.

Utterances are processed one at a time (ground truth rendered once, every method scored on it), so
memory stays bounded whatever the split size.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]

from textalker_blender.core.arguments import number_from_text  # noqa: E402
from textalker_blender.core.options import GenerationOptions  # noqa: E402
from textalker_blender.core.wrinkle_channels import ratio_from_channels  # noqa: E402
from tools.evaluation.cli import add_device_arguments, add_report_arguments  # noqa: E402
from tools.evaluation.metrics import CreaseScores, MotionScores, TextureScores  # noqa: E402
from tools.evaluation.report import write_results  # noqa: E402

SPLITS = ("test-A", "test-B")
# Audio-only variants of a split (same faces, other sound): evaluated for TexTalker alone when the
# dataset has them, since the other methods do not listen (or are scored on the clean split).
AUDIO_VARIANT_SPLITS = ("test-A-phone",)
DEFAULT_SWEEP_STEPS = (1, 2, 4, 6, 10, 25, 50)
DEFAULT_SWEEP_UTTERANCES = 10  # ~900 frames: 8 settings incl. the full chain in ~4-10 min
LEARNED_BASELINE_NAMES = ("FaceFormer-like", "CodeTalker-like", "FaceDiffuser-like")
AVERAGE_STYLE_KEY = "evaluation_average_pivot"
AVERAGE_STYLE_NAME = "Average of the training pivots (evaluation only)"
DEFAULT_WEIGHTS = REPO_ROOT / "textalker_blender" / "assets" / "textalker_bundled.safetensors"
LPIPS_NOTE = (
    "LPIPS is not reported: it needs ImageNet-pretrained AlexNet/VGG/SqueezeNet backbones that "
    "torchvision downloads from download.pytorch.org at run time, and this machine reaches no model "
    "hub. The PyPI packages ship only LPIPS's small linear heads (lpips 0.1.4: lpips/weights/v0.1/"
    "alex.pth, 6 KB, checked with `pip download lpips`; torchmetrics 1.9: functional/image/"
    "lpips_models/*.pth), not the backbones; torchvision is not installed either."
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO_ROOT / "data" / "synthetic_textalk4d",
                        help="built synthetic TexTalk4D (tools/make_dataset.py)")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="TexTalker bundle (.safetensors)")
    parser.add_argument("--baselines-dir", type=Path, default=None,
                        help="folder of the learned baselines' runs (<dir>/<slug>, tools/train_baselines.py)")
    add_report_arguments(parser, REPO_ROOT / "docs" / "RESULTS.md")
    parser.add_argument("--max-utterances", type=int, default=None,
                        help="at most N utterances per split, evenly spaced (quick runs, tests)")
    add_device_arguments(parser, threads_default=2, device_help="cpu | cuda | auto (timings are per device)")
    parser.add_argument("--seed", type=int, default=0, help="diffusion seed of every utterance")
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (default: the weights' config)")
    parser.add_argument("--skip-sampler-sweep", action="store_true")
    parser.add_argument("--sweep-steps", default=",".join(map(str, DEFAULT_SWEEP_STEPS)),
                        help="comma-separated DDIM step counts of the sweep")
    parser.add_argument("--sweep-utterances", type=int, default=DEFAULT_SWEEP_UTTERANCES,
                        help="test-A utterances of the sweep, evenly spaced")
    parser.add_argument("--no-full-chain", action="store_true",
                        help="leave the full-chain row (all diffusion timesteps) out of the sweep")
    parser.add_argument("--skip-vq-reconstruction", action="store_true",
                        help="leave out the sweep's row of the ground truth through the bundle's VQs")
    parser.add_argument("--ablation", action="append", default=[], metavar="NAME=PATH",
                        help="an ablation bundle to evaluate like TexTalker (repeatable)")
    parser.add_argument("--option-ablation", action="append", default=[], metavar="NAME=OPTION=VALUE",
                        help="the evaluated bundle with one generation option changed (core/options.py), "
                             "e.g. lip_seal_off=lip_seal_mm=0; reported beside the ablation bundles (repeatable)")
    parser.add_argument("--ablation-splits", default="test-A", help="comma-separated splits for ablations")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    args.sweep_steps = sorted({int(s) for s in str(args.sweep_steps).split(",") if s.strip()})
    args.ablation_splits = [s.strip() for s in args.ablation_splits.split(",") if s.strip()]
    for split in args.ablation_splits:
        if split not in SPLITS:
            parser.error(f"--ablation-splits: unknown split {split!r}; choose from {SPLITS}")
    ablations = {}
    for item in args.ablation:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            parser.error(f"--ablation expects NAME=PATH, got {item!r}")
        ablations[name.strip()] = Path(path.strip())
    args.ablations = ablations
    option_ablations = {}
    for item in args.option_ablation:
        name, _, assignment = item.partition("=")
        option, sep, value = assignment.partition("=")
        if not sep or not name.strip() or not option.strip() or name.strip() in ablations:
            parser.error(f"--option-ablation expects NAME=OPTION=VALUE with a new NAME, got {item!r}")
        try:
            changed = GenerationOptions().replace(**{option.strip(): number_from_text(value)})
        except (TypeError, ValueError) as exc:
            parser.error(f"--option-ablation {item!r}: {exc}")
        option_ablations[name.strip()] = {option.strip(): getattr(changed, option.strip())}
    args.option_ablations = option_ablations
    if args.max_utterances is not None and args.max_utterances < 1:
        parser.error("--max-utterances must be at least 1")
    return args


# ------------------------------------------------------------------------------------------------
# Small helpers


def evenly_spaced(count: int, limit: int | None) -> list[int]:
    """`limit` indices spread over range(count) (all of them when limit is None or >= count)."""
    if limit is None or limit >= count:
        return list(range(count))
    return sorted({int(round(x)) for x in np.linspace(0, count - 1, limit)})


def fit_frames(values: np.ndarray, n_frames: int) -> np.ndarray:
    """Cut or extend (repeating the last frame) to exactly n_frames; predictions are made for the
    audio's length (ceil(duration * fps)), which can differ by a frame from the stored weights."""
    if len(values) == n_frames:
        return values
    if len(values) > n_frames:
        return values[:n_frames]
    pad = np.repeat(values[-1:], n_frames - len(values), axis=0)
    return np.concatenate([values, pad])


def dataset_fingerprint(root: Path) -> str:
    """16 hex of a SHA-256 over meta.json, utterances.json and the subjects' parameters."""
    digest = hashlib.sha256()
    paths = [root / "meta.json", root / "utterances.json", *sorted((root / "subjects").glob("*.json"))]
    for path in paths:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def read_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as handle:
        return dict(handle.metadata() or {})


def manifest_sha256(path: Path) -> str | None:
    manifest = path.parent / "manifest.json"
    try:
        return json.loads(manifest.read_text())["files"][path.name]["sha256"]
    except (OSError, KeyError, ValueError):
        return None


def load_pipeline(path: Path, device: str):
    """Pipeline for a bundle; ablation bundles that no manifest lists are loaded unverified (their
    SHA-256 is still recorded in RESULTS.md)."""
    from textalker_blender.core.errors import WeightsError
    from textalker_blender.core.pipeline import Pipeline

    try:
        return Pipeline.load(weights=path, device=device, verify=True), True
    except WeightsError as exc:
        if "manifest" not in str(exc) and "not listed" not in str(exc):
            raise
        return Pipeline.load(weights=path, device=device, verify=False), False


# ------------------------------------------------------------------------------------------------
# Styles


class StyleChooser:
    """Which speaking / wrinkle style TexTalker uses for a test subject.

    Seen subject: the style whose name ends with "<subject>)" (names written by
    tools/train_ldm.py, e.g. "... (kal, S03)"). If none does (weights not trained on this dataset,
    e.g. the untrained placeholder), style = training-subject index mod the number of styles.
    Unseen subject: the average of all training pivots, added as one extra style (pivot models);
    a one-hot model has no pivots to average and uses style 0.
    """

    def __init__(self, pipe, training_subjects: list[str]):
        self.pipe = pipe
        self.training_subjects = list(training_subjects)
        self._original_pivots = pipe.model.pivots
        self._original_bias = getattr(pipe.model, "style_wrinkle_bias", None)
        self.average_id: int | None = None
        self.choices: dict[str, dict] = {}

    def _average_style(self) -> int | None:
        import torch

        from textalker_blender.core.style import StylePivots

        if self.average_id is not None:
            return self.average_id
        if self.pipe.config.style_mode != "pivot":
            return None
        pivots = self.pipe.model.pivots
        extended = StylePivots(
            np.vstack([pivots.speaking, pivots.speaking.mean(axis=0, keepdims=True)]),
            np.vstack([pivots.wrinkle, pivots.wrinkle.mean(axis=0, keepdims=True)]),
            [*pivots.names, AVERAGE_STYLE_NAME], [*pivots.keys, AVERAGE_STYLE_KEY])
        self.pipe.model.set_pivots(extended)
        self.pipe.model.to(self.pipe.device)  # set_pivots registers CPU buffers
        bias = self._original_bias
        if bias is not None:  # the average style's wrinkle bias: the mean of the styles' biases
            self.pipe.model.set_wrinkle_bias(torch.cat([bias, bias.mean(dim=0, keepdim=True)]))
        self.average_id = len(extended) - 1
        return self.average_id

    def restore(self) -> None:
        """Give the (cached, shared) Pipeline its own pivots back."""
        if self.average_id is not None:
            self.pipe.model.set_pivots(self._original_pivots)
            self.pipe.model.to(self.pipe.device)
            if self._original_bias is not None:
                self.pipe.model.set_wrinkle_bias(self._original_bias)
            self.average_id = None

    def style_for(self, subject: str) -> int:
        if subject in self.choices:
            return self.choices[subject]["id"]
        names = [info.name for info in self.pipe.styles]
        pattern = re.compile(rf"[(,\s]{re.escape(subject)}\)\s*$")
        own = [i for i, name in enumerate(names) if pattern.search(name)]
        if own:
            choice = {"id": own[0], "how": "own pivot", "style": names[own[0]]}
        elif subject in self.training_subjects:
            index = self.training_subjects.index(subject) % len(self._original_pivots)
            choice = {"id": index, "how": "no style is named after this subject (weights not trained on "
                      "this dataset): training-subject index mod number of styles", "style": names[index]}
        else:
            average = self._average_style()
            if average is None:
                choice = {"id": 0, "how": "unseen subject, one-hot model: style 0", "style": names[0]}
            else:
                choice = {"id": average, "how": "unseen subject: average of the training pivots",
                          "style": AVERAGE_STYLE_NAME}
        self.choices[subject] = choice
        return choice["id"]


# ------------------------------------------------------------------------------------------------
# Methods: something that predicts offsets and/or wrinkle ratio maps for an utterance


@dataclass
class Prediction:
    offsets: np.ndarray | None  # (T, V, 3) metres, or None: this method makes no motion
    ratio: np.ndarray | None    # (T, H, W, 3), or None: no texture
    seconds: float = 0.0
    diffusion_seconds: float = 0.0
    fold: np.ndarray | None = None  # (T, H, W) crease fold activation, or None: never folds


@dataclass
class Method:
    name: str
    kind: str            # "textalker" | "baseline" | "learned" | "ablation"
    motion: bool
    texture: bool
    note: str = ""
    predictor: object = None
    info: dict = field(default_factory=dict)

    def predict(self, sample, fps: float) -> Prediction:
        started = time.perf_counter()
        prediction = self.predictor(sample, fps)
        prediction.seconds = time.perf_counter() - started
        return prediction


class TexTalkerPredictor:
    def __init__(self, pipe, styles: StyleChooser, seed: int, steps: int | None, options: dict | None = None):
        self.pipe, self.styles, self.seed, self.steps = pipe, styles, seed, steps
        self.options = dict(options or {})  # generation options other than the defaults
        # running totals for the time estimate
        self.frames, self.seconds, self.diffusion_seconds = 0, 0.0, 0.0

    def __call__(self, sample, fps: float) -> Prediction:
        style = self.styles.style_for(sample.subject)
        started = time.perf_counter()
        result = self.pipe.generate((sample.audio, sample.sample_rate), speaking_style=style, wrinkle_style=style,
                                    fps=float(fps), seed=self.seed, steps=self.steps, **self.options)
        self.frames += result.n_frames
        self.seconds += time.perf_counter() - started
        self.diffusion_seconds += result.timings.get("diffusion", 0.0)
        offsets = fit_frames(result.offsets, sample.n_frames) if getattr(result, "has_motion", True) else None
        ratio = (fit_frames(result.wrinkle_maps, sample.n_frames).astype(np.float32)
                 if getattr(result, "has_texture", True) else None)
        folds = getattr(result, "fold_maps", None)
        fold = None if folds is None else fit_frames(folds, sample.n_frames).astype(np.float32)
        return Prediction(offsets, ratio, diffusion_seconds=result.timings.get("diffusion", 0.0), fold=fold)


class VQReconstructionPredictor:
    """The bundle's own autoencoders applied to the ground truth: each frame's motion and wrinkle
    maps encoded to their codes and decoded the way generation decodes (same batches, vertex
    sampler, clamps). No audio and no diffusion: the error a perfect latent diffusion model would
    still make, i.e. what the VQ stages alone allow. A diagnostic, not a baseline: the sampler
    sweep reports it as its last row ("VQ bound"), and the done-when check never uses it."""

    def __init__(self, pipe, data_root: Path, split: str, styles: StyleChooser | None = None):
        from tools.synthetic_textalk4d import SyntheticTextalk4D

        from textalker_blender.core.pipeline import DECODE_BATCH

        self.pipe = pipe
        self.styles = styles  # the subject's wrinkle style: its wrinkle bias is added at decode
        # Maps at the bundle's own resolutions (the evaluation's readers only render offsets).
        self.dataset = SyntheticTextalk4D(data_root, split, template=pipe.template, maps=False,
                                          motion_resolution=pipe.motion_resolution,
                                          wrinkle_resolution=pipe.wrinkle_resolution)
        self.batch = DECODE_BATCH

    def __call__(self, sample, fps: float) -> Prediction:
        import torch

        from tools.training.data import to_physical

        _, motion, wrinkle = self.dataset.render(sample.subject, sample.weights)
        sampler, movable = self.pipe._uv_sampler(None)
        model, timings = self.pipe.model, {}
        wrinkle_style = None if self.styles is None else self.styles.style_for(sample.subject)
        offsets, ratios = [], []
        with torch.inference_mode():
            for start in range(0, len(motion), self.batch):
                stop = start + self.batch
                z_f = (model.motion_vq.encode(torch.from_numpy(to_physical("motion", motion[start:stop])))
                       if model.motion_vq is not None else None)
                z_w = (model.wrinkle_vq.encode(torch.from_numpy(to_physical("wrinkle", wrinkle[start:stop])))
                       if model.wrinkle_vq is not None else None)
                batch_offsets, batch_maps = self.pipe._decode_batch(z_f, z_w, sampler, movable, timings, wrinkle_style)
                offsets.append(batch_offsets)
                ratios.append(batch_maps.astype(np.float32))  # RGB ratio + fold
        maps = np.concatenate(ratios)
        fold = maps[..., 3] if self.pipe.generates_folds else None
        return Prediction(np.concatenate(offsets), maps[..., :3], fold=fold)


def generates(pipe, metadata: dict) -> tuple[bool, bool]:
    """(makes motion, makes texture) of a bundle: the config's modalities (core.config), or an
    `outputs` metadata entry (JSON list of "motion" / "wrinkle")."""
    motion = bool(getattr(pipe.config, "generates_motion", True))
    texture = bool(getattr(pipe.config, "generates_texture", True))
    outputs = metadata.get("outputs")
    if outputs:
        try:
            listed = {str(x).lower() for x in json.loads(outputs)}
        except ValueError:
            listed = {x.strip().lower() for x in outputs.split(",")}
        motion = motion and "motion" in listed
        texture = texture and bool(listed & {"wrinkle", "texture"})
    return motion, texture


def learned_baselines(baselines_dir: Path | None, seed: int) -> tuple[list[Method], list[dict]]:
    """(trained learned baselines as Methods, rows for the ones that are not available)."""
    try:
        from tools.evaluation import baselines as module
    except ImportError as exc:  # the module is someone else's and may be missing or broken
        reason = f"tools/evaluation/baselines.py cannot be imported ({exc})"
        return [], [{"name": n, "reason": reason, "command": "tools/train_baselines.py"} for n in LEARNED_BASELINE_NAMES]
    methods, missing = [], []
    for name, cls in module.LEARNED_BASELINES.items():
        command = (f".venv/bin/python tools/train_baselines.py --only {getattr(cls, 'slug', name)}"
                   + (f" --out {baselines_dir}" if baselines_dir else ""))
        if baselines_dir is None:
            missing.append({"name": name, "reason": "no --baselines-dir given", "command": command})
            continue
        run_dir = Path(baselines_dir) / getattr(cls, "slug", name)
        try:
            baseline = module.load_baseline(name, run_dir)
        except FileNotFoundError:
            missing.append({"name": name, "reason": f"not trained: no checkpoint in {run_dir}", "command": command})
            continue

        def predictor(sample, fps, baseline=baseline):
            offsets = baseline.predict(sample.audio, sample.n_frames, sample.subject, seed=seed)
            return Prediction(fit_frames(np.asarray(offsets, np.float32), sample.n_frames), None)

        info = dict(getattr(baseline, "info", {}) or {})
        note = str(baseline.inference_note)
        if info.get("trained_steps") is not None:
            note += f"; trained {info.get('trained_steps')} of {info.get('total_steps', '?')} steps"
            if info.get("finished") is False:
                note += " (training not finished)"
        methods.append(Method(name, "learned", True, False, note, predictor,
                              {"run_dir": str(run_dir), "unseen_subject": getattr(baseline, "unseen_subject_note", "")}))
    return methods, missing


def training_mean_offsets(root: Path, template) -> tuple[np.ndarray, int]:
    """Mean ground-truth offsets (V, 3) over all training frames. Offsets are linear in the
    face-unit weights and do not depend on the identity (docs/DATASET.md), so this is
    template.apply_units(mean weights)."""
    from tools.synthetic_textalk4d import SyntheticTextalk4D

    train = SyntheticTextalk4D(root, "train", template=template, maps=False)
    total, frames = None, 0
    for index in range(len(train)):
        weights = train.weights(index).astype(np.float64)
        total = weights.sum(axis=0) if total is None else total + weights.sum(axis=0)
        frames += len(weights)
    mean_weights = (total / max(frames, 1)).astype(np.float32)
    return np.asarray(template.apply_units(mean_weights[None])[0], np.float32), frames


def style_mean_wrinkle_channels(root: Path, template, resolution: int, chunk: int = 512) -> tuple[dict, np.ndarray]:
    """Each training subject's mean wrinkle channels (H, W, 3) over its training frames, and the
    frame-weighted mean over all of them: the texture a wrinkle style gives without audio."""
    from tools.synthetic_textalk4d import SyntheticTextalk4D

    train = SyntheticTextalk4D(root, "train", template=template, maps=False, wrinkle_resolution=resolution)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for index in range(len(train)):
        subject = train.entries[index]["subject"]
        weights = train.weights(index)
        geometry = train.geometry(subject)
        for start in range(0, len(weights), chunk):
            maps = geometry.wrinkle_maps(weights[start:start + chunk]).astype(np.float64)
            sums[subject] = sums.get(subject, 0.0) + maps.sum(axis=0)
        counts[subject] = counts.get(subject, 0) + len(weights)
    means = {s: (sums[s] / counts[s]).astype(np.float32) for s in sums}
    overall = (sum(sums.values()) / max(sum(counts.values()), 1)).astype(np.float32)
    return means, overall


# ------------------------------------------------------------------------------------------------
# ARKit accumulators


class ArkitScores:
    """Frame-weighted aggregate of core.arkit.arkit_fit_errors over sequences."""

    def __init__(self):
        self.frames = 0
        self.sums = {"vertex_mean": 0.0, "vertex_sq": 0.0, "weight_abs": 0.0, "weight_sq": 0.0}
        self.maxima = {"vertex": 0.0, "weight": 0.0}
        self.has_weights = False
        self.solve_seconds = 0.0
        self.iterations: list[int] = []

    def add(self, errors, n_frames: int, solve_seconds: float, iterations: int) -> None:
        self.frames += n_frames
        self.sums["vertex_mean"] += errors.vertex_mean_m * n_frames
        self.sums["vertex_sq"] += errors.vertex_rmse_m ** 2 * n_frames
        self.maxima["vertex"] = max(self.maxima["vertex"], errors.vertex_max_m)
        if errors.weight_mae is not None:
            self.has_weights = True
            self.sums["weight_abs"] += errors.weight_mae * n_frames
            self.sums["weight_sq"] += errors.weight_rmse ** 2 * n_frames
            self.maxima["weight"] = max(self.maxima["weight"], errors.weight_max)
        self.solve_seconds += solve_seconds
        self.iterations.append(iterations)

    def summary(self) -> dict:
        if not self.frames:
            return {}
        n = self.frames
        out = {"frames": n, "vertex_mean_mm": self.sums["vertex_mean"] / n * 1e3,
               "vertex_rmse_mm": math.sqrt(self.sums["vertex_sq"] / n) * 1e3,
               "vertex_max_mm": self.maxima["vertex"] * 1e3,
               "solve_ms_per_frame": self.solve_seconds / n * 1e3,
               "iterations_mean": float(np.mean(self.iterations))}
        if self.has_weights:
            out.update(weight_mae=self.sums["weight_abs"] / n, weight_rmse=math.sqrt(self.sums["weight_sq"] / n),
                       weight_max=self.maxima["weight"])
        return out


def arkit_errors(template, offsets: np.ndarray, fps: float, true_weights: np.ndarray | None):
    from textalker_blender.core.arkit import arkit_fit_errors, solve_arkit_weights, to_arkit_order

    started = time.perf_counter()
    weights, report = solve_arkit_weights(template, offsets, fps=fps)
    seconds = time.perf_counter() - started
    truth = None if true_weights is None else to_arkit_order(true_weights, template.unit_names)
    return arkit_fit_errors(template, weights, offsets, true_weights=truth), seconds, report.iterations


# ------------------------------------------------------------------------------------------------
# The evaluation


class Progress:
    def __init__(self, quiet: bool):
        self.quiet = quiet

    def bar(self, total: int, description: str):
        from tqdm import tqdm

        return tqdm(total=total, desc=description, unit="frame", disable=self.quiet, dynamic_ncols=True,
                    file=sys.stderr)

    def say(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)


def score_split(split, dataset, indices, methods, template, masks, mask_texels, albedo, progress,
                estimate_hook=None):
    """Runs every method on every selected utterance of one split; returns per-method summaries,
    ARKit summaries and the split's size."""
    motion_scores = {m.name: MotionScores(*masks) for m in methods if m.motion}
    texture_scores = {m.name: TextureScores(mask_texels) for m in methods if m.texture}
    crease_scores = {m.name: CreaseScores(mask_texels) for m in methods if m.texture}
    details: dict[str, np.ndarray] = {}
    seconds = {m.name: 0.0 for m in methods}
    arkit_truth, arkit_generated = ArkitScores(), ArkitScores()
    frames_total = sum(len(dataset.weights(i)) for i in indices)
    audio_seconds = 0.0
    started = time.perf_counter()
    warm = None  # (time, frames) after the first utterance, which pays one-off set-up costs
    frames_done = 0
    with progress.bar(frames_total, split) as bar:
        for count, index in enumerate(indices):
            sample = dataset.load(index)
            truth_offsets, _, truth_channels = dataset.render(sample.subject, sample.weights)
            truth_ratio, truth_fold = ratio_from_channels(truth_channels), truth_channels[..., 0]
            if sample.subject not in albedo:  # ~1 s per subject: once per run
                albedo[sample.subject] = dataset.neutral_albedo(sample.subject, truth_ratio.shape[1])
            if sample.subject not in details:
                details[sample.subject] = texel_detail_mm(dataset, sample.subject, truth_ratio.shape[1])
            audio_seconds += len(sample.audio) / sample.sample_rate
            errors, solve_s, iterations = arkit_errors(template, truth_offsets, dataset.fps, sample.weights)
            arkit_truth.add(errors, sample.n_frames, solve_s, iterations)
            for method in methods:
                prediction = method.predict(sample, dataset.fps)
                seconds[method.name] += prediction.seconds
                if method.motion and prediction.offsets is not None:
                    motion_scores[method.name].add(prediction.offsets, truth_offsets)
                    if method.kind == "textalker":
                        errors, solve_s, iterations = arkit_errors(template, prediction.offsets, dataset.fps, None)
                        arkit_generated.add(errors, sample.n_frames, solve_s, iterations)
                if method.texture and prediction.ratio is not None:
                    texture_scores[method.name].add(prediction.ratio, truth_ratio, albedo[sample.subject])
                    crease_scores[method.name].add(prediction.fold, truth_fold, details[sample.subject])
            bar.update(sample.n_frames)
            frames_done += sample.n_frames
            if count == 0:
                warm = (time.perf_counter(), frames_done)
            if estimate_hook is not None and (count == min(3, len(indices) - 1)):
                if count == 0:  # a single utterance: no warm measurement
                    estimate_hook(frames_done, time.perf_counter() - started)
                else:
                    estimate_hook(frames_done - warm[1], time.perf_counter() - warm[0])
    results = {}
    for method in methods:
        entry = {"kind": method.kind, "note": method.note, "motion": method.motion, "texture": method.texture,
                 "seconds": seconds[method.name], "s_per_audio_s": seconds[method.name] / max(audio_seconds, 1e-9),
                 **method.info}
        if method.motion:
            entry.update(motion_scores[method.name].summary())
        if method.texture:
            entry.update(texture_scores[method.name].summary())
            entry.update(crease_scores[method.name].summary())
        results[method.name] = entry
    size = {"utterances": len(indices), "frames": frames_total, "audio_seconds": audio_seconds,
            "all_utterances": len(dataset),
            "wall_s": time.perf_counter() - started}
    arkit = {"ground_truth": arkit_truth.summary(), "generated": arkit_generated.summary()}
    return results, arkit, size


def texel_detail_mm(dataset, subject: str, resolution: int, supersampling: int = 4) -> np.ndarray:
    """(resolution, resolution) the subject's full-depth crease height averaged over each texel of
    the wrinkle maps (mm, <= 0): what a fold error at that texel costs in crease height."""
    fine = dataset.crease_detail(subject, resolution * supersampling)
    return fine.reshape(resolution, supersampling, resolution, supersampling).mean(axis=(1, 3))


def sampler_sweep(pipe, styles, dataset, indices, steps_list, seed, masks, mask_texels, albedo,
                  progress, reconstruction=None) -> list[dict]:
    """TexTalker at several sampler step counts on the same utterances: LVE, MVE, FDD, PSNR (no
    SSIM: it costs more than generation) and wall time per second of audio. With `reconstruction`
    (a VQReconstructionPredictor) a last row (steps "vq") scores the ground truth passed through
    the bundle's autoencoders on the same utterances."""
    settings = [*steps_list, *(["vq"] if reconstruction is not None else [])]
    motion = {steps: MotionScores(*masks) for steps in settings}
    texture = {steps: TextureScores(mask_texels) for steps in settings}
    seconds = {steps: 0.0 for steps in settings}
    diffusion = {steps: 0.0 for steps in settings}
    predictors = {steps: TexTalkerPredictor(pipe, styles, seed, steps) for steps in steps_list}
    if reconstruction is not None:
        predictors["vq"] = reconstruction
    audio_seconds = 0.0
    frames = sum(len(dataset.weights(i)) for i in indices) * len(settings)
    with progress.bar(frames, f"sampler sweep {','.join(map(str, settings))} steps") as bar:
        for index in indices:
            sample = dataset.load(index)
            truth_offsets, _, truth_channels = dataset.render(sample.subject, sample.weights)
            truth_ratio = ratio_from_channels(truth_channels)
            if sample.subject not in albedo:
                albedo[sample.subject] = dataset.neutral_albedo(sample.subject, truth_ratio.shape[1])
            audio_seconds += len(sample.audio) / sample.sample_rate
            for steps in settings:
                started = time.perf_counter()
                prediction = predictors[steps](sample, dataset.fps)
                seconds[steps] += time.perf_counter() - started
                diffusion[steps] += prediction.diffusion_seconds
                if prediction.offsets is not None:
                    motion[steps].add(prediction.offsets, truth_offsets)
                if prediction.ratio is not None:
                    texture[steps].add(prediction.ratio, truth_ratio, albedo[sample.subject], with_ssim=False)
                bar.update(sample.n_frames)
    rows = []
    for steps in settings:
        row = {"steps": steps, "full_chain": steps == pipe.config.diffusion_steps,
               "s_per_audio_s": seconds[steps] / audio_seconds, "diffusion_s_per_audio_s": diffusion[steps] / audio_seconds}
        row.update({k: v for k, v in motion[steps].summary().items()
                    if k in ("lve_mm2", "mve_mm", "fdd_mm2", "fdd_signed_mm2")})
        row.update({k: v for k, v in texture[steps].summary().items() if k == "psnr_db"})
        rows.append(row)
    return rows


def style_mean_texture(root, template, resolution: int):
    """Predictor of the no-audio texture ablation (`style_mean_wrinkle_channels`); the means are
    computed on first use."""
    from textalker_blender.core.wrinkle_channels import ratio_from_channels

    cache: dict = {}

    def predictor(sample, fps):
        if not cache:
            cache["means"], cache["overall"] = style_mean_wrinkle_channels(Path(root), template, resolution)
        channels = cache["means"].get(sample.subject, cache["overall"])
        n = sample.n_frames
        return Prediction(None, np.broadcast_to(ratio_from_channels(channels), (n, *channels.shape)),
                          fold=np.broadcast_to(channels[..., 0], (n, *channels.shape[:2])))
    return predictor


def run_evaluation(args: argparse.Namespace, argv: list[str]) -> dict:
    import torch

    from tools.synthetic_textalk4d import SyntheticTextalk4D

    torch.set_num_threads(max(1, int(args.threads)))
    progress = Progress(args.quiet)
    started = time.perf_counter()
    load_at_start = os.getloadavg()
    weights_path = Path(args.weights).resolve()
    pipe, verified = load_pipeline(weights_path, args.device)
    template = pipe.template
    metadata = read_metadata(weights_path)
    masks = (np.asarray(template.lip_mask), np.asarray(template.face_mask), np.asarray(template.upper_face_mask))
    mask_texels = np.asarray(pipe.wrinkle_face_mask)
    steps = int(pipe.config.sampling_steps if args.steps is None else args.steps)

    available = json.loads((Path(args.data) / "meta.json").read_text()).get("splits", {})
    evaluated_splits = SPLITS + tuple(s for s in AUDIO_VARIANT_SPLITS if s in available)
    datasets = {split: SyntheticTextalk4D(args.data, split, template=template, maps=False,
                                          wrinkle_resolution=pipe.wrinkle_resolution) for split in evaluated_splits}
    selections = {split: evenly_spaced(len(ds), args.max_utterances) for split, ds in datasets.items()}
    train_subjects = sorted({e["subject"] for e in SyntheticTextalk4D(args.data, "train", template=template,
                                                                      maps=False).entries})
    mean_offsets, train_frames = training_mean_offsets(args.data, template)
    styles = StyleChooser(pipe, train_subjects)

    def constant(offsets=None, ratio=None):
        def predictor(sample, fps):
            n = sample.n_frames
            shape = (n, pipe.wrinkle_resolution, pipe.wrinkle_resolution, 3)
            return Prediction(None if offsets is None else np.broadcast_to(offsets, (n, *offsets.shape)),
                              None if ratio is None else np.full(shape, ratio, np.float32))
        return predictor

    motion_on, texture_on = generates(pipe, metadata)
    textalker = Method("TexTalker (ours)", "textalker", motion_on, texture_on,
                       f"{pipe.config.name} config, DDIM {steps} steps, seed {args.seed}",
                       TexTalkerPredictor(pipe, styles, args.seed, steps))
    fixed = [
        Method("Mean face (neutral, zero offsets)", "baseline", True, False, "predicts the subject's neutral face",
               constant(offsets=np.zeros((template.n_vertices, 3), np.float32))),
        Method("Mean face (training-mean offsets)", "baseline", True, False,
               f"mean offset of all {train_frames} training frames", constant(offsets=mean_offsets)),
        Method("Static texture (ratio 1)", "baseline", False, True, "the neutral albedo on every frame",
               constant(ratio=1.0)),
        Method("Style-mean texture (no audio)", "baseline", False, True,
               "the subject's mean training wrinkle map on every frame (unseen subjects: the mean over all "
               "training subjects): texture from the wrinkle style alone, not driven by the audio",
               style_mean_texture(args.data, template, pipe.wrinkle_resolution)),
    ]
    learned, learned_missing = learned_baselines(args.baselines_dir, args.seed)

    ablation_methods, ablation_info = [], {}
    for name, path in args.ablations.items():
        path = Path(path).resolve()
        ablation_pipe, ablation_verified = load_pipeline(path, args.device)
        if ablation_pipe.wrinkle_resolution != pipe.wrinkle_resolution:
            raise SystemExit(f"ablation {name}: wrinkle maps of {ablation_pipe.wrinkle_resolution} px, TexTalker's "
                             f"are {pipe.wrinkle_resolution} px; the evaluation renders one ground truth")
        ablation_metadata = read_metadata(path)
        a_motion, a_texture = generates(ablation_pipe, ablation_metadata)
        ablation_styles = StyleChooser(ablation_pipe, train_subjects)
        config = ablation_pipe.config
        ablation_methods.append(Method(name, "ablation", a_motion, a_texture,
                                       f"{getattr(config, 'ablation', None) or 'full'}; style mode {config.style_mode}; "
                                       f"DDIM {config.sampling_steps} steps",
                                       TexTalkerPredictor(ablation_pipe, ablation_styles, args.seed, None)))
        ablation_info[name] = {"path": str(path), "sha256": ablation_pipe.weights_sha256, "verified": ablation_verified,
                               "trained": ablation_pipe.trained, "ablation": getattr(config, "ablation", None),
                               "motion": a_motion, "texture": a_texture, "styles": ablation_styles}
    for name, changed in args.option_ablations.items():
        described = ", ".join(f"{key}={value}" for key, value in changed.items())
        ablation_methods.append(Method(name, "ablation", motion_on, texture_on,
                                       f"the evaluated bundle with {described}; DDIM {steps} steps",
                                       TexTalkerPredictor(pipe, styles, args.seed, steps, changed)))
        ablation_info[name] = {"path": str(weights_path), "sha256": pipe.weights_sha256, "verified": verified,
                               "trained": pipe.trained, "ablation": None, "options": changed,
                               "motion": motion_on, "texture": texture_on, "styles": styles}

    # Rough time estimate, refined after the first utterance of the first split.
    total_frames = {split: sum(len(datasets[split].weights(i)) for i in selections[split]) for split in evaluated_splits}
    sweep_indices = [] if args.skip_sampler_sweep else [
        selections["test-A"][i] for i in evenly_spaced(len(selections["test-A"]), args.sweep_utterances)]
    sweep_steps = list(args.sweep_steps)
    if not args.skip_sampler_sweep and not args.no_full_chain and pipe.config.diffusion_steps not in sweep_steps:
        sweep_steps.append(int(pipe.config.diffusion_steps))
    sweep_frames = sum(len(datasets["test-A"].weights(i)) for i in sweep_indices)
    estimate = {}

    full_frames = {split: sum(len(datasets[split].weights(i)) for i in range(len(datasets[split])))
                   for split in evaluated_splits}

    def estimate_hook(frames, seconds):
        """Run time from the first utterances: all methods' cost per frame for the splits, and for
        the sweep TexTalker's generation cost without diffusion plus diffusion per step and frame."""
        per_frame = seconds / max(frames, 1)
        ours = textalker.predictor
        diffusion_per_step = ours.diffusion_seconds / max(ours.frames, 1) / steps
        generation = max(ours.seconds - ours.diffusion_seconds, 0.0) / max(ours.frames, 1)
        # ablations cost about one TexTalker generation each, on their splits only
        ablation = ours.seconds / max(ours.frames, 1) * len(ablation_methods)
        base = per_frame - (ablation if SPLITS[0] in args.ablation_splits else 0.0)

        def total(split_frames, sweep_frame_count):
            main = sum((base + (ablation if s in args.ablation_splits else 0.0)) * n for s, n in split_frames.items())
            sweep = sweep_frame_count * sum(generation + s * diffusion_per_step for s in sweep_steps)
            return main + sweep

        estimate.update(seconds=total(total_frames, sweep_frames), per_frame_s=per_frame,
                        full_run_s=total(full_frames, sweep_frames * DEFAULT_SWEEP_UTTERANCES
                                         / max(len(sweep_indices), 1) if sweep_indices else 0))
        progress.say(f"estimated run time: {estimate['seconds'] / 60:.1f} min ({per_frame * 1e3:.0f} ms per frame "
                     f"for all methods, {sum(total_frames.values())} frames; sweep {sweep_frames} frames x "
                     f"{len(sweep_steps)} settings); a full run (all {sum(full_frames.values())} frames) at this "
                     f"rate: {estimate['full_run_s'] / 60:.1f} min")

    splits, arkit, sizes = {}, {}, {}
    albedo: dict[str, np.ndarray] = {}  # neutral albedo per subject, in the wrinkle maps' layout
    try:
        for split in evaluated_splits:
            methods = [textalker] if split in AUDIO_VARIANT_SPLITS else [textalker, *fixed, *learned]
            if split in args.ablation_splits:
                methods += ablation_methods
            progress.say(f"{split}: {len(selections[split])} of {len(datasets[split])} utterances, "
                         f"{total_frames[split]} frames, methods: {', '.join(m.name for m in methods)}")
            splits[split], arkit[split], sizes[split] = score_split(
                split, datasets[split], selections[split], methods, template, masks, mask_texels, albedo,
                progress, estimate_hook if not estimate else None)
        sweep = []
        if sweep_indices:
            bound = (VQReconstructionPredictor(pipe, args.data, "test-A", styles)
                     if pipe.model.config.joint_codebook_vq is None and not args.skip_vq_reconstruction else None)
            sweep = sampler_sweep(pipe, styles, datasets["test-A"], sweep_indices, sweep_steps, args.seed, masks,
                                  mask_texels, albedo, progress, reconstruction=bound)
        style_choices = dict(styles.choices)
        for info in ablation_info.values():
            info["style_choices"] = dict(info.pop("styles").choices)
    finally:
        styles.restore()
        for method in ablation_methods:
            method.predictor.styles.restore()

    from textalker_blender.core.config import MODEL_FPS

    results = {
        "command": ".venv/bin/python tools/evaluate.py " + shlex.join(argv),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "wall_s": time.perf_counter() - started,
        "estimated_s": estimate.get("seconds"),
        "estimated_full_run_s": estimate.get("full_run_s"),
        "hardware": {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                     "device": str(pipe.device), "torch": torch.__version__, "python": platform.python_version(),
                     "load_average_start": [round(x, 2) for x in load_at_start],
                     "load_average_end": [round(x, 2) for x in os.getloadavg()]},
        "dataset": {"path": str(args.data), "name": datasets["test-A"].meta.get("name"),
                    "format_version": datasets["test-A"].meta.get("format_version"),
                    "seed": datasets["test-A"].meta.get("seed"), "fingerprint": dataset_fingerprint(Path(args.data)),
                    "fps": datasets["test-A"].fps, "wrinkle_resolution": pipe.wrinkle_resolution,
                    "training_subjects": train_subjects},
        "model": {"weights": str(weights_path), "sha256": pipe.weights_sha256,
                  "manifest_sha256": manifest_sha256(weights_path), "verified": verified,
                  "preset": pipe.config.name, "trained": pipe.trained, "steps": steps,
                  "diffusion_steps": pipe.config.diffusion_steps, "model_fps": MODEL_FPS,
                  "dataset": metadata.get("dataset"), "training": metadata.get("training"),
                  "styles": len(pipe.styles), "blink_condition": bool(pipe.config.blink_condition),
                  "brow_condition": bool(pipe.config.brow_condition),
                  "lip_seal_mm": GenerationOptions().lip_seal_mm, "closure_detector": pipe.model.closure is not None},
        "seeds": {"diffusion": args.seed, "learned_baselines": args.seed},
        "splits": splits,
        "sizes": sizes,
        "style_choices": style_choices,
        "learned_missing": learned_missing,
        "arkit": arkit,
        "sweep": {"skipped": not sweep_indices, "utterances": [datasets["test-A"].entries[i]["id"] for i in sweep_indices],
                  "frames": sweep_frames, "rows": sweep},
        "ablations": {"evaluated": ablation_info, "splits": args.ablation_splits},
        "lpips": LPIPS_NOTE,
        "max_utterances": args.max_utterances,
    }
    return results


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    results = run_evaluation(args, argv)
    write_results(results, args.out)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=str, allow_nan=True) + "\n")
    print(f"wrote {args.out} in {results['wall_s'] / 60:.1f} min"
          + (f" (estimated {results['estimated_s'] / 60:.1f} min)" if results.get("estimated_s") else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

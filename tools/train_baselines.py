#!/usr/bin/env python3
"""Train the evaluation's learned baselines (FaceFormer-, CodeTalker-, FaceDiffuser-like) on the
synthetic TexTalk4D, one after another, resumably.

    python tools/train_baselines.py --data data/synthetic_textalk4d \
        --out /work/textalker_runs/baselines [--only faceformer] [--max-minutes 60] \
        [--steps N] [--threads 1]

Output (`--out`):
- `cache/`: shared inputs, computed once: `basis.safetensors` (PCA of the training offsets),
  `<split>.npz` per split (log-mel of the loudness-normalised audio and PCA coefficients per
  utterance), `key.json` (dataset fingerprint and basis settings; a mismatch rebuilds);
- `<slug>/` per baseline (`faceformer`, `codetalker`, `facediffuser`): `config.json` (sizes,
  training settings, dataset), `log.jsonl` (losses, step rates, validation), `checkpoint/`
  with `model.safetensors` (what `evaluation.baselines.load_baseline` reads),
  `optimizer.safetensors` (optimiser moments and RNG states) and `progress.json`: no pickles.
A finished baseline is skipped; an unfinished one resumes from its checkpoint (same data order and
RNG states). `--steps` changes the step budget of the selected baselines (a larger value extends
a finished run). `--max-minutes` bounds the whole command: each baseline still to train gets an
equal share of the remaining time, and a baseline stopped by the limit is resumed by the next run.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

TOOLS = Path(__file__).resolve().parent

from tools.evaluation.baselines import (  # noqa: E402
    CHECKPOINT_DIR,
    WEIGHTS_NAME,
    Baseline,
    BaselineConfig,
    MotionBasis,
    baseline_class,
    LEARNED_BASELINES,
)
from tools.training.augment import augment_log_mel  # noqa: E402
from tools.training.common import (  # noqa: E402
    Distributed,
    JsonlLog,
    StopFlag,
    dataset_fingerprint,
    set_threads,
    write_json,
)
from tools.training.data import BucketedOrder, FrameTable, open_dataset  # noqa: E402
from tools.training.loop import StageLoop, StepReport  # noqa: E402

from textalker_blender.core.audio import load_audio  # noqa: E402

CACHE_VERSION = 1
SPLITS = ("train", "test-A")

# Training settings per baseline (any key can be overridden with `settings=`; recorded in the
# run's config.json, which a resumed run uses). Step rates measured with batch 16, one thread,
# nice 15, on the shared 2-core machine while the bundled LDM trained (its log: `steps_per_s`):
# FaceFormer-like 1.3 steps/s, CodeTalker-like VQ-VAE 4.4 and predictor 1.8, FaceDiffuser-like
# 1.7-2.1 at load ~4; 3-10x slower at load 7-9 (0.3-0.6, 0.3, -, 0.11-0.13). The budgets below
# (~35 min at the first rates) are what fitted that session, not a measured optimum.
COMMON_SETTINGS: dict[str, Any] = {
    "batch_size": 16,
    "learning_rate": 5e-4,
    "min_learning_rate_fraction": 0.1,   # cosine decay to this fraction at the last step
    "warmup_steps": 100,
    "weight_decay": 0.0,
    "grad_clip": 1.0,
    "log_every": 25,
    "checkpoint_every": 200,
    "validate_every": 500,
    "validation_utterances": 16,     # test-A utterances for the validation loss
    "generation_utterances": 4,      # test-A utterances generated for the validation vertex error
    "bucket_batches": 8,
    "seed": 0,
    "augment": {"probability": 0.8},  # the bundled LDM's log-mel augmentation (training/augment.py)
}
BASELINE_SETTINGS: dict[str, dict[str, Any]] = {
    "faceformer": {"steps": 1000, "scheduled_sampling": 0.5},  # final sampling probability
    "codetalker": {"steps": 800, "vq_steps": 300, "vq_learning_rate": 1e-3, "revive_every": 50},
    "facediffuser": {"steps": 700},
}


# ---------------------------------------------------------------------------- shared inputs
def _mel_function():
    from tools.evaluation.baselines import make_audio_front_end

    front_end = make_audio_front_end(8)  # log_mel does not depend on the width

    def mel(audio: np.ndarray, rate: int) -> np.ndarray:
        return front_end.log_mel(load_audio((audio, rate)))

    return mel


def fit_basis(dataset, frames: int, max_components: int, variance: float) -> MotionBasis:
    """PCA of `frames` evenly spaced training frames' offsets (all subjects)."""
    table = FrameTable.build(dataset)
    rows = table.evenly_spaced(frames)
    offsets = []
    for utterance in np.unique(table.utterances[rows]):
        chosen = table.frames[rows][table.utterances[rows] == utterance]
        subject = dataset.entries[int(utterance)]["subject"]
        offsets.append(dataset.geometry(subject).offsets(table.weights[int(utterance)][chosen]))
    return MotionBasis.fit(np.concatenate(offsets), max_components=max_components, variance=variance)


def prepare_inputs(data_root: Path, cache: Path, log=print, basis_frames: int = 4096,
                   max_components: int = 48, variance: float = 0.999999) -> tuple[MotionBasis, list[str], dict]:
    """(basis, training subjects, {split: [item]}), item = {id, subject, mel (n_mels, M),
    coefficients (T, K) metres}. Computed once into `cache` and reused by every baseline."""
    from safetensors.torch import load_file, save_file

    key = {"version": CACHE_VERSION, "dataset": dataset_fingerprint(data_root), "basis_frames": basis_frames,
           "max_components": max_components, "variance": variance}
    key_path = cache / "key.json"
    if key_path.is_file() and json.loads(key_path.read_text()) != key:
        log(f"{cache} was made for other data or settings: rebuilding it")
        shutil.rmtree(cache)
    cache.mkdir(parents=True, exist_ok=True)
    write_json(key_path, key)
    train_set = open_dataset(data_root, "train", 64, 128)
    subjects = sorted({e["subject"] for e in train_set.entries}, key=lambda s: train_set.subjects[s].index)
    basis_path = cache / "basis.safetensors"
    if basis_path.is_file():
        tensors = load_file(str(basis_path))
        basis = MotionBasis(train_set.template.n_vertices, tensors["components"].shape[0])
        basis.load_state_dict(tensors)
    else:
        t0 = time.monotonic()
        basis = fit_basis(train_set, basis_frames, max_components, variance)
        save_file({k: v.contiguous() for k, v in basis.state_dict().items()}, str(basis_path))
        log(f"motion basis: {basis.n_components} PCA components keep {float(basis.explained_variance):.6%} "
            f"of the training offsets' variance ({time.monotonic() - t0:.1f} s)")
    mel = None
    splits = {}
    for split in SPLITS:
        path = cache / f"{split}.npz"
        try:
            dataset = train_set if split == "train" else open_dataset(data_root, split, 64, 128)
        except ValueError:
            continue
        if not path.is_file():
            mel = mel or _mel_function()
            t0 = time.monotonic()
            arrays: dict[str, np.ndarray] = {"ids": np.array(dataset.ids), "subjects": np.array([e["subject"] for e in dataset.entries])}
            for i in range(len(dataset)):
                sample = dataset.load(i)
                offsets = dataset.geometry(sample.subject).offsets(sample.weights)
                arrays[f"mel_{i}"] = mel(sample.audio, sample.sample_rate)
                arrays[f"coefficients_{i}"] = basis.coefficients(offsets).numpy().astype(np.float32)
            temporary = path.with_name(path.stem + ".tmp.npz")
            np.savez(temporary, **arrays)
            temporary.replace(path)
            log(f"cached {len(dataset)} {split} utterances ({time.monotonic() - t0:.1f} s)")
        with np.load(path, allow_pickle=False) as data:
            ids, owners = data["ids"].tolist(), data["subjects"].tolist()
            splits[split] = [{"id": ids[i], "subject": owners[i], "mel": torch.from_numpy(data[f"mel_{i}"]),
                              "coefficients": torch.from_numpy(data[f"coefficients_{i}"])} for i in range(len(ids))]
    return basis, subjects, splits


def make_batch(model: Baseline, items: list[dict], generator: torch.Generator | None = None,
               augment: dict | None = None) -> dict:
    """Padded batch of whole utterances: mels (list), motion (B, T_max, K) in the model's space,
    mask (B, T_max), lengths, subject rows (-1 for subjects not in training)."""
    lengths = [int(it["coefficients"].shape[0]) for it in items]
    t_max = max(lengths)
    k = model.basis.n_components
    motion = torch.zeros(len(items), t_max, k)
    mask = torch.zeros(len(items), t_max, dtype=torch.bool)
    for row, (it, n) in enumerate(zip(items, lengths)):
        motion[row, :n] = model.to_model_space(it["coefficients"])
        mask[row, :n] = True
    mels = [it["mel"] for it in items]
    if augment is not None and generator is not None:
        mels = [augment_log_mel(m, generator, augment) for m in mels]
    subjects = torch.tensor([model.subject_index(it["subject"]) for it in items])
    return {"mels": mels, "motion": motion, "mask": mask, "lengths": lengths, "subjects": subjects}


# ---------------------------------------------------------------------------- checkpoints
def _optimizer_tensors(optimizer: torch.optim.Optimizer, generator: torch.Generator) -> tuple[dict, dict]:
    state = optimizer.state_dict()
    tensors = {f"state.{index}.{name}": value.detach().cpu().contiguous()
               for index, entries in state["state"].items() for name, value in entries.items()
               if torch.is_tensor(value)}
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.generator"] = generator.get_state()
    return tensors, {"param_groups": json.dumps(state["param_groups"])}


def _load_optimizer(path: Path, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("state."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    groups = json.loads(meta["param_groups"])
    for group in groups:
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    torch.set_rng_state(tensors["rng.torch"])
    generator.set_state(tensors["rng.generator"])


def save_checkpoint(run: Path, model: Baseline, optimizer, generator, progress: dict, info: dict) -> None:
    """Atomic: written to checkpoint.tmp/, then renamed over checkpoint/."""
    from safetensors.torch import save_file

    temporary = run / (CHECKPOINT_DIR + ".tmp")
    if temporary.exists():
        shutil.rmtree(temporary)
    temporary.mkdir(parents=True)
    model.save(temporary / WEIGHTS_NAME, info)
    tensors, meta = _optimizer_tensors(optimizer, generator)
    save_file(tensors, str(temporary / "optimizer.safetensors"), metadata=meta)
    write_json(temporary / "progress.json", progress)
    final, old = run / CHECKPOINT_DIR, run / (CHECKPOINT_DIR + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    temporary.rename(final)
    if old.exists():
        shutil.rmtree(old)


# ---------------------------------------------------------------------------- validation
@torch.no_grad()
def validate(model: Baseline, items: list[dict], settings: dict, stage: int) -> dict:
    """Loss on fixed test-A utterances (fixed noise), and the mean vertex error (mm, all
    vertices, and max over the face's vertices per frame averaged) of generated sequences."""
    net = model.net
    net.eval()
    generator = torch.Generator().manual_seed(1234)
    chosen = items[: int(settings["validation_utterances"])]
    result: dict[str, float] = {}
    if chosen:
        batch = make_batch(model, chosen)
        losses = model_losses(model, batch, generator, stage, 0.0)
        result = {f"val_{k}": float(v) for k, v in losses.items()}
    if stage == 2 or not isinstance(model, baseline_class("codetalker")):
        errors = []
        for it in items[: int(settings["generation_utterances"])]:
            n = int(it["coefficients"].shape[0])
            generated = net.generate(it["mel"], n, model.subject_index(it["subject"]), torch.Generator().manual_seed(0),
                                     **model.generate_kwargs())
            predicted = model.basis.offsets(model.from_model_space(generated))
            truth = model.basis.offsets(it["coefficients"])
            errors.append(float((predicted - truth).norm(dim=-1).mean()) * 1000.0)
        if errors:
            result["val_generated_mve_mm"] = float(np.mean(errors))
    net.train()
    return result


def model_losses(model: Baseline, batch: dict, generator: torch.Generator, stage: int, progress: float,
                 first_step: bool = False) -> dict:
    net = model.net
    if isinstance(model, baseline_class("codetalker")):
        if stage == 1:
            return net.vq_loss(batch, generator, first_step=first_step)
        return net.predictor_loss(batch, generator)
    if isinstance(model, baseline_class("faceformer")):
        probability = float(model.settings.get("scheduled_sampling", 0.0)) * min(1.0, max(0.0, progress))
        return net.loss(batch, generator, probability)
    return net.loss(batch, generator)


# ---------------------------------------------------------------------------- training
def _learning_rate(settings: dict, step: int, first: int, last: int, base: float) -> float:
    """Linear warm-up, then cosine decay to min_learning_rate_fraction over [first, last)."""
    local = step - first
    warmup = max(1, int(settings["warmup_steps"]))
    if local < warmup:
        return base * (local + 1) / warmup
    span = max(1, last - first - warmup)
    progress = min(1.0, (local - warmup) / span)
    floor = float(settings["min_learning_rate_fraction"])
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def train_baseline(name: str, data_root: str | Path, out: str | Path, steps: int | None = None,
                   max_minutes: float | None = None, settings: dict | None = None,
                   config: BaselineConfig | dict | None = None, log=print, progress_bar: bool = True,
                   session_steps: int | None = None) -> dict:
    """Train (or resume) one baseline into `out/<slug>`; returns a summary dict. `session_steps`
    stops this session after that many steps like an interruption (the learning-rate schedule
    still spans `steps`)."""

    cls = baseline_class(name)
    out, data_root = Path(out), Path(data_root)
    run = out / cls.slug
    run.mkdir(parents=True, exist_ok=True)
    recorded_path = run / "config.json"
    progress_path = run / CHECKPOINT_DIR / "progress.json"
    if recorded_path.is_file():  # resume: the recorded sizes and settings, --steps may extend
        recorded = json.loads(recorded_path.read_text())
        model_config = BaselineConfig.from_dict(recorded["model"])
        section = recorded["training"]
        if steps is not None and int(steps) != int(section["steps"]):
            section["steps"] = int(steps)
            write_json(recorded_path, {**recorded, "training": section})
    else:
        if isinstance(config, dict):
            config = BaselineConfig.from_dict(config)
        model_config = config or BaselineConfig()
        section = {**COMMON_SETTINGS, **BASELINE_SETTINGS[cls.slug], **(settings or {})}
        if steps is not None:
            section["steps"] = int(steps)
        write_json(recorded_path, {"baseline": cls.name, "model": asdict(model_config), "training": section,
                                   "data": str(data_root.resolve()), "dataset": dataset_fingerprint(data_root)})
    total_steps = int(section["steps"])
    vq_steps = int(section.get("vq_steps", 0)) if cls.slug == "codetalker" else 0
    if cls.slug == "codetalker" and vq_steps >= total_steps:
        vq_steps = max(1, int(round(total_steps * 0.4)))  # a short budget still trains both stages
    progress = json.loads(progress_path.read_text()) if progress_path.is_file() else {"step": 0}
    if int(progress["step"]) >= total_steps:
        log(f"{cls.name}: finished ({progress['step']} steps), skipped")
        return {"baseline": cls.name, "step": int(progress["step"]), "stopped": "already finished",
                "steps_this_session": 0}

    basis, subjects, splits = prepare_inputs(data_root, out / "cache", log=log)
    train_items, val_items = splits["train"], splits.get("test-A", [])
    seed = int(section["seed"])
    torch.manual_seed(seed)
    model = cls.build(model_config, basis, subjects)
    model.settings = section
    net = model.net
    generator = torch.Generator().manual_seed(seed + 1)
    order = BucketedOrder([int(it["coefficients"].shape[0]) for it in train_items], int(section["batch_size"]),
                          1, 0, seed, int(section["bucket_batches"]))

    def make_optimizer(stage: int):
        if cls.slug == "codetalker":
            params = [p for _, p in net.stage_parameters(stage)]
            lr = float(section["vq_learning_rate"] if stage == 1 else section["learning_rate"])
        else:
            params, lr = list(net.parameters()), float(section["learning_rate"])
        return torch.optim.AdamW(params, lr=lr, weight_decay=float(section["weight_decay"])), params, lr

    step = int(progress["step"])
    stage = 1 if step < vq_steps else 2
    optimizer, params, base_lr = make_optimizer(stage)
    elapsed_before = float(progress.get("elapsed_s", 0.0))
    if step > 0:
        tensors_path = run / CHECKPOINT_DIR / WEIGHTS_NAME
        net.load_state_dict(type(model).from_file(tensors_path).net.state_dict())
        if int(progress.get("stage", stage)) == stage:
            _load_optimizer(run / CHECKPOINT_DIR / "optimizer.safetensors", optimizer, generator)
        order.load_state(progress["order"])
        log(f"{cls.name}: resuming at step {step}")
    log_file = JsonlLog(run / "log.jsonl", True, echo=log)
    n_params = sum(p.numel() for p in net.parameters())
    log_file.write({"event": "start", "step": step, "total_steps": total_steps, "vq_steps": vq_steps,
                    "parameters": n_params, "components": basis.n_components,
                    "explained_variance": float(basis.explained_variance), "train_utterances": len(train_items),
                    "subjects": subjects, "threads": torch.get_num_threads()},
                   f"{cls.name}: step {step} -> {total_steps}, {n_params / 1e6:.2f} M parameters, "
                   f"{basis.n_components} PCA components, {len(train_items)} utterances")
    started = time.monotonic()
    start_step = step

    def info(step: int) -> dict:
        return {"trained_steps": step, "total_steps": total_steps, "finished": step >= total_steps,
                "dataset": dataset_fingerprint(data_root), "stage": stage}

    def save(step: int) -> None:
        elapsed = elapsed_before + time.monotonic() - started
        save_checkpoint(run, model, optimizer, generator,
                        {"step": step, "stage": stage, "order": order.state(), "elapsed_s": elapsed,
                         "finished": step >= total_steps}, info(step))

    net.train()
    augment = section.get("augment")
    loop = StageLoop(cls.slug, section, Distributed(), log_file, StopFlag(max_minutes), total_steps, step,
                     ["loss", "reconstruction", "feature_mse", "motion_mse", "x0_mse", "perplexity", "steps_per_s"],
                     progress_bar)
    revived = 0

    def train_step(done: int) -> StepReport:
        nonlocal stage, optimizer, params, base_lr, revived
        if stage == 1 and done >= vq_steps:  # CodeTalker: stage 1 done, train the predictor
            stage = 2
            optimizer, params, base_lr = make_optimizer(stage)
            log_file.write({"event": "stage", "step": done, "stage": 2}, f"{cls.name}: VQ-VAE done, training the predictor")
        first, last = (0, vq_steps) if stage == 1 and vq_steps else (vq_steps, total_steps)
        lr = _learning_rate(section, done, first, last, base_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        items = [train_items[int(i)] for i in order.next()]
        batch = make_batch(model, items, generator, augment)
        losses = model_losses(model, batch, generator, stage, (done - first) / max(1, last - first), done == 0)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        if float(section["grad_clip"]) > 0:
            torch.nn.utils.clip_grad_norm_(params, float(section["grad_clip"]))
        optimizer.step()
        if cls.slug == "codetalker" and stage == 1 and (done + 1) % int(section["revive_every"]) == 0:
            revived += net.vqvae.quantizer.revive_dead_codes(generator=generator)
        means = {key: float(value.detach() if torch.is_tensor(value) else value) for key, value in losses.items()}
        return StepReport(means, frames=int(batch["mask"].sum()))

    def log_extra(step: int) -> dict:
        nonlocal revived
        extra = {"stage": stage, "epoch": order.epoch, "lr": optimizer.param_groups[0]["lr"]}
        if cls.slug == "codetalker" and stage == 1:
            extra["usage_perplexity"] = net.vqvae.quantizer.usage_perplexity()
            extra["revived"], revived = revived, 0
        return extra

    def validate_baseline(step: int) -> dict | None:
        if not val_items:
            return None
        rng = torch.get_rng_state()
        metrics = validate(model, val_items, section, stage)
        torch.set_rng_state(rng)
        return {"stage": stage, **metrics}

    def session_limit(step: int) -> str | None:
        if session_steps is not None and step - start_step >= session_steps:
            return "session steps reached"
        return None

    reason = loop.run(train_step, save, validate_baseline, log_extra,
                      postfix=lambda r: {"loss": f"{r['loss']:.4f}"}, stop_check=session_limit,
                      also_validate_at=frozenset({vq_steps}) if cls.slug == "codetalker" else frozenset())
    step = loop.step
    save(step)
    seconds = time.monotonic() - started
    summary = {"baseline": cls.name, "step": step, "stopped": reason, "steps_this_session": step - start_step,
               "seconds_this_session": seconds,
               "steps_per_s": (step - start_step) / max(seconds, 1e-9)}
    log_file.write({"event": "stop", **summary}, f"{cls.name}: stopped at step {step} ({reason}); "
                   f"{summary['steps_per_s']:.2f} steps/s this session; checkpoint in {run / CHECKPOINT_DIR}")
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/synthetic_textalk4d", help="built dataset folder")
    parser.add_argument("--out", default="/work/textalker_runs/baselines", help="baselines folder")
    parser.add_argument("--only", action="append", help="baseline name or slug (repeatable); default: all three")
    parser.add_argument("--max-minutes", type=float, default=None, help="time limit of the whole command")
    parser.add_argument("--steps", type=int, default=None, help="step budget of each selected baseline")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    names = [baseline_class(n).name for n in args.only] if args.only else list(LEARNED_BASELINES)
    deadline = time.monotonic() + args.max_minutes * 60 if args.max_minutes else None
    for position, name in enumerate(names):
        share = None
        if deadline is not None:
            remaining = (deadline - time.monotonic()) / 60
            if remaining <= 0.05:
                print(f"time limit reached before {name}; run again to continue")
                break
            share = remaining / (len(names) - position)
        summary = train_baseline(name, args.data, args.out, steps=args.steps, max_minutes=share,
                                 progress_bar=not args.no_progress)
        if summary["stopped"] in ("SIGTERM", "SIGINT"):
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

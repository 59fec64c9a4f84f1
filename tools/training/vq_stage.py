"""Stage 1: train one VQ autoencoder (motion or wrinkle maps) on the train split's frames.

Run folder (`--run RUN`):
- `config.json`: the resolved config (model + stage sections) and which map kind;
- `stats.json`: per-channel min/max of the training maps (computed once, then reused);
- `checkpoint/vq.safetensors`: the autoencoder (incl. normalisation buffers and codebook usage);
  `checkpoint/discriminator.safetensors`; `checkpoint/state.pt` (optimisers, RNG), progress.json;
- `log.jsonl`: one line per logged step (losses, perplexity, dead and revived codes, frames/s) and
  per validation (reconstruction error on test-A frames in physical units).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from textalker_blender.core.wrinkle_channels import fold_from_channels, ratio_from_channels

from .common import (
    Distributed,
    JsonlLog,
    RunFolder,
    StopFlag,
    TrainingConfig,
    save_on_main,
    restore_rng,
    write_json,
)
from .artefacts import DISCRIMINATOR_WEIGHTS, VQ_WEIGHTS, vq_config_for, write_vq_weights
from .data import EpochOrder, FrameTable, check_wrinkle_encoding, open_dataset, render_frames, validation_frames
from .loop import StageLoop, StepReport
from .joint_maps import joint_reconstruction_errors, render_joint_frames
from .vq_losses import VQLosses

from textalker_blender.core.vq import VQAutoencoder  # noqa: E402



VQ_KINDS = ("motion", "wrinkle", "joint")  # "joint": the joint-codebook ablation (training/ablations.py)


def render_maps(dataset, kind: str, utterances: np.ndarray, frames: np.ndarray, weights) -> np.ndarray:
    """`data.render_frames`, plus kind "joint" (both maps as one 6-channel map)."""
    if kind == "joint":

        return render_joint_frames(dataset, utterances, frames, weights)
    return render_frames(dataset, kind, utterances, frames, weights)


def compute_stats(dataset, table: FrameTable, kind: str, count: int, margin: float) -> dict:
    """Per-channel min/max over `count` evenly spaced training frames, widened by `margin` of the
    range on each side (the sample does not contain every frame's extremes). Also a texel mask:
    texels that differ from the neutral value in any sampled frame (for validation errors)."""
    rows = table.evenly_spaced(count)
    lo = hi = None
    active = None
    for start in range(0, len(rows), 256):
        part = rows[start : start + 256]
        maps = render_maps(dataset, kind, table.utterances[part], table.frames[part], table.weights)
        batch_lo, batch_hi = maps.min(axis=(0, 1, 2)), maps.max(axis=(0, 1, 2))
        lo = batch_lo if lo is None else np.minimum(lo, batch_lo)
        hi = batch_hi if hi is None else np.maximum(hi, batch_hi)
        moving = np.abs(maps).max(axis=(0, 3)) > 0  # neutral: 0 m, log ratio 0
        active = moving if active is None else active | moving
    span = np.maximum(hi - lo, 1e-6)
    return {
        "kind": kind,
        "frames": int(len(rows)),
        "min": (lo - margin * span).tolist(),
        "max": (hi + margin * span).tolist(),
        "sample_min": lo.tolist(),
        "sample_max": hi.tolist(),
        "active_texels": int(active.sum()),
        "active_mask_rle": _mask_to_list(active),
    }


def _mask_to_list(mask: np.ndarray) -> dict:
    return {"shape": list(mask.shape), "indices": np.flatnonzero(mask).tolist()}


def _mask_from_list(data: dict) -> np.ndarray:
    mask = np.zeros(int(np.prod(data["shape"])), bool)
    mask[np.asarray(data["indices"], np.int64)] = True
    return mask.reshape(data["shape"])


@torch.no_grad()
def reconstruction_errors(vq: VQAutoencoder, kind: str, maps: np.ndarray, mask: np.ndarray, batch: int = 64) -> dict:
    """Validation in physical units: motion MAE/max in mm over the active texels; wrinkle albedo
    ratio MAE over the active texels and PSNR of the ratio maps (peak 1.0) over all texels, and
    the fold activation's MAE over the active texels."""
    if kind == "joint":

        return joint_reconstruction_errors(vq, maps, mask, batch)
    vq.eval()
    abs_sum = 0.0
    sq_sum_all = 0.0
    max_err = 0.0
    count_active = 0
    count_all = 0
    fold_abs_sum = 0.0
    device = vq.map_offset.device
    for start in range(0, len(maps), batch):
        target = torch.from_numpy(maps[start : start + batch].astype(np.float32)).to(device)
        recon = vq.decode(vq.encode(target))
        if kind == "wrinkle":
            truth, decoded = target.cpu().numpy(), recon.cpu().numpy()
            fold_abs_sum += float(np.abs(fold_from_channels(decoded) - fold_from_channels(truth))[:, mask].sum())
            error = ratio_from_channels(decoded) - ratio_from_channels(truth)  # ratio units
        else:
            error = (recon - target).cpu().numpy()
        active = error[:, mask]  # (B, n_active, 3)
        abs_sum += float(np.abs(active).sum())
        count_active += active.size
        max_err = max(max_err, float(np.abs(active).max(initial=0.0)))
        sq_sum_all += float((error**2).sum())
        count_all += error.size
    vq.train()
    mae = abs_sum / max(count_active, 1)
    if kind == "motion":
        return {"val_mae_mm": mae * 1000.0, "val_max_mm": max_err * 1000.0}
    mse = sq_sum_all / max(count_all, 1)
    return {
        "val_ratio_mae": mae,
        "val_ratio_max": max_err,
        "val_psnr_db": 10.0 * math.log10(1.0 / max(mse, 1e-20)),
        "val_fold_mae": fold_abs_sum / max(count_active // 3, 1),
    }


def vq_step(vq, losses, maps_normalized, opt, opt_d, step, dist: Distributed) -> dict:
    """`vq_losses.training_step` with the rank gradient averaging between backward and step."""
    vq.train()
    out = losses(vq, maps_normalized, None, step)
    opt.zero_grad(set_to_none=True)
    out.generator_total.backward()
    dist.average_gradients(vq.parameters())
    opt.step()
    if out.discriminator_total is not None and opt_d is not None:
        opt_d.zero_grad(set_to_none=True)
        out.discriminator_total.backward()
        dist.average_gradients(losses.discriminator.parameters())
        opt_d.step()
    # Codebook usage is an EMA buffer updated from each rank's own batch: keep ranks identical.
    dist.average_(vq.quantizer.usage)
    return out.logs


def train_vq(
    config: TrainingConfig,
    data_root: str | Path,
    run_path: str | Path,
    kind: str,
    dist: Distributed,
    steps: int | None = None,
    max_minutes: float | None = None,
    progress_bar: bool = True,
) -> dict:
    """Train (or resume) one VQ; returns a summary dict. Stops at `steps` total steps, on
    SIGTERM/SIGINT or after `max_minutes`, always writing a checkpoint first."""
    from tqdm import tqdm

    if kind not in VQ_KINDS:
        raise ValueError(f"kind must be one of {VQ_KINDS}")
    run = RunFolder(run_path)
    if dist.is_main:
        config = run.prepare(config, {"stage": "vq", "kind": kind, "data": str(Path(data_root).resolve())})
    dist.barrier()
    if not dist.is_main:
        config = run.prepare(config, {})
    recorded_kind = run.read_recorded().get("kind")
    if recorded_kind and recorded_kind != kind:
        raise ValueError(f"{run.path} trains the {recorded_kind} VQ, not {kind}")
    section = config.vq
    total_steps = int(steps if steps is not None else section["steps"])
    vq_config = vq_config_for(config, kind)
    check_wrinkle_encoding(config.model)
    seed = int(section["seed"])

    train_set = open_dataset(data_root, "train", config.model.motion_vq.resolution, config.model.wrinkle_vq.resolution)
    table = FrameTable.build(train_set)

    stats_path = run.path / "stats.json"
    if stats_path.is_file():
        stats = json.loads(stats_path.read_text())
    else:
        stats = compute_stats(train_set, table, kind, int(section["stats_frames"]), float(section["stats_margin"]))
        if dist.is_main:
            write_json(stats_path, stats)
    active_mask = _mask_from_list(stats["active_mask_rle"])

    torch.manual_seed(seed)  # same initial weights on every rank
    vq = VQAutoencoder(vq_config).to(dist.device)
    vq.set_normalization_from_minmax(stats["min"], stats["max"])
    losses = VQLosses(vq_config).to(dist.device)
    opt = torch.optim.Adam(vq.parameters(), lr=float(section["learning_rate"]), betas=(0.5, 0.9))
    opt_d = (
        torch.optim.Adam(losses.discriminator.parameters(), lr=float(section["discriminator_learning_rate"]), betas=(0.5, 0.9))
        if losses.discriminator is not None
        else None
    )
    generator = torch.Generator().manual_seed(seed + 1)
    order = EpochOrder(len(table), int(section["batch_size"]), dist.world_size, dist.rank, seed)
    step = 0
    elapsed_before = 0.0
    if run.has_checkpoint():
        vq.load_state_dict(load_file(str(run.checkpoint / VQ_WEIGHTS), device=str(dist.device)))
        if losses.discriminator is not None:
            losses.discriminator.load_state_dict(load_file(str(run.checkpoint / DISCRIMINATOR_WEIGHTS), device=str(dist.device)))
        state, progress = run.load_state()
        opt.load_state_dict(state["optimizer"])
        if opt_d is not None:
            opt_d.load_state_dict(state["optimizer_discriminator"])
        rank_rng = state["rng"][min(dist.rank, len(state["rng"]) - 1)]
        restore_rng(rank_rng, generator)
        order.load_state(progress["order"])
        step = int(progress["step"])
        elapsed_before = float(progress.get("elapsed_s", 0.0))
        if int(progress.get("world_size", 1)) != dist.world_size and dist.is_main:
            # The data position counts global batches (batch_size x processes): the run goes on
            # correctly, but not bit-identically to an uninterrupted run.
            print(f"note: checkpoint written by {progress.get('world_size')} process(es), resumed with {dist.world_size}")

    # Validation frames: evenly spaced test-A frames, rendered once.
    def render_validation(dataset, utterances, frames, weights):
        return render_maps(dataset, kind, utterances, frames, weights).astype(np.float16)

    validation_maps = (validation_frames(data_root, config, int(section["validation_frames"]), render_validation)
                       if dist.is_main else None)

    log = JsonlLog(run.path / "log.jsonl", dist.is_main, echo=tqdm.write)
    started = time.monotonic()
    loop = StageLoop(f"VQ {kind}", section, dist, log, StopFlag(max_minutes), total_steps, step,
                     ["reconstruction", "perceptual", "adversarial", "perplexity", "usage_perplexity", "dead_codes",
                      "revived", "steps_per_s", "frames_per_s"], progress_bar)
    log.write({"event": "start", "step": step, "world_size": dist.world_size, "kind": kind, "total_steps": total_steps},
              f"VQ {kind}: step {step} -> {total_steps}, {dist.world_size} process(es), {len(table)} training frames")
    revive_every = int(section["revive_every"])
    revived_total = 0

    def save(step: int) -> None:
        def writer(folder: Path) -> None:
            write_vq_weights(folder, vq, {"kind": kind})
            if losses.discriminator is not None:
                save_file({k: v.detach().cpu().contiguous() for k, v in losses.discriminator.state_dict().items()}, str(folder / DISCRIMINATOR_WEIGHTS))

        def write(rng_states) -> None:
            state = {"optimizer": opt.state_dict(), "rng": rng_states}
            if opt_d is not None:
                state["optimizer_discriminator"] = opt_d.state_dict()
            progress = {"step": step, "order": order.state(), "elapsed_s": elapsed_before + time.monotonic() - started, "kind": kind, "world_size": dist.world_size}
            run.save_checkpoint({}, writer, state, progress)

        save_on_main(dist, generator, write)

    def train_step(done: int) -> StepReport:
        nonlocal revived_total
        t0 = time.monotonic()
        indices = order.next()
        maps = render_maps(train_set, kind, table.utterances[indices], table.frames[indices], table.weights)
        batch = vq.normalize(torch.from_numpy(maps).to(dist.device))
        data_seconds = time.monotonic() - t0
        logs = vq_step(vq, losses, batch, opt, opt_d, done, dist)
        revived = 0
        if revive_every > 0 and (done + 1) % revive_every == 0:
            if dist.is_main:
                revived = vq.quantizer.revive_dead_codes(generator=generator)
            dist.broadcast_(vq.quantizer.codebook.weight.data)
            dist.broadcast_(vq.quantizer.usage)
            revived_total += revived
        return StepReport({k: float(v) for k, v in logs.items()}, {"revived": revived},
                          len(indices) * dist.world_size, data_seconds)

    def validate(step: int) -> dict | None:
        return None if validation_maps is None else reconstruction_errors(vq, kind, validation_maps, active_mask)

    reason = loop.run(train_step, save, validate, log_extra=lambda step: {"epoch": order.epoch},
                      postfix=lambda r: {"rec": f"{r.get('reconstruction', 0):.4f}", "ppl": f"{r.get('usage_perplexity', 0):.0f}",
                                         "dead": str(int(r.get("dead_codes", 0)))})
    step = loop.step
    ranks_in_sync = dist.in_sync(list(vq.parameters()) + [vq.quantizer.usage] + list(losses.parameters()))
    loop.final_save(run, save)
    summary = {
        "kind": kind,
        "step": step,
        "stopped": reason,
        "ranks_in_sync": ranks_in_sync,
        "steps_this_session": loop.steps_this_session,
        "seconds_this_session": time.monotonic() - started,
        "revived_this_session": revived_total,
    }
    log.write({"event": "stop", **summary}, f"VQ {kind}: stopped at step {step} ({reason}); checkpoint in {run.checkpoint}")
    return summary

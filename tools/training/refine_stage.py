"""Stage 1b: refine the motion VQ for vertex accuracy (by default the decoder alone).

Stage 1 trains the motion autoencoder with an L1 loss over all texels of the normalised map, so
every texel counts the same: the lips, whose error LVE measures as a per-frame maximum, get no
more weight than the cheeks, and the map-space error says nothing about how the vertices read
from it. This stage fine-tunes only the decoder on what the add-on finally outputs: the vertex
offsets sampled from the decoded map with the template's own UV sampler, with an L1 loss in
millimetres weighted up on the lips and the upper face, plus stage 1's map loss so the map stays
a good map. The encoder, the codebook and the normalisation are left bit-identical, so the codes
the latent diffusion model learned (stage 2) keep their meaning: the refined decoder can be
swapped into a bundle at export (`tools/export_bundle.py --motion-decoder RUN`) without
retraining stage 2, and stage 2's latent cache stays valid.

With `refine.train_encoder` the encoder and the codebook learn too (codebook and commitment
losses and dead-code revival as in stage 1), and `refine.oversample_units` fills a fraction of
every batch with frames where those units are active. This is for what the decoder alone cannot
fix: stage 1's encoder does not encode blinks at all (they close the eyelids on ~3 % of the
synthetic frames, and a map L1 over all texels barely notices them), so no decoder can bring them
back. The codes change, so stage 2 must then be trained on this run (`train_ldm.py --motion-vq
RUN`: the run folder is also a motion VQ run), not swapped in at export.

Run folder (`--run RUN`): `config.json` (resolved config, the source motion VQ run and its
SHA-256), `checkpoint/vq.safetensors` (the whole motion VQ with the refined decoder),
`checkpoint/state.pt` (optimiser, RNG), `progress.json`, and `log.jsonl` (losses per logged step;
per validation the vertex errors on test-A frames: mean face error, mean per-frame maximum
squared lip error, mean upper-face error).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from .common import (
    Distributed,
    JsonlLog,
    RunFolder,
    StopFlag,
    TrainingConfig,
    format_metrics,
    save_on_main,
    learning_rate_factor,
    restore_rng,
)
from .data import EpochOrder, FrameTable, open_dataset, render_batch, to_physical, validation_frames
from .loop import StageLoop, StepReport
from .artefacts import VQ_WEIGHTS, load_trained_vq, same_codes, write_vq_weights

from textalker_blender.core.vq import VQAutoencoder  # noqa: E402
from textalker_blender.core.weights import sha256_file  # noqa: E402

@dataclasses.dataclass
class VertexLoss:
    """Weighted L1 of vertex offsets in millimetres; the weights sum to 1 over the vertices."""

    sampler: object  # core.uv.UVSampler of the motion maps at the template's vertices
    movable: np.ndarray  # (V,) bool: vertices on moving triangles (the rest are held at zero)
    weights: torch.Tensor  # (V,)

    @classmethod
    def for_template(cls, template, resolution: int, lip_weight: float, upper_face_weight: float) -> VertexLoss:
        movable = np.asarray(template.motion_vertices, bool)
        weights = np.zeros(template.n_vertices, np.float32)
        weights[np.asarray(template.face_mask, bool) & movable] = 1.0
        weights[np.asarray(template.upper_face_mask, bool) & movable] = upper_face_weight
        weights[np.asarray(template.lip_mask, bool) & movable] = lip_weight
        return cls(template.uv_sampler(resolution), movable, torch.from_numpy(weights / weights.sum()))

    def vertices(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) physical motion maps -> (B, V, 3) offsets, zero where nothing moves."""
        offsets = self.sampler.sample(maps)
        return offsets * torch.from_numpy(self.movable).to(offsets.dtype).to(offsets.device)[:, None]

    def __call__(self, maps: torch.Tensor, truth_offsets: torch.Tensor) -> torch.Tensor:
        error_mm = (self.vertices(maps) - truth_offsets).norm(dim=-1) * 1000.0
        return (error_mm * self.weights.to(error_mm.device)).sum(dim=-1).mean()


def oversampling_rows(dataset, table: FrameTable, section: dict) -> np.ndarray:
    """Rows of `table` whose frame has one of `section["oversample_units"]` above the threshold."""
    names = list(section["oversample_units"])
    unknown = [name for name in names if name not in dataset.unit_names]
    if unknown:  # checked even while the fraction is 0, so a typo shows before it matters
        raise ValueError(f"refine.oversample_units: unknown face units {unknown}")
    if not names or float(section["oversample_fraction"]) <= 0:
        return np.zeros(0, np.int64)
    columns = [dataset.unit_names.index(name) for name in names]
    threshold = float(section["oversample_threshold"])
    active = np.array([table.weights[int(u)][int(f)][columns].max() > threshold
                       for u, f in zip(table.utterances, table.frames)], bool)
    rows = np.nonzero(active)[0]
    if not len(rows):
        raise ValueError(f"refine.oversample_units {names}: no training frame exceeds {threshold}")
    return rows


def batch_indices(order: EpochOrder, rare_rows: np.ndarray, rare_per_batch: int,
                  generator: torch.Generator) -> np.ndarray:
    """This rank's rows of the frame table for the next step: the epoch order's next batch with
    its first `rare_per_batch` rows replaced by rows of `rare_rows` (`oversampling_rows`), drawn
    with replacement with `generator` (the checkpointed one, so a resumed run draws the same
    frames). With `rare_per_batch` 0 the generator is not touched."""
    indices = np.asarray(order.next())
    if not rare_per_batch:
        return indices
    picks = torch.randint(len(rare_rows), (min(rare_per_batch, len(indices)),), generator=generator).numpy()
    indices = indices.copy()
    indices[: len(picks)] = rare_rows[picks]
    return indices


def render_offsets_and_maps(dataset, utterances: np.ndarray, frames: np.ndarray, weights) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth vertex offsets (B, V, 3) and motion maps (B, H, W, 3), metres, batch order."""
    offsets, motion, _ = render_batch(dataset, utterances, frames, weights)
    return offsets, to_physical("motion", motion)


@torch.no_grad()
def vertex_errors(vq: VQAutoencoder, loss: VertexLoss, template, maps: np.ndarray, offsets: np.ndarray,
                  batch: int = 64) -> dict:
    """Validation in vertex space: mean face error (mm), mean over frames of the maximum squared
    lip error (mm^2, LVE's per-frame term) and mean upper-face error (mm)."""
    was_training = vq.training
    vq.eval()
    face = np.asarray(template.face_mask, bool)
    lips = np.asarray(template.lip_mask, bool)
    upper = np.asarray(template.upper_face_mask, bool)
    sums = {"val_face_mm": 0.0, "val_lip_max_sq_mm2": 0.0, "val_upper_face_mm": 0.0}
    for start in range(0, len(maps), batch):
        target = torch.from_numpy(maps[start : start + batch]).to(vq.map_offset.device)
        decoded = loss.vertices(vq.decode(vq.encode(target))).cpu().numpy()
        error = np.linalg.norm(decoded - offsets[start : start + batch], axis=-1) * 1000.0
        sums["val_face_mm"] += float(error[:, face].mean(axis=1).sum())
        sums["val_lip_max_sq_mm2"] += float((error[:, lips] ** 2).max(axis=1).sum())
        sums["val_upper_face_mm"] += float(error[:, upper].mean(axis=1).sum())
    vq.train(was_training)
    return {key: value / max(len(maps), 1) for key, value in sums.items()}


def refine_motion_decoder(
    config: TrainingConfig,
    data_root: str | Path,
    run_path: str | Path,
    motion_run: str | Path,
    dist: Distributed,
    steps: int | None = None,
    max_minutes: float | None = None,
    progress_bar: bool = True,
) -> dict:
    """Refine (or resume refining) the decoder of the motion VQ in `motion_run`; returns a
    summary dict. Stops at `steps` total steps, on SIGTERM/SIGINT or after `max_minutes`, always
    writing a checkpoint first."""
    from tqdm import tqdm

    motion_run = Path(motion_run)
    source_vq, source_info = load_trained_vq(motion_run, dist.device)
    if source_info["kind"] != "motion":
        raise ValueError(f"{motion_run} trains the {source_info['kind']} VQ; the refinement is for the motion VQ")
    source_sha = sha256_file(motion_run / "checkpoint" / VQ_WEIGHTS)
    run = RunFolder(run_path)
    # "kind": a refinement run is also a motion VQ run (load_trained_vq), which stage 2 trains on
    # when the encoder was refined too.
    extra = {"stage": "refine", "kind": "motion", "data": str(Path(data_root).resolve()),
             "motion_vq_run": str(motion_run.resolve()), "motion_vq_sha256": source_sha,
             "motion_vq_step": source_info["step"]}
    if dist.is_main:
        # The run refines the motion VQ it started from: its model config is that VQ's.
        config = dataclasses.replace(config, model=source_info["config"].model)
        config = run.prepare(config, extra)
    dist.barrier()
    if not dist.is_main:
        config = run.prepare(config, {})
    recorded = run.read_recorded()
    if recorded.get("motion_vq_sha256") not in (None, source_sha):
        raise ValueError(f"{run.path} refines another motion VQ checkpoint than {motion_run} holds now "
                         "(its SHA-256 changed); use a new run folder")
    section = config.refine
    total_steps = int(steps if steps is not None else section["steps"])
    seed = int(section["seed"])

    train_set = open_dataset(data_root, "train", config.model.motion_vq.resolution, config.model.wrinkle_vq.resolution)
    template = train_set.template
    table = FrameTable.build(train_set)
    vertex_loss = VertexLoss.for_template(template, config.model.motion_vq.resolution,
                                          float(section["lip_weight"]), float(section["upper_face_weight"]))

    train_encoder = bool(section["train_encoder"])
    rare_rows = oversampling_rows(train_set, table, section)
    rare_per_batch = int(round(float(section["oversample_fraction"]) * int(section["batch_size"]))) if len(rare_rows) else 0
    vq = source_vq
    for name, parameter in vq.named_parameters():
        parameter.requires_grad_(train_encoder or name.startswith("decoder."))
    trained_parameters = [parameter for parameter in vq.parameters() if parameter.requires_grad]
    base_learning_rate = float(section["learning_rate"])
    learning_rate = learning_rate_factor(1, section["lr_decay"], total_steps)
    opt = torch.optim.Adam(trained_parameters, lr=base_learning_rate, betas=(0.5, 0.9))
    generator = torch.Generator().manual_seed(seed + 1)
    order = EpochOrder(len(table), int(section["batch_size"]), dist.world_size, dist.rank, seed)
    step = 0
    elapsed_before = 0.0
    if run.has_checkpoint():
        refined = load_file(str(run.checkpoint / VQ_WEIGHTS), device=str(dist.device))
        vq.load_state_dict(refined)
        state, progress = run.load_state()
        opt.load_state_dict(state["optimizer"])
        restore_rng(state["rng"][min(dist.rank, len(state["rng"]) - 1)], generator)
        order.load_state(progress["order"])
        step = int(progress["step"])
        elapsed_before = float(progress.get("elapsed_s", 0.0))
    reference = load_trained_vq(motion_run, "cpu")[0]
    if not train_encoder and not same_codes(reference, vq):
        raise ValueError(f"{run.path}: the checkpoint's encoder/codebook differ from {motion_run}'s")

    validation = (validation_frames(data_root, config, int(section["validation_frames"]), render_offsets_and_maps)
                  if dist.is_main else None)

    log = JsonlLog(run.path / "log.jsonl", dist.is_main, echo=tqdm.write)
    started = time.monotonic()
    loop = StageLoop("refine motion decoder", section, dist, log, StopFlag(max_minutes), total_steps, step,
                     ["vertex_mm", "map_l1", "perplexity", "dead_codes", "revived", "steps_per_s"], progress_bar)
    what = "motion VQ (encoder, codebook, decoder)" if train_encoder else "motion decoder"
    log.write({"event": "start", "step": step, "world_size": dist.world_size, "total_steps": total_steps,
               "train_encoder": train_encoder, "oversampled_frames": int(len(rare_rows)), "oversampled_per_batch": rare_per_batch},
              f"refine {what}: step {step} -> {total_steps}, {dist.world_size} process(es), {len(table)} training frames"
              + (f", {rare_per_batch} of every {section['batch_size']} from the {len(rare_rows)} frames with {'/'.join(section['oversample_units'])}" if rare_per_batch else ""))
    if validation is not None and step == 0:
        errors = vertex_errors(vq, vertex_loss, template, validation[1], validation[0])
        log.write({"event": "validation", "step": 0, **errors}, "step 0  validation (stage 1 decoder)  " + format_metrics(errors, list(errors)))
    map_weight = float(section["map_weight"])
    revive_every = int(section["revive_every"])

    def save(step: int) -> None:
        def writer(folder: Path) -> None:
            write_vq_weights(folder, vq, {"kind": "motion", "refined_from": source_sha,
                                          "refined_encoder": "true" if train_encoder else "false"})

        def write(rng_states) -> None:
            progress = {"step": step, "order": order.state(), "elapsed_s": elapsed_before + time.monotonic() - started,
                        "world_size": dist.world_size}
            run.save_checkpoint({}, writer, {"optimizer": opt.state_dict(), "rng": rng_states}, progress)

        save_on_main(dist, generator, write)

    def train_mode() -> None:
        vq.train()
        if not train_encoder:
            vq.encoder.eval()  # frozen: no normalisation statistics may drift
            vq.quantizer.eval()  # and no codebook-usage update (revival bookkeeping of stage 1)

    def train_step(done: int) -> StepReport:
        indices = batch_indices(order, rare_rows, rare_per_batch, generator)
        offsets, maps = render_offsets_and_maps(train_set, table.utterances[indices], table.frames[indices], table.weights)
        maps_t = torch.from_numpy(maps).to(dist.device)
        with torch.set_grad_enabled(train_encoder):
            quantized = vq.quantizer(vq.encoder(vq.normalize(maps_t)))
        decoded_normalized = vq.decoder(quantized.quantized)
        vertex = vertex_loss(vq.denormalize(decoded_normalized), torch.from_numpy(offsets).to(dist.device))
        map_l1 = (decoded_normalized - vq.normalize(maps_t)).abs().mean()
        loss = vertex + map_weight * map_l1
        if train_encoder:
            vq_config = vq.config
            loss = loss + float(vq_config.codebook_weight) * quantized.codebook_loss \
                + float(vq_config.commitment_beta) * quantized.commitment_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        dist.average_gradients(trained_parameters)
        # Set from the config every step (not restored with the optimiser state), so the
        # schedule of a resumed run is the config's.
        for group in opt.param_groups:
            group["lr"] = base_learning_rate * learning_rate(done)
        opt.step()
        sums = {}
        if train_encoder and revive_every > 0 and (done + 1) % revive_every == 0:
            # Every rank revives from its own batch; rank 0's codebook is what gets saved
            # (stage 1 does the same).
            sums["revived"] = vq.quantizer.revive_dead_codes(generator=generator)
        means = {"vertex_mm": vertex.item(), "map_l1": map_l1.item()}
        if train_encoder:
            means["perplexity"] = float(quantized.perplexity)
        return StepReport(means, sums)

    def log_extra(step: int) -> dict:
        extra = {"epoch": order.epoch, "lr": opt.param_groups[0]["lr"]}
        if train_encoder:
            extra["dead_codes"] = int(vq.quantizer.dead_codes().sum())
        return extra

    def validate(step: int) -> dict | None:
        if validation is None:
            return None
        errors = vertex_errors(vq, vertex_loss, template, validation[1], validation[0])
        train_mode()
        return errors

    train_mode()
    reason = loop.run(train_step, save, validate, log_extra, postfix=lambda r: {"vertex": f"{r['vertex_mm']:.3f}"})
    step = loop.step
    loop.final_save(run, save)
    summary = {"step": step, "stopped": reason, "steps_this_session": loop.steps_this_session,
               "seconds_this_session": time.monotonic() - started}
    log.write({"event": "stop", **summary}, f"refine {what}: stopped at step {step} ({reason}); checkpoint in {run.checkpoint}")
    return summary

"""Stage 2: train the audio front end + latent denoiser on the frozen VQs' latents.

Run folder (`--run RUN`):
- `config.json`: resolved config; the VQ configs are taken from the VQ runs;
- `cache/train/*.npz`, `cache/test-A/*.npz`: per utterance the motion and wrinkle latents of
  every frame (frozen VQ encoders) and the audio input (log-mel of the loudness-normalised audio,
  or HuBERT features), computed once; `cache/vq.json` records which VQ checkpoints made them;
- `pivots.safetensors` (+ names in `pivots.json`): per-subject mean latents (style pivots);
- `checkpoint/model.safetensors`: the whole model in the bundle format (core.weights; trained=false
  until exported), `checkpoint/ema.safetensors` the same with EMA weights, `state.pt`, progress;
- `log.jsonl`: loss per logged step; validation loss on test-A windows and the window-border
  discontinuity of sampled sequences (`core.sampling.border_discontinuity`, 1.0 = seamless).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from .common import (
    Distributed,
    JsonlLog,
    RunFolder,
    StopFlag,
    TrainingConfig,
    dataset_fingerprint,
    save_on_main,
    learning_rate_factor,
    restore_rng,
    write_json,
)
from .augment import augment_log_mel
from .loop import StageLoop, StepReport
from .losses import ldm_loss
from .pauses import add_pauses, over_telephone
from .lip_closure import (
    LipGapReader,
    closures_hit,
    encode_telephone_split,
    ground_truth_gap_mm,
    lip_closure_applies,
    lip_closure_loss,
    lip_closure_settings,
)
from .data import BucketedOrder, check_wrinkle_encoding, open_dataset, to_physical
from .artefacts import EMA_WEIGHTS, MODEL_WEIGHTS, latent_cache_key, load_trained_vq
from .joint_maps import encode_joint_latents

from textalker_blender.core.audio import load_audio  # noqa: E402
from textalker_blender.core.blinks import blink_statistics, eyelid_closure  # noqa: E402
from textalker_blender.core.brows import brow_activity, brow_statistics  # noqa: E402
from textalker_blender.core.config import MODEL_FPS  # noqa: E402
from textalker_blender.core.features import audio_encoder_class, build_audio_encoder  # noqa: E402
from textalker_blender.core.sampling import border_discontinuity, sample_sequence  # noqa: E402
from textalker_blender.core.model import TexTalkerModel  # noqa: E402
from textalker_blender.core.style import StylePivots  # noqa: E402
from textalker_blender.core.weights import load_weights, save_weights, sha256_file  # noqa: E402

# Parameters a warm start may lack (see initialise_from).
BLINK_PARAMETER_PREFIXES = ("denoiser.blink_proj.", "denoiser.blink_out.")
BROW_PARAMETER_PREFIXES = ("denoiser.brow_proj.", "denoiser.brow_out.")
# A face unit whose estimated weight varies less than this over the training frames is not held
# fixed when the brow direction is fitted (`fit_brow_direction`).
MOVED_UNIT_STD = 0.05


# ---------------------------------------------------------------------------- style names
def describe_subject(subject) -> str:
    """A readable style name from the synthetic subject's parameters, e.g.
    'Brisk articulator, deep forehead creases (flite:kal, en, S03)'."""
    speaking = subject.speaking
    if speaking.articulation >= 1.07:
        manner = "Brisk articulator"
    elif speaking.articulation <= 0.93:
        manner = "Relaxed articulator"
    else:
        manner = "Even articulator"
    if speaking.jaw_gain >= 1.15:
        manner += ", wide jaw"
    elif speaking.smile_bias >= 0.2:
        manner += ", smiling"
    wrinkle = subject.wrinkle
    families = {k: v for k, v in wrinkle.family_depth.items() if v > 0}
    strongest = max(families, key=families.get).replace("_", " ") if families else "no"
    depth = "deep" if wrinkle.age >= 0.7 else ("fine" if wrinkle.age <= 0.4 else "medium")
    # Engine, voice and language name the voice in any language ("flite:kal, en",
    # "espeak:es+f3, es"); flite's "16" marks only the 16 kHz build of kal.
    voice = subject.voice
    name = voice.voice[:-2] if voice.engine == "flite" and voice.voice.endswith("16") else voice.voice
    inside = f"{voice.engine}:{name}, {voice.language}, {subject.name}"
    return f"{manner}, {depth} {strongest} creases ({inside})"


# ---------------------------------------------------------------------------- latent cache
@torch.inference_mode()
def encode_split(dataset, motion_vq, wrinkle_vq, folder: Path, audio_fn, dist: Distributed,
                 batch: int, log=print, should_stop=lambda: None) -> None:
    """Write `folder/<id>.npz` (z_motion, z_wrinkle, audio) for this rank's share of the split's
    utterances; existing files are kept, so an interrupted encoding resumes. Returns early when
    `should_stop()` says so (signal or time limit)."""
    folder.mkdir(parents=True, exist_ok=True)
    # Channels-last convolutions: ~25 % less CPU per encoded frame (measured 10 -> 7.6 ms).
    motion_vq.use_channels_last()
    if wrinkle_vq is not None:  # None: joint-codebook ablation, motion_vq is the joint VQ
        wrinkle_vq.use_channels_last()
    todo = [i for i in range(len(dataset)) if i % dist.world_size == dist.rank
            and not (folder / f"{dataset.entries[i]['id']}.npz").is_file()]
    started = time.monotonic()
    frames = 0
    for n, index in enumerate(todo):
        if should_stop():
            return
        entry = dataset.entries[index]
        weights = dataset.weights(index)
        _, motion, wrinkle = dataset.render(entry["subject"], weights)
        latents = []
        if wrinkle_vq is None:  # joint codebook: slot z_f = the joint latent, slot z_w empty

            latents = [encode_joint_latents(dataset, motion_vq, motion, wrinkle, batch), np.zeros((len(weights), 0), np.float32)]
        else:
            for vq, kind, maps in ((motion_vq, "motion", motion), (wrinkle_vq, "wrinkle", wrinkle)):
                physical = to_physical(kind, maps)
                parts = [vq.encode(torch.from_numpy(physical[s : s + batch]).to(vq.map_offset.device)).cpu()
                         for s in range(0, len(physical), batch)]
                latents.append(torch.cat(parts).numpy().astype(np.float32))
        sample = dataset.load(index, maps=False)
        audio = audio_fn(sample.audio, sample.sample_rate, len(weights))
        temporary = folder / f"{entry['id']}.tmp.npz"
        np.savez(temporary, z_motion=latents[0], z_wrinkle=latents[1], audio=audio)
        temporary.replace(folder / f"{entry['id']}.npz")
        frames += len(weights)
        if (n + 1) % 50 == 0 and dist.is_main:
            rate = frames / max(time.monotonic() - started, 1e-9)
            log(f"encoded {n + 1}/{len(todo)} utterances of {folder.name} ({rate:.0f} frames/s)")


def load_split_cache(dataset, folder: Path, blink: bool = False, lip_gap: bool = False,
                     telephone_folder: Path | None = None, brow: bool = False) -> list[dict]:
    """The split's cached latents and audio; with `blink`, also each utterance's eyelid closure
    (core/blinks.py), with `lip_gap` its midline lip gap in mm (training/lip_closure.py), with
    `brow` its brow track (core/brows.py), all
    measured from its ground-truth offsets (cheap: ~8 s for the training set, so not cached);
    with `telephone_folder`, the audio input of its telephone copy ("audio_phone")."""
    items = []
    for index, entry in enumerate(dataset.entries):
        with np.load(folder / f"{entry['id']}.npz") as data:
            item = {
                "id": entry["id"],
                "subject": entry["subject"],
                "z_motion": torch.from_numpy(data["z_motion"]),
                "z_wrinkle": torch.from_numpy(data["z_wrinkle"]),
                "audio": torch.from_numpy(data["audio"]),
                "n_frames": int(data["z_motion"].shape[0]),
            }
        if blink or lip_gap or brow:
            offsets = dataset.geometry(entry["subject"]).offsets(dataset.weights(index))
            if len(offsets) != item["n_frames"]:
                raise ValueError(f"{entry['id']}: {len(offsets)} frames of motion but {item['n_frames']} cached latents")
            if blink:
                item["blink"] = torch.from_numpy(eyelid_closure(dataset.template, offsets))
            if lip_gap:
                item["lip_gap"] = torch.from_numpy(ground_truth_gap_mm(dataset.template, offsets))
            if brow:
                track, others = brow_activity(dataset.template, offsets, with_other_units=True)
                item["brow"] = torch.from_numpy(track)
                item["other_units"] = torch.from_numpy(others)  # for fit_brow_direction only
        if telephone_folder is not None:
            with np.load(telephone_folder / f"{entry['id']}.npz") as data:
                item["audio_phone"] = torch.from_numpy(data["audio"])
        items.append(item)
    return items


def window_track(items: list[dict], starts: list[int], length: int, device, key: str = "blink") -> torch.Tensor | None:
    """A per-frame track (B, length, ...) of the windows ("blink": eyelid closure, "lip_gap": lip
    gap in mm, "brow": brow raise and furrow), or None when the items carry none."""
    if not items or key not in items[0]:
        return None
    return torch.stack([it[key][s : s + length] for it, s in zip(items, starts)]).to(device)


def window_blink(items: list[dict], starts: list[int], length: int, device) -> torch.Tensor | None:
    """Eyelid closure (B, length) of the windows, or None when the items carry none."""
    return window_track(items, starts, length, device, "blink")


# ---------------------------------------------------------------------------- training
class EMA:
    """Exponential moving average of the trainable parameters (used for validation and export)."""

    def __init__(self, named_parameters, decay: float):
        self.decay = decay
        self.shadow = {name: p.detach().clone() for name, p in named_parameters}

    @torch.no_grad()
    def update(self, named_parameters) -> None:
        for name, p in named_parameters:
            self.shadow[name].lerp_(p.detach(), 1.0 - self.decay)

    @torch.no_grad()
    def swap(self, model) -> None:
        """Exchange model parameters and EMA values in place (call twice to restore)."""
        params = dict(model.named_parameters())
        for name, value in self.shadow.items():
            current = params[name].detach().clone()
            params[name].data.copy_(value)
            value.copy_(current)


def trainable_parameters(model: TexTalkerModel):
    """Denoiser + the bundled audio front end (HuBERT stays frozen); the VQs are frozen."""
    for name, p in model.named_parameters():
        if name.startswith("denoiser.") or (name.startswith("audio_encoder.") and model.audio_encoder_stored):
            yield name, p


def window_batch(model: TexTalkerModel, items: list[dict], starts: list[int], length: int, device,
                 augment: dict | None = None, generator: torch.Generator | None = None):
    """Latents and audio features of one window per item; with `augment` (and the training
    generator) each item's log-mel is perturbed first (training/augment.py)."""
    z_motion = torch.stack([it["z_motion"][s : s + length] for it, s in zip(items, starts)]).to(device)
    z_wrinkle = torch.stack([it["z_wrinkle"][s : s + length] for it, s in zip(items, starts)]).to(device)
    encoder = model.audio_encoder
    inputs = [it["audio"] for it in items]
    if encoder.augments_input and augment is not None and generator is not None:
        inputs = [augment_log_mel(mel, generator, augment) for mel in inputs]
    features = torch.stack([encoder.window_features(cached.to(device), s, length) for cached, s in zip(inputs, starts)])
    return z_motion, z_wrinkle, features


@torch.no_grad()
def validate(model: TexTalkerModel, items: list[dict], rows: dict, config_ldm: dict, device,
             lip_reader: LipGapReader | None = None) -> dict:
    """Loss on fixed test-A windows (fixed noise), the seam metric of sampled sequences and,
    with `lip_reader`, the share of ground-truth lip closures the sampled lips close
    (`lip_closure.closures_hit`) on the first `validation_windows` utterances."""
    model.eval()
    config = model.config
    generator = torch.Generator().manual_seed(1234)
    chosen = items[: int(config_ldm["validation_windows"])]
    losses = []
    for item in chosen:
        length = min(config.window_frames, item["n_frames"])
        zm, zw, feats = window_batch(model, [item], [0], length, device)
        subjects = torch.tensor([rows[item["subject"]]], device=device)
        blink = window_blink([item], [0], length, device)
        brow = window_track([item], [0], length, device, "brow")
        losses.append(float(ldm_loss(model, zm, zw, feats, subjects, generator=generator, blink=blink, brow=brow)))
    result = {"val_loss": float(np.mean(losses)) if losses else float("nan")}
    long_items = [it for it in items if it["n_frames"] > config.window_frames][:3]
    seams, truth_seams = [], []
    for item in long_items:
        n = item["n_frames"]
        feats = model.audio_encoder.clip_features(item["audio"].to(device), n)
        row = rows[item["subject"]]
        styles = {"speaking_style": row, "wrinkle_style": row} if config.style_mode == "onehot" else {}
        x0 = sample_sequence(model.denoiser, model.schedule, feats, config.sampling_steps, torch.Generator().manual_seed(7), **styles,
                             blink=item.get("blink"), brow=item.get("brow"))
        seams.append(border_discontinuity(x0.cpu(), config.window_frames, config.prefix_frames))
        truth = model.to_model_space(item["z_motion"].to(device), item["z_wrinkle"].to(device), row, row)
        truth_seams.append(border_discontinuity(truth.cpu(), config.window_frames, config.prefix_frames))
    if seams:
        result["val_border_discontinuity"] = float(np.mean(seams))
        result["truth_border_discontinuity"] = float(np.mean(truth_seams))
    if lip_reader is not None and chosen and "lip_gap" in chosen[0]:
        closed_mm = float(lip_closure_settings(config_ldm)["closed_mm"])
        hits = runs = 0
        for item in chosen:
            row = rows[item["subject"]]
            feats = model.audio_encoder.clip_features(item["audio"].to(device), item["n_frames"])
            styles = {"speaking_style": row, "wrinkle_style": row} if config.style_mode == "onehot" else {}
            x0 = sample_sequence(model.denoiser, model.schedule, feats, config.sampling_steps,
                                 torch.Generator().manual_seed(7), **styles, blink=item.get("blink"), brow=item.get("brow"))
            hit, count = closures_hit(model, lip_reader, x0, row, item["lip_gap"].numpy(), closed_mm)
            hits, runs = hits + hit, runs + count
        result["val_closures_hit"] = hits / max(runs, 1)
    model.train()
    for vq in model.vq_modules():
        vq.eval()
    return result


def _save_model(model: TexTalkerModel, path: Path, dataset: str, extra: dict) -> None:
    metadata = model.metadata(trained=False, dataset=dataset)
    metadata["training"] = json.dumps(extra, sort_keys=True)
    save_weights(path, model.weight_tensors(), metadata, update_manifest=False)


def record_template_layout(model_config) -> None:
    """Record the template's map layout in the config (the Pipeline refuses weights made for
    another layout); same helper as tools/make_untrained_weights.py."""
    from tools import make_untrained_weights as untrained

    if hasattr(model_config, "uv_layouts") and hasattr(untrained, "template_layouts"):
        model_config.uv_layouts = untrained.template_layouts(None)
    elif hasattr(model_config, "uv_region") and hasattr(untrained, "template_uv_region"):
        model_config.uv_region = untrained.template_uv_region(None)


def load_model_file(path: Path, model: TexTalkerModel) -> None:
    tensors = load_weights(path, verify=False).tensors
    state = {k: v for k, v in tensors.items() if not k.startswith("style.")}
    model.load_state_dict(state, strict=False)


def initialise_from(model: TexTalkerModel, params: dict, path: Path) -> set[str]:
    """Copy the trainable tensors (denoiser, bundled audio front end) of the weights file at
    `path` into `model`; every one must be there with the same shape, except the blink and brow
    parameters of a blink- or brow-conditioned model (a warm start from a model without that
    input): they keep their initialisation (`fit_blink_direction` and `fit_brow_direction` then
    set the output directions).
    Returns the names copied."""
    tensors = load_weights(path, verify=False).tensors
    missing = [name for name in params if name not in tensors
               and not name.startswith(BLINK_PARAMETER_PREFIXES + BROW_PARAMETER_PREFIXES)]
    mismatched = [name for name, p in params.items() if name in tensors and tuple(tensors[name].shape) != tuple(p.shape)]
    if missing or mismatched:
        raise ValueError(f"--init-from {path}: not a warm start for this model config "
                         f"({len(missing)} tensors missing, {len(mismatched)} of another shape, e.g. {(missing + mismatched)[:3]})")
    with torch.no_grad():
        copied = set()
        for name, p in params.items():
            if name in tensors:
                p.copy_(tensors[name].to(p.device, p.dtype))
                copied.add(name)
    return copied


@torch.no_grad()
def fit_blink_direction(model: TexTalkerModel, items: list[dict], rows: dict, log=None) -> None:
    """Start the denoiser's blink output at the least-squares direction of the training latents
    (model space) on their eyelid closure (core/denoiser.py, `set_blink_direction`)."""
    x0 = torch.cat([model.to_model_space(it["z_motion"], it["z_wrinkle"], rows[it["subject"]], rows[it["subject"]])
                    for it in items])
    closure = torch.cat([it["blink"] for it in items])
    direction = model.denoiser.set_blink_direction(x0.to(model.denoiser.blink_out.weight.device), closure.to(x0.device))
    if log is not None:
        log.write({"event": "blink_direction", "norm": float(direction.norm()), "frames": int(len(closure)),
                   "closed_fraction": float((closure > 0.5).float().mean())},
                  f"LDM: blink direction fitted on {len(closure)} frames (norm {float(direction.norm()):.1f})")


@torch.no_grad()
def fit_brow_direction(model: TexTalkerModel, items: list[dict], rows: dict, log=None) -> None:
    """Start the denoiser's brow output at the least-squares directions of the training latents
    (model space) on their brow track, beside the other face units (core/denoiser.py,
    `set_brow_direction`)."""
    x0 = torch.cat([model.to_model_space(it["z_motion"], it["z_wrinkle"], rows[it["subject"]], rows[it["subject"]])
                    for it in items])
    track = torch.cat([it["brow"] for it in items])
    others = torch.cat([it["other_units"] for it in items])
    # Only units the data moves: the estimate of a unit it never moves is numerical noise of the
    # least-squares solve, which the fit would then use to explain the brows (on the synthetic
    # data such noise columns explained 99.99 % of the brow raise; the 21 moved units, 6 %).
    others = others[:, others.std(dim=0) >= MOVED_UNIT_STD]
    slopes = model.denoiser.set_brow_direction(x0.to(model.denoiser.brow_out.weight.device), track.to(x0.device),
                                               others.to(x0.device))
    if log is not None:
        norms = [float(n) for n in slopes.norm(dim=1)]
        log.write({"event": "brow_direction", "norms": norms, "frames": int(len(track)), "held_units": int(others.shape[1]),
                   "raised_fraction": float((track[:, 0] > 0.1).float().mean()),
                   "furrowed_fraction": float((track[:, 1] > 0.1).float().mean())},
                  f"LDM: brow directions fitted on {len(track)} frames (norms {norms[0]:.1f}, {norms[1]:.1f})")


def train_ldm(
    config: TrainingConfig,
    data_root: str | Path,
    run_path: str | Path,
    motion_run: str | Path,
    wrinkle_run: str | Path,
    dist: Distributed,
    steps: int | None = None,
    max_minutes: float | None = None,
    hubert_dir: str | Path | None = None,
    progress_bar: bool = True,
    init_from: str | Path | None = None,
) -> dict:
    """Train (or resume) stage 2. `init_from`: a model weights file (an export, or a run's
    checkpoint/ema.safetensors) whose denoiser and audio front end start this run instead of
    random weights (a warm start after the VQ changed; the latent normalisation and the pivots
    are always computed from this run's latents). Used only when the run has no checkpoint yet."""
    from tqdm import tqdm

    run = RunFolder(run_path)
    motion_vq, motion_info = load_trained_vq(motion_run, dist.device)
    # Joint-codebook ablation (training/ablations.py): no wrinkle run, `motion_run` is the run of
    # the one "joint" VQ over both maps.
    joint = wrinkle_run is None
    if joint:
        wrinkle_vq, wrinkle_info = None, {"kind": "wrinkle", "step": None}
        if motion_info["kind"] != "joint":
            raise ValueError("without --wrinkle-vq, the VQ run must be a joint-codebook ('joint') VQ run")
    else:
        wrinkle_vq, wrinkle_info = load_trained_vq(wrinkle_run, dist.device)
    if motion_info["kind"] != ("joint" if joint else "motion") or wrinkle_info["kind"] != "wrinkle":
        raise ValueError("--motion-vq must be a motion VQ run and --wrinkle-vq a wrinkle VQ run")
    # The VQs define the latent sizes: take their configs, keep the rest of this config.
    config.model.motion_vq = motion_info["config"].model.motion_vq
    config.model.wrinkle_vq = (motion_info if joint else wrinkle_info)["config"].model.wrinkle_vq
    if joint:
        config.model.joint_codebook_vq = motion_info["config"].model.joint_codebook_vq
    record_template_layout(config.model)
    extra = {"stage": "ldm", "data": str(Path(data_root).resolve()), "motion_vq_run": str(Path(motion_run).resolve()),
             "wrinkle_vq_run": str(Path(wrinkle_run).resolve()) if wrinkle_run is not None else None,
             "dataset": dataset_fingerprint(data_root)}
    if init_from is not None:
        extra["init_from"] = str(Path(init_from).resolve())
        extra["init_from_sha256"] = sha256_file(Path(init_from))
    if dist.is_main:
        config = run.prepare(config, extra)
    dist.barrier()
    if not dist.is_main:
        config = run.prepare(config, {})
    section = config.ldm
    model_config = config.model
    check_wrinkle_encoding(model_config)
    total_steps = int(steps if steps is not None else section["steps"])
    seed = int(section["seed"])
    device = dist.device
    dataset_name = dataset_fingerprint(data_root)
    log = JsonlLog(run.path / "log.jsonl", dist.is_main, echo=tqdm.write)

    # ---- latents + audio inputs, once
    resolution = (model_config.motion_vq.resolution, model_config.wrinkle_vq.resolution)
    train_set = open_dataset(data_root, "train", *resolution)
    try:
        val_set = open_dataset(data_root, "test-A", *resolution)
    except ValueError:
        val_set = None
    cache = run.path / "cache"
    key = latent_cache_key(Path(motion_run), Path(wrinkle_run) if wrinkle_run is not None else None, model_config.audio_encoder)
    if dist.is_main:
        cache.mkdir(parents=True, exist_ok=True)
        key_path = cache / "vq.json"
        if key_path.is_file() and json.loads(key_path.read_text()) != key:
            raise ValueError(f"{cache} was encoded with other VQ checkpoints; delete it (or use a new run folder)")
        write_json(key_path, key)
    dist.barrier()

    # What the cache holds per utterance: the encoder's training input (the log-mel for the bundled
    # encoder, whose front end trains here; frozen features for HuBERT, loaded once).
    if hubert_dir is None and not audio_encoder_class(model_config.audio_encoder).stored_with_model:
        raise ValueError(f"this config uses the {model_config.audio_encoder} audio encoder: pass --hubert-dir")
    input_encoder = build_audio_encoder(model_config, hubert_dir).to(device)

    def audio_fn(audio, rate, n_frames):
        return input_encoder.training_input(load_audio((audio, rate)), n_frames)

    # The time limit and the signals cover the (resumable) encoding too.
    stop = StopFlag(max_minutes)
    t0 = time.monotonic()
    encode_split(train_set, motion_vq, wrinkle_vq, cache / "train", audio_fn, dist, int(section["encode_batch"]),
                 log=tqdm.write, should_stop=stop.should_stop)
    if val_set is not None:
        encode_split(val_set, motion_vq, wrinkle_vq, cache / "test-A", audio_fn, dist, int(section["encode_batch"]),
                     log=tqdm.write, should_stop=stop.should_stop)
    telephone = dict(section.get("telephone") or {})
    telephone_probability = float(telephone.get("probability", 0.0))
    if telephone_probability > 0:
        encode_telephone_split(train_set, cache / "train-phone", audio_fn, dist, log=tqdm.write,
                               should_stop=stop.should_stop)
    encode_seconds = time.monotonic() - t0
    if dist.any(stop.should_stop() is not None):  # every rank leaves its loop, then all agree
        stop.restore()
        reason = stop.should_stop() or "stop requested on another rank"
        summary = {"step": 0, "stopped": f"{reason} while encoding", "steps_this_session": 0,
                   "seconds_this_session": encode_seconds, "ranks_in_sync": True, "styles": []}
        if run.has_checkpoint():
            summary["step"] = int(json.loads((run.checkpoint / "progress.json").read_text())["step"])
        log.write({"event": "stop", **summary}, f"LDM: stopped while encoding ({reason}); run again to resume")
        return summary
    dist.barrier()
    blink = model_config.blink_condition
    brow = model_config.brow_condition
    lip_settings = lip_closure_settings(section)
    lip_weight = float(lip_settings["weight"])
    if lip_weight > 0 and not lip_closure_applies(model_config):
        log.write({"event": "lip_closure_off", "reason": "no motion VQ of its own"},
                  "LDM: lip_closure off (this model has no motion VQ of its own)")
        lip_weight = 0.0
    train_items = load_split_cache(train_set, cache / "train", blink, lip_gap=lip_weight > 0,
                                   telephone_folder=cache / "train-phone" if telephone_probability > 0 else None,
                                   brow=brow)
    val_items = (load_split_cache(val_set, cache / "test-A", blink, lip_gap=lip_weight > 0, brow=brow)
                 if val_set is not None else [])

    # ---- style pivots: one per training subject, in subject-index order
    subjects = sorted({it["subject"] for it in train_items}, key=lambda s: train_set.subjects[s].index)
    rows = {name: i for i, name in enumerate(subjects)}
    names = [describe_subject(train_set.subjects[s]) for s in subjects]
    per_subject_motion = [torch.cat([it["z_motion"] for it in train_items if it["subject"] == s]).numpy() for s in subjects]
    per_subject_wrinkle = [torch.cat([it["z_wrinkle"] for it in train_items if it["subject"] == s]).numpy() for s in subjects]
    pivots = StylePivots.from_latents(per_subject_motion, per_subject_wrinkle, names)
    if dist.is_main:
        from safetensors.torch import save_file

        save_file({"speaking": torch.from_numpy(pivots.speaking), "wrinkle": torch.from_numpy(pivots.wrinkle)}, str(run.path / "pivots.safetensors"))
        write_json(run.path / "pivots.json", {"subjects": subjects, "names": names, "keys": pivots.keys})

    torch.manual_seed(seed)  # same initial weights on every rank
    # An encoder stored with the model is built (and trained) inside it; an external one is the
    # frozen encoder that made the cache, kept for cutting windows from it.
    model = TexTalkerModel(model_config, pivots, None if input_encoder.stored_with_model else input_encoder).to(device)
    if model_config.generates_texture and not joint:
        # The crease curves each wrinkle style's fold maps scale, for the add-on's detail map.
        from tools.synthetic_textalk4d.creases import make_creases

        model.style_creases = [make_creases(train_set.template, train_set.subjects[s].wrinkle) for s in subjects]
    if blink:
        model.style_blinks = [blink_statistics([it["blink"].numpy() for it in train_items if it["subject"] == s], MODEL_FPS)
                              for s in subjects]
    if brow:
        model.style_brows = [brow_statistics([it["brow"].numpy() for it in train_items if it["subject"] == s], MODEL_FPS)
                             for s in subjects]
    if joint:
        model.joint_vq.load_state_dict(motion_vq.state_dict())
    else:
        model.motion_vq.load_state_dict(motion_vq.state_dict())
        model.wrinkle_vq.load_state_dict(wrinkle_vq.state_dict())
    for vq in model.vq_modules():
        vq.requires_grad_(False).eval()
    all_subject_rows = torch.cat([torch.full((it["n_frames"],), rows[it["subject"]]) for it in train_items])
    model.fit_latent_normalization(torch.cat([it["z_motion"] for it in train_items]).to(device),
                                   torch.cat([it["z_wrinkle"] for it in train_items]).to(device), all_subject_rows.to(device))

    params = dict(trainable_parameters(model))
    copied: set[str] = set()
    if init_from is not None and not run.has_checkpoint():
        copied = initialise_from(model, params, Path(init_from))
    if blink and not run.has_checkpoint() and "denoiser.blink_out.weight" not in copied:
        # (a warm start from a blink-conditioned model keeps the direction it learned)
        fit_blink_direction(model, train_items, rows, log)
    if brow and not run.has_checkpoint() and "denoiser.brow_out.weight" not in copied:
        fit_brow_direction(model, train_items, rows, log)
    optimizer = torch.optim.AdamW(params.values(), lr=float(section["learning_rate"]), weight_decay=float(section["weight_decay"]))
    warmup = max(1, int(section["warmup_steps"]))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate_factor(warmup, section["lr_decay"], total_steps))
    ema = EMA(params.items(), float(section["ema_decay"])) if float(section["ema_decay"]) > 0 else None
    generator = torch.Generator().manual_seed(seed + 1)
    order = BucketedOrder([it["n_frames"] for it in train_items], int(section["batch_size"]), dist.world_size, dist.rank, seed, int(section["bucket_batches"]))
    step = 0
    elapsed_before = 0.0
    if run.has_checkpoint():
        load_model_file(run.checkpoint / MODEL_WEIGHTS, model)
        state, progress = run.load_state()
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None:
            ema.shadow = {k: v.to(device) for k, v in state["ema"].items()}
        restore_rng(state["rng"][min(dist.rank, len(state["rng"]) - 1)], generator)
        order.load_state(progress["order"])
        step = int(progress["step"])
        elapsed_before = float(progress.get("elapsed_s", 0.0))
        if int(progress.get("world_size", 1)) != dist.world_size and dist.is_main:
            # The data position counts global batches (batch_size x processes): the run goes on
            # correctly, but not bit-identically to an uninterrupted run.
            print(f"note: checkpoint written by {progress.get('world_size')} process(es), resumed with {dist.world_size}")

    def save(step: int) -> None:
        save_on_main(dist, generator, lambda rng_states: write_checkpoint(step, rng_states))

    def write_checkpoint(step: int, rng_states) -> None:
        info = {"step": step, "motion_vq_step": motion_info["step"], "wrinkle_vq_step": wrinkle_info["step"]}

        def writer(folder: Path) -> None:
            _save_model(model, folder / MODEL_WEIGHTS, dataset_name, info)
            if ema is not None:
                ema.swap(model)
                try:
                    _save_model(model, folder / EMA_WEIGHTS, dataset_name, {**info, "ema_decay": ema.decay})
                finally:
                    ema.swap(model)

        state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_states}
        if ema is not None:
            state["ema"] = {k: v.cpu() for k, v in ema.shadow.items()}
        progress = {"step": step, "order": order.state(), "elapsed_s": elapsed_before + time.monotonic() - started, "world_size": dist.world_size}
        run.save_checkpoint({}, writer, state, progress)

    started = time.monotonic()
    loop = StageLoop("LDM", section, dist, log, stop, total_steps, step, ["loss", "lip_gap_mm", "lr", "steps_per_s", "frames_per_s"],
                     progress_bar)
    log.write({"event": "start", "step": step, "total_steps": total_steps, "world_size": dist.world_size,
               "train_utterances": len(train_items), "train_frames": int(sum(it["n_frames"] for it in train_items)),
               "styles": len(pivots), "encode_s": encode_seconds},
              f"LDM: step {step} -> {total_steps}, {dist.world_size} process(es), {len(train_items)} utterances, {len(pivots)} styles")
    model.train()
    for vq in model.vq_modules():
        vq.eval()
    batch_size = int(section["batch_size"])
    train_by_subject: dict[str, list[int]] = {}
    for index, item in enumerate(train_items):
        train_by_subject.setdefault(item["subject"], []).append(index)
    mel_per_frame = model.audio_encoder.mel_fps / MODEL_FPS if model.audio_encoder.augments_input else None
    lip_reader = LipGapReader(train_set.template, model_config.motion_vq.resolution) if lip_weight > 0 else None

    def train_step(done: int) -> StepReport:
        t0 = time.monotonic()
        global_batch = order.next_global()
        length = int(min(model_config.window_frames, min(train_items[int(i)]["n_frames"] for i in global_batch)))
        mine = global_batch[dist.rank * batch_size : (dist.rank + 1) * batch_size]
        items = [train_items[int(i)] for i in mine]
        starts = [int(torch.randint(0, it["n_frames"] - length + 1, (1,), generator=generator)) for it in items]
        subject_rows = torch.tensor([rows[it["subject"]] for it in items], device=device)
        data_seconds = time.monotonic() - t0
        if telephone_probability > 0:
            items = [over_telephone(it) if float(torch.rand((), generator=generator)) < telephone_probability else it
                     for it in items]
        items, starts = add_pauses(items, starts, length, train_items, train_by_subject, section["pauses"], MODEL_FPS,
                                   mel_per_frame, generator)
        z_motion, z_wrinkle, features = window_batch(model, items, starts, length, device, section["augment"], generator)
        blink_window = window_blink(items, starts, length, device)
        brow_window = window_track(items, starts, length, device, "brow")
        metrics = {}
        if lip_reader is None:
            loss = ldm_loss(model, z_motion, z_wrinkle, features, subject_rows, generator=generator, blink=blink_window,
                            brow=brow_window)
        else:
            diffusion, prediction, usable = ldm_loss(model, z_motion, z_wrinkle, features, subject_rows,
                                                     generator=generator, blink=blink_window, return_prediction=True,
                                                     brow=brow_window)
            lips = lip_closure_loss(model, lip_reader, prediction, subject_rows,
                                    window_track(items, starts, length, device, "lip_gap"), usable, lip_settings, generator)
            loss = diffusion + lip_weight * lips
            metrics = {"diffusion_loss": float(diffusion.detach()), "lip_gap_mm": float(lips.detach())}
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        dist.average_gradients(params.values())
        if float(section["grad_clip"]) > 0:
            torch.nn.utils.clip_grad_norm_(params.values(), float(section["grad_clip"]))
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update(params.items())
        return StepReport({"loss": float(loss.detach()), **metrics}, frames=length * len(items) * dist.world_size,
                          data_seconds=data_seconds)

    def validate_on_main(step: int) -> dict | None:
        if not (dist.is_main and val_items):
            return None
        if ema is not None:
            ema.swap(model)
        try:
            rng_state = torch.get_rng_state()  # validation must not shift the training RNG
            metrics = validate(model, val_items, rows, section, device, lip_reader)
            torch.set_rng_state(rng_state)
        finally:
            if ema is not None:
                ema.swap(model)
        return metrics

    reason = loop.run(train_step, save, validate_on_main,
                      log_extra=lambda step: {"epoch": order.epoch, "lr": scheduler.get_last_lr()[0]},
                      postfix=lambda r: {"loss": f"{r['loss']:.4f}"})
    step = loop.step
    ranks_in_sync = dist.in_sync(list(params.values()))
    loop.final_save(run, save)
    summary = {"step": step, "stopped": reason, "ranks_in_sync": ranks_in_sync, "steps_this_session": loop.steps_this_session,
               "seconds_this_session": time.monotonic() - started, "styles": names}
    log.write({"event": "stop", **summary}, f"LDM: stopped at step {step} ({reason}); checkpoint in {run.checkpoint}")
    return summary

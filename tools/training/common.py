"""Shared machinery of the training stages: config files, run folders, checkpoints with exact
resume, JSONL logs, stop conditions (signals, time limit) and the distributed helpers.

Checkpoint layout (`RUN/checkpoint/`, replaced atomically: written to `checkpoint.tmp/`, then
renamed, so a crash while saving never leaves a half checkpoint):
- `*.safetensors`: model weights (and EMA weights) — plain safetensors, never pickle;
- `state.pt`: optimiser / scheduler state dicts, RNG states; written with `torch.save` and read
  back with `torch.load(weights_only=True)` (tensors, numbers, strings and containers only, no
  arbitrary objects); resume state only, never shipped;
- `progress.json`: step, epoch, position in the epoch's data order, wall time spent so far.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]

from textalker_blender.core.config import ModelConfig  # noqa: E402

CHECKPOINT_DIR = "checkpoint"
LOG_NAME = "log.jsonl"
RUN_CONFIG_NAME = "config.json"


# ---------------------------------------------------------------------------- config files
@dataclass
class TrainingConfig:
    """A config file: the model (a preset plus overrides) and one section per stage."""

    model: ModelConfig
    vq: dict[str, Any] = field(default_factory=dict)
    ldm: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)  # the file's content, for the record
    refine: dict[str, Any] = field(default_factory=dict)  # stage 1b: motion decoder refinement

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.to_dict(), "vq": self.vq, "ldm": self.ldm, "refine": self.refine}


VQ_DEFAULTS: dict[str, Any] = {
    "batch_size": 16,
    "learning_rate": 2e-4,
    "discriminator_learning_rate": 2e-4,
    "steps": 20000,
    "checkpoint_every": 500,
    "log_every": 25,
    "validate_every": 1000,
    "revive_every": 200,
    "validation_frames": 256,
    "stats_frames": 4096,
    "stats_margin": 0.05,
    "seed": 0,
}
LDM_DEFAULTS: dict[str, Any] = {
    "batch_size": 16,
    "learning_rate": 2e-4,
    "weight_decay": 0.0,
    "warmup_steps": 500,
    "grad_clip": 1.0,
    "ema_decay": 0.999,
    "steps": 30000,
    "checkpoint_every": 500,
    "log_every": 25,
    "validate_every": 1000,
    "validation_windows": 16,
    "bucket_batches": 8,
    "encode_batch": 128,
    "seed": 0,
    # log-mel augmentation of training windows (training/augment.py); off unless a config sets
    # a probability, so small test configs stay fast and exact
    "augment": {"probability": 0.0},
    # pause splicing (training/pauses.py): windows crossing a silent gap between two utterances
    # of a subject, so the mouth learns to rest closed in silence; off unless a config sets it
    "pauses": {"probability": 0.0},
    # telephone copies of the training audio (training/lip_closure.py): the share of windows
    # whose audio goes through a real narrowband codec; off unless a config sets it
    "telephone": {"probability": 0.0},
    # lip-closure term (training/lip_closure.py): L1 of the decoded lip gap (mm) on frames drawn
    # mostly where the ground-truth lips are closed; off while the weight is 0
    "lip_closure": {"weight": 0.0},
    # learning rate: linear warm-up, constant, then (when start_step is set) a cosine decay to
    # final_fraction x the rate at the run's step budget
    "lr_decay": {"start_step": None, "final_fraction": 0.1},
}

# Stage 1b (training/refine_stage.py): the motion VQ fine-tuned on vertex offsets in mm (lips
# and upper face weighted up) plus stage 1's map loss. By default only the decoder learns
# (encoder and codebook frozen, stage 2's latents stay valid); with "train_encoder" the encoder
# and codebook learn too and stage 2 trains on the refined VQ.
REFINE_DEFAULTS: dict[str, Any] = {
    "batch_size": 16,
    "learning_rate": 1e-4,
    "steps": 0,  # 0: no refinement (the bundle keeps stage 1's decoder)
    "lip_weight": 6.0,
    "upper_face_weight": 4.0,
    "map_weight": 1.0,
    "train_encoder": False,
    # Rare events the map loss of stage 1 learns to ignore (a blink closes the eyelids on ~3 % of
    # the synthetic frames): this fraction of every batch is drawn from frames where one of these
    # units exceeds the threshold.
    "oversample_units": [],
    "oversample_threshold": 0.3,
    "oversample_fraction": 0.0,
    "revive_every": 25,  # dead-code revival, as stage 1 (only with train_encoder)
    # Cosine from start_step down to final_fraction of the rate at the last step (as stage 2's).
    "lr_decay": {"start_step": None, "final_fraction": 0.1},
    "checkpoint_every": 250,
    "log_every": 25,
    "validate_every": 500,
    "validation_frames": 256,
    "seed": 0,
}


def _merge(base: dict, overrides: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_config_file(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file's content with its `"extends": "other.json"` (relative to the file) resolved:
    the other file's content, recursively, with this file's keys merged in (dicts key by key,
    anything else replaced). So an ablation or preset states only how it differs from its base."""
    path = Path(path).resolve()
    if path in _seen:
        raise ValueError(f"config {path} extends itself through {' -> '.join(p.name for p in _seen)}")
    data = json.loads(path.read_text())
    base_name = data.pop("extends", None)
    if base_name is None:
        return data
    base = read_config_file(path.parent / base_name, (*_seen, path))
    return _merge(base, data)


def load_training_config(path: str | Path) -> TrainingConfig:
    """Read a JSON config: {"extends": "base.json" (optional), "model": {"preset": "bundled",
    "overrides": {...}}, "vq": {...}, "ldm": {...}, "refine": {...}}. Unknown stage keys raise, so
    a typo does not silently train with defaults."""
    return training_config_from_dict(read_config_file(path))


def training_config_from_dict(data: dict[str, Any]) -> TrainingConfig:
    model_section = data.get("model", {"preset": "bundled"})
    if "preset" in model_section:
        base = ModelConfig.preset(model_section["preset"]).to_dict()
        model = ModelConfig.from_dict(_merge(base, model_section.get("overrides", {})))
    else:  # a full ModelConfig dict (as written into a run folder)
        model = ModelConfig.from_dict(model_section)
    sections = {}
    for name, defaults in (("vq", VQ_DEFAULTS), ("ldm", LDM_DEFAULTS), ("refine", REFINE_DEFAULTS)):
        given = dict(data.get(name, {}))
        unknown = set(given) - set(defaults)
        if unknown:
            raise ValueError(f"unknown keys in config section {name!r}: {sorted(unknown)}")
        sections[name] = {**defaults, **given}
    return TrainingConfig(model, sections["vq"], sections["ldm"], data, sections["refine"])


# ---------------------------------------------------------------------------- distributed
@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def average_gradients(self, parameters) -> None:
        """The gradient averaging of DistributedDataParallel, done explicitly after backward.

        The core's losses call sub-modules and methods (`vq_losses.VQLosses(vq, ...)`, `losses.ldm_loss`),
        not one `forward`, and the VQ discriminator runs three times per step, which DDP's reducer
        does not support; one flattened all-reduce per step gives the same averaged gradients."""
        if not self.enabled:
            return
        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def average_(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            torch.distributed.all_reduce(tensor)
            tensor /= self.world_size
        return tensor

    def broadcast_(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            torch.distributed.broadcast(tensor, 0)
        return tensor

    def any(self, flag: bool) -> bool:
        """True on every rank if `flag` is true on any rank (stop decisions must agree)."""
        if not self.enabled:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
        return bool(value.item() > 0)

    def in_sync(self, tensors) -> bool:
        """True if every rank holds the same values (a checksum per rank, compared on all)."""
        if not self.enabled:
            return True
        checksum = torch.stack([t.detach().double().sum() for t in tensors]).sum().reshape(1)
        checksum = checksum.to(self.device)  # NCCL gathers CUDA tensors only
        gathered = [torch.zeros_like(checksum) for _ in range(self.world_size)]
        torch.distributed.all_gather(gathered, checksum)
        return all(torch.equal(g, gathered[0]) for g in gathered)

    def close(self) -> None:
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def setup_distributed(device: str = "auto") -> Distributed:
    """Single process, or one rank of a `torchrun` launch (env RANK / WORLD_SIZE / LOCAL_RANK):
    gloo on CPU, NCCL on CUDA."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        resolved = torch.device("cuda", local_rank)
    else:
        resolved = torch.device(device)
    if world_size > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend, rank=rank, world_size=world_size)
    return Distributed(rank, world_size, local_rank, resolved)


# ---------------------------------------------------------------------------- stopping
class StopFlag:
    """Set by SIGTERM / SIGINT (a scheduler ending the session, Ctrl-C) or the time limit; the
    loop checks it after each step, writes a checkpoint and exits cleanly."""

    def __init__(self, max_minutes: float | None):
        self.requested: str | None = None
        self.deadline = time.monotonic() + max_minutes * 60 if max_minutes else None
        self._previous = {}
        if threading.current_thread() is threading.main_thread():  # signals: main thread only
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        """Give the signals back to their previous handlers (when training ran in a caller's
        process, e.g. tests or a notebook)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C means: stop now, without a checkpoint
        self.requested = signal.Signals(signum).name

    def should_stop(self) -> str | None:
        if self.requested:
            return self.requested
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return "time limit"
        return None


# ---------------------------------------------------------------------------- RNG
def capture_rng(generator: torch.Generator) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def learning_rate_factor(warmup: int, decay: dict, total_steps: int):
    """LambdaLR factor: linear warm-up over `warmup` steps, 1, then from decay["start_step"]
    (None: never) a cosine down to decay["final_fraction"] at `total_steps`."""
    start = decay.get("start_step")
    final = float(decay.get("final_fraction", 0.1))

    def factor(step: int) -> float:
        value = min(1.0, (step + 1) / warmup)
        if start is not None and step >= int(start) and total_steps > int(start):
            progress = min(1.0, (step - int(start)) / (total_steps - int(start)))
            value *= final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return value

    return factor


def gather_rng_states(generator: torch.Generator, dist: Distributed) -> list[dict[str, Any]]:
    """Every rank's RNG state (`capture_rng`), in rank order, for the checkpoint (one entry
    without DDP). Under DDP this is a collective: every rank must call it."""
    state = capture_rng(generator)
    if not dist.enabled:
        return [state]
    gathered: list = [None] * dist.world_size
    torch.distributed.all_gather_object(gathered, state)
    return gathered


def save_on_main(dist: "Distributed", generator: torch.Generator, save) -> None:
    """The checkpoint protocol of every stage: all ranks hand in their RNG states, the main rank
    writes (`save(rng_states)`), and all ranks wait until it has."""
    rng_states = gather_rng_states(generator, dist)
    if dist.is_main:
        save(rng_states)
    dist.barrier()


def restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------- run folder
class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_DIR

    def has_checkpoint(self) -> bool:
        return (self.checkpoint / "progress.json").is_file()

    def prepare(self, config: TrainingConfig, extra: dict[str, Any]) -> TrainingConfig:
        """First start: record the config. Resume: use the recorded one (the run's model must
        not change under its checkpoint); stage hyper-parameters may be edited in the run's
        config.json between sessions on purpose."""
        self.path.mkdir(parents=True, exist_ok=True)
        recorded = self.path / RUN_CONFIG_NAME
        if recorded.is_file():
            data = json.loads(recorded.read_text())
            kept = training_config_from_dict(data)
            if kept.model.to_dict() != config.model.to_dict() and "stage" in extra:
                print(f"note: resuming {self.path}: its recorded model config is used, not --config's")
            return kept
        data = {**config.to_dict(), **extra}
        write_json(recorded, data)
        return config

    def read_recorded(self) -> dict[str, Any]:
        return json.loads((self.path / RUN_CONFIG_NAME).read_text())

    def save_checkpoint(
        self,
        weights: dict[str, Path | None],
        writer,
        state: dict[str, Any],
        progress: dict[str, Any],
    ) -> None:
        """`writer(folder)` writes the weights files into `folder`; then state + progress."""
        temporary = self.path / (CHECKPOINT_DIR + ".tmp")
        if temporary.exists():
            shutil.rmtree(temporary)
        temporary.mkdir(parents=True)
        writer(temporary)
        torch.save(state, temporary / "state.pt")
        write_json(temporary / "progress.json", progress)
        old = self.path / (CHECKPOINT_DIR + ".old")
        if old.exists():
            shutil.rmtree(old)
        if self.checkpoint.exists():
            self.checkpoint.rename(old)
        temporary.rename(self.checkpoint)
        if old.exists():
            shutil.rmtree(old)

    def load_state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        state = torch.load(self.checkpoint / "state.pt", weights_only=True, map_location="cpu")
        progress = json.loads((self.checkpoint / "progress.json").read_text())
        return state, progress


def write_json(path: Path, data: Any) -> None:
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    temporary.replace(path)


class JsonlLog:
    """Appends one JSON object per line (rank 0 only) and echoes a short line to the console."""

    def __init__(self, path: Path, enabled: bool, echo=None):
        self.path = Path(path)
        self.enabled = enabled
        self.echo = echo

    def write(self, record: dict[str, Any], console: str | None = None) -> None:
        if not self.enabled:
            return
        record = {"time": round(time.time(), 3), **record}
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
        if console and self.echo is not None:
            self.echo(console)


def read_log(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def format_metrics(values: dict[str, Any], keys: list[str]) -> str:
    parts = []
    for key in keys:
        if key in values:
            value = values[key]
            parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
    return "  ".join(parts)


def dataset_fingerprint(root: str | Path) -> str:
    """'synthetic-textalk4d v1 (meta sha256 0123456789ab)' from the dataset's meta.json."""
    import hashlib

    root = Path(root)
    meta_bytes = (root / "meta.json").read_bytes()
    meta = json.loads(meta_bytes)
    digest = hashlib.sha256(meta_bytes).hexdigest()[:12]
    return f"{meta.get('name', root.name)} v{meta.get('format_version', '?')} (meta sha256 {digest})"


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(int(threads))


# ---------------------------------------------------------------------------- stage scripts
def add_run_arguments(parser) -> None:
    """--config, --data and --run: what tools/train_vq.py and tools/train_ldm.py start with."""
    parser.add_argument("--config", type=Path, required=True, help="tools/configs/*.json (ignored for the model when resuming)")
    parser.add_argument("--data", type=Path, required=True, help="built synthetic TexTalk4D folder")
    parser.add_argument("--run", "--run-dir", dest="run", type=Path, required=True,
                        help="run folder (created or resumed); spell it --run-dir under torchrun, whose own --run-path makes --run ambiguous")


def stage_parser(doc: str):
    """A stage script's parser: its docstring's first paragraph, then --config, --data and --run."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    add_run_arguments(parser)
    return parser


def session_arguments(args) -> dict:
    """The keywords every stage's train function takes from add_session_arguments' options."""
    return {"steps": args.steps, "max_minutes": args.max_minutes, "progress_bar": not args.no_progress}


def add_session_arguments(parser) -> None:
    """--steps, --max-minutes, --device, --threads and --no-progress of both stage scripts."""
    parser.add_argument("--steps", type=int, default=None, help="total steps to reach (default: the config's)")
    parser.add_argument("--max-minutes", type=float, default=None, help="checkpoint and stop after this long")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per process")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bar (logs still printed)")


def run_stage(args, train) -> int:
    """A stage script's session: threads and (under torchrun) the process group from `args`,
    then `train(config, dist) -> summary` on the --config file; the main process prints where
    it stopped. Returns the exit status."""
    set_threads(args.threads)
    dist = setup_distributed(args.device)
    try:
        summary = train(load_training_config(args.config), dist)
    finally:
        dist.close()
    if dist.is_main:
        print(f"stopped at step {summary['step']} ({summary['stopped']}); "
              f"{summary['steps_this_session']} steps in {summary['seconds_this_session']:.0f} s")
    return 0

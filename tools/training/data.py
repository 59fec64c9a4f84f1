"""Training data from the synthetic TexTalk4D reader, with a deterministic, resumable order.

Maps are rendered on the fly through the reader (`SyntheticTextalk4D.render`): after a one-off
set-up per subject (~1.4 s) it renders 1,700-2,800 frames/s of 128x128 motion + wrinkle maps on
one core (measured, docs/TRAINING.md), two orders of magnitude faster than a CPU training step
consumes frames, so no multi-gigabyte frame cache is needed (82k frames at 128x128x3 float16 would
be 8 GB per map kind).

Data order: each epoch is a permutation seeded by (seed, epoch); a *global* batch of
`batch_size * world_size` items is cut from it and rank r takes slice r. The position in the epoch
is part of the checkpoint, so a resumed run continues with exactly the batches it would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAP_KINDS = ("motion", "wrinkle")


def open_dataset(root, split: str, motion_resolution: int, wrinkle_resolution: int):
    from tools.synthetic_textalk4d import SyntheticTextalk4D

    return SyntheticTextalk4D(
        root,
        split,
        motion_resolution=motion_resolution,
        wrinkle_resolution=wrinkle_resolution,
    )


def to_physical(kind: str, maps: np.ndarray) -> np.ndarray:
    """Reader maps -> what the VQ learns: motion in metres; wrinkle maps as the reader makes them,
    the [fold, shade, flush] channels of core/wrinkle_channels.py (CURRENT_ENCODING)."""
    if kind not in MAP_KINDS:
        raise ValueError(f"unknown map kind {kind!r}")
    return maps.astype(np.float32, copy=False)


def check_wrinkle_encoding(model_config) -> None:
    """Training reads the reader's current wrinkle channels: a config that says otherwise (an
    old run's config) would learn maps it does not decode."""
    from textalker_blender.core.wrinkle_channels import CURRENT_ENCODING

    if model_config.wrinkle_encoding != CURRENT_ENCODING:
        raise ValueError(f"this config's wrinkle_encoding is {model_config.wrinkle_encoding!r}, but the dataset "
                         f"reader makes {CURRENT_ENCODING!r} maps: start from the current presets")


def validation_frames(data_root, config, count: int, render):
    """`render(dataset, utterances, frames, weights)` of `count` evenly spaced test-A frames, or
    None when the dataset has no test-A split (or count is 0). Rendered once per session."""
    if count <= 0:
        return None
    try:
        val_set = open_dataset(data_root, "test-A", config.model.motion_vq.resolution, config.model.wrinkle_vq.resolution)
    except ValueError:
        return None
    if not len(val_set):
        return None
    table = FrameTable.build(val_set)
    rows = table.evenly_spaced(count)
    return render(val_set, table.utterances[rows], table.frames[rows], table.weights)


def render_batch(dataset, utterances: np.ndarray, frames: np.ndarray, weights) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertex offsets (B, V, 3), motion maps and wrinkle maps (B, H, W, 3) as the reader renders
    them, for (utterance index, frame) pairs, batch order kept.

    Frames of the same subject are rendered together (the reader's per-subject geometry)."""
    subjects = np.array([dataset.entries[int(u)]["subject"] for u in utterances])
    outputs: list[np.ndarray] | None = None
    for subject in dict.fromkeys(subjects.tolist()):
        rows = np.nonzero(subjects == subject)[0]
        stacked = np.stack([weights[int(utterances[r])][int(frames[r])] for r in rows])
        rendered = dataset.render(subject, stacked)
        if outputs is None:
            outputs = [np.empty((len(utterances), *part.shape[1:]), np.float32) for part in rendered]
        for out, part in zip(outputs, rendered):
            out[rows] = part
    return tuple(outputs)


def render_frames(dataset, kind: str, utterances: np.ndarray, frames: np.ndarray, weights) -> np.ndarray:
    """Maps (B, H, W, 3) of `kind` ("motion" or "wrinkle") in physical units, batch order kept."""
    _, motion, wrinkle = render_batch(dataset, utterances, frames, weights)
    return to_physical(kind, motion if kind == "motion" else wrinkle)


@dataclass
class FrameTable:
    """All frames of a split: utterance index and frame index per row, weights per utterance."""

    utterances: np.ndarray  # int64 (N,)
    frames: np.ndarray  # int64 (N,)
    weights: list[np.ndarray]  # per utterance (T_i, 52)

    @classmethod
    def build(cls, dataset) -> FrameTable:
        weights = [dataset.weights(i) for i in range(len(dataset))]
        utterances = np.concatenate([np.full(len(w), i) for i, w in enumerate(weights)])
        frames = np.concatenate([np.arange(len(w)) for w in weights])
        return cls(utterances.astype(np.int64), frames.astype(np.int64), weights)

    def __len__(self) -> int:
        return len(self.utterances)

    def evenly_spaced(self, count: int) -> np.ndarray:
        """Row indices of up to `count` frames spread over the whole split (deterministic)."""
        count = min(count, len(self))
        return np.linspace(0, len(self) - 1, count).round().astype(np.int64)


class EpochOrder:
    """Deterministic, resumable order of item indices, sharded by rank."""

    def __init__(self, n_items: int, batch_size: int, world_size: int, rank: int, seed: int):
        self.n_items = n_items
        self.batch_size = batch_size
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.global_batch = batch_size * world_size
        if n_items < self.global_batch:
            raise ValueError(
                f"{n_items} training items cannot fill a global batch of {self.global_batch}"
            )
        self.epoch = 0
        self.position = 0  # global batches already taken from this epoch
        self._permutation: np.ndarray | None = None

    def permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n_items)

    @property
    def batches_per_epoch(self) -> int:
        return self.n_items // self.global_batch

    def next(self) -> np.ndarray:
        """This rank's item indices of the next batch."""
        if self.position >= self.batches_per_epoch:
            self.epoch += 1
            self.position = 0
            self._permutation = None
        if self._permutation is None:
            self._permutation = self.permutation(self.epoch)
        start = self.position * self.global_batch + self.rank * self.batch_size
        self.position += 1
        return self._permutation[start : start + self.batch_size]

    def state(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state(self, state: dict) -> None:
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._permutation = None


class BucketedOrder(EpochOrder):
    """Like EpochOrder, but over utterances of different lengths: each chunk of
    `bucket_batches` global batches of the epoch's permutation is sorted by length before being
    cut, so the utterances of one batch have similar lengths (windows of a batch share a length:
    min(Tw, shortest utterance), and short clips do not shorten the windows of long ones).
    The batches of a chunk are then visited in a seeded random order."""

    def __init__(self, lengths, batch_size, world_size, rank, seed, bucket_batches: int = 8):
        super().__init__(len(lengths), batch_size, world_size, rank, seed)
        self.lengths = np.asarray(lengths)
        self.bucket_batches = max(1, int(bucket_batches))
        self._batches: list[np.ndarray] | None = None

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        permutation = self.permutation(epoch)
        usable = self.batches_per_epoch * self.global_batch
        permutation = permutation[:usable]
        rng = np.random.default_rng([self.seed, epoch, 1])
        batches: list[np.ndarray] = []
        chunk = self.bucket_batches * self.global_batch
        for start in range(0, usable, chunk):
            part = permutation[start : start + chunk]
            part = part[np.argsort(self.lengths[part], kind="stable")]
            cut = [part[i : i + self.global_batch] for i in range(0, len(part), self.global_batch)]
            batches.extend(cut[i] for i in rng.permutation(len(cut)))
        return batches

    def next_global(self) -> np.ndarray:
        """All ranks' items of the next batch (global batch, rank r's slice is r*B:(r+1)*B)."""
        if self.position >= self.batches_per_epoch:
            self.epoch += 1
            self.position = 0
            self._batches = None
        if self._batches is None:
            self._batches = self.epoch_batches(self.epoch)
        batch = self._batches[self.position]
        self.position += 1
        return batch

    def next(self) -> np.ndarray:
        batch = self.next_global()
        return batch[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        self._batches = None

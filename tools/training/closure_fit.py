"""Training of the closure detector (core/closure.py) and writing it into a weights file.

Examples: every utterance of a split, its log-mel (of the loudness-normalised audio, as the
add-on computes it) and per 30 fps frame whether the ground-truth midline lip gap is at most
`closed_mm` (a /p b m/ or silence). With `telephone`, each wideband utterance also comes through
its telephone line (the codec stage 2 uses for it, tools/training/lip_closure.py), labels
unchanged. Training draws random windows, perturbs their log-mel like stage 2 does
(tools/training/augment.py) and minimises the binary cross-entropy; deterministic for a seed.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from textalker_blender.core.audio import load_audio
from textalker_blender.core.closure import CLOSURE_METADATA, ClosureDetector, ClosureDetectorConfig
from textalker_blender.core.config import MODEL_FPS, SAMPLE_RATE
from textalker_blender.core.weights import load_weights, save_weights


@dataclass
class ClosureExample:
    utterance: str
    log_mel: np.ndarray  # (n_mels, M)
    closed: np.ndarray  # (T,) bool, 30 fps
    telephone: bool


def ground_truth_gap_mm(template, unit_weights: np.ndarray) -> np.ndarray:
    from tools.real_speech.reference import aperture_from_unit_weights

    return aperture_from_unit_weights(template, unit_weights)


def closure_examples(data_root: str | Path, split: str, detector: ClosureDetector, template,
                     telephone: bool = False, limit: int | None = None, log=print) -> list[ClosureExample]:
    """The examples of one split (module doc); `limit`: the first N utterances only (tests)."""
    from tools.synthetic_textalk4d import SyntheticTextalk4D
    from tools.synthetic_textalk4d.acoustics import telephone_line
    from tools.training.lip_closure import telephone_codec

    dataset = SyntheticTextalk4D(data_root, split, template=template, maps=False)
    if int(dataset.fps) != MODEL_FPS:
        raise ValueError(f"{data_root}: {dataset.fps} fps; the detector's labels are at {MODEL_FPS} fps")
    examples, started = [], time.monotonic()
    count = len(dataset) if limit is None else min(limit, len(dataset))
    for index in range(count):
        sample = dataset.load(index)
        closed = ground_truth_gap_mm(template, sample.weights) <= detector.config.closed_mm
        audio = load_audio((sample.audio, sample.sample_rate))
        examples.append(ClosureExample(sample.id, detector.log_mel(audio), closed, False))
        entry = dataset.entries[index]
        if telephone and not (entry.get("acoustics") or {}).get("telephone"):
            line = telephone_line(np.asarray(sample.audio, np.float32), telephone_codec(sample.id))
            examples.append(ClosureExample(sample.id, detector.log_mel(load_audio((line, SAMPLE_RATE))), closed, True))
        if (index + 1) % 200 == 0:
            log(f"closure examples: {index + 1}/{count} utterances of {split} "
                f"({(index + 1) / max(time.monotonic() - started, 1e-9):.1f}/s)")
    return examples


def train_detector(examples: list[ClosureExample], config: ClosureDetectorConfig | None = None, steps: int = 1500,
                   batch: int = 32, window_frames: int = 90, learning_rate: float = 2e-3, seed: int = 0,
                   augment: dict | None = None, log=print) -> tuple[ClosureDetector, dict]:
    """A detector trained on `examples` (module doc); returns it and a record of the run."""
    from tools.training.augment import augment_log_mel

    if not examples:
        raise ValueError("no training examples")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    detector = ClosureDetector(config)
    optimiser = torch.optim.AdamW(detector.parameters(), lr=learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=learning_rate, total_steps=steps,
                                                   pct_start=0.1)
    mel_fps = SAMPLE_RATE / detector.config.hop
    radius = sum(d * (detector.config.kernel - 1) // 2 for d in detector.config.dilations) + 2
    closed_share = float(np.mean(np.concatenate([e.closed for e in examples])))
    started = time.monotonic()
    detector.train()
    for step in range(steps):
        losses = []
        optimiser.zero_grad()
        for _ in range(batch):
            example = examples[int(torch.randint(0, len(examples), (1,), generator=generator))]
            total = len(example.closed)
            start = int(torch.randint(0, max(1, total - window_frames + 1), (1,), generator=generator))
            n = min(window_frames, total - start)
            lo = max(0, int(np.floor((start + 0.5) * mel_fps / MODEL_FPS)) - radius)
            hi = min(example.log_mel.shape[1], int(np.ceil((start + n - 0.5) * mel_fps / MODEL_FPS)) + radius + 1)
            mel = torch.from_numpy(example.log_mel[:, lo:hi])
            if augment:
                mel = augment_log_mel(mel, generator, augment)
            logits = detector(mel[None], n, start, lo)[0]
            target = torch.from_numpy(example.closed[start:start + n].astype(np.float32))
            losses.append(F.binary_cross_entropy_with_logits(logits, target))
        loss = torch.stack(losses).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(detector.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        if (step + 1) % 100 == 0 or step == 0:
            log(f"closure detector: step {step + 1}/{steps} loss {float(loss.detach()):.4f} "
                f"({(step + 1) / max(time.monotonic() - started, 1e-9):.1f} steps/s)")
    detector.eval()
    record = {"steps": steps, "batch": batch, "window_frames": window_frames, "learning_rate": learning_rate,
              "seed": seed, "examples": len(examples), "closed_share": round(closed_share, 4),
              "final_loss": round(float(loss.detach()), 5), "augment": augment or {}}
    return detector, record


@torch.no_grad()
def detector_scores(detector: ClosureDetector, examples: list[ClosureExample], threshold: float = 0.5) -> dict:
    """Frame-level scores on `examples`: ROC AUC, precision and recall at `threshold`, the
    closed share; wideband and telephone apart."""
    from tools.real_speech.checks import auc

    scores = {}
    for band, chosen in (("wideband", [e for e in examples if not e.telephone]),
                         ("telephone", [e for e in examples if e.telephone])):
        if not chosen:
            continue
        probabilities, labels = [], []
        for example in chosen:
            logits = detector(torch.from_numpy(example.log_mel)[None], len(example.closed))[0]
            probabilities.append(torch.sigmoid(logits).numpy())
            labels.append(example.closed)
        p, y = np.concatenate(probabilities), np.concatenate(labels)
        predicted = p >= threshold
        scores[band] = {
            "frames": int(len(y)), "closed_share": float(y.mean()),
            "auc": auc(p[y], p[~y]) if 0 < y.mean() < 1 else None,
            "precision": float((predicted & y).sum() / max(predicted.sum(), 1)),
            "recall": float((predicted & y).sum() / max(y.sum(), 1)),
        }
    return scores


def write_detector(bundle: str | Path, detector: ClosureDetector, record: dict, out: str | Path | None = None,
                   update_manifest: bool = True) -> str:
    """Write `detector` into the weights file `bundle` (or a copy at `out`), every other tensor
    and metadata entry as they are; a detector already there is replaced. Returns the SHA-256."""
    from textalker_blender.core.closure import CLOSURE_PREFIX

    bundle, out = Path(bundle), Path(out or bundle)
    weights = load_weights(bundle, verify=False)
    tensors = {name: tensor for name, tensor in weights.tensors.items() if not name.startswith(CLOSURE_PREFIX)}
    tensors.update(detector.weight_tensors())
    metadata = dict(weights.metadata)
    metadata[CLOSURE_METADATA] = detector.config.to_json()
    training = json.loads(metadata.get("training", "{}"))
    training["closure_detector"] = {**record, "from": "tools/train_closure.py"}
    metadata["training"] = json.dumps(training, sort_keys=True)
    return save_weights(out, tensors, metadata, update_manifest=update_manifest)

"""Stage 2's lip-closure term and telephone copies of the training audio (issue #19).

The diffusion loss is an MSE on latents: a latent that decodes to lips 3 mm apart on a /p/ costs
about as much as any other latent error of the same size, and where the audio leaves the model
unsure it predicts the average of closed and open. The lip-closure term decodes the predicted
motion latents of a few frames per batch with the frozen motion VQ and penalises the L1 error of
the midline lip gap (mm) against the ground truth, over all frames: the frames are drawn half
where the ground-truth lips are closed (bilabials, and the silence between words) and half
elsewhere, and weighted back to each group's share, so closures are seen often but not counted
more than they occur (counted more, they taught the model to close its lips on open vowels:
docs/BUNDLE.md). Decoding goes through
the codebook snap the add-on applies (straight-through), so the term sees the lips users get.

Telephone copies: the dataset puts only part of its utterances through a telephone line, and the
model followed phone-line audio clearly less (docs/REAL_SPEECH.md). `encode_telephone_split`
caches, per training utterance, the audio input of the same audio through a real narrowband
codec (sox: 300-3400 Hz, 8 kHz, mu-law / A-law / GSM), and training swaps it in for a fraction
of the windows (`ldm.telephone.probability`); the timing labels are unchanged (the line keeps
the length and adds no delay).
"""

from __future__ import annotations

import time
import zlib
from pathlib import Path

import numpy as np
import torch


from textalker_blender.core.lip_seal import LipGapReader
from tools.real_speech.measures import mouth_aperture_mm
from tools.synthetic_textalk4d.acoustics import SAMPLE_RATE, TELEPHONE_CODECS, telephone_line

DEFAULT_LIP_CLOSURE = {
    "weight": 0.0,  # 0: the term is off
    "closed_frames": 8,  # frames per batch drawn where the ground-truth gap is <= closed_mm
    "other_frames": 8,  # frames per batch drawn anywhere else
    # The real-speech check's bilabial threshold (real_speech/checks.py THRESHOLDS), so the
    # frames the term closes are those the check counts.
    "closed_mm": 1.67,
}


def lip_closure_settings(section: dict) -> dict:
    return {**DEFAULT_LIP_CLOSURE, **(section.get("lip_closure") or {})}


def lip_closure_applies(model_config) -> bool:
    """Whether the term can run for this model: it decodes predicted motion latents with the
    model's own motion VQ, which an ablation without motion, or with one joint codebook over both
    maps, does not have (those train without it)."""
    return model_config.generates_motion and model_config.joint_codebook_vq is None


def ground_truth_gap_mm(template, offsets: np.ndarray) -> np.ndarray:
    """(T,) midline lip gap (mm) of ground-truth offsets (T, V, 3): the real-speech measure."""
    return mouth_aperture_mm(template, offsets).astype(np.float32)


def decode_gap_mm(model, reader: LipGapReader, x0: torch.Tensor, subjects: torch.Tensor) -> torch.Tensor:
    """Model-space x0 (N, Dz) of frames of known subjects (N,) -> (N,) lip gap (mm) of what the
    add-on would show: latents snapped to the codebook (straight-through) and decoded."""
    z_motion, _ = model.batch_from_model_space(x0, subjects)
    snapped = model.motion_vq.quantize_latent(z_motion.detach())
    z_motion = z_motion + (snapped - z_motion).detach()
    return reader.gap_mm(model.motion_vq.decode(z_motion))


def draw_frames(gap_mm: torch.Tensor, usable: torch.Tensor, settings: dict,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(batch, frame) indices of the frames the term decodes, and each one's weight: up to
    `closed_frames` where the ground-truth gap (B, T) is <= closed_mm and up to `other_frames` of
    the rest, only where `usable` (B, T) (non-prefix frames), drawn with the training generator
    (reproducible). The weights (summing to 1) give each group its share of the usable frames, so
    the weighted mean estimates the error over all frames: closures are drawn more often than
    they occur (they are few, and decoding is the cost), not counted more."""
    closed = usable & (gap_mm <= float(settings["closed_mm"]))
    other = usable & ~closed
    chosen, weights = [], []
    for mask, count in ((closed, int(settings["closed_frames"])), (other, int(settings["other_frames"]))):
        candidates = torch.nonzero(mask.cpu(), as_tuple=False)
        if count > 0 and len(candidates):
            order = torch.randperm(len(candidates), generator=generator)[:count]
            chosen.append(candidates[order])
            weights.append(torch.full((len(order),), len(candidates) / len(order), dtype=torch.float32))
    if not chosen:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty, torch.zeros(0)
    picked = torch.cat(chosen)
    weight = torch.cat(weights)
    return picked[:, 0], picked[:, 1], weight / weight.sum()


def lip_closure_loss(model, reader: LipGapReader, prediction: torch.Tensor, subjects: torch.Tensor,
                     gap_mm: torch.Tensor, usable: torch.Tensor, settings: dict,
                     generator: torch.Generator) -> torch.Tensor:
    """L1 (mm) between the decoded gap of the predicted x0 (B, T, Dz) and the ground-truth gap
    (B, T), estimated over the usable frames from the drawn ones (`draw_frames` weights); zero
    (with a graph) when no frame is usable."""
    rows, frames, weight = draw_frames(gap_mm, usable, settings, generator)
    if not len(rows):
        return prediction.sum() * 0.0
    device = prediction.device
    rows, frames = rows.to(device), frames.to(device)
    gap = decode_gap_mm(model, reader, prediction[rows, frames], subjects[rows])
    error = (gap - gap_mm[rows, frames].to(gap.dtype)).abs()
    return (error * weight.to(device, error.dtype)).sum()


@torch.no_grad()
def closures_hit(model, reader: LipGapReader, x0: torch.Tensor, row: int, gap_mm: np.ndarray,
                 closed_mm: float, margin_frames: int = 2) -> tuple[int, int]:
    """(closures the sampled x0 (T, Dz) of one utterance closes, closures in its ground truth).

    A closure is a run of frames where the ground-truth gap is <= closed_mm; the model closes it
    when its smallest gap within the run (+- margin_frames: the mouth may lead or lag a little)
    is <= closed_mm: the real-speech check's bilabial rule on the synthetic truth."""
    closed = np.asarray(gap_mm) <= closed_mm
    runs, start = [], None
    for index, value in enumerate(np.append(closed, False)):
        if value and start is None:
            start = index
        elif not value and start is not None:
            runs.append((max(0, start - margin_frames), min(len(closed), index + margin_frames)))
            start = None
    if not runs:
        return 0, 0
    frames = sorted({f for lo, hi in runs for f in range(lo, hi)})
    index = torch.tensor(frames, device=x0.device)
    subjects = torch.full((len(frames),), row, device=x0.device, dtype=torch.long)
    decoded = dict(zip(frames, decode_gap_mm(model, reader, x0[index], subjects).cpu().numpy()))
    hits = sum(min(decoded[f] for f in range(lo, hi)) <= closed_mm for lo, hi in runs)
    return int(hits), len(runs)


# ---------------------------------------------------------------------------- telephone copies
def telephone_codec(utterance_id: str) -> str:
    """The codec of an utterance's telephone copy: fixed by its id (same bytes on every run)."""
    return TELEPHONE_CODECS[zlib.crc32(utterance_id.encode()) % len(TELEPHONE_CODECS)]


def encode_telephone_split(dataset, folder: Path, audio_fn, dist, log=print,
                           should_stop=lambda: None) -> None:
    """Write `folder/<id>.npz` (audio: the encoder's training input of the utterance's audio
    through a telephone line) for this rank's share of the split; resumable like the latent
    cache. Utterances already recorded over a telephone line keep their own audio."""
    folder.mkdir(parents=True, exist_ok=True)
    todo = [i for i in range(len(dataset)) if i % dist.world_size == dist.rank
            and not (folder / f"{dataset.entries[i]['id']}.npz").is_file()]
    started = time.monotonic()
    for n, index in enumerate(todo):
        if should_stop():
            return
        entry = dataset.entries[index]
        sample = dataset.load(index, maps=False)
        if sample.sample_rate != SAMPLE_RATE:
            raise ValueError(f"{entry['id']}: {sample.sample_rate} Hz audio; the telephone line reads {SAMPLE_RATE} Hz")
        audio = np.asarray(sample.audio, np.float32)
        if not (entry.get("acoustics") or {}).get("telephone"):
            audio = telephone_line(audio, telephone_codec(entry["id"]))
        features = audio_fn(audio, SAMPLE_RATE, int(entry["n_frames"]))
        temporary = folder / f"{entry['id']}.tmp.npz"
        np.savez(temporary, audio=features)
        temporary.replace(folder / f"{entry['id']}.npz")
        if (n + 1) % 100 == 0 and dist.is_main:
            log(f"telephone copies: {n + 1}/{len(todo)} utterances of {folder.name} "
                f"({(n + 1) / max(time.monotonic() - started, 1e-9):.1f}/s)")

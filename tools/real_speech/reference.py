"""The synthetic reference: the same statistics on test-A ground truth and on the model's output.

Ground truth: the dataset's face-unit weights applied to the template (the training target).
Model: `Pipeline.generate` on the test-A audio with the same settings as the real recordings
(default speaking and wrinkle styles, seed 0, 30 fps), so the only difference is the voice.
Thresholds are derived from the ground truth (`derive_thresholds`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .checks import (
    ClipStatistics,
    Thresholds,
    clip_statistics,
    measure_clip,
)
from .measures import lip_vertex_pair, mouth_aperture_mm, rest_aperture_mm

OPEN_VOWELS = frozenset({"aa", "ae", "ah", "ao"})  # synthetic_textalk4d.visemes.OPEN_VOWELS


def aperture_from_unit_weights(template, weights: np.ndarray) -> np.ndarray:
    """(T,) midline lip gap (mm) of face-unit weights (T, 52): only the two lip vertices."""
    upper, lower = lip_vertex_pair(template)
    units = template.unit_offsets[:, [upper, lower], 2].astype(np.float64)  # (52, 2)
    z = template.vertices[[upper, lower], 2].astype(np.float64) + np.asarray(weights, np.float64) @ units
    return (z[:, 0] - z[:, 1]) * 1000.0


@dataclass
class ReferenceSet:
    """Per-utterance statistics of test-A (ground truth, and the model when it was run)."""

    utterances: list[str] = field(default_factory=list)
    ground_truth: list[ClipStatistics] = field(default_factory=list)
    model: list[ClipStatistics] = field(default_factory=list)
    open_vowel_apertures_mm: list[float] = field(default_factory=list)  # ground truth
    model_open_vowel_apertures_mm: list[float] = field(default_factory=list)
    # the model on the same utterances through the dataset's telephone codecs (split
    # "test-A-phone", same phone timings): separates the telephone band's loss from the voice's
    model_phone: list[ClipStatistics] = field(default_factory=list)
    rest_mm: float = 0.0
    model_seconds: float = 0.0


def _phone_centre_frames(phonemes, labels, n_frames: int, fps: float, lead_s: float) -> list[int]:
    """Frames at the centre of each phone of `labels`, moved earlier by the subject's mouth lead
    (the rule of the dataset statistics, synthetic_textalk4d/stats.py)."""
    frames = []
    for phone in phonemes:
        if phone.label in labels:
            frame = int(np.floor((0.5 * (phone.start + phone.end) - lead_s) * fps))
            if 0 <= frame < n_frames:
                frames.append(frame)
    return frames


def _model_aperture(pipeline, template, sample) -> np.ndarray:
    """(T,) the model's midline lip gap (mm) on a sample's audio, with the settings of the real
    recordings (speaking style 0, the default wrinkle style, as users get; seed 0, 30 fps)."""
    result = pipeline.generate((sample.audio, sample.sample_rate), speaking_style=0, fps=30.0, seed=0)
    return mouth_aperture_mm(template, result.offsets)


def _heard_and_bilabials(sample):
    """The audio as the Pipeline hears it, and the sample's phones as (label, start, end)."""
    from textalker_blender.core.audio import load_audio

    return load_audio((sample.audio, sample.sample_rate)), [(p.label, p.start, p.end) for p in sample.phonemes]


def build_reference(dataset_root: Path, pipeline=None, limit: int | None = None,
                    split: str = "test-A", progress=None) -> ReferenceSet:
    """Statistics of every `split` utterance (the first `limit` of them); the model's when a
    Pipeline is given, also over the dataset's phone line (`<split>-phone`) when it has one."""
    import time

    from tools.synthetic_textalk4d import SyntheticTextalk4D

    dataset = SyntheticTextalk4D(dataset_root, split, maps=False)
    template = dataset.template
    reference = ReferenceSet(rest_mm=rest_aperture_mm(template))
    count = len(dataset) if limit is None else min(limit, len(dataset))
    for index in range(count):
        sample = dataset.load(index)
        audio, bilabials = _heard_and_bilabials(sample)
        truth = aperture_from_unit_weights(template, sample.weights)
        reference.utterances.append(sample.id)
        reference.ground_truth.append(clip_statistics(measure_clip(truth, audio, bilabials)))
        lead = dataset.subjects[sample.subject].speaking.lead_s
        vowel_frames = _phone_centre_frames(sample.phonemes, OPEN_VOWELS, len(truth), dataset.fps, lead)
        reference.open_vowel_apertures_mm += truth[vowel_frames].tolist()
        if pipeline is not None:
            start = time.perf_counter()
            predicted = _model_aperture(pipeline, template, sample)
            reference.model_seconds += time.perf_counter() - start
            reference.model.append(clip_statistics(measure_clip(predicted, audio, bilabials)))
            frames = [f for f in vowel_frames if f < len(predicted)]
            reference.model_open_vowel_apertures_mm += predicted[frames].tolist()
        if progress is not None:
            progress(index + 1, count)
    phone_split = f"{split}-phone"
    if pipeline is not None and phone_split in dataset.meta.get("splits", {}):
        phone = SyntheticTextalk4D(dataset_root, phone_split, maps=False)
        for index in range(min(count, len(phone))):
            sample = phone.load(index)
            audio, bilabials = _heard_and_bilabials(sample)
            predicted = _model_aperture(pipeline, template, sample)
            reference.model_phone.append(clip_statistics(measure_clip(predicted, audio, bilabials)))
    return reference


def _values(stats: list[ClipStatistics], name: str) -> np.ndarray:
    return np.array([getattr(s, name) for s in stats if getattr(s, name) is not None], np.float64)


def bilabial_values(stats: list[ClipStatistics]) -> np.ndarray:
    return np.array([v for s in stats for v in s.bilabial_minima_mm], np.float64)


def derive_thresholds(reference: ReferenceSet) -> Thresholds:
    """Pass thresholds from the ground truth of the reference set:

    - silence_max_mm: 95th percentile over utterances of the ground truth's deep-silence median
      (a real clip passes when its silence looks like 95 % of the training target's);
    - speech_open_min_mm: 10th percentile of the ground-truth aperture at open-vowel centres
      (/aa ae ah ao/): the clip's widest speech (p90) must open as wide as 90 % of open vowels;
    - auc_min: 5th percentile over utterances of the ground truth's loud-vs-silence AUC;
    - bilabial_max_mm: the rest aperture (lips together at the neutral) + 1 mm. The ground
      truth presses the lips past touching on every bilabial (p95 of its window minima is
      below rest); 1 mm is ~5 % of the mean open-vowel aperture, about what still reads as a
      closed mouth on screen.
    """
    silence = _values(reference.ground_truth, "silence_aperture_mm")
    aucs = _values(reference.ground_truth, "loud_vs_silence_auc")
    return Thresholds(
        silence_max_mm=round(float(np.percentile(silence, 95)), 2),
        speech_open_min_mm=round(float(np.percentile(reference.open_vowel_apertures_mm, 10)), 2),
        auc_min=round(float(np.percentile(aucs, 5)), 2),
        bilabial_max_mm=round(reference.rest_mm + 1.0, 2),
    )


def summarise(stats: list[ClipStatistics]) -> dict:
    """Percentiles of each statistic over a list of clips (for the report)."""
    summary = {}
    for name in ("silence_aperture_mm", "speech_aperture_p90_mm", "loud_vs_silence_auc"):
        values = _values(stats, name)
        summary[name] = _percentiles(values)
    summary["bilabial_minima_mm"] = _percentiles(bilabial_values(stats))
    summary["lag_ms"] = _percentiles(_values(stats, "lag_ms"))
    summary["rest_release_ms"] = _percentiles(np.array([v for s in stats for v in s.rest_release_ms], np.float64))
    return summary


def _percentiles(values: np.ndarray) -> dict:
    if values.size == 0:
        return {"n": 0}
    p5, p50, p95 = np.percentile(values, [5, 50, 95])
    return {"n": int(values.size), "p5": float(p5), "median": float(p50), "p95": float(p95),
            "mean": float(values.mean())}

"""Run the model on real recordings and check them; log-mel diagnostics of real vs synthetic audio."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .checks import (
    THRESHOLDS,
    CheckResult,
    ClipMeasures,
    ClipStatistics,
    Thresholds,
    clip_passes,
    clip_statistics,
    evaluate,
    measure_clip,
)
from .measures import frame_levels_db, mouth_aperture_mm, voice_activity
from .recordings import Recording


@dataclass
class RecordingResult:
    recording: Recording
    duration_s: float
    measures: ClipMeasures
    statistics: ClipStatistics
    checks: dict[str, CheckResult]

    @property
    def passed(self) -> bool | None:
        return clip_passes(self.checks)


def check_recording(pipeline, recording: Recording, thresholds: Thresholds = THRESHOLDS,
                    speaking_style=0, wrinkle_style=None, seed: int = 0,
                    model_input: np.ndarray | None = None) -> RecordingResult:
    """The model's mouth on one recording (30 fps, default styles) and the four checks.

    `model_input`: 16 kHz audio the model hears instead of the file (an equalised version, say);
    the VAD and the levels still come from the recording itself."""
    from textalker_blender.core.audio import load_audio

    audio = load_audio(recording.path)
    source = recording.path if model_input is None else (model_input, 16000)
    result = pipeline.generate(source, speaking_style=speaking_style,
                               wrinkle_style=wrinkle_style, fps=30.0, seed=seed)
    aperture = mouth_aperture_mm(pipeline.template, result.offsets)
    measures = measure_clip(aperture, audio, recording.bilabials)
    statistics = clip_statistics(measures)
    return RecordingResult(recording, result.duration_s, measures, statistics,
                           evaluate(statistics, thresholds))


# --------------------------------------------------------------------------- diagnostics
def log_mel_profile(encoder, audio_16k: np.ndarray) -> dict:
    """What the bundled encoder's input looks like for one clip (natural-log mel power):
    speech level (mean over speech frames and bands), spectral tilt (mean of the top third of
    the bands minus the bottom third, speech frames), noise floor (mean over non-speech frames,
    None without any), and the per-band mean over speech frames."""
    mel = encoder.log_mel(audio_16k)  # (n_mels, M) at 100 frames/s
    fps = encoder.mel_fps
    speech = voice_activity(frame_levels_db(audio_16k, mel.shape[1], fps=fps), fps=fps)
    speech = speech[: mel.shape[1]]
    if not speech.any():
        speech = np.ones(mel.shape[1], bool)
    bands = mel[:, speech].mean(axis=1)
    third = max(1, mel.shape[0] // 3)
    floor = float(mel[:, ~speech].mean()) if (~speech).sum() >= 5 else None
    return {"speech_level": float(bands.mean()), "tilt": float(bands[-third:].mean() - bands[:third].mean()),
            "floor": floor, "bands": bands}


def synthetic_profiles(encoder, dataset_root, limit: int | None = None, split: str = "test-A") -> list[dict]:
    from tools.synthetic_textalk4d import SyntheticTextalk4D

    from textalker_blender.core.audio import load_audio

    dataset = SyntheticTextalk4D(dataset_root, split, maps=False)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    return [log_mel_profile(encoder, load_audio((s.audio, s.sample_rate)))
            for s in (dataset.load(i) for i in range(count))]


def percentile_rank(value: float | None, population: list) -> float | None:
    """Share (%) of the population below `value`."""
    values = np.array([v for v in population if v is not None], np.float64)
    if value is None or values.size == 0:
        return None
    return float((values < value).mean() * 100)

"""Audio loading: any file librosa/soundfile reads, or an in-memory array -> mono float32, 16 kHz.

Loudness normalisation: the gated RMS level of the speech (blocks of 400 ms; blocks quieter than
-60 dBFS or more than 20 dB below the loudest blocks' level are ignored, in the spirit of
ITU-R BS.1770 gating) is brought to TARGET_RMS_DBFS. A signal whose every block is below the
-60 dBFS noise floor (silence, hiss) is NOT amplified: it is returned as is, so all-zero audio gives
all-zero samples, which the model turns into a neutral-ish silent face rather than an error.
After the gain, peaks are limited to PEAK_LIMIT by scaling down (no clipping).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Union

import numpy as np

from .config import SAMPLE_RATE
from .errors import AudioError

TARGET_RMS_DBFS = -23.0
NOISE_FLOOR_DBFS = -60.0
RELATIVE_GATE_DB = 20.0
GATE_BLOCK_S = 0.4
PEAK_LIMIT = 0.99
MAX_CHANNELS = 64

AudioSource = Union[str, os.PathLike, tuple]


def load_audio(
    source: AudioSource,
    sample_rate: int = SAMPLE_RATE,
    *,
    normalize: bool = True,
    max_duration_s: float | None = None,
) -> np.ndarray:
    """Load `source` (a path, or `(array, rate)`) as mono float32 at `sample_rate`.

    Raises `AudioError` for a missing or unreadable file, an empty signal, non-finite samples, a
    bad sample rate, or a duration above `max_duration_s`.
    """
    if isinstance(source, (str, os.PathLike)):
        _refuse_long_file(Path(source), max_duration_s)  # before decoding hours into memory
        samples, rate = _read_file(Path(source))
        if samples.size == 0:
            raise AudioError(
                f"{Path(source).name} holds no audio samples (empty, truncated or corrupt)."
            )
        mono = _to_mono(samples, channels_last=True)  # decoders give (samples, channels)
    elif isinstance(source, tuple) and len(source) == 2:
        samples, rate = _check_array(source[0], source[1])
        if samples.size == 0:
            raise AudioError("The audio is empty (no samples).")
        mono = _to_mono(samples)
    else:
        raise AudioError(
            "Audio must be a file path or a (samples, sample_rate) pair, "
            f"not {type(source).__name__}."
        )
    if mono.size == 0:
        raise AudioError("The audio is empty (no samples).")
    if not np.all(np.isfinite(mono)):
        raise AudioError("The audio contains invalid samples (NaN or infinity).")
    duration = mono.size / rate
    if max_duration_s is not None and duration > max_duration_s:
        raise AudioError(
            f"The audio is {duration / 60:.1f} minutes long; the limit is "
            f"{max_duration_s / 60:.1f} minutes. Split it into shorter clips."
        )
    if rate != sample_rate:
        import soxr  # librosa's own resampling backend; high quality and fast

        mono = soxr.resample(mono, rate, sample_rate, quality="HQ").astype(np.float32)
    if mono.size == 0:
        raise AudioError("The audio is too short to use.")
    if normalize:
        mono = normalize_loudness(mono, sample_rate)
    return np.ascontiguousarray(mono, dtype=np.float32)


def normalize_loudness(
    samples: np.ndarray, sample_rate: int = SAMPLE_RATE, target_dbfs: float = TARGET_RMS_DBFS
) -> np.ndarray:
    """Scale `samples` so their gated RMS is `target_dbfs`; leave silence and noise floor alone."""
    level = gated_rms_dbfs(samples, sample_rate)
    if level is None:
        return samples.astype(np.float32, copy=True)
    gain = 10.0 ** ((target_dbfs - level) / 20.0)
    out = samples.astype(np.float32) * np.float32(gain)
    peak = float(np.max(np.abs(out)))
    if peak > PEAK_LIMIT:
        out *= np.float32(PEAK_LIMIT / peak)
    return out


def gated_rms_dbfs(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float | None:
    """RMS level in dBFS of the blocks above the gates, or None when nothing is above the floor."""
    block = max(1, int(round(GATE_BLOCK_S * sample_rate)))
    n_blocks = max(1, math.ceil(samples.size / block))
    padded = np.zeros(n_blocks * block, dtype=np.float64)
    padded[: samples.size] = samples
    blocks = padded.reshape(n_blocks, block)
    # The last block is partial: its mean uses only the real samples.
    counts = np.full(n_blocks, block, dtype=np.float64)
    counts[-1] = samples.size - (n_blocks - 1) * block
    power = (blocks**2).sum(axis=1) / counts
    with np.errstate(divide="ignore"):
        level_db = 10.0 * np.log10(power)
    active = level_db > NOISE_FLOOR_DBFS
    if not np.any(active):
        return None
    loud = 10.0 * math.log10(power[active].mean())
    active &= level_db > loud - RELATIVE_GATE_DB
    return 10.0 * math.log10(power[active].mean())


def audio_duration(source: AudioSource) -> float | None:
    """Seconds of audio in `source` without decoding it: the file header's length, or the
    length of an `(array, rate)` pair. None when the header cannot tell (the decoder will)."""
    if isinstance(source, tuple) and len(source) == 2:
        try:
            samples = np.asarray(source[0])
            rate = float(source[1])
        except (TypeError, ValueError):
            return None
        if samples.ndim == 0 or not math.isfinite(rate) or rate <= 0:
            return None
        # (samples, channels) or (channels, samples): the samples are on the long axis.
        return max(samples.shape) / rate
    try:
        import soundfile

        info = soundfile.info(str(source))
    except Exception:  # noqa: BLE001 - any header libsndfile cannot parse: unknown length
        return None
    if info.samplerate <= 0 or info.frames < 0:
        return None
    return info.frames / info.samplerate


def _refuse_long_file(path: Path, max_duration_s: float | None) -> None:
    if max_duration_s is None or not path.is_file():
        return
    duration = audio_duration(path)
    if duration is not None and duration > max_duration_s:
        raise AudioError(
            f"The audio is {duration / 60:.1f} minutes long; the limit is "
            f"{max_duration_s / 60:.1f} minutes. Split it into shorter clips."
        )


# ---------------------------------------------------------------------------- helpers
def _read_file(path: Path) -> tuple[np.ndarray, int]:
    if not path.exists():
        raise AudioError(f"Audio file not found: {path}")
    if path.is_dir():
        raise AudioError(f"Expected an audio file but got a folder: {path}")
    if path.stat().st_size == 0:
        raise AudioError(f"The audio file is empty: {path.name}")
    import soundfile

    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        return samples, int(rate)
    except Exception:  # noqa: BLE001 - any libsndfile failure: fall back to librosa/audioread
        pass
    try:
        import warnings

        import librosa

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # librosa warns about the audioread fallback
            samples, rate = librosa.load(str(path), sr=None, mono=False)
    except Exception as exc:  # noqa: BLE001 - report any decoder failure the same way
        raise AudioError(
            f"Could not read {path.name} as audio ({type(exc).__name__}): it is not an audio "
            "file, or it is truncated or corrupt. Use WAV, FLAC, OGG or MP3."
        ) from exc
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 2:  # librosa gives (channels, samples)
        samples = samples.T
    return samples, int(rate)


def _check_array(samples, rate) -> tuple[np.ndarray, int]:
    try:
        rate_value = float(rate)
    except (TypeError, ValueError):
        raise AudioError(f"Sample rate must be a number, not {rate!r}.") from None
    if not math.isfinite(rate_value) or rate_value <= 0 or rate_value != int(rate_value):
        raise AudioError(f"Sample rate must be a positive whole number of Hz, not {rate!r}.")
    array = np.asarray(samples)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise AudioError(f"Audio samples must be numbers, not {array.dtype}.")
    if np.issubdtype(array.dtype, np.integer):
        # PCM integers: scale to [-1, 1] by the type's range.
        array = array.astype(np.float32) / float(np.iinfo(array.dtype).max)
    return array.astype(np.float32, copy=False), int(rate_value)


def _to_mono(samples: np.ndarray, channels_last: bool = False) -> np.ndarray:
    if samples.ndim == 1:
        return samples
    if samples.ndim != 2:
        raise AudioError(f"Audio must be 1-D or 2-D (samples x channels), not {samples.ndim}-D.")
    # Arrays may be (samples, channels) or (channels, samples): channels is the short axis.
    # Decoded files are always (samples, channels), even when shorter than their channel count.
    if not channels_last and samples.shape[1] > samples.shape[0] and samples.shape[0] <= MAX_CHANNELS:
        samples = samples.T
    if samples.shape[1] > MAX_CHANNELS:
        raise AudioError(
            f"Audio has {samples.shape[1]} channels; at most {MAX_CHANNELS} supported."
        )
    return samples.mean(axis=1)

"""Audio loading: any file librosa/soundfile reads, or an in-memory array -> mono float32, 16 kHz.

Conditioning, in this order (issue #17: audio that decodes but is not clean speech):

1. DC and rumble removal: the mean is subtracted and a zero-phase high-pass (Butterworth, order 2
   run forwards and backwards, HIGH_PASS_HZ = 20 Hz) removes what lies below the model's lowest
   mel band (its mel filters start at 20 Hz). A DC offset used to take part in the loudness
   measure (speech with an offset was turned down: ~40 % less lip motion) and to leak into the
   lowest mel bins (a DC-only file moved the lips 5x as much as silence). Above 20 Hz clean
   speech is left as it was, so the model hears what it was trained on.
2. Loudness normalisation: the gated RMS level of the speech (blocks of 400 ms; blocks quieter than
   the floor or more than 20 dB below the loudest blocks' level are ignored, in the spirit of
   ITU-R BS.1770 gating) is brought to TARGET_RMS_DBFS. The floor is -60 dBFS; below it, down to
   QUIET_FLOOR_DBFS (-90 dBFS), a signal is still normalised when its level moves like speech
   (syllables and pauses: 100 ms blocks spread over at least SPEECH_LEVEL_SPREAD_DB), so speech
   recorded at -60 dBFS peak animates the face instead of leaving it still. Steady signals below
   -60 dBFS (silence, hiss, hum) are NOT amplified: all-zero audio gives all-zero samples, which
   the model turns into a neutral-ish silent face rather than an error. After the gain, peaks are
   limited to PEAK_LIMIT by scaling down (no clipping).
3. Clipping is detected (runs of samples at the file's own peak), not repaired: a hard-clipped
   recording cannot be restored, and the distortion makes the model open the mouth wider.

`load_audio_with_report` also returns an `AudioReport`: the offset removed, the level and gain,
the clipped share, and whether the sound looks like speech (`speech_likeness`: speech is partly
voiced and its pitch glides; noise has no pitch, music and tones hold theirs). Its `warnings` are
what the add-on and the command lines show; the run still goes ahead.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
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
# DC and rumble below the model's lowest mel band (features.py: fmin 20 Hz) are removed.
HIGH_PASS_HZ = 20.0
# Quiet audio between QUIET_FLOOR_DBFS and NOISE_FLOOR_DBFS is normalised when its 100 ms block
# levels spread like speech: the 90th percentile at least this far above the 10th. Steady hiss
# spreads ~1 dB; speech (syllables, pauses) 15-40 dB.
QUIET_FLOOR_DBFS = -90.0
SPEECH_LEVEL_SPREAD_DB = 10.0
# Warn when the speech had to be raised by more than this (its noise was raised as much).
QUIET_WARNING_GAIN_DB = 30.0
# Warn when more than this share of the samples sit in runs of 3+ at the file's own peak.
CLIPPED_WARNING_FRACTION = 0.001

AudioSource = Union[str, os.PathLike, tuple]


@dataclass
class AudioReport:
    """What conditioning found and did (see the module docstring)."""

    dc_offset: float = 0.0  # mean removed, full scale = 1
    clipped_fraction: float = 0.0  # share of samples in runs of 3+ at the peak
    level_dbfs: float | None = None  # gated speech level before the gain (None: below every floor)
    gain_db: float = 0.0
    speech: SpeechLikeness | None = None
    warnings: list[str] = field(default_factory=list)


def load_audio(
    source: AudioSource,
    sample_rate: int = SAMPLE_RATE,
    *,
    normalize: bool = True,
    max_duration_s: float | None = None,
) -> np.ndarray:
    """Load `source` (a path, or `(array, rate)`) as mono float32 at `sample_rate`, conditioned
    (DC and rumble removed, loudness-normalised; `normalize=False`: as decoded).

    Raises `AudioError` for a missing or unreadable file, an empty signal, non-finite samples, a
    bad sample rate, or a duration above `max_duration_s`.
    """
    return load_audio_with_report(source, sample_rate, normalize=normalize, max_duration_s=max_duration_s)[0]


def load_audio_with_report(
    source: AudioSource,
    sample_rate: int = SAMPLE_RATE,
    *,
    normalize: bool = True,
    max_duration_s: float | None = None,
) -> tuple[np.ndarray, AudioReport]:
    """`load_audio` and the `AudioReport` of its conditioning (an empty report without it)."""
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
    report = AudioReport()
    if normalize:
        mono, report = condition(mono, sample_rate)
    return np.ascontiguousarray(mono, dtype=np.float32), report


def condition(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, AudioReport]:
    """DC and rumble removal, loudness normalisation, clipping and speech checks (module docstring)."""
    samples = np.asarray(samples, dtype=np.float32)
    report = AudioReport(clipped_fraction=clipped_fraction(samples))
    report.dc_offset = float(np.mean(samples, dtype=np.float64))
    filtered = remove_dc_and_rumble(samples, sample_rate)
    report.level_dbfs = speech_level_dbfs(filtered, sample_rate)
    out = normalize_loudness(filtered, sample_rate)
    if report.level_dbfs is not None:
        report.gain_db = TARGET_RMS_DBFS - report.level_dbfs
    report.speech = speech_likeness(out, sample_rate)
    report.warnings = _warnings(report)
    return out, report


def _warnings(report: AudioReport) -> list[str]:
    warnings = []
    if report.level_dbfs is None:
        warnings.append("The audio is silent (or only steady noise below -60 dBFS): the face stays still")
    elif report.gain_db > QUIET_WARNING_GAIN_DB:
        warnings.append(
            f"The audio is very quiet (speech at {report.level_dbfs:.0f} dBFS): it was raised by "
            f"{report.gain_db:.0f} dB, and its noise with it. Record louder for cleaner lip motion"
        )
    if report.level_dbfs is not None and report.clipped_fraction > CLIPPED_WARNING_FRACTION:
        warnings.append(
            f"The audio is clipped ({report.clipped_fraction:.1%} of the samples at full scale): the "
            "distortion makes the mouth open wider and close less. Use an unclipped recording"
        )
    if report.level_dbfs is not None and report.speech is not None and not report.speech.is_speech:
        warnings.append(f"The audio does not sound like speech ({report.speech.reason}): the lips will "
                        "move to it anyway. Use a voice recording (music and noise give random lip motion)")
    return warnings


def remove_dc_and_rumble(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The mean removed and a zero-phase high-pass at HIGH_PASS_HZ applied (float32)."""
    from scipy import signal

    # float32 throughout: a 10-minute file then needs ~70 MB and 0.1 s instead of ~280 MB and
    # 1 s in float64; the rounding stays ~70 dB below the signal.
    centred = samples.astype(np.float32) - np.float32(samples.mean(dtype=np.float64))
    sos = signal.butter(2, HIGH_PASS_HZ, btype="highpass", fs=sample_rate, output="sos").astype(np.float32)
    if centred.size <= 3 * (2 * len(sos) + 1):  # too short for the filter's padding
        return centred
    # Padding of ~0.1 s (odd extension) lets the 20 Hz filter settle before the first sample.
    padding = min(centred.size - 1, sample_rate // 10)
    return signal.sosfiltfilt(sos, centred, padlen=padding).astype(np.float32, copy=False)


def clipped_fraction(samples: np.ndarray) -> float:
    """Share of the samples in runs of 3 or more at (within 0.1 % of) the signal's own peak,
    either sign: hard clipping at whatever level the recorder clipped."""
    magnitude = np.abs(samples)
    peak = float(magnitude.max()) if magnitude.size else 0.0
    if peak <= 0.0:
        return 0.0
    at_peak = (magnitude >= 0.999 * peak).astype(np.int8)
    # Runs: a sample counts when it and both neighbours are at the peak (run length >= 3).
    if at_peak.size < 3:
        return 0.0
    inner = at_peak[1:-1] & at_peak[:-2] & at_peak[2:]
    in_run = np.zeros_like(at_peak)
    in_run[1:-1] |= inner
    in_run[:-2] |= inner
    in_run[2:] |= inner
    return float(in_run.mean())


def normalize_loudness(
    samples: np.ndarray, sample_rate: int = SAMPLE_RATE, target_dbfs: float = TARGET_RMS_DBFS
) -> np.ndarray:
    """Scale `samples` so their gated RMS is `target_dbfs`; leave silence and noise floor alone."""
    level = speech_level_dbfs(samples, sample_rate)
    if level is None:
        return samples.astype(np.float32, copy=True)
    gain = 10.0 ** ((target_dbfs - level) / 20.0)
    out = samples.astype(np.float32) * np.float32(gain)
    peak = float(np.max(np.abs(out)))
    if peak > PEAK_LIMIT:
        out *= np.float32(PEAK_LIMIT / peak)
    return out


def speech_level_dbfs(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float | None:
    """The level normalisation works from: the gated RMS above NOISE_FLOOR_DBFS, or, for quieter
    audio whose level moves like speech, the gated RMS above QUIET_FLOOR_DBFS; None otherwise."""
    level = gated_rms_dbfs(samples, sample_rate)
    if level is not None:
        return level
    quiet = gated_rms_dbfs(samples, sample_rate, floor_dbfs=QUIET_FLOOR_DBFS)
    if quiet is None or level_spread_db(samples, sample_rate) < SPEECH_LEVEL_SPREAD_DB:
        return None
    return quiet


def level_spread_db(samples: np.ndarray, sample_rate: int = SAMPLE_RATE, block_s: float = 0.1) -> float:
    """90th minus 10th percentile of the 100 ms block levels (dB; blocks of digital silence
    count at QUIET_FLOOR_DBFS): how much the level moves."""
    block = max(1, int(round(block_s * sample_rate)))
    n_blocks = samples.size // block
    if n_blocks < 2:
        return 0.0
    power = (samples[: n_blocks * block].astype(np.float64).reshape(n_blocks, block) ** 2).mean(axis=1)
    with np.errstate(divide="ignore"):
        level = np.maximum(10.0 * np.log10(power), QUIET_FLOOR_DBFS)
    return float(np.percentile(level, 90) - np.percentile(level, 10))


def gated_rms_dbfs(samples: np.ndarray, sample_rate: int = SAMPLE_RATE,
                   floor_dbfs: float = NOISE_FLOOR_DBFS) -> float | None:
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
    active = level_db > floor_dbfs
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
    except Exception:  # noqa: BLE001 - any libsndfile failure: try its decodable part, then librosa
        pass
    partial = _read_decodable_part(path)
    if partial is not None:
        return partial
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


def _read_decodable_part(path: Path, block_frames: int = 4096, max_failed_blocks: int = 64
                         ) -> tuple[np.ndarray, int] | None:
    """What libsndfile can decode of a damaged file (a truncated or corrupted FLAC or OGG: "decoder
    lost sync"), block by block, or None when it decodes nothing. Needs no ffmpeg, which the add-on
    cannot count on inside Blender.

    After a block fails the decoder is reopened past it. A damaged stretch inside the file becomes
    silence, so the rest stays in time with the sound strip; a file that breaks off (or fails for
    `max_failed_blocks` blocks in a row) ends at its last decodable block."""
    import soundfile

    try:
        handle = soundfile.SoundFile(str(path))
    except Exception:  # noqa: BLE001 - not even a header libsndfile knows
        return None
    rate, channels, declared = int(handle.samplerate), int(handle.channels), int(handle.frames)
    blocks: list[np.ndarray] = []
    position = decoded_end = failed = 0
    try:
        while position < declared and failed < max_failed_blocks:
            try:
                handle.seek(position)
                block = handle.read(block_frames, dtype="float32", always_2d=True)
            except Exception:  # noqa: BLE001 - a damaged block: skip it with a fresh decoder
                failed += 1
                position += block_frames
                handle.close()
                handle = soundfile.SoundFile(str(path))
                continue
            if not len(block):
                break
            if position > decoded_end:  # the damaged stretch before this block: silence
                blocks.append(np.zeros((position - decoded_end, channels), np.float32))
            blocks.append(block)
            position += len(block)
            decoded_end = position
            failed = 0
    finally:
        handle.close()
    if not blocks:
        return None
    return np.concatenate(blocks), rate


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


# ---------------------------------------------------------------------------- speech or not
# Speech is partly voiced (a pitch in 70-400 Hz in some of its loud frames) and its pitch glides;
# noise has no pitch, music and tones hold theirs. Measured on the sample voice, the 11 real
# recordings of tools/real_speech and synthetic noise, tones, chords and melodies
# (tests/test_robustness_conditioning.py): voiced share 0.67-0.97 for speech, 0 for white noise;
# steady-pitch share 0.12-0.41 for speech, 0.92-1.0 for music and tones.
MIN_VOICED_FRACTION = 0.2
MAX_STEADY_PITCH_FRACTION = 0.7
VOICING_THRESHOLD = 0.5  # normalised autocorrelation peak of a voiced frame
STEADY_PITCH_OCTAVES = 0.003  # a pitch change below this between 10 ms frames (0.2 %) is "held"
ANALYSIS_MAX_S = 60.0  # longer audio is judged on evenly spread excerpts (bounded cost)
_FRAME, _HOP = 640, 160  # 40 ms frames every 10 ms at 16 kHz


@dataclass(frozen=True)
class SpeechLikeness:
    voiced_fraction: float  # of the loud frames, those with a pitch
    steady_pitch_fraction: float  # of consecutive voiced frames, those whose pitch holds
    is_speech: bool
    reason: str  # why not, for the warning ("" when it is speech)


def speech_likeness(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> SpeechLikeness | None:
    """Whether `samples` (16 kHz, conditioned) sound like speech; None when too short to tell
    (under 0.3 s) or silent."""
    if sample_rate != SAMPLE_RATE or samples.size < int(0.3 * sample_rate):
        return None
    excerpt = _excerpts(np.asarray(samples, np.float32), int(ANALYSIS_MAX_S * sample_rate))
    n_frames = 1 + (excerpt.size - _FRAME) // _HOP
    index = np.arange(_FRAME)[None, :] + _HOP * np.arange(n_frames)[:, None]
    window = np.hanning(_FRAME).astype(np.float32)
    energy = np.empty(n_frames)
    peak = np.empty(n_frames)
    lag = np.empty(n_frames, np.int64)
    lo, hi = sample_rate // 400, sample_rate // 70
    for start in range(0, n_frames, 2048):  # blocks: bounded memory
        frames = excerpt[index[start : start + 2048]] * window
        energy[start : start + len(frames)] = (frames.astype(np.float64) ** 2).mean(axis=1)
        spectrum = np.fft.rfft(frames, 2 * _FRAME)
        autocorrelation = np.fft.irfft(np.abs(spectrum) ** 2)[:, :_FRAME]
        autocorrelation /= autocorrelation[:, :1] + 1e-12
        peak[start : start + len(frames)] = autocorrelation[:, lo:hi].max(axis=1)
        lag[start : start + len(frames)] = autocorrelation[:, lo:hi].argmax(axis=1) + lo
    with np.errstate(divide="ignore"):
        level = 10.0 * np.log10(energy)
    if not np.any(np.isfinite(level)):
        return None
    loud = level > np.percentile(level[np.isfinite(level)], 95) - 30.0
    voiced = loud & (peak > VOICING_THRESHOLD)
    voiced_fraction = float(voiced[loud].mean()) if loud.any() else 0.0
    both = voiced[1:] & voiced[:-1]
    jumps = np.abs(np.log2(lag[1:] / lag[:-1]))[both]
    steady = float((jumps < STEADY_PITCH_OCTAVES).mean()) if jumps.size else 0.0
    reason = ""
    if voiced_fraction < MIN_VOICED_FRACTION:
        reason = f"no voice found: {voiced_fraction:.0%} of it has a pitch, like noise"
    elif steady > MAX_STEADY_PITCH_FRACTION:
        reason = f"its pitch holds still {steady:.0%} of the time, like music or a tone"
    return SpeechLikeness(voiced_fraction, steady, not reason, reason)


def _excerpts(samples: np.ndarray, budget: int) -> np.ndarray:
    """`samples`, or six evenly spread excerpts adding up to `budget` samples."""
    if samples.size <= budget:
        return samples
    length = budget // 6
    starts = np.linspace(0, samples.size - length, 6).astype(np.int64)
    return np.concatenate([samples[s : s + length] for s in starts])

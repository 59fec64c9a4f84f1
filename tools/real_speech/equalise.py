"""An inference-only experiment: bring a real recording's long-term spectrum to the training
voices' before the model hears it (a fixed per-clip equaliser, no retraining).

The long-term average spectrum (LTAS, dB per STFT bin, mean over VAD speech frames) of the
synthetic training voices is the target; each clip gets the smoothed difference, clipped to
+-MAX_GAIN_DB, as a zero-phase gain in the STFT domain. Loudness is re-normalised afterwards by
the Pipeline's load_audio, so only the spectral shape changes. The tool reports the checks with
and without it, which measures whether the real-vs-synthetic gap is a channel/timbre mismatch
(that such an equaliser, or a per-utterance spectral normalisation in training, would fix).
"""

from __future__ import annotations

import numpy as np

from .measures import frame_levels_db, voice_activity

N_FFT = 512
HOP = 160
SAMPLE_RATE = 16000
MAX_GAIN_DB = 12.0
SMOOTH_BINS = 9  # ~280 Hz: follow the spectral envelope (tilt, formant regions), not harmonics


def _speech_frames(audio: np.ndarray, n_frames: int) -> np.ndarray:
    fps = SAMPLE_RATE / HOP
    speech = voice_activity(frame_levels_db(audio, n_frames, fps=fps), fps=fps)
    return speech if speech.any() else np.ones(n_frames, bool)


def long_term_spectrum_db(audio: np.ndarray) -> np.ndarray:
    """(N_FFT // 2 + 1,) mean power (dB) per bin over the clip's speech frames."""
    import librosa

    power = np.abs(librosa.stft(np.asarray(audio, np.float32), n_fft=N_FFT, hop_length=HOP)) ** 2
    speech = _speech_frames(audio, power.shape[1])
    return 10.0 * np.log10(power[:, speech].mean(axis=1) + 1e-12)


def smoothed(values: np.ndarray, width: int = SMOOTH_BINS) -> np.ndarray:
    kernel = np.hanning(width + 2)[1:-1]
    kernel /= kernel.sum()
    padded = np.pad(values, width // 2, mode="edge")
    return np.convolve(padded, kernel, mode="valid")


def match_spectrum(audio: np.ndarray, target_db: np.ndarray, max_gain_db: float = MAX_GAIN_DB) -> np.ndarray:
    """`audio` with its LTAS moved towards `target_db` (gain clipped to +-max_gain_db)."""
    import librosa

    audio = np.asarray(audio, np.float32)
    stft = librosa.stft(audio, n_fft=N_FFT, hop_length=HOP)
    source = long_term_spectrum_db(audio)
    gain_db = np.clip(smoothed(target_db - source), -max_gain_db, max_gain_db)
    gain_db -= gain_db.mean()  # shape only: load_audio re-normalises the level anyway
    out = librosa.istft(stft * (10.0 ** (gain_db / 20.0))[:, None], hop_length=HOP, length=audio.size)
    return out.astype(np.float32)


def synthetic_long_term_spectrum(dataset_root, split: str = "train", every: int = 10) -> np.ndarray:
    """Mean LTAS (dB) of every `every`-th utterance of `split` (loudness-normalised as the model
    hears them)."""
    from tools.synthetic_textalk4d import SyntheticTextalk4D

    from textalker_blender.core.audio import load_audio

    dataset = SyntheticTextalk4D(dataset_root, split, maps=False)
    spectra = [long_term_spectrum_db(load_audio((s.audio, s.sample_rate)))
               for s in (dataset.load(i) for i in range(0, len(dataset), every))]
    return np.mean(spectra, axis=0)

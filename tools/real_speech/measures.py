"""Frame-level measures shared by the real-speech checks and their synthetic reference.

Everything is at the model's frame rate (MODEL_FPS = 30): frame i covers [i, i + 1) / 30 s and is
measured at its centre, the convention of `core.features` and `core.resample`.

- `frame_levels_db`: RMS level (dBFS) of the loudness-normalised audio in a 40 ms window at each
  frame centre.
- `voice_activity`: energy VAD on those levels (fixed threshold below the normalised speech
  level, short silent gaps such as stop closures filled, isolated blips dropped).
- `distance_to_speech`: frames from each frame to the nearest speech frame, so "silence" can be
  restricted to frames far enough from speech that a real mouth is at rest (no anticipation or
  carry-over of the neighbouring words).
- `mouth_aperture_mm`: the midline lip gap, the dataset's own definition
  (`synthetic_textalk4d.geometry.lip_gap`), in millimetres.
"""

from __future__ import annotations


import numpy as np
from scipy import ndimage

from textalker_blender.core.config import MODEL_FPS, SAMPLE_RATE  # noqa: E402

# load_audio brings the gated speech level to -23 dBFS. Frames more than 22 dB below it are
# silence: on the synthetic test-A set, 95 % of the frames flite marks as pauses lie below
# -46 dBFS and 95 % of phone frames above -49 dBFS; the real recordings' noise floors lie at
# -52 to -58 dBFS (arctic) or are digital silence (ALSA).
SPEECH_THRESHOLD_DBFS = -45.0
LEVEL_WINDOW_S = 0.04  # long enough to hold one glottal period of a low male voice
LEVEL_HOP_S = 0.01
# Silent gaps shorter than this inside speech are stop closures or short pauses, not rest.
FILL_GAP_S = 0.15
# Speech islands shorter than this are clicks or breaths, not words.
MIN_SPEECH_S = 0.05
LOUD_MARGIN_DB = 7.0  # "loud" frames: within 7 dB of the normalised speech level (vowel nuclei)


def frame_times(n_frames: int, fps: float = MODEL_FPS) -> np.ndarray:
    """Centre time (s) of each model frame."""
    return (np.arange(n_frames) + 0.5) / fps


def frame_levels_db(audio: np.ndarray, n_frames: int, sample_rate: int = SAMPLE_RATE,
                    fps: float = MODEL_FPS) -> np.ndarray:
    """(n_frames,) RMS level in dBFS around each frame centre (floored at -120 dBFS)."""
    import librosa

    audio = np.asarray(audio, dtype=np.float32)
    window = int(round(LEVEL_WINDOW_S * sample_rate))
    hop = int(round(LEVEL_HOP_S * sample_rate))
    if audio.size < window:
        audio = np.pad(audio, (0, window - audio.size))
    rms = librosa.feature.rms(y=audio, frame_length=window, hop_length=hop, center=True)[0]
    rms_times = np.arange(rms.size) * hop / sample_rate
    level = np.interp(frame_times(n_frames, fps), rms_times, rms)
    return 20.0 * np.log10(np.maximum(level, 1e-6))


def voice_activity(levels_db: np.ndarray, fps: float = MODEL_FPS,
                   threshold_db: float = SPEECH_THRESHOLD_DBFS) -> np.ndarray:
    """(T,) bool: frame is speech. Gaps < FILL_GAP_S between speech are filled; speech islands
    shorter than MIN_SPEECH_S are dropped."""
    speech = np.asarray(levels_db) > threshold_db
    gap = max(1, int(round(FILL_GAP_S * fps)))
    labels, count = ndimage.label(~speech)
    for index in range(1, count + 1):
        run = np.nonzero(labels == index)[0]
        inside = run[0] > 0 and run[-1] < len(speech) - 1  # bounded by speech on both sides
        if inside and run.size < gap:
            speech[run] = True
    shortest = max(1, int(round(MIN_SPEECH_S * fps)))
    labels, count = ndimage.label(speech)
    for index in range(1, count + 1):
        run = labels == index
        if run.sum() < shortest:
            speech[run] = False
    return speech


def distance_to_speech(speech: np.ndarray) -> np.ndarray:
    """(T,) frames to the nearest speech frame (0 on speech; large when there is no speech)."""
    speech = np.asarray(speech, dtype=bool)
    if not speech.any():
        return np.full(speech.shape, 10**6, dtype=np.int64)
    return np.rint(ndimage.distance_transform_edt(~speech)).astype(np.int64)


def lip_vertex_pair(template) -> tuple[int, int]:
    """(upper, lower) vertex indices of the midline lip gap, found as the dataset tools do:
    the lower-lip vertex jawOpen moves most and the upper-lip vertex right above it."""
    # Probe lip_gap itself (z = index, then index^2) so the pair is exactly the dataset's,
    # without copying its selection rules here.
    probe = np.zeros((2, template.n_vertices, 3), np.float64)
    probe[0, :, 2] = np.arange(template.n_vertices)  # gap = upper - lower
    probe[1, :, 2] = np.arange(template.n_vertices) ** 2  # gap = upper^2 - lower^2
    difference, squares = _lip_gap(template, probe)
    total = squares / difference  # upper + lower
    upper = int(round((total + difference) / 2))
    lower = int(round((total - difference) / 2))
    return upper, lower


def _lip_gap(template, vertices):
    from tools.synthetic_textalk4d.geometry import lip_gap

    return lip_gap(template, vertices)


def mouth_aperture_mm(template, offsets: np.ndarray) -> np.ndarray:
    """(T,) midline lip gap in mm of offsets (T, V, 3) metres from the template's neutral.
    Negative: lips pressed past touching."""
    upper, lower = lip_vertex_pair(template)
    z = template.vertices[[upper, lower], 2].astype(np.float64)
    offsets = np.asarray(offsets)
    gap = (z[0] + offsets[:, upper, 2]) - (z[1] + offsets[:, lower, 2])
    return (gap * 1000.0).astype(np.float64)


def rest_aperture_mm(template) -> float:
    """The neutral template's midline lip gap (mm): the mouth at rest."""
    return float(mouth_aperture_mm(template, np.zeros((1, template.n_vertices, 3)))[0])


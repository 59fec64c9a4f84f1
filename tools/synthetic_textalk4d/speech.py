"""Speech synthesis with Debian's flite, voice variation with sox, aligned phoneme timings.

flite's `-psdur` prints every segment with its end time in seconds; the times come from the same
utterance structure the waveform is generated from, so they are aligned to the WAV. sox's `pitch`
(WSOLA) and EQ effects keep the number of samples, so the timings stay valid after post-processing.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile

from .text import words_of

SAMPLE_RATE = 16000
# kal16 is the 16 kHz build of the kal diphone voice (plain `kal` is 8 kHz, telephone band).
FLITE_VOICES = ("kal16", "awb", "rms", "slt")
# Voices whose intonation model follows int_f0_target_mean (measured: rms ignores it).
F0_CONTROLLABLE = frozenset({"kal16", "kal", "awb", "slt"})
REQUIRED_PROGRAMS = {"flite": "flite", "sox": "sox"}
OPTIONAL_PROGRAMS = {"espeak-ng": "espeak-ng", "ffmpeg": "ffmpeg"}


class SpeechToolsMissing(RuntimeError):
    pass


def ensure_speech_tools(install: bool = True) -> None:
    """Make sure flite and sox exist; apt-get install them when running as root, else explain."""
    missing = [pkg for program, pkg in REQUIRED_PROGRAMS.items() if shutil.which(program) is None]
    if not missing:
        return
    command = ["apt-get", "install", "-y", *missing]
    if install and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing", " ".join(missing), "with apt-get", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(command, check=True)
        if all(shutil.which(program) for program in REQUIRED_PROGRAMS):
            return
    raise SpeechToolsMissing(
        "The dataset generator needs the Debian packages " + ", ".join(missing)
        + ". Install them with:\n  sudo " + " ".join(command)
    )


@dataclasses.dataclass(frozen=True)
class VoiceParams:
    """How one synthetic subject sounds."""
    flite_voice: str
    duration_stretch: float      # >1 speaks slower
    f0_mean_hz: float            # target mean pitch (voices in F0_CONTROLLABLE)
    f0_std_hz: float             # intonation range
    pitch_shift_cents: float     # sox pitch shift, keeps duration
    bass_db: float               # sox low shelf (timbre)
    treble_db: float             # sox high shelf (timbre)
    gain_db: float               # loudness relative to the normalised level

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "VoiceParams":
        return cls(**data)


@dataclasses.dataclass(frozen=True)
class Phoneme:
    label: str         # flite phone name (CMU set, lower case), "pau" for silence
    start: float       # seconds
    end: float         # seconds
    word: int = -1     # index of the word in the sentence, -1 for pauses / unknown

    def to_list(self) -> list:
        return [self.label, round(self.start, 4), round(self.end, 4), self.word]

    @classmethod
    def from_list(cls, item) -> "Phoneme":
        return cls(str(item[0]), float(item[1]), float(item[2]), int(item[3]))


def parse_psdur(text: str) -> list[tuple[str, float]]:
    """'pau:0.220 b:0.309 ...' -> [('pau', 0.22), ('b', 0.309), ...]."""
    items = []
    for token in text.split():
        if ":" not in token:
            continue
        label, end = token.rsplit(":", 1)
        try:
            items.append((label, float(end)))
        except ValueError:
            continue
    if not items:
        raise ValueError(f"no phoneme timings in flite output: {text[:200]!r}")
    return items


@functools.lru_cache(maxsize=None)
def word_phone_count(word: str, voice: str) -> int:
    """Number of segments flite produces for one word in isolation (pauses excluded)."""
    out = subprocess.run(["flite", "-voice", voice, "-ps", "-t", word, "none"],
                         capture_output=True, text=True, check=True).stdout
    return sum(1 for phone in out.split() if phone != "pau")


def assign_words(labels: list[str], sentence: str, voice: str) -> list[int]:
    """Word index of each segment, from per-word phone counts; all -1 if counts disagree
    (flite's post-lexical rules can merge or split segments across word boundaries)."""
    words = words_of(sentence)
    counts = [word_phone_count(word, voice) for word in words]
    speech = [i for i, label in enumerate(labels) if label != "pau"]
    result = [-1] * len(labels)
    if sum(counts) != len(speech):
        return result
    cursor = 0
    for word_index, count in enumerate(counts):
        for _ in range(count):
            result[speech[cursor]] = word_index
            cursor += 1
    return result


def synthesize(sentence: str, voice: VoiceParams, workdir: str | os.PathLike | None = None
               ) -> tuple[np.ndarray, list[Phoneme]]:
    """Speak `sentence`; return mono float32 audio at 16 kHz and the aligned phonemes."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        raw = Path(tmp) / "raw.wav"
        processed = Path(tmp) / "processed.wav"
        command = ["flite", "-voice", voice.flite_voice,
                   "--setf", f"duration_stretch={voice.duration_stretch:.4f}"]
        if voice.flite_voice in F0_CONTROLLABLE:
            command += ["--setf", f"int_f0_target_mean={voice.f0_mean_hz:.2f}",
                        "--setf", f"int_f0_target_stddev={voice.f0_std_hz:.2f}"]
        command += ["-psdur", "-t", sentence, "-o", str(raw)]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        timings = parse_psdur(out)
        audio = colour_voice(raw, processed, voice)
    duration = len(audio) / SAMPLE_RATE

    labels = [label for label, _ in timings]
    words = assign_words(labels, sentence, voice.flite_voice)
    phonemes = []
    start = 0.0
    for (label, end), word in zip(timings, words):
        end = min(end, duration)
        if end > start:
            phonemes.append(Phoneme(label, start, end, word))
        start = max(start, end)
    if phonemes and phonemes[-1].end < duration:  # trailing silence up to the end of the audio
        last = phonemes[-1]
        if last.label == "pau":
            phonemes[-1] = Phoneme("pau", last.start, duration, -1)
        else:
            phonemes.append(Phoneme("pau", last.end, duration, -1))
    return audio, phonemes


def colour_voice(raw: Path, processed: Path, voice) -> np.ndarray:
    """A synthesised WAV through the subject's voice colour (sox pitch shift, bass / treble shelves,
    resampling to 16 kHz, mono), then to the subject's loudness. `voice`: anything with
    pitch_shift_cents, bass_db, treble_db and gain_db (VoiceParams, voices.EngineVoice)."""
    # -D: no dither (dither is random noise and would break byte-for-byte reproducibility);
    # -R: repeatable mode. pitch/bass/treble/rate keep the duration, so the timings stay valid.
    subprocess.run(
        ["sox", "-D", "-R", str(raw), "-b", "16", "-c", "1", str(processed),
         "pitch", f"{voice.pitch_shift_cents:.1f}",
         "bass", f"{voice.bass_db:.2f}", "treble", f"{voice.treble_db:.2f}",
         "rate", "-v", str(SAMPLE_RATE)],
        capture_output=True, text=True, check=True)
    audio, rate = soundfile.read(processed, dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE:
        raise RuntimeError(f"sox produced {rate} Hz, expected {SAMPLE_RATE}")
    return normalise_loudness(audio.mean(axis=1), voice.gain_db)


def normalise_loudness(audio: np.ndarray, gain_db: float, target_rms_db: float = -23.0) -> np.ndarray:
    """Scale speech to a fixed RMS (over voiced samples) plus the subject's gain, clip-safe."""
    active = audio[np.abs(audio) > 1e-3]
    rms = float(np.sqrt(np.mean(active ** 2))) if active.size else 0.0
    if rms <= 0:
        return audio.astype(np.float32)
    scale = 10 ** ((target_rms_db + gain_db) / 20) / rms
    peak = float(np.max(np.abs(audio))) * scale
    if peak > 0.98:
        scale *= 0.98 / peak
    return (audio * scale).astype(np.float32)


def write_flac(path: str | os.PathLike, audio: np.ndarray) -> None:
    """16-bit FLAC; libsndfile writes no timestamps, so the bytes depend on the samples only."""
    pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)
    soundfile.write(str(path), pcm, SAMPLE_RATE, format="FLAC", subtype="PCM_16")


def read_audio(path: str | os.PathLike) -> np.ndarray:
    audio, rate = soundfile.read(str(path), dtype="float32")
    if rate != SAMPLE_RATE:
        raise ValueError(f"{path}: {rate} Hz, expected {SAMPLE_RATE}")
    return audio

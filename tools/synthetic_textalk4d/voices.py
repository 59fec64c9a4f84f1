"""One interface over the speech engines: synthesize(sentence, voice) -> (audio, phonemes).

`EngineVoice` says which engine speaks (flite, Festival, espeak-ng or, where installed, a Piper
neural voice), with which of its voices, in which language, and how the subject's voice is varied. Every engine returns float32 mono audio
at speech.SAMPLE_RATE and `speech.Phoneme`s whose labels are in the shared inventory of
phonesets.py (flite's US set plus visemes.EXTENSION_PHONEMES), so motion.face_unit_weights
works unchanged for every language.

The variation after synthesis is the one speech.synthesize applies to flite (sox pitch shift,
bass/treble EQ, resampling to 16 kHz, loudness normalisation): all of it keeps the number of
samples per second of speech, so the timings stay valid. Same inputs, same bytes: the engines are
deterministic as called here (measured: repeated runs give identical WAVs; espeak-ng needs a
process per sentence, Piper its noise switched off) and sox runs without dither (-D) in repeatable
mode (-R).
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import soundfile

from . import speech
from . import voices_espeak, voices_festival, voices_piper
from .speech import SAMPLE_RATE, Phoneme
from .text import words_of
from .text_languages import words_of_any

ENGINES = ("flite", "festival", "espeak", "piper")


@dataclasses.dataclass(frozen=True)
class EngineVoice:
    """How one synthetic subject sounds, for any engine (stored in subjects/SNN.json)."""
    engine: str                  # "flite", "festival", "espeak" or "piper"
    voice: str                   # flite voice ("slt"), Festival voice ("czech_dita"),
                                 # espeak-ng voice with optional variant ("es+f3"),
                                 # Piper voice ("en_US-joe-medium", voices_piper.PIPER_VOICES)
    language: str                # ISO 639-1 code of the sentences this subject speaks
    duration_stretch: float      # >1 speaks slower (flite/Festival stretch, Piper length_scale;
                                 # espeak rate = 175/x words per minute)
    pitch_shift_cents: float     # sox pitch shift, keeps duration (all engines)
    bass_db: float               # sox low shelf (timbre)
    treble_db: float             # sox high shelf (timbre)
    gain_db: float               # loudness relative to the normalised level
    f0_mean_hz: float = 0.0      # flite only: intonation target mean (speech.F0_CONTROLLABLE)
    f0_std_hz: float = 0.0       # flite only: intonation range
    espeak_pitch: int = 50       # espeak only: base pitch parameter 0-100 (50 = voice default)
    espeak_range: int = 50       # espeak only: pitch range parameter 0-100

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, not {self.engine!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "EngineVoice":
        """Also reads a speech.VoiceParams dict (datasets built before engines existed)."""
        if "engine" not in data:
            return cls.from_flite(speech.VoiceParams.from_dict(data))
        return cls(**data)

    @classmethod
    def from_flite(cls, params: speech.VoiceParams) -> "EngineVoice":
        return cls(engine="flite", voice=params.flite_voice, language="en",
                   duration_stretch=params.duration_stretch,
                   pitch_shift_cents=params.pitch_shift_cents, bass_db=params.bass_db,
                   treble_db=params.treble_db, gain_db=params.gain_db,
                   f0_mean_hz=params.f0_mean_hz, f0_std_hz=params.f0_std_hz)

    def flite_params(self) -> speech.VoiceParams:
        return speech.VoiceParams(
            flite_voice=self.voice, duration_stretch=self.duration_stretch,
            f0_mean_hz=self.f0_mean_hz, f0_std_hz=self.f0_std_hz,
            pitch_shift_cents=self.pitch_shift_cents, bass_db=self.bass_db,
            treble_db=self.treble_db, gain_db=self.gain_db)


def postprocess(raw_wav: Path, voice: EngineVoice) -> np.ndarray:
    """The sox chain of speech.synthesize (pitch, EQ, resample to 16 kHz) and loudness."""
    return speech.colour_voice(raw_wav, raw_wav.with_name("processed.wav"), voice)


def _clip_to(phonemes: list[Phoneme], duration: float) -> list[Phoneme]:
    """Resampling can change the length by a sample: keep the phonemes tiling [0, duration]."""
    out = [p for p in phonemes if p.start < duration]
    if not out:
        return [Phoneme("pau", 0.0, duration, -1)]
    last = out[-1]
    out[-1] = Phoneme(last.label, last.start, duration, last.word)
    return out


def synthesize(sentence: str, voice: EngineVoice) -> tuple[np.ndarray, list[Phoneme]]:
    """Speak `sentence`: float32 mono audio at 16 kHz and its phonemes (shared inventory)."""
    if voice.engine == "flite":
        return speech.synthesize(sentence, voice.flite_params())
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        if voice.engine == "festival":
            segments, word_ids = voices_festival.synthesize_raw(
                sentence, voice.voice, raw, voice.duration_stretch)
            native_duration = soundfile.info(str(raw)).duration
            phonemes = voices_festival.phonemes_for(sentence, voice.voice, segments, word_ids,
                                                    native_duration)
        elif voice.engine == "piper":
            out = voices_piper.synthesize_raw(sentence, voice.voice, voice.duration_stretch)
            soundfile.write(str(raw), out.audio, out.sample_rate, subtype="PCM_16")
            phonemes = voices_piper.piper_phonemes(out.phoneme_ids, out.id_samples,
                                                   out.id_symbols, out.sample_rate,
                                                   len(out.audio), voice.language)
        else:
            rate_wpm = int(round(voices_espeak.DEFAULT_RATE_WPM / voice.duration_stretch))
            pcm, rate, events = voices_espeak.synthesize_raw(
                sentence, voice.voice, rate_wpm, voice.espeak_pitch, voice.espeak_range)
            soundfile.write(str(raw), pcm, rate, subtype="PCM_16")
            words = words_of(sentence) if voice.language == "en" else words_of_any(sentence)
            phonemes = voices_espeak.espeak_phonemes(events, pcm, rate, voice.language,
                                                     n_text_words=len(words))
        audio = postprocess(raw, voice)
    return audio, _clip_to(phonemes, len(audio) / SAMPLE_RATE)


# --- voices a subject can be given ------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class VoiceChoice:
    engine: str
    voice: str
    language: str
    female: bool


# espeak-ng languages with a sentence generator (text.py for English, text_languages.py
# otherwise). Its human-like variants: m1-m8 male, f1-f5 female (others are robots, whisper...).
ESPEAK_LANGUAGES = ("en-us", "es", "fr", "de", "it", "pt", "ru", "cs", "ca", "fi", "hi", "mr", "te")
ESPEAK_VARIANTS = tuple(f"m{i}" for i in range(1, 9)) + tuple(f"f{i}" for i in range(1, 6))


def voice_catalog() -> list[VoiceChoice]:
    """Every voice this module can drive, installed or not (stable order)."""
    choices = [VoiceChoice("flite", name, "en", name == "slt") for name in speech.FLITE_VOICES]
    for spec in voices_festival.FESTIVAL_VOICES.values():
        choices.append(VoiceChoice("festival", spec.name, spec.language, spec.female))
    for language in ESPEAK_LANGUAGES:
        for variant in ESPEAK_VARIANTS:
            choices.append(VoiceChoice("espeak", f"{language}+{variant}", language.split("-")[0],
                                       variant.startswith("f")))
    for name, (_, language) in voices_piper.PIPER_VOICES.items():
        choices.append(VoiceChoice("piper", name, language, False))
    return choices


def voice_installed(choice: VoiceChoice) -> bool:
    import shutil
    if choice.engine == "flite":
        return shutil.which("flite") is not None
    if choice.engine == "festival":
        return voices_festival.festival_available(choice.voice)
    if choice.engine == "espeak":
        return voices_espeak.espeak_available()
    return voices_piper.piper_available(choice.voice)


def draw_engine_voice(choice: VoiceChoice, rng: np.random.Generator) -> EngineVoice:
    """A subject's voice on `choice`, varied like styles.make_subject varies flite voices
    (duration stretch, pitch shift, EQ, gain; f0 target for flite, pitch/range for espeak)."""
    u = rng.uniform
    stretch = 1.0 if (choice.engine == "festival"
                      and voices_festival.FESTIVAL_VOICES[choice.voice].speed == "none") \
        else round(float(u(0.88, 1.25)), 4)
    female = choice.female
    voice = EngineVoice(
        engine=choice.engine, voice=choice.voice, language=choice.language,
        duration_stretch=stretch,
        pitch_shift_cents=round(float(u(-120, 120)), 1),
        bass_db=round(float(u(-4, 4)), 2), treble_db=round(float(u(-5, 3)), 2),
        gain_db=round(float(u(-4, 2)), 2),
        f0_mean_hz=round(float(u(170, 240) if female else u(85, 135)), 2)
        if choice.engine == "flite" else 0.0,
        f0_std_hz=round(float(u(8, 35)), 2) if choice.engine == "flite" else 0.0,
        espeak_pitch=int(rng.integers(35, 66)) if choice.engine == "espeak" else 50,
        espeak_range=int(rng.integers(30, 81)) if choice.engine == "espeak" else 50,
    )
    return EngineVoice.from_dict(voice.to_dict())


def sentences_for(language: str, count: int, seed: int) -> list[str]:
    """The sentence pool of a language: text.py's grammar for English, word lists otherwise."""
    from . import text, text_languages
    if language == "en":
        return text.make_sentences(count, seed)
    return text_languages.make_sentences(language, count, seed)

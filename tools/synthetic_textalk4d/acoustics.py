"""Acoustic conditions for training utterances: telephone band, rooms, noise, levels, speed, pitch.

Real recordings come through every kind of microphone, room and line (issue 19): the bundled
model trained on clean synthetic speech follows telephone audio and noisy clips clearly less.
Each TRAIN utterance gets a seeded draw of an `AcousticCondition`: about a third stay clean, the
others get one or more of the effects below. Test splits stay clean so that synthetic results
stay comparable between models; `test-A-phone` is an extra telephone copy of test-A.

Order of the chain (the order sound meets them): speed, pitch and room (one sox call), background
noise, telephone line, then the recorder: level change with a limiter, DC offset, clipping.

Timing labels: only `speed` moves sounds in time (sox `speed` resamples, like tape: duration
divided by the factor, pitch with it), so `apply` scales the phoneme times by 1/speed before the
builder computes face-unit weights from them. `pitch` (sox WSOLA), `reverb` and everything after
keep the sample count (trimmed or padded to it where a codec rounds to whole frames).

Determinism: sox runs without dither (-D) in repeatable mode (-R), so its noise generator and
effects give the same bytes each run; every random choice here comes from the numpy Generator
passed to `draw_condition` and is stored in the condition (utterances.json `acoustics`).
"""
from __future__ import annotations

import dataclasses
import functools
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile

from .speech import SAMPLE_RATE, Phoneme

CLEAN_PROBABILITY = 1 / 3
# Chance of each effect in a non-clean condition (several may combine; at least one is drawn:
# about 2 effects per non-clean utterance, so single causes stay common).
EFFECT_PROBABILITY = {
    "speed": 0.25, "pitch": 0.2, "reverb": 0.25, "noise": 0.35, "telephone": 0.25,
    "level": 0.3, "dc": 0.1, "clip": 0.1,
}
SPEED_RANGE = (0.9, 1.1)
PITCH_SEMITONES = 3.0
SNR_RANGE_DB = (5.0, 30.0)
LEVEL_RANGE_DB = (-25.0, 6.0)
DC_RANGE = (0.01, 0.05)                 # absolute offset, full scale = 1
CLIP_FRACTION_RANGE = (0.001, 0.01)     # share of samples at the clipping level ("mild")
NOISE_KINDS = ("white", "pink", "brown", "babble")
TELEPHONE_CODECS = ("mu-law", "a-law", "gsm")
TELEPHONE_RATE = 8000
TELEPHONE_BAND_HZ = (300, 3400)         # the analogue telephone channel (ITU-T G.712)
# Limiter: above KNEE the level bends smoothly (tanh) towards CEILING instead of clipping.
LIMITER_KNEE, LIMITER_CEILING = 0.8, 0.98
NOISE_BANK_SECONDS = 30.0
BABBLE_TALKERS = 4


@dataclasses.dataclass(frozen=True)
class Reverb:
    """Parameters of sox `reverb` (Freeverb): percentages and milliseconds as sox takes them."""
    reverberance: float      # decay, 0-100 %
    hf_damping: float        # 0-100 %
    room_scale: float        # 0-100 %
    pre_delay_ms: float


@dataclasses.dataclass(frozen=True)
class Noise:
    kind: str                # one of NOISE_KINDS
    snr_db: float            # speech power / noise power over the utterance
    seed: int                # where the noise is cut from its bank (and which babble talkers)


@dataclasses.dataclass(frozen=True)
class AcousticCondition:
    """What happens to one utterance's audio; the default is clean."""
    speed: float = 1.0                 # >1 faster and higher (tape speed)
    pitch_semitones: float = 0.0       # pitch change without tempo change
    reverb: Reverb | None = None
    noise: Noise | None = None
    telephone: str | None = None       # codec of TELEPHONE_CODECS
    level_db: float = 0.0              # gain; peaks above the knee go through the limiter
    dc_offset: float = 0.0
    clip_fraction: float = 0.0         # hard clipping at the level that this share of samples exceeds

    def effects(self) -> list[str]:
        applied = {
            "speed": self.speed != 1.0, "pitch": self.pitch_semitones != 0.0,
            "reverb": self.reverb is not None, "noise": self.noise is not None,
            "telephone": self.telephone is not None, "level": self.level_db != 0.0,
            "dc": self.dc_offset != 0.0, "clip": self.clip_fraction > 0.0,
        }
        return [name for name in EFFECT_PROBABILITY if applied[name]]

    @property
    def clean(self) -> bool:
        return not self.effects()

    def to_dict(self) -> dict:
        """Only the applied effects, plus their names in chain order ({"effects": []} = clean)."""
        data: dict = {"effects": self.effects()}
        for name in data["effects"]:
            field = {"pitch": "pitch_semitones", "level": "level_db", "dc": "dc_offset",
                     "clip": "clip_fraction"}.get(name, name)
            value = getattr(self, field)
            data[field] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "AcousticCondition":
        values = {key: value for key, value in data.items() if key != "effects"}
        if values.get("reverb") is not None:
            values["reverb"] = Reverb(**values["reverb"])
        if values.get("noise") is not None:
            values["noise"] = Noise(**values["noise"])
        return cls(**values)


def draw_condition(rng: np.random.Generator) -> AcousticCondition:
    """A clean condition with CLEAN_PROBABILITY, otherwise one or more effects."""
    if rng.uniform() < CLEAN_PROBABILITY:
        return AcousticCondition()
    while True:
        chosen = [name for name, p in EFFECT_PROBABILITY.items() if rng.uniform() < p]
        if chosen:
            break
    u = rng.uniform
    values: dict = {}
    if "speed" in chosen:
        values["speed"] = round(float(u(*SPEED_RANGE)), 4)
    if "pitch" in chosen:
        values["pitch_semitones"] = round(float(u(-PITCH_SEMITONES, PITCH_SEMITONES)), 3)
    if "reverb" in chosen:
        values["reverb"] = Reverb(reverberance=round(float(u(20, 90)), 1),
                                  hf_damping=round(float(u(20, 80)), 1),
                                  room_scale=round(float(u(10, 100)), 1),
                                  pre_delay_ms=round(float(u(0, 40)), 1))
    if "noise" in chosen:
        values["noise"] = Noise(kind=NOISE_KINDS[int(rng.integers(len(NOISE_KINDS)))],
                                snr_db=round(float(u(*SNR_RANGE_DB)), 2),
                                seed=int(rng.integers(2 ** 31)))
    if "telephone" in chosen:
        values["telephone"] = TELEPHONE_CODECS[int(rng.integers(len(TELEPHONE_CODECS)))]
    if "level" in chosen:
        values["level_db"] = round(float(u(*LEVEL_RANGE_DB)), 2)
    if "dc" in chosen:
        values["dc_offset"] = round(float(u(*DC_RANGE) * (1 if u() < 0.5 else -1)), 4)
    if "clip" in chosen:
        values["clip_fraction"] = round(float(u(*CLIP_FRACTION_RANGE)), 5)
    return AcousticCondition(**values)


def telephone_condition(rng: np.random.Generator) -> AcousticCondition:
    """Telephone line only (the test-A-phone copy): a drawn codec, nothing else."""
    return AcousticCondition(telephone=TELEPHONE_CODECS[int(rng.integers(len(TELEPHONE_CODECS)))])


# --- applying a condition ---------------------------------------------------------------------
def apply(audio: np.ndarray, phonemes: list[Phoneme], condition: AcousticCondition
          ) -> tuple[np.ndarray, list[Phoneme]]:
    """Audio (float32, 16 kHz) through the condition; phonemes re-timed for its speed change."""
    if condition.clean:
        return audio, phonemes
    audio = np.asarray(audio, dtype=np.float32)
    if condition.speed != 1.0 or condition.pitch_semitones != 0.0 or condition.reverb is not None:
        audio = _sox_speed_pitch_room(audio, condition)
        phonemes = scale_timings(phonemes, 1.0 / condition.speed, len(audio) / SAMPLE_RATE)
    if condition.noise is not None:
        audio = add_noise(audio, condition.noise)
    if condition.telephone is not None:
        audio = telephone_line(audio, condition.telephone)
    if condition.level_db != 0.0:
        audio = limit(audio * np.float32(10 ** (condition.level_db / 20)))
    if condition.dc_offset != 0.0:
        audio = audio + np.float32(condition.dc_offset)
    if condition.clip_fraction > 0.0:
        audio = clip(audio, condition.clip_fraction)
    return audio.astype(np.float32), phonemes


def scale_timings(phonemes: list[Phoneme], factor: float, duration: float) -> list[Phoneme]:
    """Phoneme times multiplied by `factor`, still tiling [0, duration] (the resampled length
    rounds to whole samples: the last phoneme absorbs that sample)."""
    scaled = []
    for p in phonemes:
        start, end = p.start * factor, min(p.end * factor, duration)
        if end > start:
            scaled.append(Phoneme(p.label, start, end, p.word))
    if not scaled:
        return [Phoneme("pau", 0.0, duration, -1)]
    last = scaled[-1]
    scaled[-1] = Phoneme(last.label, last.start, duration, last.word)
    return scaled


def _run_sox(audio: np.ndarray, output_options: list[str], effects: list[str],
             input_rate: int = SAMPLE_RATE, suffix: str = ".wav") -> tuple[np.ndarray, int]:
    """Audio through `sox -D -R in.wav <output_options> out<suffix> <effects>`; float32 mono."""
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "in.wav", Path(tmp) / f"out{suffix}"
        soundfile.write(str(source), audio, input_rate, subtype="FLOAT")
        subprocess.run(["sox", "-D", "-R", str(source), *output_options, str(target), *effects],
                       capture_output=True, text=True, check=True)
        if suffix == ".wav":
            out, rate = soundfile.read(str(target), dtype="float32", always_2d=True)
            return out.mean(axis=1), rate
        # Codec files (GSM) back to float WAV through sox: libsndfile does not read them.
        decoded = Path(tmp) / "decoded.wav"
        subprocess.run(["sox", "-D", "-R", str(target), "-e", "floating-point", "-b", "32",
                        str(decoded)], capture_output=True, text=True, check=True)
        out, rate = soundfile.read(str(decoded), dtype="float32", always_2d=True)
        return out.mean(axis=1), rate


def _fit_length(audio: np.ndarray, n_samples: int) -> np.ndarray:
    if len(audio) >= n_samples:
        return audio[:n_samples]
    return np.concatenate([audio, np.zeros(n_samples - len(audio), audio.dtype)])


def _sox_speed_pitch_room(audio: np.ndarray, condition: AcousticCondition) -> np.ndarray:
    effects: list[str] = []
    if condition.speed != 1.0:
        effects += ["speed", f"{condition.speed:.4f}"]
    if condition.pitch_semitones != 0.0:
        effects += ["pitch", f"{100 * condition.pitch_semitones:.1f}"]
    if condition.reverb is not None:
        r = condition.reverb
        # Headroom first: reverb adds the room's energy to the direct sound; the power is
        # restored below, so the room changes the sound, not the level.
        effects += ["gain", "-6", "reverb", f"{r.reverberance:.1f}", f"{r.hf_damping:.1f}",
                    f"{r.room_scale:.1f}", "100", f"{r.pre_delay_ms:.1f}", "0"]
    effects += ["rate", "-v", str(SAMPLE_RATE)]
    out, _ = _run_sox(audio, ["-e", "floating-point", "-b", "32"], effects)
    # sox `speed` gives round(n / speed) samples; pitch and reverb keep the count.
    expected = int(round(len(audio) / condition.speed))
    out = _fit_length(out, expected)
    if condition.reverb is not None:
        before, after = _power(audio), _power(out)
        if after > 0:
            out = out * np.float32(np.sqrt(before / after))
    return out.astype(np.float32)


def _power(audio: np.ndarray) -> float:
    return float(np.mean(np.asarray(audio, dtype=np.float64) ** 2))


@functools.lru_cache(maxsize=None)
def noise_bank(kind: str) -> np.ndarray:
    """NOISE_BANK_SECONDS of sox-synthesised coloured noise (same bytes every run: sox -R),
    or of babble (BABBLE_TALKERS voices of the catalogue speaking, see babble_bank)."""
    if kind == "babble":
        return babble_bank()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "noise.wav"
        subprocess.run(["sox", "-D", "-R", "-n", "-r", str(SAMPLE_RATE), "-c", "1", "-e",
                        "floating-point", "-b", "32", str(path), "synth", f"{NOISE_BANK_SECONDS}",
                        f"{kind}noise"], capture_output=True, text=True, check=True)
        audio, _ = soundfile.read(str(path), dtype="float32")
    audio = audio - audio.mean()      # brown noise drifts: no DC in the noise itself
    return (audio / np.sqrt(_power(audio))).astype(np.float32)


# Talkers of the babble bank: other voices of the dataset's engines, several languages.
# (engine, voice, language, female)
BABBLE_VOICES = (("flite", "awb", "en", False), ("flite", "slt", "en", True),
                 ("flite", "rms", "en", False), ("espeak", "es+f2", "es", True),
                 ("espeak", "de+m3", "de", False), ("espeak", "fr+f4", "fr", True),
                 ("espeak", "it+m2", "it", False), ("espeak", "en-us+f3", "en", True))
BABBLE_SENTENCES_PER_VOICE = 4


@functools.lru_cache(maxsize=1)
def babble_bank() -> np.ndarray:
    """(len(BABBLE_VOICES), NOISE_BANK_SECONDS * rate): one stream of speech per talker, each
    sentence after the next and the stream repeated to the bank's length, unit power. Built once
    per process (about 2 s): synthesised with the dataset's own engines, so it needs no files."""
    from .voices import VoiceChoice, draw_engine_voice, sentences_for, synthesize

    n = int(NOISE_BANK_SECONDS * SAMPLE_RATE)
    streams = []
    for number, (engine, name, language, female) in enumerate(BABBLE_VOICES):
        voice = draw_engine_voice(VoiceChoice(engine, name, language, female),
                                  np.random.default_rng([0xBAB, number]))
        speech = [synthesize(sentence, voice)[0]
                  for sentence in sentences_for(language, BABBLE_SENTENCES_PER_VOICE, 0xBAB + number)]
        stream = np.concatenate(speech)
        stream = np.tile(stream, int(np.ceil(n / len(stream))))[:n]
        streams.append(stream / np.sqrt(_power(stream)))
    return np.stack(streams).astype(np.float32)


def noise_for(kind: str, n_samples: int, seed: int) -> np.ndarray:
    """Unit-power noise of `kind`, cut from its bank at a seeded offset (wrapping around)."""
    rng = np.random.default_rng([0x401CE, seed])
    bank = noise_bank(kind)
    if kind == "babble":
        talkers = rng.choice(len(bank), size=BABBLE_TALKERS, replace=False)
        offsets = rng.integers(0, bank.shape[1], size=BABBLE_TALKERS)
        mixed = sum(np.resize(np.roll(bank[t], -int(o)), n_samples)
                    for t, o in zip(talkers, offsets))
    else:
        offset = int(rng.integers(0, len(bank)))
        mixed = np.resize(np.roll(bank, -offset), n_samples)
    mixed = np.asarray(mixed, dtype=np.float64)
    power = _power(mixed)
    return (mixed / np.sqrt(power) if power > 0 else mixed).astype(np.float32)


def add_noise(audio: np.ndarray, noise: Noise) -> np.ndarray:
    """Speech plus noise at noise.snr_db (power of the speech over the whole utterance)."""
    speech_power = _power(audio)
    if speech_power <= 0:
        return audio
    unit = noise_for(noise.kind, len(audio), noise.seed)
    scale = np.sqrt(speech_power / 10 ** (noise.snr_db / 10))
    return (audio + unit * np.float32(scale)).astype(np.float32)


def telephone_line(audio: np.ndarray, codec: str) -> np.ndarray:
    """Band-pass 300-3400 Hz, 8 kHz, through the codec (G.711 mu-law / A-law 8 bit, or GSM 06.10
    full rate), and back to 16 kHz: what a phone call delivers."""
    low, high = TELEPHONE_BAND_HZ
    band = ["sinc", f"{low}-{high}", "rate", "-v", str(TELEPHONE_RATE)]
    if codec == "mu-law":
        coded, _ = _run_sox(audio, ["-e", "u-law", "-b", "8", "-r", str(TELEPHONE_RATE)], band)
    elif codec == "a-law":
        coded, _ = _run_sox(audio, ["-e", "a-law", "-b", "8", "-r", str(TELEPHONE_RATE)], band)
    elif codec == "gsm":
        coded, _ = _run_sox(audio, ["-r", str(TELEPHONE_RATE), "-c", "1"], band, suffix=".gsm")
    else:
        raise ValueError(f"telephone codec must be one of {TELEPHONE_CODECS}, not {codec!r}")
    wide, _ = _run_sox(coded, ["-e", "floating-point", "-b", "32"], ["rate", "-v", str(SAMPLE_RATE)],
                       input_rate=TELEPHONE_RATE)
    # GSM codes whole 20 ms frames: the decoded file can be up to a frame longer.
    return _fit_length(wide, len(audio)).astype(np.float32)


def limit(audio: np.ndarray) -> np.ndarray:
    """Peaks above LIMITER_KNEE bend smoothly towards LIMITER_CEILING (slope 1 at the knee), as a
    recorder's limiter keeps a loud take from clipping; quieter samples pass unchanged."""
    magnitude = np.abs(audio)
    over = magnitude > LIMITER_KNEE
    if not over.any():
        return audio
    span = LIMITER_CEILING - LIMITER_KNEE
    bent = LIMITER_KNEE + span * np.tanh((magnitude[over] - LIMITER_KNEE) / span)
    out = audio.copy()
    out[over] = np.sign(audio[over]) * bent
    return out


def clipping_level(audio: np.ndarray, fraction: float) -> float:
    """The magnitude that `fraction` of the samples exceed."""
    return float(np.quantile(np.abs(audio), 1.0 - fraction))


def clip(audio: np.ndarray, fraction: float) -> np.ndarray:
    """Hard clipping at clipping_level(audio, fraction), symmetric about zero."""
    level = clipping_level(audio, fraction)
    return np.clip(audio, -level, level)

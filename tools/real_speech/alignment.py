"""Phone timings of a real recording from its transcript (for the /p b m/ closure measure).

- English: `pocketsphinx_align`, forced alignment with PocketSphinx 5 (PyPI `pocketsphinx`, which
  ships the CMU US English acoustic model and dictionary): the transcript becomes a word
  sequence (`Decoder.set_align_text`), a first pass aligns words, a second (`set_alignment`)
  phones; 10 ms resolution. Returns None when a word is not in its dictionary or the module is
  missing; the caller then falls back to the flite + DTW alignment (recordings.py).
- Other languages: `espeak_pocketsphinx_align`, cross-lingual forced alignment: espeak-ng's phone
  sequence of the transcript (phoneme events from its C library, tools/synthetic_textalk4d/
  voices_espeak.py, mapped to the shared phone labels) is aligned by PocketSphinx's English
  acoustic model (each label mapped to the nearest English phone, SHARED_TO_CMU). Falls back to
  `espeak_dtw_align`: the transcript spoken by espeak-ng variants of the recording's language,
  each synthetic timeline mapped onto the recording by DTW on per-utterance normalised MFCCs,
  the median over ESPEAK_VARIANTS. On arctic_a0009 (English, published labels) the first puts
  the bilabials within the error of PocketSphinx's own alignment, the DTW one tens of ms later
  (docs/REAL_SPEECH.md, "Bilabial timings").

Phones are [(label, start_s, end_s)], labels in the flite/CMU set (lower case, "pau" silence),
so "p", "b", "m" are the bilabials in every language.
"""

from __future__ import annotations

import re

import numpy as np

SAMPLE_RATE = 16000
HOP = 160  # 10 ms
# espeak-ng voice per recording language (Mexican Spanish for the es-MX prompts' speaker is not
# needed: espeak's "es" and "es-419" give the same bilabials).
ESPEAK_VOICES = {"en": "en-us", "es": "es", "fr": "fr", "it": "it", "ru": "ru", "de": "de"}
ESPEAK_VARIANTS = ("m3", "f3", "m1")  # three timbres: the median of their alignments


def mfcc_features(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """MFCC 1-19 + deltas, normalised per utterance (cancels channel and speaker level)."""
    import librosa

    mfcc = librosa.feature.mfcc(y=np.asarray(audio, np.float32), sr=sample_rate, n_mfcc=20,
                                n_fft=400, hop_length=HOP, n_mels=40)[1:]
    features = np.vstack([mfcc, librosa.feature.delta(mfcc)])
    return (features - features.mean(axis=1, keepdims=True)) / (features.std(axis=1, keepdims=True) + 1e-6)


def dtw_map(synthetic: np.ndarray, recording: np.ndarray, phones, sample_rate: int = SAMPLE_RATE
            ) -> list[tuple[str, float, float]]:
    """Phones timed on `synthetic` -> the same phones timed on `recording` (both 16 kHz): DTW on
    MFCCs after trimming leading/trailing silence on both (so the path spends no slack there)."""
    import librosa

    _, (s0, s1) = librosa.effects.trim(synthetic, top_db=40, frame_length=400, hop_length=HOP)
    _, (r0, r1) = librosa.effects.trim(recording, top_db=40, frame_length=400, hop_length=HOP)
    _, path = librosa.sequence.dtw(mfcc_features(synthetic[s0:s1], sample_rate),
                                   mfcc_features(recording[r0:r1], sample_rate))
    path = path[::-1].astype(np.float64)
    synthetic_frames = path[:, 0] + s0 / HOP
    real_frames = path[:, 1] + r0 / HOP
    frame_s = HOP / sample_rate

    def to_real(seconds: float) -> float:
        return float(np.interp(seconds / frame_s, synthetic_frames, real_frames) * frame_s)

    return [(label, to_real(start), to_real(end)) for label, start, end in phones]


def median_alignment(alignments: list[list[tuple[str, float, float]]]) -> list[tuple[str, float, float]]:
    """Median over alignments of each phone's start and end (those with the first one's phone
    sequence; the others are left out)."""
    labels = [p[0] for p in alignments[0]]
    same = [a for a in alignments if [p[0] for p in a] == labels]
    starts = np.median([[p[1] for p in a] for a in same], axis=0)
    ends = np.median([[p[2] for p in a] for a in same], axis=0)
    return [(label, float(s), float(e)) for label, s, e in zip(labels, starts, ends)]


# ------------------------------------------------------------------------------ PocketSphinx
def pocketsphinx_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("pocketsphinx") is not None


def transcript_words(transcript: str) -> list[str]:
    """'Please try again.' -> ['please', 'try', 'again'] (apostrophes kept, hyphens split)."""
    return re.findall(r"[a-z']+", transcript.lower().replace("-", " "))


_DECODER = None


def _decoder():
    global _DECODER
    if _DECODER is None:
        from pocketsphinx import Decoder

        _DECODER = Decoder(samprate=SAMPLE_RATE, bestpath=False, loglevel="FATAL")
    return _DECODER


def pocketsphinx_align(audio_16k: np.ndarray, transcript: str) -> list[tuple[str, float, float]] | None:
    """Forced alignment of `transcript` on 16 kHz mono audio (float in [-1, 1]); None when
    PocketSphinx is missing, a word is not in its dictionary, or the search finds no path."""
    if not pocketsphinx_available():
        return None
    decoder = _decoder()
    words = transcript_words(transcript)
    if not words or any(decoder.lookup_word(w) is None for w in words):
        return None
    return pocketsphinx_align_words(audio_16k, words)


def pocketsphinx_align_words(audio_16k: np.ndarray, words: list[str]) -> list[tuple[str, float, float]] | None:
    """Forced alignment of dictionary words (two passes: words, then phones)."""
    decoder = _decoder()
    pcm = (np.clip(np.asarray(audio_16k, np.float64), -1, 1) * 32767).astype("<i2").tobytes()
    frame_s = 1.0 / decoder.config["frate"]
    try:
        decoder.set_align_text(" ".join(words))
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        decoder.set_alignment()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        phones = []
        for word in decoder.get_alignment():
            for phone in word:
                label = "pau" if phone.name in ("SIL", "+NSN+", "+SPN+") else phone.name.lower()
                phones.append((label, phone.start * frame_s, (phone.start + phone.duration) * frame_s))
    except (RuntimeError, ValueError):
        return None
    return phones or None


# Shared (flite/CMU + extension) labels -> the PocketSphinx en-us model's phones, for aligning
# another language's phone sequence with the English acoustic model (`pocketsphinx_align_phones`):
# each extension label goes to the nearest English phone (tap/trill and uvular r to R, velar
# fricative to HH, front rounded vowels to UW/ER, pure o to OW).
SHARED_TO_CMU = {"ax": "AH", "axr": "ER", "el": "L", "em": "M", "en": "N", "rr": "R", "rx": "R", "x": "HH",
                 "uy": "UW", "oe": "ER", "oh": "OW"}


def pocketsphinx_align_phones(audio_16k: np.ndarray, words: list[list[str]]) -> list[tuple[str, float, float]] | None:
    """Forced alignment of a given phone sequence (one list of shared labels per word) with the
    English acoustic model: each word is added to the dictionary under a made-up name with its
    phones mapped by SHARED_TO_CMU. Returns phones with the SHARED labels given (so a Spanish /p/
    stays `p`); None when PocketSphinx is missing or the search fails."""
    if not pocketsphinx_available() or not words:
        return None
    decoder = _decoder()
    names, labels = [], []
    for index, phones in enumerate(words):
        cmu = [SHARED_TO_CMU.get(p, p.upper()) for p in phones if p != "pau"]
        if not cmu:
            continue
        name = f"xw{index}_" + "_".join(cmu).lower()
        if decoder.lookup_word(name) is None:
            decoder.add_word(name, " ".join(cmu), True)
        names.append(name)
        labels += [p for p in phones if p != "pau"]
    if not names:
        return None
    aligned = pocketsphinx_align_words(audio_16k, names)
    if aligned is None:
        return None
    spoken = [p for p in aligned if p[0] != "pau"]
    if len(spoken) != len(labels):
        return None
    relabelled, k = [], 0
    for phone in aligned:
        if phone[0] == "pau":
            relabelled.append(phone)
        else:
            relabelled.append((labels[k], phone[1], phone[2]))
            k += 1
    return relabelled


# --------------------------------------------------------------------------- espeak-ng + DTW
def espeak_available() -> bool:
    from tools.synthetic_textalk4d.voices_espeak import espeak_available as available

    return available()


def espeak_phones(transcript: str, voice: str, language: str) -> tuple[np.ndarray, list]:
    """(16 kHz float audio, phones) of `transcript` spoken by espeak-ng `voice`."""
    import librosa

    from tools.synthetic_textalk4d.voices_espeak import espeak_phonemes, synthesize_raw

    audio, rate, events = synthesize_raw(transcript, voice)
    phonemes = espeak_phonemes(events, audio, rate, language=language)
    audio = audio.astype(np.float32) / 32768.0
    if rate != SAMPLE_RATE:
        audio = librosa.resample(audio, orig_sr=rate, target_sr=SAMPLE_RATE)
    return audio, [(p.label, p.start, p.end) for p in phonemes]


def espeak_word_phones(transcript: str, language: str) -> list[list[str]]:
    """The transcript's phones per word as espeak-ng says them (shared labels)."""
    from tools.synthetic_textalk4d.voices_espeak import espeak_phonemes, synthesize_raw

    voice = ESPEAK_VOICES.get(language, language)
    audio, rate, events = synthesize_raw(transcript, voice)
    words: dict[int, list[str]] = {}
    for phoneme in espeak_phonemes(events, audio, rate, language=language):
        if phoneme.label != "pau":
            words.setdefault(phoneme.word, []).append(phoneme.label)
    return [words[k] for k in sorted(words)]


def espeak_pocketsphinx_align(audio_16k: np.ndarray, transcript: str, language: str
                              ) -> list[tuple[str, float, float]] | None:
    """espeak-ng's phone sequence for the transcript, aligned by PocketSphinx's English acoustic
    model (cross-lingual forced alignment); None when it cannot be done."""
    return pocketsphinx_align_phones(audio_16k, espeak_word_phones(transcript, language))


def espeak_dtw_align(audio_16k: np.ndarray, transcript: str, language: str,
                     variants=ESPEAK_VARIANTS) -> list[tuple[str, float, float]]:
    voice = ESPEAK_VOICES.get(language, language)
    alignments = []
    for variant in variants:
        synthetic, phones = espeak_phones(transcript, f"{voice}+{variant}", language)
        alignments.append(dtw_map(synthetic, np.asarray(audio_16k, np.float32), phones))
    return median_alignment(alignments)


def bilabial_error_ms(aligned, reference, bilabials=frozenset({"p", "b", "m"})) -> list[float] | None:
    """Centre-time error (ms) of each bilabial of `aligned` against `reference`, paired in order;
    None when the two have different numbers of bilabials."""
    a = [p for p in aligned if p[0] in bilabials]
    r = [p for p in reference if p[0] in bilabials]
    if len(a) != len(r):
        return None
    return [abs((x[1] + x[2]) / 2 - (y[1] + y[2]) / 2) * 1000.0 for x, y in zip(a, r)]


def matched_phone_error_ms(aligned, reference, silent=frozenset({"pau", "sil", "h#"})) -> dict:
    """Centre-time error (ms) over the phones that the two sequences share (difflib matching on the
    labels, silences left out): for aligners whose phone sequence differs from the reference's."""
    from difflib import SequenceMatcher

    a = [p for p in aligned if p[0] not in silent]
    r = [p for p in reference if p[0] not in silent]
    errors = []
    for block in SequenceMatcher(None, [p[0] for p in a], [p[0] for p in r], autojunk=False).get_matching_blocks():
        for k in range(block.size):
            x, y = a[block.a + k], r[block.b + k]
            errors.append(abs((x[1] + x[2]) / 2 - (y[1] + y[2]) / 2) * 1000.0)
    if not errors:
        return {"matched": 0, "of": len(r)}
    return {"matched": len(errors), "of": len(r), "mean_ms": float(np.mean(errors)), "max_ms": float(np.max(errors))}

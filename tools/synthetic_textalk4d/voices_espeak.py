"""espeak-ng voices (Debian libespeak-ng1, about 100 languages) with aligned phoneme timings.

The espeak-ng command line prints phoneme timings only for MBROLA voices (not in Debian main), but
its C library reports a PHONEME event at the start of every phoneme, with `sample`: the position
in the generated audio, in samples at the library's rate (22050 Hz). The audio and the events
arrive through the same synthesis callback, so the positions index exactly the samples returned.
With espeakINITIALIZE_PHONEME_IPA the phoneme names are IPA, one notation for every language,
which phonesets.espeak_to_shared maps to the shared inventory. No maintained PyPI binding
exposes these events, so espeak_child.py talks to libespeak-ng.so.1 through ctypes (speak_lib.h,
API 1.51); this module runs it and turns its events into phonemes.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import json
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

from .phonesets import expand_segments, espeak_to_shared
from .speech import Phoneme

EVENT_LIST_TERMINATED, EVENT_WORD, EVENT_END, EVENT_PHONEME = 0, 1, 5, 7
DEFAULT_RATE_WPM = 175            # espeak-ng's default speaking rate
_CHILD = Path(__file__).with_name("espeak_child.py")


@dataclasses.dataclass(frozen=True)
class EspeakEvent:
    """The part of an espeak_EVENT this module uses (plain data, so parsers are testable)."""
    type: int            # EVENT_WORD, EVENT_PHONEME, EVENT_END, ...
    text_position: int   # 1-based character position of the word in the input text
    sample: int          # position in the output audio, samples at the library's rate
    phoneme: str = ""    # IPA for EVENT_PHONEME ("" for a pause)


class EspeakMissing(RuntimeError):
    pass


def espeak_available() -> bool:
    """True when the library loads (it is initialised only in espeak_child.py's process)."""
    try:
        ctypes.CDLL(ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1")
    except OSError:
        return False
    return True


def synthesize_raw(sentence: str, voice: str, rate_wpm: int = DEFAULT_RATE_WPM, pitch: int = 50,
                   pitch_range: int = 50) -> tuple[np.ndarray, int, list[EspeakEvent]]:
    """Speak with espeak-ng: (int16 audio at the library's rate, that rate, events).

    `voice` is an espeak-ng voice name, optionally with a variant: "es", "de+f3", "en-us+m2".
    Each call runs in a fresh process (espeak_child.py, ~30 ms): inside one process the
    library's generator keeps state from the previous sentence, so the same sentence gives other
    bytes the second time (measured), while a fresh process always gives the same bytes;
    espeak_Terminate + espeak_Initialize to reset it hangs in 1.51 (measured).
    """
    if not espeak_available():
        raise EspeakMissing("libespeak-ng not found: apt-get install espeak-ng")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "espeak.wav"
        result = subprocess.run(
            [sys.executable, str(_CHILD), voice, str(int(rate_wpm)), str(int(pitch)),
             str(int(pitch_range)), str(wav)],
            input=sentence.encode("utf-8"), capture_output=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"espeak-ng failed for voice {voice!r}: "
                               f"{result.stderr.decode('utf-8', 'replace')[-500:]}")
        header = json.loads(result.stdout.decode("utf-8"))
        with wave.open(str(wav), "rb") as handle:
            rate = handle.getframerate()
            audio = np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2").copy()
    events = [EspeakEvent(int(t), int(pos), int(sample), str(name))
              for t, pos, sample, name in header["events"]]
    return audio, rate, events


# Closure detection and pause check work on 5 ms frames; "quiet" is this far below the
# utterance's loud frames (90th percentile): the digital silence of espeak's closures is ~-100 dB,
# its vowels within ~10 dB of the 90th percentile.
FRAME_S = 0.005
QUIET_BELOW_DB = 30.0
MAX_CLOSURE_S = 0.12
# Plosives and affricates of the shared inventory: espeak plays their closure before the event.
STOPS = frozenset({"p", "b", "t", "d", "k", "g", "ch", "jh"})


def _frame_db(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int, float]:
    hop = max(1, int(round(FRAME_S * sample_rate)))
    n = len(audio) // hop
    frames = audio[:n * hop].astype(np.float64).reshape(n, hop) / 32768.0
    db = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-12)
    loud = float(np.percentile(db, 90)) if n else 0.0
    return db, hop, loud


def espeak_phonemes(events: list[EspeakEvent], audio: np.ndarray, sample_rate: int,
                    language: str = "", strict: bool = False,
                    n_text_words: int | None = None) -> list[Phoneme]:
    """Synthesis events and the int16 audio they index -> shared-inventory Phonemes tiling it.

    A phoneme lasts from its PHONEME event to the next one (or to the END event / the end of the
    audio); audio before the first event is a pause. Word index = rank of the WORD event whose
    text position the phoneme carries; pauses have -1. When espeak's word count differs from
    `n_text_words` (the sentence's), all words are -1, as speech.assign_words does for flite.
    strict=False skips IPA symbols without a shared label (UnknownPhone otherwise) so a rare
    loan-word sound cannot stop a build.

    Two corrections follow espeak-ng's synthesize.c (Generate): a phoneme's "prepause" (the
    closure of a stop) is queued BEFORE its PHONEME event, so the silent closure of /p/ would be
    counted in the previous phoneme: each stop's start moves back over the quiet frames that end
    the previous segment (at most MAX_CLOSURE_S). And an event with empty IPA is not always a
    pause (Spanish hiatus gives one inside a word): it is a pause only where the audio is quiet,
    otherwise its time joins the previous phoneme.
    """
    n_samples = len(audio)
    duration = n_samples / sample_rate
    db, hop, loud = _frame_db(audio, sample_rate)
    quiet = db < loud - QUIET_BELOW_DB

    def is_quiet(start_s: float, end_s: float) -> bool:
        a, b = int(start_s * sample_rate) // hop, int(np.ceil(end_s * sample_rate / hop))
        span = quiet[a:max(b, a + 1)]
        return bool(span.size) and float(np.mean(span)) >= 0.5

    word_rank = {}
    for event in events:
        if event.type == EVENT_WORD and event.text_position not in word_rank:
            word_rank[event.text_position] = len(word_rank)
    if n_text_words is not None and n_text_words != len(word_rank):
        word_rank = {}
    phones = [e for e in events if e.type == EVENT_PHONEME]
    end_samples = [e.sample for e in events if e.type == EVENT_END]
    stop = min(end_samples[-1], n_samples) if end_samples else n_samples
    raw: list[list] = []   # [labels, start, end, word]
    if phones and phones[0].sample > 0:
        raw.append([(), 0.0, min(phones[0].sample, n_samples) / sample_rate, -1])
    for k, event in enumerate(phones):
        start = min(event.sample, n_samples) / sample_rate
        end = (min(phones[k + 1].sample, n_samples) if k + 1 < len(phones) else stop) / sample_rate
        if end <= start:
            continue
        labels = espeak_to_shared(event.phoneme, language, strict=strict)
        if not labels and raw and raw[-1][0] and not is_quiet(start, end):
            raw[-1][2] = end                      # not a pause: the previous phoneme goes on
            continue
        word = word_rank.get(event.text_position, -1) if labels else -1
        raw.append([labels, start, end, word])
    for k in range(1, len(raw)):
        labels, start = raw[k][0], raw[k][1]
        if not labels or labels[0] not in STOPS:
            continue
        previous_start = raw[k - 1][1]
        frame = int(round(start * sample_rate)) // hop     # first frame of the stop
        limit = max(int(np.ceil(previous_start * sample_rate / hop)),
                    frame - int(MAX_CLOSURE_S / FRAME_S))
        first = frame
        while first - 1 >= limit and quiet[first - 1]:
            first -= 1
        if first < frame:
            new_start = max(previous_start, first * hop / sample_rate)
            if new_start > previous_start:
                raw[k - 1][2] = new_start
                raw[k][1] = new_start
    last_end = raw[-1][2] if raw else 0.0
    if last_end < duration:
        raw.append([(), last_end, duration, -1])
    return expand_segments([tuple(item) for item in raw])

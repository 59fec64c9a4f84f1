"""espeak-ng voices (Debian libespeak-ng1, about 100 languages) with aligned phoneme timings.

The espeak-ng command line prints phoneme timings only for MBROLA voices (not in Debian main), but
its C library reports a PHONEME event at the start of every phoneme, with `sample`: the position
in the generated audio, in samples at the library's rate (22050 Hz). The audio and the events
arrive through the same synthesis callback, so the positions index exactly the samples returned.
With espeakINITIALIZE_PHONEME_IPA the phoneme names are IPA, one notation for every language,
which phonesets.espeak_to_shared maps to the shared inventory. No maintained PyPI binding
exposes these events, so this talks to libespeak-ng.so.1 through ctypes (speak_lib.h, API 1.51).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import threading

import numpy as np

from .phonesets import expand_segments, espeak_to_shared
from .speech import Phoneme

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_PHONEME_IPA = 0x0002
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE, _PARAM_PITCH, _PARAM_RANGE = 1, 3, 4
EVENT_LIST_TERMINATED, EVENT_WORD, EVENT_END, EVENT_PHONEME = 0, 1, 5, 7
DEFAULT_RATE_WPM = 175            # espeak-ng's default speaking rate


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))


@dataclasses.dataclass(frozen=True)
class EspeakEvent:
    """The part of an espeak_EVENT this module uses (plain data, so parsers are testable)."""
    type: int            # EVENT_WORD, EVENT_PHONEME, EVENT_END, ...
    text_position: int   # 1-based character position of the word in the input text
    sample: int          # position in the output audio, samples at the library's rate
    phoneme: str = ""    # IPA for EVENT_PHONEME ("" for a pause)


class EspeakMissing(RuntimeError):
    pass


class _Library:
    """libespeak-ng loaded once per process; the library keeps global state, hence the lock."""

    def __init__(self):
        name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            self.lib = ctypes.CDLL(name)
        except OSError as error:
            raise EspeakMissing(f"libespeak-ng not found ({error}): apt-get install espeak-ng") from error
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint,
                                          ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                          ctypes.c_void_p, ctypes.c_void_p]
        self.sample_rate = self.lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, None, _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_PHONEME_IPA)
        if self.sample_rate <= 0:
            raise EspeakMissing("espeak_Initialize failed (espeak-ng-data missing?)")
        self.lock = threading.Lock()
        self._chunks: list[np.ndarray] = []
        self._events: list[EspeakEvent] = []
        self._callback = _CALLBACK(self._on_synth)   # keep a reference: ctypes does not
        self.lib.espeak_SetSynthCallback(self._callback)

    def _on_synth(self, wav, n_samples, events):
        if wav and n_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).copy())
        i = 0
        while events[i].type != EVENT_LIST_TERMINATED:
            event = events[i]
            phoneme = ""
            if event.type == EVENT_PHONEME:
                # 8 bytes, NUL-padded; a long IPA string can be cut inside a UTF-8 sequence.
                phoneme = bytes(event.id.string).split(b"\0", 1)[0].decode("utf-8", "ignore")
            self._events.append(EspeakEvent(event.type, event.text_position, event.sample, phoneme))
            i += 1
        return 0

    def speak(self, text: str, voice: str, rate_wpm: int, pitch: int, pitch_range: int
              ) -> tuple[np.ndarray, list[EspeakEvent]]:
        with self.lock:
            if self.lib.espeak_SetVoiceByName(voice.encode("utf-8")) != 0:
                raise ValueError(f"espeak-ng has no voice {voice!r}")
            self.lib.espeak_SetParameter(_PARAM_RATE, int(rate_wpm), 0)
            self.lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
            self.lib.espeak_SetParameter(_PARAM_RANGE, int(pitch_range), 0)
            self._chunks, self._events = [], []
            data = text.encode("utf-8") + b"\0"
            self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            self.lib.espeak_Synchronize()
            audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
            return audio.astype(np.int16), list(self._events)


_library: _Library | None = None


def library() -> _Library:
    global _library
    if _library is None:
        _library = _Library()
    return _library


def espeak_available() -> bool:
    try:
        library()
    except EspeakMissing:
        return False
    return True


def espeak_phonemes(events: list[EspeakEvent], n_samples: int, sample_rate: int,
                    language: str = "", strict: bool = False,
                    n_text_words: int | None = None) -> list[Phoneme]:
    """Synthesis events -> shared-inventory Phonemes tiling [0, n_samples / sample_rate].

    A phoneme lasts from its PHONEME event to the next one (or to the END event / the end of the
    audio); audio before the first event is a pause. Word index = rank of the WORD event whose
    text position the phoneme carries; pauses have -1. strict=False skips IPA symbols without a
    shared label (UnknownPhone otherwise) so a rare loan-word sound cannot stop a build.
    When espeak's word count differs from `n_text_words` (the sentence's), all words are -1, as
    speech.assign_words does for flite.
    """
    duration = n_samples / sample_rate
    word_rank = {}
    for event in events:
        if event.type == EVENT_WORD and event.text_position not in word_rank:
            word_rank[event.text_position] = len(word_rank)
    if n_text_words is not None and n_text_words != len(word_rank):
        word_rank = {}
    phones = [e for e in events if e.type == EVENT_PHONEME]
    end_samples = [e.sample for e in events if e.type == EVENT_END]
    stop = min(end_samples[-1], n_samples) if end_samples else n_samples
    raw = []
    if phones and phones[0].sample > 0:
        raw.append(((), 0.0, min(phones[0].sample, n_samples) / sample_rate, -1))
    for k, event in enumerate(phones):
        start = min(event.sample, n_samples) / sample_rate
        end = (min(phones[k + 1].sample, n_samples) if k + 1 < len(phones) else stop) / sample_rate
        labels = espeak_to_shared(event.phoneme, language, strict=strict)
        word = word_rank.get(event.text_position, -1) if labels else -1
        raw.append((labels, start, end, word))
    last_end = raw[-1][2] if raw else 0.0
    if last_end < duration:
        raw.append(((), last_end, duration, -1))
    return expand_segments(raw)


def synthesize_raw(sentence: str, voice: str, rate_wpm: int = DEFAULT_RATE_WPM, pitch: int = 50,
                   pitch_range: int = 50) -> tuple[np.ndarray, int, list[EspeakEvent]]:
    """Speak with espeak-ng: (int16 audio at the library's rate, that rate, events).

    `voice` is an espeak-ng voice name, optionally with a variant: "es", "de+f3", "en-us+m2".
    """
    lib = library()
    audio, events = lib.speak(sentence, voice, rate_wpm, pitch, pitch_range)
    return audio, lib.sample_rate, events

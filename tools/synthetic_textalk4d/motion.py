"""Face-unit weight curves (T, 52) at 30 fps from aligned phonemes and a speaking style.

Mouth: Cohen-Massaro coarticulation. Every (sub-)segment has a target and a per-articulator
dominance D(t) = alpha * exp(-(d(t) / tau)^2), where d is the distance from t to the segment's
interval (0 inside it, so targets hold for the whole segment) and tau is the subject's
anticipation before the segment and carry-over after it. The articulator value is the
dominance-weighted mean of the targets. Lip closure of p/b/m (and f/v) is then floored by a
closure envelope (held over the segment, 25-60 ms ramps), because closures are ballistic and must
not be averaged away by open neighbours or smoothing. Upper face: brow raises (or frowns) on the
most prominent content words, blinks as a Poisson process. Frame k covers [k/fps, (k+1)/fps) and
is sampled at its centre.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

from .speech import Phoneme
from .styles import SpeakingStyle
from .text import FUNCTION_WORDS, words_of
from .visemes import (ARKIT_UNITS, ART_INDEX, ARTICULATOR_UNITS, ARTICULATORS, CLOSURE_VISEMES,
                      DIPHTHONGS, MIN_CLOSURE_S, UNIT_INDEX, VISEME_TARGETS, VOWELS,
                      dominance_vector, target_vector, viseme_of)

FPS = 30
OVERSAMPLE = 4  # evaluate curves at 120 Hz before smoothing and sampling frame centres

_GAIN_GROUPS = {
    "jaw_gain": ("jawOpen", "mouthLowerDown"),
    "closure_gain": ("mouthPress",),
    "rounding_gain": ("mouthPucker", "mouthFunnel"),
    "spreading_gain": ("mouthStretch", "mouthSmile"),
    "labiodental_gain": ("mouthRollLower", "mouthRollUpper", "mouthUpperUp"),
}
# Closure must stay closed whatever the subject's articulation; only its strength varies a bit.
_ARTICULATION_EXEMPT = ("lipClosure", "mouthPress")
# mouthClose weight that exactly closes the lip gap: REST + PER_JAW * jawOpen. The builder
# measures it on the template head (geometry.lip_closure_model, stored in meta.json); this
# default (its value on the format-2 template) is used when none is given.
DEFAULT_LIP_CLOSURE_MODEL = (0.019, 1.0)


def n_frames_for(duration_s: float, fps: int = FPS) -> int:
    return max(1, int(round(duration_s * fps)))


# How far a viseme's dominance reaches, relative to the subject's anticipation / carry-over.
REACH_SCALE = {"PP": 0.4, "FF": 0.5, "sil": 1.5}


def _segments(phonemes: list[Phoneme]):
    """(viseme, start, end) with diphthongs split and closures widened."""
    segments = []
    for phoneme in phonemes:
        viseme = viseme_of(phoneme.label)
        start, end = phoneme.start, phoneme.end
        if viseme in DIPHTHONGS:
            first, second, fraction = DIPHTHONGS[viseme]
            middle = start + fraction * (end - start)
            segments += [(first, start, middle), (second, middle, end)]
            continue
        if viseme in CLOSURE_VISEMES and end - start < MIN_CLOSURE_S:
            centre = 0.5 * (start + end)
            start, end = centre - MIN_CLOSURE_S / 2, centre + MIN_CLOSURE_S / 2
        segments.append((viseme, start, end))
    return segments


def articulator_curves(phonemes: list[Phoneme], times: np.ndarray, style: SpeakingStyle) -> np.ndarray:
    """(len(times), len(ARTICULATORS)) coarticulated articulator values."""
    segments = _segments(phonemes)
    if not segments:
        return np.zeros((len(times), len(ARTICULATORS)))
    starts = np.array([s for _, s, _ in segments])
    ends = np.array([e for _, _, e in segments])
    targets = np.stack([target_vector(v) for v, _, _ in segments])        # (S, A)
    alphas = np.stack([dominance_vector(v) for v, _, _ in segments])      # (S, A)
    # Long pauses pull hard towards rest; short ones between words barely do.
    for i, (viseme, start, end) in enumerate(segments):
        if viseme == "sil":
            alphas[i] *= np.clip((end - start) / 0.25, 0.2, 4.0) ** 2
            if i == 0 or i == len(segments) - 1:  # before and after speaking the face rests
                alphas[i] *= 4.0
    t = times[:, None]
    before = np.clip(starts[None, :] - t, 0, None)
    after = np.clip(t - ends[None, :], 0, None)
    # Gaussian fall-off (not exponential): a strong closure must not leak into the next vowel.
    # Closures also reach less far than vowels, so /b/ in "abba" closes fully but briefly.
    reach = np.array([REACH_SCALE.get(v, 1.0) for v, _, _ in segments])[None, :]
    decay = np.exp(-(before / (style.anticipation_s * reach)) ** 2
                   - (after / (style.carryover_s * reach)) ** 2)  # (T, S)
    dominance = decay[:, :, None] * alphas[None, :, :]                     # (T, S, A)
    weighted = np.einsum("tsa,sa->ta", dominance, targets)
    return weighted / (dominance.sum(axis=1) + 1e-9)


def closure_envelope(phonemes: list[Phoneme], times: np.ndarray, style: SpeakingStyle) -> np.ndarray:
    """Lip-closure floor: each closure viseme's target held over its interval, ramping in and out
    over a subject-dependent 25-60 ms."""
    ramp = float(np.clip(0.6 * style.anticipation_s, 0.025, 0.06))
    envelope = np.zeros_like(times)
    for viseme, start, end in _segments(phonemes):
        if viseme in CLOSURE_VISEMES:
            target = VISEME_TARGETS[viseme].get("lipClosure", 0.0)
            envelope = np.maximum(envelope, target * _bump(times, start - ramp, start, end, end + ramp))
    return envelope


def _bump(times: np.ndarray, start: float, peak_start: float, peak_end: float, end: float) -> np.ndarray:
    """Smooth 0 -> 1 -> 0 envelope (raised-cosine attack and release, flat top)."""
    out = np.zeros_like(times)
    attack = (times >= start) & (times < peak_start)
    out[attack] = 0.5 - 0.5 * np.cos(np.pi * (times[attack] - start) / max(peak_start - start, 1e-6))
    out[(times >= peak_start) & (times <= peak_end)] = 1.0
    release = (times > peak_end) & (times <= end)
    out[release] = 0.5 + 0.5 * np.cos(np.pi * (times[release] - peak_end) / max(end - peak_end, 1e-6))
    return out


def emphasis_events(phonemes: list[Phoneme], sentence: str, count: int) -> list[tuple[float, float, float]]:
    """(vowel start, vowel end, prominence) of the `count` most prominent content words.

    Prominence is the duration of the word's longest vowel relative to the sentence's mean vowel
    duration: flite lengthens stressed and phrase-final vowels, so this follows the audio.
    """
    vowels = [p for p in phonemes if p.label in VOWELS]
    if not vowels or count <= 0:
        return []
    mean_duration = float(np.mean([p.end - p.start for p in vowels]))
    words = words_of(sentence)
    best: dict[int, Phoneme] = {}
    for p in vowels:
        if p.word < 0 or p.word >= len(words) or words[p.word] in FUNCTION_WORDS:
            continue
        if p.word not in best or (p.end - p.start) > (best[p.word].end - best[p.word].start):
            best[p.word] = p
    if not best:  # no word alignment: fall back to the longest vowels
        candidates = sorted(vowels, key=lambda p: (-(p.end - p.start), p.start))
    else:
        candidates = sorted(best.values(), key=lambda p: (-(p.end - p.start), p.start))
    chosen = sorted(candidates[:count], key=lambda p: p.start)
    return [(p.start, p.end, (p.end - p.start) / mean_duration) for p in chosen]


def face_unit_weights(phonemes: list[Phoneme], sentence: str, duration_s: float,
                      style: SpeakingStyle, rng: np.random.Generator, fps: int = FPS,
                      lip_closure_model: tuple[float, float] = DEFAULT_LIP_CLOSURE_MODEL) -> np.ndarray:
    """Weights (T, 52) in [0, 1], ARKIT_UNITS order, T = round(duration * fps)."""
    n_frames = n_frames_for(duration_s, fps)
    fine_dt = 1.0 / (fps * OVERSAMPLE)
    fine_times = (np.arange(n_frames * OVERSAMPLE) + 0.5) * fine_dt
    # Mouth shapes lead the sound: evaluate the phoneme timeline `lead_s` later.
    curves = articulator_curves(phonemes, fine_times + style.lead_s, style)
    if style.smoothness_s > 0:
        curves = gaussian_filter1d(curves, style.smoothness_s / fine_dt, axis=0, mode="nearest")
    # Closures are ballistic: whatever the smoothing and the neighbours, the lips shut for the
    # whole bilabial (and nearly for f/v), with short raised-cosine transitions.
    closure = closure_envelope(phonemes, fine_times + style.lead_s, style)
    curves[:, ART_INDEX["lipClosure"]] = np.maximum(curves[:, ART_INDEX["lipClosure"]], closure)
    frame_curves = curves[OVERSAMPLE // 2::OVERSAMPLE][:n_frames]          # frame centres
    frame_times = (np.arange(n_frames) + 0.5) / fps

    for gain_name, articulators in _GAIN_GROUPS.items():
        gain = getattr(style, gain_name)
        for name in articulators:
            frame_curves[:, ART_INDEX[name]] *= gain
    for name in ARTICULATORS:
        if name not in _ARTICULATION_EXEMPT:
            frame_curves[:, ART_INDEX[name]] *= style.articulation

    weights = np.zeros((n_frames, len(ARKIT_UNITS)))
    left, right = 1.0 + style.asymmetry, 1.0 - style.asymmetry
    speaking = _speaking_envelope(phonemes, frame_times)
    for name, units in ARTICULATOR_UNITS.items():
        values = frame_curves[:, ART_INDEX[name]]
        if name == "mouthSmile":
            values = values + style.smile_bias * speaking
        if len(units) == 2:
            weights[:, UNIT_INDEX[units[0]]] = values * left
            weights[:, UNIT_INDEX[units[1]]] = values * right
        elif len(units) == 1:
            weights[:, UNIT_INDEX[units[0]]] = values

    # Lip closure -> mouthClose against the current jaw opening; closure_gain > 1 presses the
    # lips together harder (a little beyond touching), < 1 leaves them barely apart.
    rest, per_jaw = lip_closure_model
    closure = frame_curves[:, ART_INDEX["lipClosure"]]
    weights[:, UNIT_INDEX["mouthClose"]] = closure * style.closure_gain * (
        rest + per_jaw * weights[:, UNIT_INDEX["jawOpen"]])

    # Smiling raises the cheeks and narrows the eyes (crow's feet).
    for side in ("Left", "Right"):
        smile = weights[:, UNIT_INDEX["mouthSmile" + side]]
        weights[:, UNIT_INDEX["cheekSquint" + side]] = style.squint_coupling * smile
        weights[:, UNIT_INDEX["eyeSquint" + side]] = 0.6 * style.squint_coupling * smile
        weights[:, UNIT_INDEX["noseSneer" + side]] = 0.25 * style.squint_coupling * smile

    _add_brows(weights, frame_times, phonemes, sentence, style, rng)
    _add_blinks(weights, frame_times, duration_s, style, rng)
    return np.clip(weights, 0.0, 1.0).astype(np.float32)


def _speaking_envelope(phonemes: list[Phoneme], times: np.ndarray) -> np.ndarray:
    """1 while talking, easing to 0 over long pauses."""
    active = np.zeros_like(times)
    for p in phonemes:
        if p.label != "pau":
            active[(times >= p.start - 0.15) & (times <= p.end + 0.15)] = 1.0
    return gaussian_filter1d(active, 3.0, mode="nearest")


def _add_brows(weights, times, phonemes, sentence, style: SpeakingStyle, rng) -> None:
    events = emphasis_events(phonemes, sentence, style.brows_per_sentence)
    left, right = 1.0 + 0.5 * style.asymmetry, 1.0 - 0.5 * style.asymmetry
    for start, end, prominence in events:
        amplitude = style.brow_gain * float(np.clip(0.55 + 0.35 * (prominence - 1.0), 0.4, 1.0))
        envelope = _bump(times, start - 0.18, start - 0.02, end, end + 0.35) * amplitude
        if rng.uniform() < style.furrow_prob:
            weights[:, UNIT_INDEX["browDownLeft"]] += envelope * left
            weights[:, UNIT_INDEX["browDownRight"]] += envelope * right
        else:
            weights[:, UNIT_INDEX["browInnerUp"]] += envelope
            weights[:, UNIT_INDEX["browOuterUpLeft"]] += envelope * style.brow_outer_ratio * left
            weights[:, UNIT_INDEX["browOuterUpRight"]] += envelope * style.brow_outer_ratio * right
            weights[:, UNIT_INDEX["eyeWideLeft"]] += 0.3 * envelope
            weights[:, UNIT_INDEX["eyeWideRight"]] += 0.3 * envelope


def _add_blinks(weights, times, duration_s, style: SpeakingStyle, rng) -> None:
    rate = style.blink_rate_per_min / 60.0
    t = float(rng.exponential(1.0 / rate))
    while t < duration_s:
        closing = 0.35 * style.blink_duration_s
        depth = rng.uniform(0.85, 1.0)
        envelope = _bump(times, t, t + closing, t + closing + 0.02, t + style.blink_duration_s) * depth
        weights[:, UNIT_INDEX["eyeBlinkLeft"]] = np.maximum(weights[:, UNIT_INDEX["eyeBlinkLeft"]], envelope)
        weights[:, UNIT_INDEX["eyeBlinkRight"]] = np.maximum(weights[:, UNIT_INDEX["eyeBlinkRight"]], envelope)
        t += style.blink_duration_s + float(rng.exponential(1.0 / rate))

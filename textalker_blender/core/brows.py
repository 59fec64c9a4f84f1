"""Brow emphasis: measured from face motion for training, placed on stressed syllables for generation.

Speakers raise (or knit) their brows on a few emphasised words: the sparse, large motion that
folds the forehead and the glabella. Which syllable carries the emphasis is only loosely fixed
by the audio, so a denoiser conditioned on audio alone learns the average, a faint lift spread
over the sentence, and the forehead creases of a wrinkle style never form (docs/WRINKLES.md).
With `ModelConfig.brow_condition` the denoiser gets two more per-frame inputs, the brow raise
and the brow furrow in [0, 1], the way `core/blinks.py` tells it the eyelid closure:

- training: `brow_activity` measures them from the ground-truth vertex offsets, projected onto
  the template's brow units (any data in the template topology, no labels needed);
- generation: `emphasis_nuclei` finds the syllable nuclei of the audio and how long each is
  held (a stressed vowel is held longer); `sample_brow_track` raises the brows on the longest
  nuclei of each phrase at the speaking style's measured rate and height (`BrowStatistics`,
  stored per style in the weights), knitting them instead at the style's measured share.

The model still draws the brows, the eyes and the skin (the forehead lines) itself; the track
only says when and how high.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .blinks import check_per_minute

# Channels of a brow track, in this order.
BROW_CHANNELS = ("raise", "furrow")
RAISE_UNITS = ("browInnerUp",)
FURROW_UNITS = ("browDownLeft", "browDownRight")
# Units that move with an emphasis (the outer brows and the widened eyes go up with the inner
# brows): left out of the other units the output direction is fitted beside (`other_units`).
MOVES_WITH_EMPHASIS = RAISE_UNITS + FURROW_UNITS + ("browOuterUpLeft", "browOuterUpRight", "eyeWideLeft", "eyeWideRight")
# A brow event: a run where raise or furrow exceeds EVENT_LEVEL and peaks above PEAK_LEVEL.
EVENT_LEVEL = 0.04
PEAK_LEVEL = 0.1
# Where measured statistics are missing (weights without them, a style without events).
DEFAULT_RATE_PER_MIN = 20.0
DEFAULT_PEAK = 0.45
# Shape of an emphasis (the timing speakers show: the brows start up about a syllable before the
# stressed vowel, are up while it is held and come down over about a third of a second).
LEAD_S = 0.18
RISE_S = 0.16
RELEASE_S = 0.35
# Emphases closer than this are one emphasis.
MIN_GAP_S = 0.6
MAX_RATE_PER_MIN = 120.0

# Nucleus detection (`emphasis_nuclei`).
_HOP_S = 0.01
_WINDOW_S = 0.025
_VOWEL_BAND_HZ = (250.0, 2500.0)
_HIGH_BAND_HZ = (3500.0, 7500.0)
_ACTIVE_RANGE_DB = 30.0     # speech: within this of the loudest frames ...
_ABOVE_FLOOR_DB = 12.0      # ... and this far above the noise floor
_PHRASE_GAP_S = 0.25        # a pause at least this long separates phrases
_NUCLEUS_DROP_DB = 4.0      # a nucleus lasts while its band energy is within this of its peak
_PEAK_PROMINENCE_DB = 3.0


def check_rate(value) -> float:
    """A brow emphasis rate (per minute of speech) as given by a caller -> float; ValueError
    unless finite and in 0..MAX_RATE_PER_MIN."""
    return check_per_minute(value, "brow emphasis rate", "per minute of speech", MAX_RATE_PER_MIN)


@dataclass(frozen=True)
class BrowStatistics:
    """How a speaking style moves its brows: emphases per minute, their median heights (raise,
    furrow) and the share of emphases that knit the brows instead of raising them."""

    rate_per_min: float
    raise_peak: float
    furrow_peak: float
    furrow_share: float

    def to_dict(self) -> dict:
        return {key: round(float(getattr(self, key)), 4)
                for key in ("rate_per_min", "raise_peak", "furrow_peak", "furrow_share")}

    @classmethod
    def from_dict(cls, data: dict) -> BrowStatistics:
        return cls(float(data["rate_per_min"]), float(data["raise_peak"]), float(data["furrow_peak"]),
                   float(data["furrow_share"]))

    @classmethod
    def mean(cls, table: list[BrowStatistics]) -> BrowStatistics:
        if not table:
            return DEFAULT_STATISTICS
        return cls(*(float(np.mean([getattr(s, key) for s in table]))
                     for key in ("rate_per_min", "raise_peak", "furrow_peak", "furrow_share")))


DEFAULT_STATISTICS = BrowStatistics(DEFAULT_RATE_PER_MIN, DEFAULT_PEAK, DEFAULT_PEAK, 0.0)


def brow_activity(template, head_offsets: np.ndarray, with_other_units: bool = False):
    """Head vertex offsets (T, V, 3) in metres -> (T, 2) float32 [raise, furrow] in [0, 1]: the
    least-squares weights of the template's inner brow raise and of its brow-down units (mean of
    the sides), as `core/blinks.py` measures the eyelids. With `with_other_units`, also the
    (T, U') weights of every unit that does not move with an emphasis (jaw, lips, cheeks, lids):
    what the brow output direction is fitted beside (`LatentDenoiser.set_brow_direction`)."""
    weights = template.estimate_unit_weights(np.asarray(head_offsets, np.float32))
    raise_ = weights[..., [template.unit_index(n) for n in RAISE_UNITS]].mean(axis=-1)
    furrow = weights[..., [template.unit_index(n) for n in FURROW_UNITS]].mean(axis=-1)
    track = np.clip(np.stack([raise_, furrow], axis=-1), 0.0, 1.0).astype(np.float32)
    if not with_other_units:
        return track
    moving = {template.unit_index(n) for n in MOVES_WITH_EMPHASIS}
    others = [i for i in range(weights.shape[-1]) if i not in moving]
    return track, weights[..., others].astype(np.float32)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first, stop) index ranges where `mask` is True."""
    padded = np.concatenate([[False], np.asarray(mask, bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def brow_statistics(tracks: list[np.ndarray], fps: float) -> BrowStatistics:
    """Emphasis rate, heights and furrow share of (T, 2) brow tracks (one style's utterances)."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, not {fps}")
    frames = sum(len(t) for t in tracks)
    if frames == 0:
        return DEFAULT_STATISTICS
    raises, furrows = [], []
    for track in tracks:
        track = np.asarray(track, np.float32).reshape(-1, 2)
        for first, stop in _runs(track.max(axis=1) > EVENT_LEVEL):
            peak = track[first:stop].max(axis=0)
            if peak.max() < PEAK_LEVEL:
                continue
            (furrows if peak[1] > peak[0] else raises).append(float(peak.max()))
    count = len(raises) + len(furrows)
    return BrowStatistics(
        rate_per_min=count / (frames / fps / 60.0),
        raise_peak=float(np.median(raises)) if raises else DEFAULT_PEAK,
        furrow_peak=float(np.median(furrows)) if furrows else DEFAULT_PEAK,
        furrow_share=len(furrows) / count if count else 0.0,
    )


# ---------------------------------------------------------------------------- audio -> emphasis
@dataclass(frozen=True)
class Nucleus:
    """A syllable nucleus: where its vowel is held (s), and its length relative to the clip's
    mean nucleus (a stressed vowel is held longer: the prominence the emphasis follows)."""

    start_s: float
    end_s: float
    prominence: float
    phrase: int


def _band_db(power: np.ndarray, freqs: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    rows = (freqs >= band[0]) & (freqs < band[1])
    return 10.0 * np.log10(power[rows].sum(axis=0) + 1e-12)


def emphasis_nuclei(audio: np.ndarray, sample_rate: int) -> list[Nucleus]:
    """Syllable nuclei of speech audio (mono float), in time order.

    Band energy 250-2500 Hz (where vowels are loud and fricatives are not) every 10 ms; speech is
    where it is within 30 dB of the loudest frames and 12 dB above the noise floor, and louder
    than the 3.5-7.5 kHz band (not a fricative); pauses of 250 ms split phrases. Each energy peak
    of a phrase (3 dB prominence) is a nucleus, lasting while the energy stays within 4 dB of
    its peak. Level, sample rate (>= 8 kHz) and band-limiting (telephone) do not change it."""
    from scipy.ndimage import gaussian_filter1d
    from scipy.signal import find_peaks, stft

    audio = np.asarray(audio, np.float32).reshape(-1)
    if sample_rate < 8000 or audio.size < int(0.1 * sample_rate):
        return []
    hop = max(1, int(round(_HOP_S * sample_rate)))
    window = int(round(_WINDOW_S * sample_rate))
    freqs, _, spectrum = stft(audio - audio.mean(), fs=sample_rate, nperseg=window, noverlap=window - hop,
                              boundary=None, padded=False)
    if spectrum.shape[1] < 3:
        return []
    power = np.abs(spectrum) ** 2
    vowel = gaussian_filter1d(_band_db(power, freqs, _VOWEL_BAND_HZ), 2.0)
    high = gaussian_filter1d(_band_db(power, freqs, (_HIGH_BAND_HZ[0], min(_HIGH_BAND_HZ[1], sample_rate / 2))), 2.0)
    loud, floor = np.percentile(vowel, 99), np.percentile(vowel, 10)
    if loud - floor < _ABOVE_FLOOR_DB:  # silence or steady noise: no speech to emphasise
        return []
    threshold = max(loud - _ACTIVE_RANGE_DB, floor + _ABOVE_FLOOR_DB)
    voiced = (vowel > threshold) & (vowel > high)
    # Phrases: voiced runs joined across short gaps.
    phrases: list[list[int]] = []
    for first, stop in _runs(vowel > threshold):
        if phrases and first - phrases[-1][1] < _PHRASE_GAP_S / _HOP_S:
            phrases[-1][1] = stop
        else:
            phrases.append([first, stop])
    peaks, _ = find_peaks(np.where(voiced, vowel, threshold), prominence=_PEAK_PROMINENCE_DB,
                          distance=max(1, int(0.08 / _HOP_S)))
    found = []
    for peak in peaks:
        level = vowel[peak] - _NUCLEUS_DROP_DB
        lo = peak
        while lo > 0 and voiced[lo - 1] and vowel[lo - 1] >= level:
            lo -= 1
        hi = peak + 1
        while hi < len(vowel) and voiced[hi] and vowel[hi] >= level:
            hi += 1
        phrase = next((i for i, (a, b) in enumerate(phrases) if a <= peak < b), -1)
        # Frame i of the STFT is centred at i * hop (+ half a window) samples.
        offset = window / 2 / sample_rate
        found.append((lo * hop / sample_rate + offset, hi * hop / sample_rate + offset, phrase))
    if not found:
        return []
    mean_length = float(np.mean([end - start for start, end, _ in found]))
    return [Nucleus(start, end, (end - start) / mean_length, phrase) for start, end, phrase in found]


def emphasis_shape(times: np.ndarray, start_s: float, end_s: float, height: float = 1.0) -> np.ndarray:
    """Brow height of one emphasis at `times` (s): a raised-cosine rise ending just before the
    stressed vowel, held while it is, a raised-cosine release after it."""
    times = np.asarray(times, np.float64)
    rise_start = start_s - LEAD_S
    rise_end = rise_start + RISE_S
    hold_end = max(end_s, rise_end)
    out = np.zeros_like(times)
    rising = (times >= rise_start) & (times < rise_end)
    out[rising] = 0.5 - 0.5 * np.cos(np.pi * (times[rising] - rise_start) / RISE_S)
    out[(times >= rise_end) & (times <= hold_end)] = 1.0
    falling = (times > hold_end) & (times < hold_end + RELEASE_S)
    out[falling] = 0.5 + 0.5 * np.cos(np.pi * (times[falling] - hold_end) / RELEASE_S)
    return out * float(height)


def choose_emphases(nuclei: list[Nucleus], rate_per_min: float, rng: np.random.Generator) -> list[Nucleus]:
    """The nuclei that carry an emphasis: per phrase, `rate_per_min` x its length on average
    (rounded at random, so short phrases get one now and then), its longest nuclei first, no two
    closer than MIN_GAP_S."""
    rate_per_min = check_rate(rate_per_min)
    chosen: list[Nucleus] = []
    for phrase in sorted({n.phrase for n in nuclei}):
        members = [n for n in nuclei if n.phrase == phrase]
        length_s = max(n.end_s for n in members) - min(n.start_s for n in members)
        expected = rate_per_min / 60.0 * max(length_s, 0.0)
        count = int(math.floor(expected + float(rng.uniform())))
        picked: list[Nucleus] = []
        for nucleus in sorted(members, key=lambda n: (-n.prominence, n.start_s)):
            if len(picked) >= count:
                break
            if all(abs(nucleus.start_s - p.start_s) >= MIN_GAP_S for p in picked):
                picked.append(nucleus)
        chosen += picked
    return sorted(chosen, key=lambda n: n.start_s)


def sample_brow_track(nuclei: list[Nucleus], n_frames: int, fps: float, statistics: BrowStatistics,
                      rng: np.random.Generator, rate_per_min: float | None = None) -> np.ndarray:
    """(n_frames, 2) float32 [raise, furrow] track: emphases on the chosen nuclei, each raising
    the brows to the style's measured height, or knitting them at its furrow share. The height is
    the measured one for a nucleus held twice the clip's mean (typical of the chosen ones), up to
    a fifth more for longer ones and less for shorter ones (as speakers do)."""
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, not {n_frames}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, not {fps}")
    rate = statistics.rate_per_min if rate_per_min is None else check_rate(rate_per_min)
    track = np.zeros((n_frames, 2), np.float32)
    if rate == 0 or n_frames == 0:
        return track
    times = (np.arange(n_frames) + 0.5) / fps
    for nucleus in choose_emphases(nuclei, rate, rng):
        furrow = bool(rng.uniform() < statistics.furrow_share)
        peak = statistics.furrow_peak if furrow else statistics.raise_peak
        height = peak * float(np.clip(1.0 + 0.2 * (nucleus.prominence - 2.0), 0.6, 1.2))
        shape = emphasis_shape(times, nucleus.start_s, nucleus.end_s, min(height, 1.0)).astype(np.float32)
        column = 1 if furrow else 0
        np.maximum(track[:, column], shape, out=track[:, column])
    return track

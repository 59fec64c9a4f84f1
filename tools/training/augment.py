"""Log-mel augmentation for stage 2: makes the audio front end hear past the synthetic voices.

The training voices are flite diphone voices (varied by sox pitch/EQ); users bring real
microphones, rooms and speakers. Each training window's log-mel is perturbed the way those
differences show up in a mel spectrogram, cheaply and in the log-power domain:

- gain: a level offset (load_audio loudness-normalises, so only a few dB remain at inference);
- channel colour: a smooth random curve over the mel bands (tilt + low-order cosines), i.e. a
  different microphone, room or voice timbre;
- vocal-tract-length perturbation (VTLP): the band axis warped by a factor near 1, i.e. a longer
  or shorter vocal tract (other speakers' formants);
- a noise floor: coloured stationary noise added in the power domain at 10-40 dB below the
  utterance's loud frames (rooms, fans, hiss);
- frequency masking (SpecAugment): one band range replaced by its mean, so no single band is
  relied on.

Nothing moves in time: the alignment of audio and motion is the label and must stay exact.
"""

from __future__ import annotations

import math

import torch


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _smooth_curve(n_bands: int, generator: torch.Generator, tilt: float, ripple: float) -> torch.Tensor:
    """A smooth random curve over the bands (natural-log power units)."""
    position = torch.linspace(-1.0, 1.0, n_bands)
    curve = _uniform(generator, -tilt, tilt) * position
    for order in (1, 2, 3):
        phase = _uniform(generator, 0.0, 2 * math.pi)
        curve = curve + _uniform(generator, -ripple, ripple) * torch.cos(order * math.pi * (position + 1) / 2 + phase)
    return curve


def warp_bands(log_mel: torch.Tensor, factor: float) -> torch.Tensor:
    """Resample the band axis so band b takes the value of band b / factor (linear interpolation,
    edges clamped): factor > 1 moves spectral structure up, like a shorter vocal tract."""
    n_bands = log_mel.shape[0]
    source = (torch.arange(n_bands, dtype=torch.float32) / factor).clamp(0, n_bands - 1)
    lower = source.floor().long()
    upper = (lower + 1).clamp(max=n_bands - 1)
    weight = (source - lower)[:, None]
    return log_mel[lower] * (1 - weight) + log_mel[upper] * weight


def augment_log_mel(log_mel: torch.Tensor, generator: torch.Generator, settings: dict) -> torch.Tensor:
    """(n_mels, M) natural-log mel power -> the same shape, perturbed (a new tensor).

    `settings` is the LDM config's "augment" section (missing keys take DEFAULT_AUGMENT's
    values); a probability of 0 disables it."""
    settings = {**DEFAULT_AUGMENT, **settings}
    if _uniform(generator, 0.0, 1.0) >= float(settings.get("probability", 0.0)):
        return log_mel
    out = log_mel.float().clone()
    n_bands = out.shape[0]
    vtlp = float(settings.get("vtlp", 0.0))
    if vtlp > 0:
        out = warp_bands(out, _uniform(generator, 1.0 - vtlp, 1.0 + vtlp))
    colour = float(settings.get("colour_nats", 0.0))
    if colour > 0:
        out = out + _smooth_curve(n_bands, generator, tilt=colour, ripple=colour / 2)[:, None]
    gain = float(settings.get("gain_nats", 0.0))
    if gain > 0:
        out = out + _uniform(generator, -gain, gain)
    noise = settings.get("noise_snr_db")
    if noise and _uniform(generator, 0.0, 1.0) < 0.5:
        low_db, high_db = float(noise[0]), float(noise[1])
        loud = torch.quantile(out.max(dim=0).values, 0.9)  # level of the loud frames
        snr_nats = _uniform(generator, low_db, high_db) * math.log(10) / 10
        floor = loud - snr_nats + _smooth_curve(n_bands, generator, tilt=1.0, ripple=0.5)[:, None]
        jitter = 0.3 * torch.randn(out.shape, generator=generator)  # a noise floor is not flat in time
        out = torch.logaddexp(out, floor + jitter)
    width = int(settings.get("frequency_mask_bands", 0))
    if width > 0 and _uniform(generator, 0.0, 1.0) < 0.5:
        size = int(torch.randint(1, width + 1, (), generator=generator))
        start = int(torch.randint(0, max(1, n_bands - size), (), generator=generator))
        out[start : start + size] = out[start : start + size].mean()
    return out


DEFAULT_AUGMENT = {
    "probability": 0.0,
    "gain_nats": 0.7,
    "colour_nats": 1.0,
    "vtlp": 0.1,
    "noise_snr_db": [10.0, 40.0],
    "frequency_mask_bands": 8,
}

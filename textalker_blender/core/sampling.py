"""DDIM sampling of a whole clip with sliding windows (the generation loop around the denoiser).

Long audio uses sliding windows of Tw frames: the first window starts from noise; every later
window re-uses the last frames of the already generated output as its prefix, clamped at every
sampling step (inpainting-style conditioning), so windows join seamlessly. The final window is
shifted back to keep the full length Tw (its prefix is then longer than Tp). Training draws a
prefix at random (none, Tp frames, or up to Tw-1 frames; `tools/training/losses.py`) so the model
learns both cases. Sampling is deterministic DDIM (eta = 0) with "trailing" timestep spacing
(`schedule.DDPMSchedule`), which starts from the last training step (pure noise) and so works from
1 step up. The network is `denoiser.LatentDenoiser`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

import torch

from .denoiser import LatentDenoiser
from .errors import Cancelled
from .schedule import DDPMSchedule


# ---------------------------------------------------------------------------- sampling
@dataclass(frozen=True)
class Window:
    start: int
    stop: int
    prefix: int  # frames at the start of the window taken from earlier output

    @property
    def length(self) -> int:
        return self.stop - self.start


def plan_windows(n_frames: int, window: int, prefix: int) -> list[Window]:
    """Windows covering 0..n_frames: the first has no prefix, the others overlap by >= prefix."""
    if n_frames <= 0:
        return []
    windows = [Window(0, min(window, n_frames), 0)]
    while windows[-1].stop < n_frames:
        start = windows[-1].stop - prefix
        stop = min(start + window, n_frames)
        if stop - start < window:  # keep the trained length; the prefix grows instead
            start = max(0, stop - window)
        windows.append(Window(start, stop, windows[-1].stop - start))
    return windows


ProgressFn = Callable[[float], None]


@torch.no_grad()
def sample_sequence(
    denoiser: LatentDenoiser,
    schedule: DDPMSchedule,
    audio: torch.Tensor,
    steps: int,
    generator: torch.Generator,
    speaking_style: int | None = None,
    wrinkle_style: int | None = None,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    blink: torch.Tensor | None = None,
    brow: torch.Tensor | None = None,
) -> torch.Tensor:
    """Generate model-space x0 (T, Dz) for audio features (T, C) with sliding windows + DDIM;
    `blink` (T,): eyelid closure track of a blink-conditioned model (None: no blinks); `brow`
    (T, 2): brow track of a brow-conditioned model.

    `generator` is a CPU torch.Generator: the noise is drawn on the CPU and moved to the device,
    so a seed gives the same noise on every device.
    """
    config = denoiser.config
    device = audio.device
    n_frames = audio.shape[0]
    output = torch.zeros(n_frames, denoiser.latent_dim, device=device)
    timesteps = schedule.ddim_timesteps(steps)
    windows = plan_windows(n_frames, config.window_frames, config.prefix_frames)
    styles = {}
    if speaking_style is not None:
        styles["speaking_style"] = torch.tensor([speaking_style], device=device)
    if wrinkle_style is not None:
        styles["wrinkle_style"] = torch.tensor([wrinkle_style], device=device)
    total_calls = len(windows) * len(timesteps)
    calls = 0
    for window in windows:
        audio_window = audio[window.start : window.stop][None]
        blink_window = None if blink is None else blink[window.start : window.stop][None].to(device)
        brow_window = None if brow is None else brow[window.start : window.stop][None].to(device)
        prefix_mask = torch.zeros(1, window.length, dtype=torch.bool, device=device)
        prefix_mask[:, : window.prefix] = True
        prefix_values = output[window.start : window.start + window.prefix]
        x = torch.randn((1, window.length, denoiser.latent_dim), generator=generator).to(device)
        for i, t in enumerate(timesteps):
            if cancel is not None and cancel.is_set():
                raise Cancelled("Generation cancelled.")
            x[0, : window.prefix] = prefix_values
            x0 = denoiser(x, torch.tensor([t], device=device), audio_window, prefix_mask, **styles,
                          blink=blink_window, brow=brow_window)
            t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
            x = schedule.ddim_step(x, x0, t, t_prev)
            calls += 1
            if progress is not None:
                progress(calls / total_calls)
        x[0, : window.prefix] = prefix_values
        output[window.start : window.stop] = x[0]
    return output


def border_discontinuity(sequence: torch.Tensor, window: int, prefix: int) -> float:
    """Seam metric for sliding-window output (T, D): the mean frame-to-frame step where a window's
    generated part starts, divided by the mean step everywhere else (1.0 = seamless; a model whose
    windows do not continue their prefix scores well above 1). NaN when there is no border."""
    steps = (sequence[1:] - sequence[:-1]).norm(dim=-1)
    borders = [w.start + w.prefix - 1 for w in plan_windows(sequence.shape[0], window, prefix)[1:]]
    borders = [b for b in borders if 0 <= b < steps.shape[0]]
    if not borders:
        return float("nan")
    at_border = torch.zeros(steps.shape[0], dtype=torch.bool)
    at_border[borders] = True
    return float(steps[at_border].mean() / steps[~at_border].mean().clamp_min(1e-12))

"""Training losses of the latent diffusion model (not shipped with the extension).

`diffusion_loss` is the x0-prediction MSE over the non-prefix frames of random windows;
`ldm_loss` puts a TexTalker model's latents into model space first.
"""

from __future__ import annotations

import torch

from textalker_blender.core.config import ModelConfig
from textalker_blender.core.denoiser import LatentDenoiser
from textalker_blender.core.schedule import DDPMSchedule


def random_prefix_lengths(
    batch: int, config: ModelConfig, n_frames: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Prefix length per training window: 0 (first window), Tp, or up to T-1 (last window)."""
    u = torch.rand(batch, 2, generator=generator)
    lengths = torch.zeros(batch, dtype=torch.long)
    use_prefix = u[:, 0] < config.prefix_probability
    tp = min(config.prefix_frames, n_frames - 1)
    longer = torch.randint(tp, max(tp + 1, n_frames), (batch,), generator=generator)
    lengths[use_prefix] = torch.where(u[use_prefix, 1] < 0.75, torch.tensor(tp), longer[use_prefix])
    return lengths


def diffusion_loss(
    denoiser: LatentDenoiser,
    schedule: DDPMSchedule,
    x0: torch.Tensor,
    audio: torch.Tensor,
    prefix_lengths: torch.Tensor | None = None,
    speaking_style: torch.Tensor | None = None,
    wrinkle_style: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    blink: torch.Tensor | None = None,
    return_prediction: bool = False,
    brow: torch.Tensor | None = None,
):
    """MSE between predicted and true x0 over the non-prefix frames of each window.

    `x0` (B, T, Dz) in model space; `audio` (B, T, C) features of the same frames; `blink`
    (B, T) their eyelid closure (blink-conditioned models), `brow` (B, T, 2) their brow track
    (brow-conditioned models). With `return_prediction`:
    (loss, predicted x0 (B, T, Dz), non-prefix mask (B, T)), for terms on what was predicted.
    """
    batch, n_frames, _ = x0.shape
    device = x0.device
    if prefix_lengths is None:
        prefix_lengths = random_prefix_lengths(batch, denoiser.config, n_frames, generator)
    t = torch.randint(0, schedule.n_steps, (batch,), generator=generator).to(device)
    noise = torch.randn(x0.shape, generator=generator).to(device)
    x_t = schedule.q_sample(x0, t, noise)
    prefix = torch.arange(n_frames, device=device)[None] < prefix_lengths.to(device)[:, None]
    x_in = torch.where(prefix[..., None], x0, x_t)
    prediction = denoiser(x_in, t, audio, prefix, speaking_style, wrinkle_style, blink, brow)
    weight = (~prefix).to(x0.dtype)[..., None]
    loss = ((prediction - x0) ** 2 * weight).sum() / (weight.sum() * x0.shape[-1]).clamp_min(1)
    return (loss, prediction, ~prefix) if return_prediction else loss


def ldm_loss(
    model,
    z_motion: torch.Tensor,
    z_wrinkle: torch.Tensor,
    audio_features: torch.Tensor,
    subjects: torch.Tensor,
    prefix_lengths: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    blink: torch.Tensor | None = None,
    return_prediction: bool = False,
    brow: torch.Tensor | None = None,
):
    """Diffusion loss of a batch of windows for a `TexTalkerModel`: latents (B, T, Dz_f),
    (B, T, Dz_w) from the VQ encoders, audio features (B, T, C) (from
    `audio_encoder.window_features` for the bundled encoder, so its front end trains jointly),
    subject style rows (B,), eyelid closure (B, T) of a blink-conditioned model, brow track
    (B, T, 2) of a brow-conditioned model; `return_prediction` as in `diffusion_loss`."""
    x0 = model.batch_to_model_space(z_motion, z_wrinkle, subjects)
    onehot = model.config.style_mode == "onehot"
    return diffusion_loss(
        model.denoiser,
        model.schedule,
        x0,
        audio_features,
        prefix_lengths,
        speaking_style=subjects if onehot else None,
        wrinkle_style=subjects if onehot else None,
        generator=generator,
        blink=blink,
        return_prediction=return_prediction,
        brow=brow,
    )

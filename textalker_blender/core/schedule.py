"""DDPM noise schedule (cosine or linear betas) and the deterministic DDIM update.

Shared by the denoiser (its x0 skip reads abar_t), the sampler (`sampling.py`) and training.
"""

from __future__ import annotations

import math

import numpy as np
import torch


# ---------------------------------------------------------------------------- schedule
class DDPMSchedule:
    """Noise schedule of `n_steps` DDPM steps with cosine (Nichol & Dhariwal) or linear betas."""

    def __init__(self, n_steps: int = 500, schedule: str = "cosine"):
        self.n_steps = int(n_steps)
        if schedule == "cosine":
            s = 0.008
            x = np.linspace(0, n_steps, n_steps + 1, dtype=np.float64)
            f = np.cos(((x / n_steps) + s) / (1 + s) * math.pi / 2) ** 2
            alphas_cumprod = f / f[0]
            betas = np.clip(1 - alphas_cumprod[1:] / alphas_cumprod[:-1], 0, 0.999)
        elif schedule == "linear":
            scale = 1000.0 / n_steps
            betas = np.linspace(scale * 1e-4, scale * 0.02, n_steps, dtype=np.float64)
        else:
            raise ValueError(f"unknown beta schedule {schedule!r}")
        self.betas = torch.from_numpy(betas).float()
        self.alphas_cumprod = torch.from_numpy(np.cumprod(1.0 - betas)).float()

    def _gather(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        values = self.alphas_cumprod.to(like.device)[t]
        return values.reshape(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Noised x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise."""
        abar = self._gather(t, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def ddim_timesteps(self, steps: int) -> list[int]:
        """`steps` descending timesteps with trailing spacing (first = n_steps - 1)."""
        if not 1 <= steps <= self.n_steps:
            raise ValueError(f"steps must be in 1..{self.n_steps}, not {steps}")
        spaced = np.round(np.arange(self.n_steps, 0, -self.n_steps / steps)).astype(int) - 1
        return [int(t) for t in spaced]

    def ddim_step(
        self, x_t: torch.Tensor, x0_pred: torch.Tensor, t: int, t_prev: int
    ) -> torch.Tensor:
        """Deterministic DDIM update from step t to t_prev (t_prev < 0 means: return x0)."""
        if t_prev < 0:
            return x0_pred
        abar_t = float(self.alphas_cumprod[t])
        abar_prev = float(self.alphas_cumprod[t_prev])
        eps = (x_t - math.sqrt(abar_t) * x0_pred) / math.sqrt(max(1 - abar_t, 1e-12))
        return math.sqrt(abar_prev) * x0_pred + math.sqrt(1 - abar_prev) * eps

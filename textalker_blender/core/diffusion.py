"""Joint motion-wrinkle latent diffusion: denoiser, DDPM schedule, DDIM sampler, sliding windows.

One token per frame: the frame's motion latent z_f and wrinkle latent z_w are flattened,
concatenated (X0 = [z_f, z_w]) and projected to the model width. The denoiser is a transformer
decoder (`torch.nn.TransformerDecoder`, pre-norm):
- cross-attention memory = projected audio features, with an *alignment mask* so latent frame t
  attends to audio frame t only (the audio encoder supplies temporal context, as in the official
  code);
- self-attention over the window is *full* (bidirectional) by default: the whole window is denoised
  jointly, and seeing the upcoming frames lets lips anticipate phonemes (coarticulation); causality
  is not needed because generation is not autoregressive frame by frame -- continuity across windows
  comes from the prefix. `causal` (attend to the past only) and `none` (each frame only itself, an
  ablation) are available.
- the diffusion timestep is a sinusoidal embedding + MLP added to every token; frames given as
  prefix are flagged with a learned embedding, and (`prefix_anchor`) the last prefix frame,
  projected, is added to every token of the window: continuing from it then does not have to be
  learned through attention first (in a toy run this cut the seam step at window borders by
  about a third for the same training).

It predicts the clean latent x0 (MSE loss) in *model space*: (z - pivot - latent_center) /
latent_scale in pivot mode, where the pivot is the subject's mean latent, so the network never sees
the pivots (an additive offset, as in the paper). In one-hot mode (ablation) it predicts
(z - latent_center) / latent_scale and gets learned speaking/wrinkle style embeddings.

Long audio uses sliding windows of Tw frames: the first window starts from noise; every later
window re-uses the last frames of the already generated output as its prefix, clamped at every
sampling step (inpainting-style conditioning), so windows join seamlessly. The final window is
shifted back to keep the full length Tw (its prefix is then longer than Tp). Training draws a
prefix at random (none, Tp frames, or up to Tw-1 frames) so the model learns both cases.
Sampling is deterministic DDIM (eta = 0) with "trailing" timestep spacing, which starts from the
last training step (pure noise) and so works from 1 step up.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .errors import Cancelled


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


# ---------------------------------------------------------------------------- masks
def alignment_mask(n_frames: int, n_audio: int | None = None, device=None) -> torch.Tensor:
    """Float mask (T, T_audio): 0 where latent frame t may see audio frame t, -inf elsewhere."""
    n_audio = n_frames if n_audio is None else n_audio
    allowed = torch.eye(n_frames, n_audio, dtype=torch.bool, device=device)
    return torch.zeros(n_frames, n_audio, device=device).masked_fill(~allowed, float("-inf"))


def self_attention_mask(n_frames: int, mode: str, device=None) -> torch.Tensor | None:
    """Float (T, T) mask for the self-attention over a window, or None for full attention."""
    if mode == "full":
        return None
    if mode == "causal":
        allowed = torch.ones(n_frames, n_frames, dtype=torch.bool, device=device).tril()
    elif mode == "none":
        allowed = torch.eye(n_frames, dtype=torch.bool, device=device)
    else:
        raise ValueError(f"unknown self-attention mode {mode!r}")
    return torch.zeros(n_frames, n_frames, device=device).masked_fill(~allowed, float("-inf"))


def sinusoidal_embedding(positions: torch.Tensor, width: int) -> torch.Tensor:
    """(N,) positions -> (N, width) sin/cos features (Transformer / DDPM style)."""
    half = width // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device) / half)
    angles = positions.float()[:, None] * freqs[None]
    embedding = torch.cat([angles.sin(), angles.cos()], dim=1)
    if width % 2:
        embedding = F.pad(embedding, (0, 1))
    return embedding


# ---------------------------------------------------------------------------- denoiser
class LatentDenoiser(nn.Module):
    def __init__(self, config: ModelConfig, audio_feature_dim: int | None = None):
        super().__init__()
        config.validate()
        self.config = config
        # abar_t of the training schedule, for the x0 skip (a buffer so it follows the device;
        # not persistent: it is rebuilt from the config)
        schedule = DDPMSchedule(config.diffusion_steps, config.beta_schedule)
        self.register_buffer("alphas_cumprod", schedule.alphas_cumprod.clone(), persistent=False)
        width = config.width
        self.latent_dim = config.joint_latent_dim
        audio_dim = audio_feature_dim or config.audio_feature_dim
        self.input_proj = nn.Linear(self.latent_dim, width)
        self.prefix_embedding = nn.Parameter(torch.zeros(width))
        if config.prefix_anchor:
            self.anchor_proj = nn.Linear(self.latent_dim, width)
        self.time_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.audio_proj = nn.Sequential(nn.LayerNorm(audio_dim), nn.Linear(audio_dim, width))
        if config.blink_condition:
            # Two paths for the eyelid closure track: `blink_out` adds closure x a direction to
            # the predicted x0 (training sets it to the least-squares direction of the data,
            # `set_blink_direction`: in model space a blink is a large, consistent step that a
            # zero-initialised input had not learned after 1,500 warm-start steps), and `blink_proj` tells
            # every frame's token, so the network can shape the rest (brows, skin, timing) itself.
            # Both start at zero, so an untrained model ignores the track.
            self.blink_proj = nn.Linear(1, width)
            nn.init.zeros_(self.blink_proj.weight)
            nn.init.zeros_(self.blink_proj.bias)
            self.blink_out = nn.Linear(1, self.latent_dim, bias=False)
            nn.init.zeros_(self.blink_out.weight)
        if config.style_mode == "onehot":
            self.speaking_embedding = nn.Embedding(config.num_styles, width)
            self.wrinkle_embedding = nn.Embedding(config.num_styles, width)
        layer = nn.TransformerDecoderLayer(
            d_model=width,
            nhead=config.heads,
            dim_feedforward=width * config.ff_mult,
            dropout=config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.decoder = nn.TransformerDecoder(layer, config.layers, norm=nn.LayerNorm(width))
        self.output_proj = nn.Linear(width, self.latent_dim)
        # Model-space normalisation of the targets, set from training statistics.
        self.register_buffer("latent_center", torch.zeros(self.latent_dim))
        self.register_buffer("latent_scale", torch.ones(self.latent_dim))

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        audio: torch.Tensor,
        prefix_mask: torch.Tensor | None = None,
        speaking_style: torch.Tensor | None = None,
        wrinkle_style: torch.Tensor | None = None,
        blink: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict x0 (B, T, Dz) from x_t (B, T, Dz), steps t (B,), audio (B, T, C).

        `prefix_mask` (B, T) bool marks frames whose x_t is already the clean prefix. `blink`
        (B, T) is the eyelid closure track of a `blink_condition` model (None: no blinks).
        """
        batch, n_frames, _ = x_t.shape
        device = x_t.device
        t = t.to(device).reshape(-1).expand(batch) if t.numel() == 1 else t.to(device)
        h = self.input_proj(x_t)
        h = h + sinusoidal_embedding(torch.arange(n_frames, device=device), h.shape[-1])[None]
        h = h + self.time_mlp(sinusoidal_embedding(t, h.shape[-1]))[:, None]
        if prefix_mask is not None:
            h = h + prefix_mask[..., None].to(h.dtype) * self.prefix_embedding
            if self.config.prefix_anchor:
                # Every frame also gets the last clean prefix frame directly, so continuing
                # from it does not have to be learned through attention first.
                lengths = prefix_mask.sum(dim=1)
                last = (lengths - 1).clamp_min(0)
                anchor = x_t[torch.arange(batch, device=device), last]
                has_prefix = (lengths > 0).to(h.dtype)[:, None, None]
                h = h + has_prefix * self.anchor_proj(anchor)[:, None]
        if self.config.style_mode == "onehot":
            if speaking_style is None or wrinkle_style is None:
                raise ValueError("one-hot style mode needs speaking_style and wrinkle_style ids")
            h = h + self.speaking_embedding(speaking_style.to(device))[:, None]
            h = h + self.wrinkle_embedding(wrinkle_style.to(device))[:, None]
        if self.config.blink_condition and blink is not None:
            h = h + self.blink_proj(blink.to(device, h.dtype)[..., None])
        memory = self.audio_proj(audio)
        out = self.decoder(
            h,
            memory,
            tgt_mask=self_attention_mask(n_frames, self.config.self_attention, device),
            memory_mask=alignment_mask(n_frames, audio.shape[1], device),
        )
        prediction = self.output_proj(out)
        if self.config.x0_skip:
            # Model space has unit variance, so E[x0 | x_t] ~ sqrt(abar) x_t with residual standard
            # deviation sqrt(1 - abar): the network only predicts the normalised residual. At low
            # noise this makes x0 ~ x_t trivial to output, which few-step DDIM relies on.
            abar = self.alphas_cumprod[t].reshape(-1, 1, 1)
            prediction = abar.sqrt() * x_t + (1 - abar).sqrt() * prediction
        if self.config.blink_condition and blink is not None:
            prediction = prediction + self.blink_out(blink.to(device, prediction.dtype)[..., None])
        return prediction

    @torch.no_grad()
    def set_blink_direction(self, x0: torch.Tensor, blink: torch.Tensor) -> torch.Tensor:
        """Set `blink_out` to the per-dimension least-squares slope of model-space latents x0
        (N, Dz) on their eyelid closure (N,); returns it. A blink-conditioned model only."""
        centred = blink.to(x0.dtype) - blink.to(x0.dtype).mean()
        variance = (centred * centred).sum()
        if variance <= 0:
            raise ValueError("the training data has no blinks, so a blink input cannot be learned: "
                             "set the model's blink_condition to false in the config")
        direction = (centred[:, None] * (x0 - x0.mean(dim=0))).sum(dim=0) / variance
        self.blink_out.weight.copy_(direction[:, None])
        return direction


# ---------------------------------------------------------------------------- training
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
) -> torch.Tensor:
    """MSE between predicted and true x0 over the non-prefix frames of each window.

    `x0` (B, T, Dz) in model space; `audio` (B, T, C) features of the same frames; `blink`
    (B, T) their eyelid closure (blink-conditioned models).
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
    prediction = denoiser(x_in, t, audio, prefix, speaking_style, wrinkle_style, blink)
    weight = (~prefix).to(x0.dtype)[..., None]
    return ((prediction - x0) ** 2 * weight).sum() / (weight.sum() * x0.shape[-1]).clamp_min(1)


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
) -> torch.Tensor:
    """Generate model-space x0 (T, Dz) for audio features (T, C) with sliding windows + DDIM;
    `blink` (T,): eyelid closure track of a blink-conditioned model (None: no blinks).

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
        prefix_mask = torch.zeros(1, window.length, dtype=torch.bool, device=device)
        prefix_mask[:, : window.prefix] = True
        prefix_values = output[window.start : window.start + window.prefix]
        x = torch.randn((1, window.length, denoiser.latent_dim), generator=generator).to(device)
        for i, t in enumerate(timesteps):
            if cancel is not None and cancel.is_set():
                raise Cancelled("Generation cancelled.")
            x[0, : window.prefix] = prefix_values
            x0 = denoiser(x, torch.tensor([t], device=device), audio_window, prefix_mask, **styles,
                          blink=blink_window)
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

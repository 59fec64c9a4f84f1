"""The latent denoiser: a transformer over one token per frame, conditioned on audio and style.

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

It predicts the clean latent x0 in *model space*: (z - pivot - latent_center) / latent_scale in
pivot mode, where the pivot is the subject's mean latent, so the network never sees the pivots (an
additive offset, as in the paper). In one-hot mode (ablation) it predicts
(z - latent_center) / latent_scale and gets learned speaking/wrinkle style embeddings.

The noise schedule is in `schedule.py`, the sampler that calls this network in `sampling.py`; the training
loss is in `tools/training/losses.py` (not shipped with the extension).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .brows import BROW_CHANNELS
from .config import ModelConfig
from .schedule import DDPMSchedule


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
        if config.brow_condition:
            # The same two paths for the brow track (raise, furrow): an output direction per
            # channel fitted to the data (`set_brow_direction`) and an input to every token.
            self.brow_proj = nn.Linear(len(BROW_CHANNELS), width)
            nn.init.zeros_(self.brow_proj.weight)
            nn.init.zeros_(self.brow_proj.bias)
            self.brow_out = nn.Linear(len(BROW_CHANNELS), self.latent_dim, bias=False)
            nn.init.zeros_(self.brow_out.weight)
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
        brow: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict x0 (B, T, Dz) from x_t (B, T, Dz), steps t (B,), audio (B, T, C).

        `prefix_mask` (B, T) bool marks frames whose x_t is already the clean prefix. `blink`
        (B, T) is the eyelid closure track of a `blink_condition` model (None: no blinks),
        `brow` (B, T, 2) the brow track (raise, furrow) of a `brow_condition` model.
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
        if self.config.brow_condition and brow is not None:
            h = h + self.brow_proj(brow.to(device, h.dtype))
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
        if self.config.brow_condition and brow is not None:
            prediction = prediction + self.brow_out(brow.to(device, prediction.dtype))
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

    @torch.no_grad()
    def set_brow_direction(self, x0: torch.Tensor, brow: torch.Tensor,
                           others: torch.Tensor | None = None) -> torch.Tensor:
        """Set `brow_out` to the least-squares slopes (2, Dz) of model-space latents x0 (N, Dz)
        on their brow track (N, 2), both channels together (a channel the data never moves gets
        slope 0); returns them. A brow-conditioned model only.

        `others` (N, K): the other face units' weights, fitted beside the track, so the slopes
        hold them fixed. Emphases fall on long vowels, so on the track alone the slope would also
        open the jaw; beside the jaw and lips it moves the brows, the eyes and the forehead."""
        track = brow.to(torch.float64)
        centred = track - track.mean(dim=0)
        if float((centred * centred).sum()) <= 0:
            raise ValueError("the training data moves no brows, so a brow input cannot be learned: "
                             "set the model's brow_condition to false in the config")
        design = centred
        if others is not None:
            held = others.to(torch.float64)
            design = torch.cat([centred, held - held.mean(dim=0)], dim=1)
        target = (x0 - x0.mean(dim=0)).to(torch.float64)
        slopes = torch.linalg.lstsq(design, target, driver="gelsd").solution[: track.shape[1]]   # (2, Dz)
        self.brow_out.weight.copy_(slopes.T.to(self.brow_out.weight.dtype))
        return slopes.to(x0.dtype)

"""VQGAN-style autoencoders for motion maps and wrinkle maps.

`MotionVQ` and `WrinkleVQ` are two instances of `VQAutoencoder` with separate codebooks.
Maps enter and leave in physical units and image layout (B, H, W, C): motion maps in metres,
wrinkle maps as log ratio. A per-channel affine normalisation (buffers `map_offset`, `map_scale`,
set from min/max statistics of the training data like the official code) maps them to about [-1, 1]
for the network; the statistics are saved with the weights.

The latent of one frame is the quantised code grid (D, h, w) flattened to a vector of
D*h*w numbers ("continuous quantised latent"): `encode` returns it, `decode` takes it back.

Codebook usage (perplexity, dead codes) is tracked as an exponential moving average of
assignments; `revive_dead_codes` re-seeds dead codes with recent encoder outputs. The training
losses (reconstruction, perceptual, adversarial, codebook) are in `tools/training/vq_losses.py`:
the extension ships only what generation needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import VQConfig


def group_count(channels: int) -> int:
    for groups in (32, 16, 8, 4, 2, 1):
        if channels % groups == 0 and channels // groups >= 2:
            return groups
    return 1


class ResBlock(nn.Module):
    def __init__(self, channels_in: int, channels_out: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(group_count(channels_in), channels_in)
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(group_count(channels_out), channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1)
        self.skip = (
            nn.Conv2d(channels_in, channels_out, 1)
            if channels_in != channels_out
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Encoder(nn.Module):
    def __init__(self, config: VQConfig):
        super().__init__()
        base = config.base_channels
        self.conv_in = nn.Conv2d(config.in_channels, base, 3, padding=1)
        blocks: list[nn.Module] = []
        channels = base
        for level, mult in enumerate(config.channel_mult):
            out = base * mult
            for _ in range(config.num_res_blocks):
                blocks.append(ResBlock(channels, out))
                channels = out
            if level < len(config.channel_mult) - 1:
                blocks.append(nn.Conv2d(channels, channels, 3, stride=2, padding=1))
        blocks.append(ResBlock(channels, channels))
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = nn.GroupNorm(group_count(channels), channels)
        self.conv_out = nn.Conv2d(channels, config.latent_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.conv_in(x))
        return self.conv_out(F.silu(self.norm_out(h)))


class Upsample(nn.Module):
    """2x up-sampling by a stride-2, kernel-2 transposed convolution.

    VQGAN's nearest-neighbour + 3x3 conv runs a full convolution at the *output* resolution with
    the wider channel count of the level below; at 128x128 that single layer cost as much as the
    rest of the level. The non-overlapping transposed conv costs 4 instead of 36 multiply-adds per
    output texel and channel pair (no checkerboard artefacts: its kernels do not overlap), and the
    residual blocks that follow smooth across the 2x2 blocks.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.ConvTranspose2d(channels, channels, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Decoder(nn.Module):
    def __init__(self, config: VQConfig):
        super().__init__()
        base = config.base_channels
        channels = base * config.channel_mult[-1]
        self.conv_in = nn.Conv2d(config.latent_channels, channels, 3, padding=1)
        blocks: list[nn.Module] = [ResBlock(channels, channels)]
        for level in reversed(range(len(config.channel_mult))):
            out = base * config.channel_mult[level]
            for _ in range(config.num_res_blocks):
                blocks.append(ResBlock(channels, out))
                channels = out
            if level > 0:
                blocks.append(Upsample(channels))
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = nn.GroupNorm(group_count(channels), channels)
        self.conv_out = nn.Conv2d(channels, config.in_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.conv_in(z))
        return self.conv_out(F.silu(self.norm_out(h)))


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor  # (B, D, h, w), straight-through gradient to the encoder
    indices: torch.Tensor  # (B, h, w) int64
    codebook_loss: torch.Tensor  # moves codes towards encoder outputs
    commitment_loss: torch.Tensor  # keeps encoder outputs near their codes
    perplexity: torch.Tensor  # of this batch's assignments


class VectorQuantizer(nn.Module):
    def __init__(
        self,
        codebook_size: int,
        code_dim: int,
        dead_code_fraction: float = 0.03,
        usage_ema_decay: float = 0.99,
    ):
        super().__init__()
        self.codebook_size = codebook_size
        self.code_dim = code_dim
        self.dead_code_fraction = dead_code_fraction
        self.usage_ema_decay = usage_ema_decay
        self.codebook = nn.Embedding(codebook_size, code_dim)
        nn.init.uniform_(self.codebook.weight, -1.0 / codebook_size, 1.0 / codebook_size)
        # Fraction of assignments per code (EMA); starts uniform so no code is dead at step 0.
        self.register_buffer("usage", torch.full((codebook_size,), 1.0 / codebook_size))
        self._recent_inputs: torch.Tensor | None = None

    # Rows per distance matrix: (rows, codebook) float32 temporaries. Unchunked, snapping a
    # 10-minute clip's latents (1.15 M cells x 512 codes) took several GB (tools/bench.py).
    NEAREST_CHUNK_ROWS = 16384

    def nearest_indices(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each row of `flat` (N, D)."""
        codes = self.codebook.weight
        code_norms = codes.pow(2).sum(1)[None]
        chunks = [
            (rows.pow(2).sum(1, keepdim=True) - 2.0 * rows @ codes.t() + code_norms).argmin(dim=1)
            for rows in flat.split(self.NEAREST_CHUNK_ROWS)
        ]
        if len(chunks) == 1:
            return chunks[0]
        return torch.cat(chunks) if chunks else torch.zeros(0, dtype=torch.long, device=flat.device)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        indices = self.nearest_indices(flat)
        quantized_flat = self.codebook(indices)
        codebook_loss = F.mse_loss(quantized_flat, flat.detach())
        commitment_loss = F.mse_loss(flat, quantized_flat.detach())
        counts = torch.bincount(indices, minlength=self.codebook_size).to(flat.dtype)
        probs = counts / counts.sum()
        perplexity = torch.exp(-(probs * torch.log(probs.clamp_min(1e-10))).sum())
        if self.training:
            with torch.no_grad():
                self.usage.mul_(self.usage_ema_decay).add_(probs, alpha=1 - self.usage_ema_decay)
            self._recent_inputs = flat.detach()
        quantized_flat = flat + (quantized_flat - flat).detach()  # straight-through estimator
        quantized = quantized_flat.reshape(b, h, w, d).permute(0, 3, 1, 2)
        return QuantizerOutput(
            quantized, indices.reshape(b, h, w), codebook_loss, commitment_loss, perplexity
        )

    def dead_codes(self) -> torch.Tensor:
        """Bool (K,): codes used less than `dead_code_fraction` of a uniform share."""
        return self.usage < self.dead_code_fraction / self.codebook_size

    def usage_perplexity(self) -> float:
        """Perplexity of the EMA usage distribution (K when all codes are used equally)."""
        p = self.usage / self.usage.sum()
        return float(torch.exp(-(p * torch.log(p.clamp_min(1e-10))).sum()))

    @torch.no_grad()
    def revive_dead_codes(
        self, samples: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> int:
        """Re-seed dead codes with encoder outputs (default: the last training batch's).

        Returns the number of codes revived. Revived codes get a uniform usage share so they are
        not immediately declared dead again.
        """
        dead = self.dead_codes().nonzero().flatten()
        if samples is None:
            samples = self._recent_inputs
        if dead.numel() == 0 or samples is None or samples.numel() == 0:
            return 0
        samples = samples.reshape(-1, self.code_dim).to(self.codebook.weight)
        picks = torch.randint(
            0,
            samples.shape[0],
            (dead.numel(),),
            generator=generator,
            device=generator.device if generator is not None else "cpu",
        )
        chosen = samples[picks.to(samples.device)]
        jitter = torch.randn(
            chosen.shape,
            generator=generator,
            device=generator.device if generator is not None else "cpu",
        )
        scale = samples.std(dim=0, keepdim=True).clamp_min(1e-6) * 0.01
        self.codebook.weight[dead] = chosen + jitter.to(chosen) * scale
        self.usage[dead] = 1.0 / self.codebook_size
        return int(dead.numel())


class VQAutoencoder(nn.Module):
    """Encoder -> vector quantiser -> decoder on (B, H, W, C) maps in physical units."""

    def __init__(self, config: VQConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quantizer = VectorQuantizer(
            config.codebook_size,
            config.latent_channels,
            config.dead_code_fraction,
            config.usage_ema_decay,
        )
        channels = config.in_channels
        self.register_buffer("map_offset", torch.zeros(channels))
        self.register_buffer("map_scale", torch.ones(channels))
        self._channels_last = False

    # ------------------------------------------------------------------ shapes
    @property
    def latent_shape(self) -> tuple[int, int, int]:
        r = self.config.latent_resolution
        return (self.config.latent_channels, r, r)

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    # ------------------------------------------------------------------ normalisation
    @torch.no_grad()
    def set_normalization_from_minmax(self, minimum, maximum) -> None:
        """Per-channel min/max of the training maps -> network range [-1, 1]."""
        minimum = torch.as_tensor(np.asarray(minimum), dtype=torch.float32)
        maximum = torch.as_tensor(np.asarray(maximum), dtype=torch.float32)
        self.map_offset.copy_((maximum + minimum) / 2)
        self.map_scale.copy_(((maximum - minimum) / 2).clamp_min(1e-8))

    def normalize(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) physical -> (B, C, H, W) network range."""
        return ((maps - self.map_offset) / self.map_scale).permute(0, 3, 1, 2).contiguous()

    def denormalize(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) network range -> (B, H, W, C) physical."""
        return maps.permute(0, 2, 3, 1) * self.map_scale + self.map_offset

    # ------------------------------------------------------------------ network-range API
    def forward(self, maps_normalized: torch.Tensor) -> tuple[torch.Tensor, QuantizerOutput]:
        """(B, C, H, W) normalised maps -> (reconstruction, quantiser output)."""
        quantized = self.quantizer(self.encoder(maps_normalized))
        return self.decoder(quantized.quantized), quantized

    # ------------------------------------------------------------------ physical API
    def encode(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) physical maps -> (B, Dz) flattened quantised latents."""
        return self.quantizer(self.encoder(self.normalize(maps))).quantized.flatten(1)

    def encode_indices(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) physical maps -> (B, h, w) code indices."""
        return self.quantizer(self.encoder(self.normalize(maps))).indices

    def quantize_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Snap flattened latents (B, Dz) to their nearest codes, per latent cell."""
        d, h, w = self.latent_shape
        flat = z.reshape(-1, d, h, w).permute(0, 2, 3, 1).reshape(-1, d)
        snapped = self.quantizer.codebook(self.quantizer.nearest_indices(flat))
        return snapped.reshape(-1, h, w, d).permute(0, 3, 1, 2).reshape(z.shape)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, Dz) latents -> (B, H, W, C) physical maps."""
        grid = z.reshape(-1, *self.latent_shape)
        if self._channels_last:
            grid = grid.contiguous(memory_format=torch.channels_last)
        return self.denormalize(self.decoder(grid))

    def use_channels_last(self) -> VQAutoencoder:
        """Channels-last convolutions (about 30 % faster decoding on CPU with oneDNN)."""
        self.to(memory_format=torch.channels_last)
        self._channels_last = True
        return self


# Two roles, one class: separate instances keep separate codebooks.
MotionVQ = VQAutoencoder
WrinkleVQ = VQAutoencoder

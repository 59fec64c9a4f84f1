"""VQGAN-style autoencoders for motion maps and wrinkle maps, and their training losses.

`MotionVQ` and `WrinkleVQ` are two instances of `VQAutoencoder` with separate codebooks.
Maps enter and leave in physical units and image layout (B, H, W, C): motion maps in metres,
wrinkle maps as log ratio. A per-channel affine normalisation (buffers `map_offset`, `map_scale`,
set from min/max statistics of the training data like the official code) maps them to about [-1, 1]
for the network; the statistics are saved with the weights.

The latent of one frame is the quantised code grid (D, h, w) flattened to a vector of
D*h*w numbers ("continuous quantised latent"): `encode` returns it, `decode` takes it back.

Losses (`VQLosses`): reconstruction (L1), perceptual, adversarial (PatchGAN, hinge) and
codebook + commitment, each switchable in `VQConfig`. No pretrained VGG can be downloaded here, so
the perceptual term is a feature-matching L1 on a *fixed, randomly initialised* (seeded, frozen)
convolutional network; random conv features still measure local structure (edges, wrinkle lines)
better than pixels alone. Codebook usage (perplexity, dead codes) is tracked as an exponential
moving average of assignments; `revive_dead_codes` re-seeds dead codes with recent encoder outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import VQConfig


def _groups(channels: int) -> int:
    for groups in (32, 16, 8, 4, 2, 1):
        if channels % groups == 0 and channels // groups >= 2:
            return groups
    return 1


class ResBlock(nn.Module):
    def __init__(self, channels_in: int, channels_out: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(channels_in), channels_in)
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(channels_out), channels_out)
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
        self.norm_out = nn.GroupNorm(_groups(channels), channels)
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
        self.norm_out = nn.GroupNorm(_groups(channels), channels)
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


# ---------------------------------------------------------------------------- losses
class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (GroupNorm instead of BatchNorm: batch-size independent)."""

    def __init__(self, in_channels: int, channels: int = 64, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Sequential(nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2))
        ]
        width = channels
        for n in range(1, n_layers + 1):
            out = channels * min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers.append(
                nn.Sequential(
                    nn.Conv2d(width, out, 4, stride, 1),
                    nn.GroupNorm(_groups(out), out),
                    nn.LeakyReLU(0.2),
                )
            )
            width = out
        self.layers = nn.ModuleList(layers)
        self.head = nn.Conv2d(width, 1, 4, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


class RandomFeatureNet(nn.Module):
    """Fixed random conv features for the perceptual loss (seeded, frozen, not saved)."""

    def __init__(self, in_channels: int, seed: int = 20250301, widths=(32, 64, 64)):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.convs = nn.ModuleList()
        channels = in_channels
        for width in widths:
            conv = nn.Conv2d(channels, width, 3, stride=2, padding=1)
            fan_in = channels * 9
            with torch.no_grad():
                conv.weight.copy_(
                    torch.randn(conv.weight.shape, generator=generator) * math.sqrt(2.0 / fan_in)
                )
                conv.bias.zero_()
            conv.requires_grad_(False)
            self.convs.append(conv)
            channels = width

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
            features.append(x)
        return features

    def state_dict(self, *args, **kwargs):  # rebuilt from the seed; never stored
        return {}

    def _load_from_state_dict(self, *args, **kwargs):
        return None


@dataclass
class VQLossOutput:
    generator_total: torch.Tensor  # backward this into the autoencoder
    discriminator_total: torch.Tensor | None  # backward this into the discriminator (or None)
    reconstruction: torch.Tensor  # (B, C, H, W) normalised reconstruction, detached
    logs: dict[str, float]


class VQLosses(nn.Module):
    """All VQGAN losses for one autoencoder; holds the discriminator and the perceptual net.

    A training loop is then:
        out = losses(vq, maps_normalized, mask, step)
        opt_vq.zero_grad(); out.generator_total.backward(); opt_vq.step()
        if out.discriminator_total is not None:
            opt_disc.zero_grad(); out.discriminator_total.backward(); opt_disc.step()
        if step % 200 == 0: vq.quantizer.revive_dead_codes()
    """

    def __init__(self, config: VQConfig):
        super().__init__()
        self.config = config
        self.discriminator = (
            PatchDiscriminator(
                config.in_channels, config.discriminator_channels, config.discriminator_layers
            )
            if config.use_adversarial
            else None
        )
        self.perceptual_net = (
            RandomFeatureNet(config.in_channels) if config.use_perceptual else None
        )

    @staticmethod
    def _masked_mean(value: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is None:
            return value.mean()
        weight = mask.to(value.dtype).expand_as(value)
        return (value * weight).sum() / weight.sum().clamp_min(1.0)

    def forward(
        self,
        vq: VQAutoencoder,
        maps_normalized: torch.Tensor,
        mask: torch.Tensor | None = None,
        step: int = 0,
    ) -> VQLossOutput:
        """`maps_normalized` (B, C, H, W); `mask` (B or 1, 1, H, W) weights the pixel losses."""
        config = self.config
        reconstruction, quantized = vq(maps_normalized)
        rec = self._masked_mean((reconstruction - maps_normalized).abs(), mask)
        total = config.reconstruction_weight * rec
        logs = {"reconstruction": rec.item(), "perplexity": quantized.perplexity.item()}

        if self.perceptual_net is not None and config.perceptual_weight > 0:
            target, prediction = maps_normalized, reconstruction
            if mask is not None:
                target, prediction = target * mask, prediction * mask
            target_features = self.perceptual_net(target)
            prediction_features = self.perceptual_net(prediction)
            perceptual = sum(
                (p - t.detach()).abs().mean() for p, t in zip(prediction_features, target_features)
            ) / len(target_features)
            total = total + config.perceptual_weight * perceptual
            logs["perceptual"] = perceptual.item()

        if config.use_codebook and config.codebook_weight > 0:
            code = quantized.codebook_loss + config.commitment_beta * quantized.commitment_loss
            total = total + config.codebook_weight * code
            logs["codebook"] = quantized.codebook_loss.item()
            logs["commitment"] = quantized.commitment_loss.item()

        discriminator_total = None
        adversarial_on = (
            self.discriminator is not None
            and config.adversarial_weight > 0
            and step >= config.adversarial_start_step
        )
        if adversarial_on:
            # Hinge GAN: the generator raises D(fake); D separates real from fake by a margin.
            adversarial = -self.discriminator(reconstruction).mean()
            total = total + config.adversarial_weight * adversarial
            logs["adversarial"] = adversarial.item()
            real_logits = self.discriminator(maps_normalized.detach())
            fake_logits = self.discriminator(reconstruction.detach())
            discriminator_total = 0.5 * (
                F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
            )
            logs["discriminator"] = discriminator_total.item()

        logs["generator_total"] = total.item()
        logs["dead_codes"] = int(vq.quantizer.dead_codes().sum())
        logs["usage_perplexity"] = vq.quantizer.usage_perplexity()
        return VQLossOutput(total, discriminator_total, reconstruction.detach(), logs)


def training_step(
    vq: VQAutoencoder,
    losses: VQLosses,
    maps_normalized: torch.Tensor,
    optimizer_vq: torch.optim.Optimizer,
    optimizer_discriminator: torch.optim.Optimizer | None = None,
    mask: torch.Tensor | None = None,
    step: int = 0,
) -> dict[str, float]:
    """One optimisation step of the autoencoder (and the discriminator when it is active)."""
    vq.train()
    out = losses(vq, maps_normalized, mask, step)
    optimizer_vq.zero_grad(set_to_none=True)
    out.generator_total.backward()
    optimizer_vq.step()
    if out.discriminator_total is not None and optimizer_discriminator is not None:
        optimizer_discriminator.zero_grad(set_to_none=True)
        out.discriminator_total.backward()
        optimizer_discriminator.step()
    return out.logs

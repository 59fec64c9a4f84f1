"""Training losses of the VQ autoencoders (not shipped with the extension).

Losses (`VQLosses`): reconstruction (L1), perceptual, adversarial (PatchGAN, hinge) and
codebook + commitment, each switchable in `VQConfig`. No pretrained VGG can be downloaded here, so
the perceptual term is a feature-matching L1 on a *fixed, randomly initialised* (seeded, frozen)
convolutional network; random conv features still measure local structure (edges, wrinkle lines)
better than pixels alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from textalker_blender.core.config import VQConfig
from textalker_blender.core.vq import VQAutoencoder, group_count


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
                    nn.GroupNorm(group_count(out), out),
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

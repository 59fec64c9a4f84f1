"""core.vq: shapes, quantisation, losses that train, dead-code revival, normalisation."""

import numpy as np
import pytest
import torch
from core_helpers import tiny_config

from textalker_blender.core.config import ModelConfig
from textalker_blender.core.vq import VQAutoencoder
from tools.training.vq_losses import VQLosses, training_step


def smooth_maps(batch, resolution, seed=0):
    """Smooth random fields (sums of a few low-frequency waves), channel-last, about [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(
        torch.linspace(0, 1, resolution), torch.linspace(0, 1, resolution), indexing="ij"
    )
    maps = torch.zeros(batch, resolution, resolution, 3)
    for _ in range(3):
        fx, fy, phase = torch.rand(3, batch, 1, 1, 3, generator=g) * torch.tensor(
            [3, 3, 6.28]
        ).view(3, 1, 1, 1, 1)
        maps += (
            torch.sin(2 * np.pi * (fx * x[None, ..., None] + fy * y[None, ..., None]) + phase) / 3
        )
    return maps


def test_encode_decode_shapes_and_latents_are_codes():
    config = tiny_config().motion_vq
    vq = VQAutoencoder(config).eval()
    maps = smooth_maps(5, config.resolution)
    with torch.no_grad():
        z = vq.encode(maps)
        assert z.shape == (5, config.latent_dim) == (5, 4 * 4 * 4)
        assert vq.encode_indices(maps).shape == (5, 4, 4)
        # encode returns quantised latents: snapping them again changes nothing
        torch.testing.assert_close(vq.quantize_latent(z), z)
        decoded = vq.decode(z)
    assert decoded.shape == maps.shape


def test_bundled_and_paper_latent_sizes():
    bundled, paper = ModelConfig.bundled(), ModelConfig.paper()
    assert bundled.motion_vq.latent_resolution == 8 and bundled.motion_vq.latent_channels == 4
    assert bundled.wrinkle_vq.latent_resolution == 8 and bundled.wrinkle_vq.latent_channels == 4
    assert bundled.joint_latent_dim == 512
    assert paper.motion_vq.latent_resolution == 16 and paper.motion_vq.latent_channels == 16
    assert paper.motion_vq.codebook_size == paper.wrinkle_vq.codebook_size == 1024
    vq = VQAutoencoder(bundled.wrinkle_vq).eval()
    with torch.no_grad():
        assert vq.decode(torch.zeros(2, 256)).shape == (2, 128, 128, 3)


def test_normalisation_maps_minmax_to_unit_range():
    vq = VQAutoencoder(tiny_config().motion_vq)
    vq.set_normalization_from_minmax([-0.01, -0.02, 0.0], [0.01, 0.02, 0.004])
    maps = torch.tensor([-0.01, 0.02, 0.002]).view(1, 1, 1, 3).expand(1, 16, 16, 3)
    normalized = vq.normalize(maps)
    assert normalized.shape == (1, 3, 16, 16)
    torch.testing.assert_close(normalized[0, :, 0, 0], torch.tensor([-1.0, 1.0, 0.0]))
    torch.testing.assert_close(vq.denormalize(normalized), maps)


def test_few_steps_reduce_reconstruction_loss_with_all_losses_on():
    torch.manual_seed(0)
    config = tiny_config().motion_vq
    vq = VQAutoencoder(config)
    losses = VQLosses(config)
    batch = smooth_maps(2, config.resolution).permute(0, 3, 1, 2)
    opt = torch.optim.Adam(vq.parameters(), lr=5e-3)
    opt_d = torch.optim.Adam(losses.discriminator.parameters(), lr=1e-4)
    logs = [training_step(vq, losses, batch, opt, opt_d, step=i) for i in range(24)]
    first = np.mean([log["reconstruction"] for log in logs[:2]])
    last = np.mean([log["reconstruction"] for log in logs[-2:]])
    assert last < 0.75 * first, (first, last)
    for key in (
        "perceptual",
        "adversarial",
        "discriminator",
        "codebook",
        "commitment",
        "perplexity",
        "dead_codes",
        "usage_perplexity",
    ):
        assert key in logs[-1]
    assert 1.0 <= logs[-1]["perplexity"] <= config.codebook_size


def test_switches_remove_loss_terms():
    config = tiny_config().motion_vq
    config.use_adversarial = False
    config.use_perceptual = False
    losses = VQLosses(config)
    assert losses.discriminator is None and losses.perceptual_net is None
    out = losses(VQAutoencoder(config), smooth_maps(2, 16).permute(0, 3, 1, 2))
    assert out.discriminator_total is None
    assert "adversarial" not in out.logs and "perceptual" not in out.logs


def test_mask_restricts_reconstruction_loss():
    config = tiny_config().motion_vq
    config.use_adversarial = config.use_perceptual = config.use_codebook = False
    vq = VQAutoencoder(config)
    losses = VQLosses(config)
    batch = smooth_maps(2, 16).permute(0, 3, 1, 2)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., :8, :] = 1
    with torch.no_grad():
        recon, _ = vq(batch)
    expected = (recon - batch).abs()[..., :8, :].mean()
    out = losses(vq, batch, mask)
    assert out.logs["reconstruction"] == pytest.approx(float(expected), rel=1e-5)


def test_dead_code_revival_changes_only_dead_codes():
    config = tiny_config().motion_vq
    vq = VQAutoencoder(config).train()
    vq(smooth_maps(4, 16).permute(0, 3, 1, 2))  # fills the recent encoder outputs
    quantizer = vq.quantizer
    with torch.no_grad():
        quantizer.usage.fill_(1.0 / config.codebook_size)
        quantizer.usage[[1, 5, 7]] = 0.0
    dead = quantizer.dead_codes()
    assert dead.nonzero().flatten().tolist() == [1, 5, 7]
    before = quantizer.codebook.weight.detach().clone()
    revived = quantizer.revive_dead_codes(generator=torch.Generator().manual_seed(0))
    after = quantizer.codebook.weight.detach()
    assert revived == 3
    assert not torch.equal(before[dead], after[dead])
    torch.testing.assert_close(before[~dead], after[~dead])
    assert int(quantizer.dead_codes().sum()) == 0
    # revived codes come from the encoder outputs' range, not from the tiny init range
    assert after[dead].abs().max() > 1.0 / config.codebook_size


def test_usage_tracking_finds_unused_codes():
    config = tiny_config().motion_vq
    config.usage_ema_decay = 0.5
    vq = VQAutoencoder(config).train()
    batch = smooth_maps(1, 16).permute(0, 3, 1, 2)
    for _ in range(30):  # the same input again and again: only its few codes stay in use
        _, out = vq(batch)
    used = torch.zeros(config.codebook_size, dtype=torch.bool)
    used[out.indices.unique()] = True
    assert used.sum() < config.codebook_size
    assert torch.equal(vq.quantizer.dead_codes(), ~used)
    assert vq.quantizer.usage_perplexity() <= used.sum() + 1e-3

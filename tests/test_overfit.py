"""Tiny models overfit tiny batches, and style pivots are pure additive offsets in a trained toy.

Issue #4's "tests that could fail": if the VQ training step, the diffusion loss or the model-space
conversion were wired wrongly (wrong target, detached gradient, swapped latent halves), these
tiny models would not fit a handful of examples, or swapping a pivot would leak into the other
latent. Each training loop runs in about 2 s on one thread.
"""

import numpy as np
import pytest
import torch
from core_helpers import tiny_config
from test_vq import smooth_maps

from textalker_blender.core.model import TexTalkerModel
from textalker_blender.core.style import StylePivots
from textalker_blender.core.vq import VQAutoencoder
from tools.training.losses import diffusion_loss
from tools.training.vq_losses import VQLosses, training_step

VQ_STEPS = 100
LDM_STEPS = 150
N_SUBJECT_FRAMES = 12  # = tiny_config().window_frames: one fixed window


def test_tiny_vq_overfits_four_maps():
    torch.manual_seed(0)
    config = tiny_config().motion_vq
    config.use_adversarial = False  # a GAN term makes a 100-step curve noisy, not better
    vq = VQAutoencoder(config)
    losses = VQLosses(config)
    maps = smooth_maps(4, config.resolution, seed=3) * 0.01  # physical units: ~centimetres
    vq.set_normalization_from_minmax(maps.amin(dim=(0, 1, 2)), maps.amax(dim=(0, 1, 2)))
    batch = vq.normalize(maps)

    def reconstruction_error() -> float:
        """Mean absolute error through the physical API (encode -> decode), in map units."""
        vq.eval()
        with torch.no_grad():
            return (vq.decode(vq.encode(maps)) - maps).abs().mean().item()

    initial = reconstruction_error()
    optimizer = torch.optim.Adam(vq.parameters(), lr=5e-3)
    for step in range(VQ_STEPS):
        training_step(vq, losses, batch, optimizer, step=step)
    final = reconstruction_error()
    # measured: final / initial = 0.095 after 100 steps (seed 0), 24 codes in use
    assert final < 0.2 * initial, (initial, final)
    # the fit goes through the codebook, not around it: several codes in use
    assert len(torch.unique(vq.encode_indices(maps))) >= 4


def _subject_latents(model: TexTalkerModel, subject: int, n_frames: int, seed: int = 0):
    """A subject's latents: a smooth per-dimension oscillation around its pivots."""
    g = torch.Generator().manual_seed(seed)
    dims = model.config.joint_latent_dim
    phase = torch.linspace(0, 2 * np.pi, n_frames)[:, None]
    pattern = 0.5 * torch.sin(
        phase * (0.5 + 2 * torch.rand(1, dims, generator=g))
        + 6.28 * torch.rand(1, dims, generator=g)
    )
    pivot = torch.cat([model.speaking_pivots[subject], model.wrinkle_pivots[subject]])
    latents = pattern + pivot
    split = model.config.motion_latent_dim
    return latents[:, :split], latents[:, split:], pattern


@pytest.fixture(scope="module")
def trained_toy():
    """A tiny TexTalkerModel (sampled latents not snapped to codes) whose denoiser was trained
    with the training diffusion loss on one fixed window of subject 0; returns it with the data and
    the x0 error at a mid noise level before and after training."""
    torch.manual_seed(0)
    config = tiny_config(quantize_sampled_latents=False)
    g = torch.Generator().manual_seed(0)
    pivots = StylePivots(
        torch.randn(2, config.motion_latent_dim, generator=g).numpy(),
        torch.randn(2, config.wrinkle_latent_dim, generator=g).numpy(),
        ["Subject A", "Subject B"],
    )
    # Audio features are given directly (B, T, C): no audio encoder needed.
    model = TexTalkerModel(config, pivots, audio_encoder=torch.nn.Identity())
    z_motion, z_wrinkle, pattern = _subject_latents(model, 0, N_SUBJECT_FRAMES)
    model.fit_latent_normalization(
        z_motion, z_wrinkle, torch.zeros(N_SUBJECT_FRAMES, dtype=torch.long)
    )
    x0 = model.to_model_space(z_motion, z_wrinkle, 0, 0)[None]
    audio = torch.randn(1, N_SUBJECT_FRAMES, config.audio_feature_dim, generator=g)

    mid_step = torch.tensor([config.diffusion_steps // 2])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(5))

    def mid_noise_error() -> float:
        model.denoiser.eval()
        with torch.no_grad():
            x_t = model.schedule.q_sample(x0, mid_step, noise)
            return ((model.denoiser(x_t, mid_step, audio) - x0) ** 2).mean().item()

    initial = mid_noise_error()
    optimizer = torch.optim.Adam(model.denoiser.parameters(), lr=2e-3)
    step_generator = torch.Generator().manual_seed(1)
    batch = 8  # the same window 8 times: 8 noise levels / prefix lengths per step
    for _ in range(LDM_STEPS):
        model.denoiser.train()
        loss = diffusion_loss(
            model.denoiser,
            model.schedule,
            x0.expand(batch, -1, -1),
            audio.expand(batch, -1, -1),
            generator=step_generator,
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return {
        "model": model,
        "audio": audio[0],
        "z_motion": z_motion,
        "z_wrinkle": z_wrinkle,
        "pattern": pattern,
        "errors": (initial, mid_noise_error()),
    }


def test_tiny_denoiser_overfits_one_window(trained_toy):
    initial, final = trained_toy["errors"]
    # model space has unit variance: predicting x0 = 0 would cost ~1
    assert initial > 0.3
    # measured: final / initial = 0.004 after 150 steps (seed 0)
    assert final < 0.05 * initial, (initial, final)


def test_trained_toy_regenerates_its_window(trained_toy):
    model = trained_toy["model"]
    z_motion, z_wrinkle = model.generate_latents(
        trained_toy["audio"], 0, 0, steps=3, generator=torch.Generator().manual_seed(0)
    )
    error = (
        (
            torch.cat([z_motion, z_wrinkle], -1)
            - torch.cat([trained_toy["z_motion"], trained_toy["z_wrinkle"]], -1)
        )
        ** 2
    ).mean()
    # against the subject's own variation around its pivots
    assert error < 0.05 * (trained_toy["pattern"] ** 2).mean()


def _generate(model, audio, speaking, wrinkle):
    return model.generate_latents(
        audio, speaking, wrinkle, steps=3, generator=torch.Generator().manual_seed(7)
    )


def test_swapping_a_pivot_shifts_only_its_latent_by_the_pivot_difference(trained_toy):
    model = trained_toy["model"]
    # 20 frames: two sliding windows, so the prefix path is covered too
    audio = torch.randn(
        20, model.config.audio_feature_dim, generator=torch.Generator().manual_seed(3)
    )
    base_motion, base_wrinkle = _generate(model, audio, 0, 0)

    motion, wrinkle = _generate(model, audio, 0, 1)
    torch.testing.assert_close(motion, base_motion, rtol=0, atol=0)
    pivot_shift = model.wrinkle_pivots[1] - model.wrinkle_pivots[0]
    assert pivot_shift.abs().max() > 0.5  # the swap is not a no-op
    torch.testing.assert_close(
        wrinkle - base_wrinkle, pivot_shift.expand_as(wrinkle), rtol=0, atol=1e-5
    )

    motion, wrinkle = _generate(model, audio, 1, 0)
    torch.testing.assert_close(wrinkle, base_wrinkle, rtol=0, atol=0)
    pivot_shift = model.speaking_pivots[1] - model.speaking_pivots[0]
    torch.testing.assert_close(
        motion - base_motion, pivot_shift.expand_as(motion), rtol=0, atol=1e-5
    )


def test_with_code_snapping_a_wrinkle_pivot_swap_still_leaves_motion_untouched(trained_toy):
    model = trained_toy["model"]
    model.config.quantize_sampled_latents = True
    try:
        base_motion, base_wrinkle = _generate(model, trained_toy["audio"], 0, 0)
        motion, wrinkle = _generate(model, trained_toy["audio"], 0, 1)
    finally:
        model.config.quantize_sampled_latents = False
    torch.testing.assert_close(motion, base_motion, rtol=0, atol=0)
    assert not torch.equal(wrinkle, base_wrinkle)
    # snapped latents are codebook vectors, cell by cell
    d, h, w = model.wrinkle_vq.latent_shape
    cells = wrinkle.reshape(-1, d, h, w).permute(0, 2, 3, 1).reshape(-1, d)
    codes = model.wrinkle_vq.quantizer.codebook.weight.detach()
    assert (cells[:, None, :] == codes[None]).all(dim=-1).any(dim=1).all()

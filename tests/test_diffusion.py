"""core.denoiser, core.schedule and core.sampling: alignment mask, windows, DDIM sampler, training loss, style modes."""

import threading

import numpy as np
import pytest
import torch
from core_helpers import tiny_config

from textalker_blender.core.denoiser import LatentDenoiser, alignment_mask, self_attention_mask
from textalker_blender.core.sampling import border_discontinuity, plan_windows, sample_sequence
from textalker_blender.core.schedule import DDPMSchedule
from tools.training.losses import diffusion_loss, random_prefix_lengths
from textalker_blender.core.errors import Cancelled


def make_denoiser(seed=0, **overrides):
    torch.manual_seed(seed)
    return LatentDenoiser(tiny_config(**overrides)).eval()


def perturbation_effect(denoiser, k, n_frames=8):
    """Per-output-frame change when only audio frame k is changed, in one denoiser call."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, n_frames, denoiser.latent_dim, generator=g)
    audio = torch.randn(1, n_frames, 16, generator=g)
    changed = audio.clone()
    changed[0, k] = (
        torch.randn(16, generator=g) * 3.0
    )  # (a constant shift would vanish in LayerNorm)
    t = torch.tensor([10])
    with torch.no_grad():
        delta = denoiser(x, t, changed) - denoiser(x, t, audio)
    return delta.abs().amax(dim=-1)[0]


def test_alignment_mask_structure():
    mask = alignment_mask(4)
    assert torch.equal(torch.isfinite(mask), torch.eye(4, dtype=torch.bool))
    assert self_attention_mask(4, "full") is None
    assert torch.equal(
        torch.isfinite(self_attention_mask(4, "causal")), torch.ones(4, 4, dtype=torch.bool).tril()
    )


@pytest.mark.parametrize("layers,mode", [(1, "full"), (3, "none")])
def test_audio_frame_k_only_changes_output_frame_k(layers, mode):
    # One pre-norm layer runs self-attention before cross-attention, so audio can reach other
    # frames only through the cross-attention mask; with self-attention limited to each frame
    # itself the same must hold through any depth.
    denoiser = make_denoiser(layers=layers, self_attention=mode)
    effect = perturbation_effect(denoiser, k=5)
    assert effect[5] > 1e-3
    others = torch.cat([effect[:5], effect[6:]])
    assert others.max() < 1e-6, effect


def test_full_attention_spreads_audio_over_the_window_and_causal_only_forward():
    # The counterpart that shows the test above can fail: with two layers, frame k's audio
    # reaches the other frames through self-attention.
    full = perturbation_effect(make_denoiser(layers=2, self_attention="full"), k=5)
    assert (torch.cat([full[:5], full[6:]]) > 1e-4).all()
    causal = perturbation_effect(make_denoiser(layers=2, self_attention="causal"), k=5)
    assert causal[:5].max() < 1e-6 and (causal[5:] > 1e-4).all()


def test_plan_windows_cover_sequence_with_prefixes():
    assert plan_windows(0, 90, 10) == []
    short = plan_windows(50, 90, 10)
    assert [(w.start, w.stop, w.prefix) for w in short] == [(0, 50, 0)]
    for n in (90, 91, 171, 250, 1000):
        windows = plan_windows(n, 90, 10)
        assert windows[0].start == 0 and windows[0].prefix == 0 and windows[-1].stop == n
        for before, after in zip(windows, windows[1:]):
            assert after.length == 90
            assert after.prefix >= 10 and after.start + after.prefix == before.stop
    assert len(plan_windows(300, 90, 10)) == 4  # 10 s at 30 fps


def test_schedule_and_ddim_timesteps():
    for kind in ("cosine", "linear"):
        schedule = DDPMSchedule(500, kind)
        abar = schedule.alphas_cumprod
        assert torch.all(abar[1:] < abar[:-1]) and abar[-1] < 0.01 and abar[0] > 0.99
    schedule = DDPMSchedule(50)
    assert schedule.ddim_timesteps(1) == [49]
    assert schedule.ddim_timesteps(50) == list(range(49, -1, -1))
    steps = schedule.ddim_timesteps(6)
    assert len(steps) == 6 and steps[0] == 49 and sorted(steps, reverse=True) == steps
    with pytest.raises(ValueError):
        schedule.ddim_timesteps(0)


class OracleDenoiser(torch.nn.Module):
    """Always predicts the same known x0: DDIM must then return exactly that x0."""

    def __init__(self, config, target):
        super().__init__()
        self.config = config
        self.latent_dim = target.shape[-1]
        self.target = target
        self.prefix_seen = []

    def forward(self, x_t, t, audio, prefix_mask=None, **_):
        self.prefix_seen.append((x_t.clone(), prefix_mask.clone()))
        start = int(audio[0, 0, 0])  # the test encodes the absolute frame index in the audio
        return self.target[start : start + x_t.shape[1]][None]


@pytest.mark.parametrize("steps", [1, 2, 5, 50])
def test_ddim_with_oracle_recovers_x0_for_any_step_count(steps):
    config = tiny_config()
    n = 30
    target = torch.randn(n, 8)
    audio = torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 16)
    oracle = OracleDenoiser(config, target)
    out = sample_sequence(oracle, DDPMSchedule(50), audio, steps, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, target)
    windows = plan_windows(n, config.window_frames, config.prefix_frames)
    assert len(oracle.prefix_seen) == steps * len(windows)


def test_prefix_is_clamped_to_previous_output_at_every_step():
    config = tiny_config()
    n = 30
    target = torch.randn(n, 8)
    audio = torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 16)
    oracle = OracleDenoiser(config, target)
    sample_sequence(oracle, DDPMSchedule(50), audio, 3, torch.Generator().manual_seed(0))
    windows = plan_windows(n, config.window_frames, config.prefix_frames)
    calls = iter(oracle.prefix_seen)
    for window in windows:
        for _ in range(3):
            x_t, prefix_mask = next(calls)
            assert int(prefix_mask.sum()) == window.prefix
            # inputs of the prefix frames are the already generated (clean) frames
            torch.testing.assert_close(
                x_t[0, : window.prefix], target[window.start : window.start + window.prefix]
            )


def test_long_sampling_is_deterministic_and_seamless():
    denoiser = make_denoiser()
    schedule = DDPMSchedule(50)
    audio = torch.randn(40, 16, generator=torch.Generator().manual_seed(3))

    def run(seed, length=40):
        return sample_sequence(
            denoiser, schedule, audio[:length], 3, torch.Generator().manual_seed(seed)
        )

    a, b, c = run(0), run(0), run(1)
    assert a.shape == (40, denoiser.latent_dim) and torch.isfinite(a).all()
    torch.testing.assert_close(a, b)
    assert (a - c).abs().max() > 1e-3
    # Causality across windows: the frames of a window never change when more audio follows,
    # so the join is exactly the earlier window's output (no jump introduced at borders).
    torch.testing.assert_close(run(0, length=12), a[:12])


def test_sampling_reports_progress_and_cancels():
    denoiser = make_denoiser()
    audio = torch.randn(30, 16)
    fractions = []
    sample_sequence(
        denoiser, DDPMSchedule(50), audio, 2, torch.Generator(), progress=fractions.append
    )
    assert fractions[-1] == pytest.approx(1.0) and fractions == sorted(fractions)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        sample_sequence(denoiser, DDPMSchedule(50), audio, 2, torch.Generator(), cancel=cancel)


def test_training_reduces_loss_and_ignores_prefix_frames():
    torch.manual_seed(0)
    config = tiny_config()
    denoiser = LatentDenoiser(config)
    schedule = DDPMSchedule(50)
    g = torch.Generator().manual_seed(0)
    t_axis = torch.linspace(0, 6.28, 12)
    x0 = torch.sin(t_axis[None, :, None] * torch.arange(1, 9)[None, None] / 4).repeat(4, 1, 1)
    x0 = x0.repeat(1, 1, denoiser.latent_dim // 8)
    audio = torch.randn(4, 12, 16, generator=g)
    opt = torch.optim.Adam(denoiser.parameters(), lr=2e-3)
    losses = []
    for _ in range(60):
        loss = diffusion_loss(denoiser, schedule, x0, audio, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10])
    # Only non-prefix frames count: a denoiser predicting zeros costs exactly mean(x0^2) over
    # the frames after the prefix, however large the prefix frames are.
    zero = lambda x_t, *args: torch.zeros_like(x_t)  # noqa: E731
    zero_denoiser = type("Zero", (), {"config": config, "__call__": staticmethod(zero)})()
    targets = torch.ones(2, 12, 8)
    targets[:, :5] = 100.0
    loss = diffusion_loss(zero_denoiser, schedule, targets, audio[:2], torch.tensor([5, 5]))
    assert loss.item() == pytest.approx(1.0)


def test_random_prefix_lengths_cover_cases():
    config = tiny_config(prefix_probability=0.5)
    lengths = random_prefix_lengths(2000, config, 12, torch.Generator().manual_seed(0))
    assert (lengths == 0).float().mean() == pytest.approx(0.5, abs=0.05)
    assert (lengths == config.prefix_frames).any() and (lengths > config.prefix_frames).any()
    assert lengths.max() < 12


def test_onehot_style_mode_uses_style_embeddings():
    denoiser = make_denoiser(style_mode="onehot", num_styles=3)
    x = torch.randn(1, 6, denoiser.latent_dim)
    audio = torch.randn(1, 6, 16)
    t = torch.tensor([5])
    with torch.no_grad():
        a = denoiser(x, t, audio, speaking_style=torch.tensor([0]), wrinkle_style=torch.tensor([0]))
        b = denoiser(x, t, audio, speaking_style=torch.tensor([1]), wrinkle_style=torch.tensor([0]))
    assert (a - b).abs().max() > 1e-4
    with pytest.raises(ValueError, match="one-hot"):
        denoiser(x, t, audio)


def test_border_discontinuity_metric():
    smooth = torch.linspace(0, 1, 40)[:, None].repeat(1, 4)
    assert border_discontinuity(smooth, 12, 3) == pytest.approx(1.0, rel=1e-4)
    jumpy = smooth.clone()
    for window in plan_windows(40, 12, 3)[1:]:
        jumpy[window.start + window.prefix :] += 1.0  # a step where each window's new part starts
    assert border_discontinuity(jumpy, 12, 3) > 10
    assert np.isnan(border_discontinuity(smooth[:10], 12, 3))


@pytest.mark.parametrize("anchor", [True, False])
def test_prefix_anchor_reaches_every_frame(anchor):
    # With self-attention limited to each frame itself, only the anchor can carry the last
    # prefix frame to the other frames.
    denoiser = make_denoiser(layers=2, self_attention="none", prefix_anchor=anchor)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 8, denoiser.latent_dim, generator=g)
    audio = torch.randn(1, 8, 16, generator=g)
    prefix = torch.zeros(1, 8, dtype=torch.bool)
    prefix[:, :3] = True
    changed = x.clone()
    changed[0, 2] += torch.randn(denoiser.latent_dim, generator=g)
    t = torch.tensor([40])
    with torch.no_grad():
        effect = (denoiser(changed, t, audio, prefix) - denoiser(x, t, audio, prefix)).abs()
    effect = effect.amax(dim=-1)[0]
    if anchor:
        assert (effect[3:] > 1e-4).all()
    else:
        assert effect[3:].max() < 1e-6

"""Log-mel augmentation of stage 2 (tools/training/augment.py)."""


import torch

from tools.training.augment import augment_log_mel, warp_bands  # noqa: E402

ALWAYS = {"probability": 1.0}


def speech_like_log_mel(frames: int = 200) -> torch.Tensor:
    """Silence, then 'vowels' with formant bands, then silence."""
    mel = torch.full((80, frames), -13.0)
    mel[10:20, 50:150] = -3.0
    mel[30:36, 50:150] = -5.0
    return mel


def test_probability_zero_returns_the_input_unchanged():
    mel = speech_like_log_mel()
    out = augment_log_mel(mel, torch.Generator().manual_seed(0), {"probability": 0.0})
    assert torch.equal(out, mel)


def test_same_seed_same_result_and_shape_kept():
    mel = speech_like_log_mel()
    a = augment_log_mel(mel, torch.Generator().manual_seed(3), ALWAYS)
    b = augment_log_mel(mel, torch.Generator().manual_seed(3), ALWAYS)
    c = augment_log_mel(mel, torch.Generator().manual_seed(4), ALWAYS)
    assert a.shape == mel.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.isfinite(a).all()


def test_timing_is_never_moved():
    """Speech frames stay louder than the silence around them in every augmented draw: the
    alignment of audio and motion is the training label."""
    mel = speech_like_log_mel()
    for seed in range(20):
        out = augment_log_mel(mel, torch.Generator().manual_seed(seed), ALWAYS)
        energy = torch.logsumexp(out, dim=0)
        assert energy[60:140].min() > energy[:40].max() + 1.0, seed
        assert energy[60:140].min() > energy[160:].max() + 1.0, seed


def test_band_warp_moves_formants_up_for_factor_above_one():
    mel = speech_like_log_mel()
    warped = warp_bands(mel, 1.1)
    peak_before = int(mel[:, 100].argmax())
    peak_after = int(warped[:, 100].argmax())
    assert peak_after > peak_before
    assert torch.allclose(warp_bands(mel, 1.0), mel)

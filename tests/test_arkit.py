"""ARKit weight solver: recovers known weights from offsets built from them."""
import numpy as np
import pytest

from textalker_blender.core.arkit import ARKIT_NAMES, ArkitSolver


def _smooth_weights(rng, n_frames, n_units):
    # Smooth random curves in [0, 1] with many exact zeros, like real face-unit activity.
    raw = rng.normal(size=(n_frames + 20, n_units)).cumsum(axis=0)
    kernel = np.hanning(15)
    kernel /= kernel.sum()
    smooth = np.stack([np.convolve(raw[:, u], kernel, mode="same") for u in range(n_units)], 1)
    smooth = smooth[10:-10]
    smooth = (smooth - smooth.mean(0)) / (smooth.std(0) + 1e-9) * 0.4
    return np.clip(smooth, 0.0, 1.0)


def test_names_are_the_52_arkit_units():
    assert len(ARKIT_NAMES) == 52 and len(set(ARKIT_NAMES)) == 52
    assert "jawOpen" in ARKIT_NAMES and "tongueOut" in ARKIT_NAMES


def test_recovers_weights_of_a_random_basis():
    rng = np.random.default_rng(0)
    n_units, n_vertices, n_frames = 12, 300, 240
    basis = rng.normal(scale=0.003, size=(n_units, n_vertices, 3))
    truth = _smooth_weights(rng, n_frames, n_units)
    offsets = np.einsum("tu,uvc->tvc", truth, basis)
    solver = ArkitSolver(basis, [f"u{i}" for i in range(n_units)], smooth=1e-3)
    weights, report = solver.solve(offsets, iterations=500)
    assert weights.shape == truth.shape
    assert weights.min() >= 0.0 and weights.max() <= 1.0
    assert np.abs(weights - truth).max() < 0.02, report
    assert report.fit_rmse_m < 1e-4


def test_bounds_hold_when_target_is_out_of_range():
    rng = np.random.default_rng(1)
    basis = rng.normal(scale=0.003, size=(6, 100, 3))
    truth = np.full((30, 6), 0.5)
    truth[:, 0] = 1.8  # beyond what the rig can do
    truth[:, 1] = -0.7
    offsets = np.einsum("tu,uvc->tvc", truth, basis)
    weights, _ = ArkitSolver(basis, list("abcdef")).solve(offsets)
    assert weights[:, 0].min() > 0.95 and weights[:, 1].max() < 0.05


def test_smoothing_reduces_frame_to_frame_jitter():
    rng = np.random.default_rng(2)
    basis = rng.normal(scale=0.003, size=(8, 200, 3))
    truth = _smooth_weights(rng, 200, 8)
    noisy = np.einsum("tu,uvc->tvc", truth, basis) + rng.normal(scale=0.001, size=(200, 200, 3))
    rough, _ = ArkitSolver(basis, list("abcdefgh"), smooth=0.0).solve(noisy)
    smooth, _ = ArkitSolver(basis, list("abcdefgh"), smooth=0.5).solve(noisy)
    jitter = lambda w: np.abs(np.diff(w, axis=0)).mean()  # noqa: E731
    # Noise makes the unsmoothed fit jitter ~55% more than the truth; smoothing removes most of it
    # and brings the weights closer to the truth.
    assert jitter(smooth) < 0.8 * jitter(rough)
    assert np.abs(smooth - truth).mean() < 0.8 * np.abs(rough - truth).mean()


def test_template_units_are_recoverable():
    template_module = pytest.importorskip("textalker_blender.core.template")
    try:
        template = template_module.load_template()
    except FileNotFoundError:
        pytest.skip("template head asset not built")
    rng = np.random.default_rng(3)
    truth = _smooth_weights(rng, 90, len(template.unit_names))
    offsets = template.apply_units(truth)
    solver = ArkitSolver(template.unit_offsets, template.unit_names, template.face_mask, smooth=1e-3)
    weights, report = solver.solve(offsets, iterations=800)
    # The units overlap (left/right, press/close), so exact weights are not unique; the
    # reconstruction must still be close and most weights near the truth.
    assert report.fit_rmse_m < 2e-4, report
    assert np.median(np.abs(weights - truth)) < 0.05

"""tools/wrinkle_resolution.py: its comparison of crease height maps (numpy only; the measured
numbers are the tool's run, quoted in docs/MODEL.md)."""

from __future__ import annotations

import numpy as np
import pytest

from tools import wrinkle_resolution as resolution


def _groove_map(size: int = 256, sigma_texels: float = 2.0) -> np.ndarray:
    """One 0.5 mm deep horizontal groove across a (1, size, size) map."""
    rows = np.arange(size)[:, None] - size / 2
    return np.broadcast_to(-0.5 * np.exp(-0.5 * (rows / sigma_texels) ** 2), (size, size))[None].astype(np.float32)


def test_a_perfect_estimate_keeps_everything():
    truth = _groove_map()
    face = np.ones(truth.shape[1:], bool)
    scores = resolution.compare(truth, truth.copy(), face)
    assert scores == pytest.approx({"depth_kept": 1.0, "slope_kept": 1.0, "rms_mm": 0.0})


def test_a_coarse_grid_loses_groove_depth_and_slope_more_the_coarser_it_is():
    truth = _groove_map()
    face = np.ones(truth.shape[1:], bool)
    kept = []
    for size in (128, 32, 8):
        coarse = resolution._zoom_to(resolution._area_average(truth[0], size), truth.shape[1])[None]
        kept.append(resolution.compare(truth, coarse, face))
    depth = [k["depth_kept"] for k in kept]
    slope = [k["slope_kept"] for k in kept]
    assert depth[0] > depth[1] > depth[2] and slope[0] > slope[1] > slope[2]
    assert depth[0] > 0.9 and depth[2] < 0.4  # 2 px groove: survives at half size, gone at 1/32
    assert kept[2]["rms_mm"] > kept[0]["rms_mm"]


def test_area_average_keeps_the_mean():
    image = np.random.default_rng(0).normal(size=(64, 64))
    assert resolution._area_average(image, 16).mean() == pytest.approx(image.mean())
    assert resolution._zoom_to(np.ones((16, 16)), 64).shape == (64, 64)

"""A real Cycles render proves that the wrinkle sequence reaches the image, frame by frame."""

from __future__ import annotations

import numpy as np
import pytest

from blender_support import render_frame, render_test_scene
from textalker_blender.blender import writers

pytestmark = pytest.mark.blender


def _render(scene, frame, path):
    return render_frame(scene, frame, path).mean(axis=-1)  # bottom row first, as Blender stores it


def test_wrinkle_sequence_changes_rendered_brightness_inside_uv_region_only(tmp_path):
    scene, plane = render_test_scene("CYCLES", grey=0.8)

    # Frame 1 darkens to half, frame 2 is neutral; the maps cover the left half of the UV square.
    maps = np.ones((2, 8, 8, 3), np.float32)
    maps[0] = 0.5
    writers.write_exr_sequence(maps, tmp_path / "seq")
    writers.ensure_wrinkle_material(
        plane, tmp_path / "seq", n_frames=2, frame_start=1, uv_region=(0.0, 0.0, 0.5, 1.0)
    )

    dark = _render(scene, 1, tmp_path / "f1.png")
    neutral = _render(scene, 2, tmp_path / "f2.png")
    left, right = slice(2, 14), slice(18, 30)  # columns, away from the region border
    rows = slice(2, 30)
    assert neutral[rows, left].mean() > 0.3  # lit, not black
    ratio_left = dark[rows, left].mean() / neutral[rows, left].mean()
    ratio_right = dark[rows, right].mean() / neutral[rows, right].mean()
    # Ratio 0.5 halves the linear radiance: about 0.5 ** (1 / 2.4) = 0.75 after the sRGB encoding.
    assert 0.65 < ratio_left < 0.82, ratio_left
    assert ratio_right == pytest.approx(1.0, abs=0.03)  # outside the UV region: albedo unchanged

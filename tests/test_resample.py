"""core.resample: frame counts and linear interpolation from MODEL_FPS to any fps."""

import math

import numpy as np
import pytest

from textalker_blender.core.config import MODEL_FPS
from textalker_blender.core.resample import output_frame_count, resample_frames


@pytest.mark.parametrize("fps", [23.976, 24.0, 25.0, 29.97, 30.0, 50.0, 60.0])
@pytest.mark.parametrize("duration", [0.5, 1.0, 2.345, 10.0])
def test_frame_count_is_ceil_of_duration_times_fps(fps, duration):
    assert output_frame_count(duration, fps) == math.ceil(duration * fps - 1e-6)


def test_exact_durations_do_not_gain_a_frame():
    assert output_frame_count(2.0, 24) == 48
    assert output_frame_count(32000 / 16000, 60) == 120
    assert output_frame_count(0.0, 30) == 1  # at least one frame


@pytest.mark.parametrize("fps", [24.0, 25.0, 29.97, 60.0])
def test_linear_ramp_is_resampled_exactly(fps):
    n_src = 91  # 3 s at 30 fps
    ramp = np.arange(n_src, dtype=np.float32)[:, None, None] * np.ones((1, 4, 3), np.float32)
    n_out = output_frame_count(n_src / MODEL_FPS, fps)
    out = resample_frames(ramp, MODEL_FPS, fps, n_out)
    assert out.shape == (n_out, 4, 3) and out.dtype == np.float32
    # frame centres: output frame i at (i + 0.5) / fps, source frame k at (k + 0.5) / 30
    expected = np.clip((np.arange(n_out) + 0.5) / fps * MODEL_FPS - 0.5, 0, n_src - 1)
    np.testing.assert_allclose(out[:, 0, 0], expected, atol=1e-4)


def test_doubling_fps_puts_frames_a_quarter_source_frame_around_each_source_frame():
    frames = np.random.default_rng(1).standard_normal((20, 3)).astype(np.float32)
    out = resample_frames(frames, 30, 60)
    assert out.shape == (40, 3)
    k = np.arange(1, 19)
    np.testing.assert_allclose(out[2 * k], 0.25 * frames[k - 1] + 0.75 * frames[k], atol=1e-6)
    np.testing.assert_allclose(out[2 * k + 1], 0.75 * frames[k] + 0.25 * frames[k + 1], atol=1e-6)


def test_same_fps_is_identity_and_dtype_kept():
    frames = np.random.default_rng(0).standard_normal((10, 5, 5, 3)).astype(np.float16)
    np.testing.assert_array_equal(resample_frames(frames, 30, 30), frames)
    assert resample_frames(frames, 30, 60).dtype == np.float16


def test_bad_fps_rejected():
    with pytest.raises(ValueError):
        output_frame_count(1.0, 0)
    with pytest.raises(ValueError):
        resample_frames(np.zeros((0, 3)), 30, 24)

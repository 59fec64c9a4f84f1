"""Any head mesh in real Blender (bpy module, issue #20): Fit to This Head stores the fit and the
influence group, bad meshes leave the scene unchanged, the landmark steps, and a generation on a
fitted head of another topology and UV layout (shape keys on its own vertices, wrinkle images in
its own UVs)."""

from __future__ import annotations

import numpy as np
import pytest
from robustness_support import needs_assets, registered_scene, snapshot, template_head

bpy = pytest.importorskip("bpy")

from textalker_blender.blender import head_fitting  # noqa: E402
from textalker_blender.blender.head_fit_ui import LandmarkSession  # noqa: E402
from textalker_blender.core import head_fit, surface  # noqa: E402
from textalker_blender.core.errors import MeshError, TexTalkerError  # noqa: E402
from textalker_blender.core.template import load_template  # noqa: E402

pytestmark = [pytest.mark.blender, needs_assets]


def _mesh_object(name, vertices, triangles, uvs=None):
    """A mesh object from arrays (triangles (F, 3); uvs per corner (F, 3, 2)), linked and active."""
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata([tuple(v) for v in np.asarray(vertices, float)], [], [tuple(t) for t in np.asarray(triangles)])
    if uvs is not None:
        layer = mesh.uv_layers.new(name="UVMap")
        layer.data.foreach_set("uv", np.asarray(uvs, np.float32).reshape(-1))
    mesh.update()
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    return obj


def _shuffled_template_head(name="My Head"):
    """The template head with shuffled vertices, its quads cut along the other diagonal, placed in
    centimetres and turned to face +Y, with a frontal planar UV map (not hm08's)."""
    from tools.any_head import other_diagonal_triangles

    template = load_template()
    triangles = other_diagonal_triangles(template)
    order = np.random.default_rng(3).permutation(template.n_vertices)
    new_index = np.argsort(order)
    x = template.vertices.astype(np.float64)
    rotation = np.diag([-1.0, -1.0, 1.0])  # 180 degrees about Z
    vertices = (100.0 * x @ rotation.T)[order]
    front = (x[:, [0, 2]] - x[:, [0, 2]].min(0)) / np.ptp(x[:, [0, 2]], axis=0).max()
    uvs = front[triangles]
    obj = _mesh_object(name, vertices, new_index[triangles], uvs)
    return obj, order, rotation


def _group_weights(obj):
    group = obj.vertex_groups[head_fitting.INFLUENCE_GROUP]
    weights = np.zeros(len(obj.data.vertices))
    for vertex in obj.data.vertices:
        for element in vertex.groups:
            if element.group == group.index:
                weights[vertex.index] = element.weight
    return weights


def test_fit_operator_stores_the_fit_and_a_paintable_influence_group(tmp_path):
    registered_scene()
    obj, order, rotation = _shuffled_template_head()
    assert bpy.ops.textalker.fit_head() == {"FINISHED"}
    fit = head_fitting.stored_fit(obj.data)
    assert fit is not None and fit.n_user_vertices == len(obj.data.vertices)
    assert fit.scale == pytest.approx(100.0, rel=1e-5)
    np.testing.assert_allclose(fit.rotation, rotation, atol=1e-5)
    weights = _group_weights(obj)
    np.testing.assert_allclose(weights, fit.influence, atol=1.0 / 256)
    template = load_template()
    assert weights[np.argsort(order)][template.face_mask].min() > 0.99
    head_fitting.check_fit_matches(obj.data, fit, template)
    # Painting the group changes what a generation uses.
    obj.vertex_groups[head_fitting.INFLUENCE_GROUP].remove([0, 1, 2])
    assert np.all(head_fitting.influence_weights(obj, fit)[:3] == 0)
    # Moving a vertex invalidates the fit.
    obj.data.vertices[10].co.z += 1.0
    with pytest.raises(MeshError, match="Fit to This Head again"):
        head_fitting.check_fit_matches(obj.data, fit, template)
    assert bpy.ops.textalker.clear_head_fit() == {"FINISHED"}
    assert head_fitting.FIT_PROPERTY not in obj.data and head_fitting.INFLUENCE_GROUP not in obj.vertex_groups


def test_a_shape_that_is_not_a_head_is_refused_and_nothing_changes():
    registered_scene()
    bpy.ops.mesh.primitive_monkey_add(size=0.25)  # Suzanne: a head, but not a human one
    monkey = bpy.context.active_object
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.1)
    sphere = bpy.context.active_object
    for obj in (sphere, monkey):
        bpy.context.view_layer.objects.active = obj
        before = snapshot()
        with pytest.raises(RuntimeError, match="does not look like a human head|could not be fitted|separate parts"):
            bpy.ops.textalker.fit_head()
        assert snapshot() == before
        assert head_fitting.FIT_PROPERTY not in obj.data and not obj.vertex_groups


def test_landmark_session_places_goes_back_and_needs_four_points():
    session = LandmarkSession()
    assert session.current == head_fit.LANDMARK_NAMES[0] and "outer corner" in session.guidance()
    session.place([0.0, 0.0, 1.0])
    session.place([0.1, 0.0, 1.0])
    session.back()
    assert session.current == head_fit.LANDMARK_NAMES[1] and "click to move it" in session.guidance()
    session.place([0.2, 0.0, 1.0])
    with pytest.raises(TexTalkerError, match="at least 4"):
        session.result()
    session.forget()  # leave the third out
    session.place([0.3, 0.0, 1.0])
    session.skip()  # the fifth stays unplaced
    session.place([0.4, 0.0, 1.0])
    assert set(session.result()) == {head_fit.LANDMARK_NAMES[i] for i in (0, 1, 3, 5)}
    np.testing.assert_allclose(session.points[head_fit.LANDMARK_NAMES[1]], [0.2, 0.0, 1.0])


def test_placed_landmarks_drive_the_fit_of_an_odd_rotation():
    registered_scene()
    template = load_template()
    from scipy.spatial.transform import Rotation

    rotation = Rotation.from_euler("xyz", [25.0, -40.0, 150.0], degrees=True).as_matrix()
    vertices = template.vertices.astype(np.float64) @ rotation.T
    obj = _mesh_object("Tilted", vertices, template.triangles)
    marks = {name: point @ rotation.T for name, point in head_fit.template_landmarks(template).items()}
    head_fitting.store_landmarks(obj.data, marks)
    assert bpy.ops.textalker.fit_head() == {"FINISHED"}
    fit = head_fitting.stored_fit(obj.data)
    assert fit.measures["landmarks_given"]
    np.testing.assert_allclose(fit.rotation, rotation, atol=1e-5)


def test_generation_drives_a_fitted_head_in_its_own_topology_and_uvs(tmp_path, saved_scene, speech_file):
    from textalker_blender.blender import api

    obj, order, rotation = _shuffled_template_head("Fitted")
    # Without a fit, the other UV layout is refused, pointing at the fit.
    with pytest.raises(MeshError, match="Fit to This Head"):
        api.generate(obj, str(speech_file), steps=1)
    assert bpy.ops.textalker.fit_head() == {"FINISHED"}
    summary = api.generate(obj, str(speech_file), steps=1)
    assert summary.n_frames > 10 and summary.exr_files == summary.n_frames
    keys = obj.data.shape_keys.key_blocks
    basis = np.empty(len(obj.data.vertices) * 3, np.float32)
    keys[0].data.foreach_get("co", basis)
    frames = []
    for block in keys[1:]:
        co = np.empty_like(basis)
        block.data.foreach_get("co", co)
        frames.append(co.reshape(-1, 3) - basis.reshape(-1, 3))
    frames = np.stack(frames)
    template = load_template()
    user_index = np.argsort(order)  # template vertex -> user vertex
    moved = np.linalg.norm(frames, axis=-1).max(axis=0)
    # The lips move (centimetres: scale 100), the back of the head does not.
    assert moved[user_index[template.lip_mask]].max() > 0.05
    assert moved[user_index[template.vertices[:, 1] > 0.03]].max() == 0.0
    # The wrinkle images are made in the mesh's own UV map (the whole square).
    from textalker_blender.blender import writers

    images = sorted((tmp_path / "textalker").rglob(f"{writers.IMAGE_PREFIX}[0-9]*.exr"))
    assert len(images) == summary.n_frames
    from textalker_blender.blender import preflight

    expected = min(head_fitting.MAX_WRINKLE_IMAGE, head_fitting.WRINKLE_IMAGE_SCALE * preflight._wrinkle_resolution(None))
    image = bpy.data.images.load(str(images[len(images) // 2]))
    assert tuple(image.size) == (expected, expected)
    bpy.data.images.remove(image)
    api.remove_output(obj)
    # Without a UV map a fitted head is refused (its wrinkle textures need one), nothing changes.
    obj.data.uv_layers.remove(obj.data.uv_layers[0])
    before = snapshot()
    with pytest.raises(MeshError, match="no UV map"):
        api.generate(obj, str(speech_file), steps=1)
    assert snapshot() == before


def test_decimated_template_follows_the_template(saved_scene):
    """Blender's Decimate (collapse, 40 %) makes another topology; each vertex must move like the
    template surface point nearest to it."""
    template = load_template()
    head = template_head()
    for child in list(head.children):
        bpy.data.objects.remove(child)
    modifier = head.modifiers.new("Decimate", "DECIMATE")
    modifier.ratio = 0.4
    bpy.context.view_layer.objects.active = head
    bpy.ops.object.modifier_apply(modifier=modifier.name)
    vertices, triangles = head_fitting.mesh_arrays(head.data)
    assert len(vertices) < 0.6 * template.n_vertices
    assert bpy.ops.textalker.fit_head() == {"FINISHED"}
    fit = head_fitting.stored_fit(head.data)
    hit = surface.SurfaceQuery(template.vertices, template.triangles).query(vertices)
    jaw = template.apply_units(template.unit_weights(jawOpen=0.6, mouthSmileLeft=0.5))
    truth = surface.interpolate(jaw, template.triangles, hit.triangle, hit.barycentric)
    user = head_fit.transfer_offsets(fit, jaw, template)
    error = np.linalg.norm(user - truth, axis=1) * 1000
    assert np.median(error) < 0.2 and np.quantile(error, 0.99) < 3.0, (np.median(error), np.quantile(error, 0.99))


def test_a_stale_fit_or_arkit_mode_is_refused_before_anything_changes(tmp_path, saved_scene, speech_file):
    from textalker_blender.blender import api

    obj, _, _ = _shuffled_template_head("Stale")
    assert bpy.ops.textalker.fit_head() == {"FINISHED"}
    before = snapshot()
    with pytest.raises(MeshError, match="ARKit curves"):
        api.generate(obj, str(speech_file), steps=1, output_mode="ARKIT")
    assert snapshot() == before
    obj.data.vertices[0].co.x += 0.5  # edited after the fit
    before = snapshot()
    with pytest.raises(MeshError, match="Fit to This Head again"):
        api.generate(obj, str(speech_file), steps=1)
    assert snapshot() == before
    assert not list(tmp_path.rglob("*.exr"))


def test_place_landmarks_modal_maps_clicks_keys_and_stores_on_enter(monkeypatch):
    """The modal operator driven by hand (no GUI event loop here): clicks place landmarks where
    the ray hits (the ray cast is replaced: there is no 3D view), right-click goes back, Enter
    stores them on the mesh, Esc stores nothing."""
    from types import SimpleNamespace

    from textalker_blender.blender import head_fit_ui

    registered_scene()
    template = load_template()
    obj = _mesh_object("Clicked", template.vertices, template.triangles)
    marks = head_fit.template_landmarks(template)
    clicks = iter([marks[name] for name in head_fit.LANDMARK_NAMES])
    monkeypatch.setattr(head_fit_ui, "ray_hit_on_object", lambda context, target, xy: next(clicks))
    headers = []
    area = SimpleNamespace(header_text_set=headers.append, tag_redraw=lambda: None)
    context = SimpleNamespace(area=area, workspace=None)
    reports = []
    operator_class = head_fit_ui.TEXTALKER_OT_place_landmarks

    def stand_in():
        fake = SimpleNamespace(_session=head_fit_ui.LandmarkSession(), _object_name=obj.name, _draw_handle=None,
                               report=lambda kind, text: reports.append(text))
        fake._show = lambda ctx: operator_class._show(fake, ctx)
        fake._finish = lambda ctx: operator_class._finish(fake, ctx)
        return fake

    def event(kind, value="PRESS"):
        return SimpleNamespace(type=kind, value=value, mouse_region_x=10, mouse_region_y=10)

    fake = stand_in()
    assert operator_class.modal(fake, context, event("MIDDLEMOUSE")) == {"PASS_THROUGH"}  # orbiting still works
    for _ in range(3):
        assert operator_class.modal(fake, context, event("LEFTMOUSE")) == {"RUNNING_MODAL"}
    assert "landmark 4/10" in headers[-1]
    operator_class.modal(fake, context, event("RIGHTMOUSE"))
    assert "landmark 3/10" in headers[-1] and "click to move it" in headers[-1]
    assert operator_class.modal(fake, context, event("RET")) == {"RUNNING_MODAL"}  # only 3 placed: not yet
    assert "at least 4" in reports[-1]
    for _ in range(head_fit.MIN_LANDMARKS):
        operator_class.modal(fake, context, event("LEFTMOUSE"))
    assert operator_class.modal(fake, context, event("RET")) == {"FINISHED"}
    assert headers[-1] is None  # the header is Blender's again
    stored = head_fitting.stored_landmarks(obj.data)
    assert len(stored) == 3 + head_fit.MIN_LANDMARKS - 1
    np.testing.assert_allclose(stored[head_fit.LANDMARK_NAMES[0]], marks[head_fit.LANDMARK_NAMES[0]])
    # Esc: nothing stored.
    head_fitting.store_landmarks(obj.data, {})
    fake = stand_in()
    clicks = iter([marks[name] for name in head_fit.LANDMARK_NAMES])
    operator_class.modal(fake, context, event("LEFTMOUSE"))
    assert operator_class.modal(fake, context, event("ESC")) == {"CANCELLED"}
    assert head_fitting.stored_landmarks(obj.data) == {}


def test_a_fitted_head_gets_fold_activations_and_crease_detail_in_its_own_uvs(tmp_path, saved_scene, speech_file,
                                                                              crease_weights):
    """Weights with fold maps on a fitted head: the RGBA frames and the wrinkle style's crease
    detail are carried into the mesh's own UV map, and the material bumps its Normal."""
    import OpenEXR

    from textalker_blender.blender import api, writers

    obj, _, _ = _shuffled_template_head("Creased")
    assert bpy.ops.textalker.fit_head() == {"FINISHED"}
    summary = api.generate(obj, str(speech_file), steps=1, weights=str(crease_weights), wrinkle_style=0)
    folder = summary.sequence_folder
    with OpenEXR.File(str(writers.crease_detail_path(folder))) as exr:
        channels = exr.channels()
        detail = np.array(channels["RGB" if "RGB" in channels else "R"].pixels, np.float32)
    detail = detail[..., 0] if detail.ndim == 3 else detail
    size = head_fitting.MAX_WRINKLE_IMAGE
    assert detail.shape == (size, size)
    grooves = detail < -0.02
    # Grooves are drawn where the face is in this frontal UV map (its middle), nowhere else.
    assert 100 < grooves.sum() < 0.2 * grooves.size
    rows, cols = np.nonzero(grooves)
    assert 0.1 * size < cols.mean() < 0.9 * size
    with OpenEXR.File(str(sorted(folder.glob(f"{writers.IMAGE_PREFIX}[0-9]*.exr"))[len(summary.shape_keys) // 2])) as exr:
        assert "RGBA" in exr.channels()
    group = next(n for n in obj.active_material.node_tree.nodes if n.bl_idname == "ShaderNodeGroup")
    assert writers.CREASE_DETAIL_NODE in group.node_tree.nodes
    api.remove_output(obj)
    assert not folder.exists()

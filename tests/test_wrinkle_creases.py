"""Crease output in real Blender (bpy module): the RGBA wrinkle sequence (ratio + fold activation),
the crease detail map, the node group's Bump into the BSDF's Normal (the user's normal map chained),
the strength controls, Remove restoring the material exactly, and a Cycles render that shows them."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from blender_support import (
    bpy,
    fresh_scene,
    grid_mesh_object,
    registered_scene,
    render_frame,
    render_test_scene,
    skin_material,
)
from textalker_blender.blender import outputs, panel, writers

pytestmark = pytest.mark.blender

OpenEXR = pytest.importorskip("OpenEXR")


def _read_exr(path) -> np.ndarray:
    """(H, W, channels) half floats, top row first, channels in R, G, B(, A) order."""
    with OpenEXR.File(str(path)) as exr:  # the channels are read only while the file is open
        channels = exr.channels()
        key = "RGBA" if "RGBA" in channels else "RGB"
        return np.array(channels[key].pixels)


def _write_run(folder, n_frames=2, size=8, detail=None, folds=None):
    """A run's files: neutral ratios, `folds` (default: fully folded on frame 1, flat on 2) and
    a crease detail map (default: 1 mm grooves)."""
    maps = np.ones((n_frames, size, size, 3), np.float32)
    if folds is None:
        folds = np.zeros((n_frames, size, size), np.float32)
        folds[0] = 1.0
    writers.write_exr_sequence(maps, folder, folds=folds)
    if detail is not False:
        writers.write_crease_detail(-np.ones((32, 32), np.float32) if detail is None else detail, folder)


def _material_snapshot(material) -> dict:
    """Everything Remove must give back: nodes, every input's own value, every link."""
    tree = material.node_tree
    values = {}
    for node in tree.nodes:
        for socket in node.inputs:
            value = getattr(socket, "default_value", None)
            values[(node.name, socket.identifier)] = (
                tuple(value) if hasattr(value, "__len__") and not isinstance(value, str) else value
            )
    return {
        "nodes": sorted((n.name, n.bl_idname, tuple(n.location)) for n in tree.nodes),
        "values": values,
        "links": sorted(
            (l.from_node.name, l.from_socket.identifier, l.to_node.name, l.to_socket.identifier)
            for l in tree.links
        ),
    }


def _skin_material(obj, normal_map: bool):
    """(material, bsdf, normal map node or None) of a user's skin material on `obj`."""
    material, bsdf, _, normal = skin_material(obj, normal_map)
    return material, bsdf, normal


# --------------------------------------------------------------------------------------------
# Files


def test_exr_sequence_round_trips_ratio_and_fold_activation_unpremultiplied(tmp_path):
    fresh_scene()
    rng = np.random.default_rng(5)
    maps = rng.uniform(0.4, 1.6, (3, 6, 10, 3)).astype(np.float32)
    folds = rng.uniform(0.0, 1.0, (3, 6, 10)).astype(np.float32)
    folds[:, 0, :] = 0.0  # unfolded texels whose ratio must survive (premultiplying would zero it)
    folds[0, 1, 0], folds[0, 1, 1], folds[0, 1, 2] = 1.7, -0.2, np.nan  # clipped, NaN = no fold
    paths = writers.write_exr_sequence(maps, tmp_path / "seq", folds=folds)

    expected_folds = np.clip(np.nan_to_num(folds, nan=0.0), 0.0, 1.0)
    for t, path in enumerate(paths):
        rgba = _read_exr(path)
        assert rgba.dtype == np.float16 and rgba.shape == (6, 10, 4)
        np.testing.assert_array_equal(rgba[..., :3], maps[t].astype(np.float16))
        np.testing.assert_array_equal(rgba[..., 3], expected_folds[t].astype(np.float16))

    # Blender reads back what was written, the ratio not multiplied by the fold activation.
    obj = grid_mesh_object()
    writers.ensure_wrinkle_material(obj, tmp_path / "seq", n_frames=3, frame_start=1)
    group = obj.data.materials[0].node_tree.nodes[writers.NODE_GROUP_NAME].node_tree
    image = group.nodes[writers.SEQUENCE_NODE].image
    assert image.alpha_mode == "CHANNEL_PACKED"
    assert image.colorspace_settings.name == "Non-Color"
    # A sequence image has no pixels until a frame is drawn: read frame 1 as the same kind of image.
    frame = bpy.data.images.load(str(paths[0]), check_existing=False)
    frame.colorspace_settings.name = "Non-Color"
    frame.alpha_mode = image.alpha_mode
    pixels = np.array(frame.pixels[:], np.float32).reshape(6, 10, 4)[::-1]  # top row first
    np.testing.assert_array_equal(pixels[..., :3], maps[0].astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(pixels[..., 3], expected_folds[0].astype(np.float16).astype(np.float32))


def test_exr_sequence_refuses_fold_maps_of_another_shape_and_writes_nothing(tmp_path):
    fresh_scene()
    maps = np.ones((2, 4, 4, 3), np.float32)
    for folds in (np.zeros((2, 4, 5)), np.zeros((1, 4, 4)), np.zeros((2, 4, 4, 1))):
        with pytest.raises(ValueError, match="folds must be"):
            writers.write_exr_sequence(maps, tmp_path / "seq", folds=folds)
    assert not (tmp_path / "seq").exists()


def test_crease_detail_is_half_float_millimetres_in_image_row_order(tmp_path):
    fresh_scene()
    detail = np.zeros((64, 48), np.float32)
    detail[10, :] = -0.5  # a groove near the top
    detail[50, 5:20] = -1.25
    detail[0, 0] = np.nan
    path = outputs.write_crease_detail(detail, tmp_path / "seq")
    assert path == tmp_path / "seq" / writers.CREASE_DETAIL_NAME
    assert len(bpy.data.scenes) == 1 and len(bpy.data.images) == 0  # temporaries removed
    rgb = _read_exr(path)
    assert rgb.dtype == np.float16 and rgb.shape == (64, 48, 3)
    expected = np.nan_to_num(detail, nan=0.0).astype(np.float16)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[..., channel], expected)
    assert outputs.write_crease_detail(None, tmp_path / "seq") is None  # older weights: no map
    with pytest.raises(ValueError):
        writers.write_crease_detail(np.zeros(16), tmp_path / "seq")
    # Remove's file deletion takes the detail map with the sequence, and only them.
    writers.write_exr_sequence(np.ones((2, 4, 4, 3), np.float32), tmp_path / "seq")
    (tmp_path / "seq" / "notes.txt").write_text("the artist's")
    assert writers.delete_sequence_files(tmp_path / "seq") == 3
    assert sorted(p.name for p in (tmp_path / "seq").iterdir()) == ["notes.txt"]


# --------------------------------------------------------------------------------------------
# Material


def _group_node(material):
    return material.node_tree.nodes[writers.NODE_GROUP_NAME]


def test_group_bumps_the_bsdf_normal_at_physical_depth_and_remove_restores_the_material(tmp_path):
    fresh_scene()
    obj = grid_mesh_object()
    obj.scale = (2.0, 2.0, 2.0)  # a head twice real size: creases twice as deep in world units
    bpy.context.view_layer.update()
    material, bsdf, _ = _skin_material(obj, normal_map=False)
    before = _material_snapshot(material)
    _write_run(tmp_path / "seq")
    group = writers.ensure_wrinkle_material(obj, tmp_path / "seq", n_frames=2, frame_start=1)

    node = _group_node(material)
    assert bsdf.inputs["Normal"].links[0].from_node == node
    assert bsdf.inputs["Normal"].links[0].from_socket.name == writers.NORMAL_SOCKET
    assert not node.inputs[writers.NORMAL_SOCKET].is_linked  # the shading normal, inside
    bump = group.nodes[writers.BUMP_NODE]
    output = next(n for n in group.nodes if n.bl_idname == "NodeGroupOutput")
    assert output.inputs[writers.NORMAL_SOCKET].links[0].from_node == bump
    assert bump.inputs["Distance"].default_value == pytest.approx(0.002)  # 1 mm at scale 2
    assert bump.inputs["Height"].is_linked and bump.inputs["Normal"].is_linked
    detail = group.nodes[writers.CREASE_DETAIL_NODE]
    assert detail.image.colorspace_settings.name == "Non-Color"
    assert detail.image.size[:] == (32, 32)
    assert detail.extension == group.nodes[writers.SEQUENCE_NODE].extension == "EXTEND"
    assert node.inputs[writers.CREASE_STRENGTH_SOCKET].default_value == pytest.approx(writers.DEFAULT_CREASE_STRENGTH)
    assert node.inputs[writers.CAVITY_SOCKET].default_value == pytest.approx(writers.DEFAULT_CAVITY)

    counts = writers.remove_textalker_output(obj)
    assert counts["files"] == 3  # two frames and the detail map
    assert not (tmp_path / "seq").exists()
    assert _material_snapshot(material) == before
    assert not any(g.get(writers.TAG) for g in bpy.data.node_groups)
    assert not any(i.get(writers.TAG) for i in bpy.data.images)


def test_user_normal_map_is_chained_into_the_bump_and_remove_restores_its_link(tmp_path):
    fresh_scene()
    obj = grid_mesh_object()
    material, bsdf, normal_map = _skin_material(obj, normal_map=True)
    before = _material_snapshot(material)
    _write_run(tmp_path / "seq")
    group = writers.ensure_wrinkle_material(obj, tmp_path / "seq", n_frames=2, frame_start=1)

    node = _group_node(material)
    assert node.inputs[writers.NORMAL_SOCKET].links[0].from_node == normal_map
    assert bsdf.inputs["Normal"].links[0].from_node == node
    # Inside, the linked normal (not the shading normal) is what the Bump perturbs.
    group_input = next(n for n in group.nodes if n.bl_idname == "NodeGroupInput")
    users = {link.to_node.bl_idname for link in group_input.outputs[writers.NORMAL_SOCKET].links}
    assert users == {"ShaderNodeVectorMath", "ShaderNodeMix"}

    # A second run replaces the first and still chains the user's normal map, not our node.
    writers.ensure_wrinkle_material(obj, tmp_path / "seq", n_frames=2, frame_start=1)
    assert sum(1 for n in material.node_tree.nodes if n.bl_idname == "ShaderNodeGroup") == 1
    assert _group_node(material).inputs[writers.NORMAL_SOCKET].links[0].from_node == normal_map

    writers.remove_textalker_output(obj, delete_files=False)
    assert _material_snapshot(material) == before
    assert bsdf.inputs["Normal"].links[0].from_node == normal_map


def _colour_only_run(tmp_path, normal_map: bool):
    """A grid with a user's skin material and a neutral two-frame run without fold maps or
    detail map (older weights). Returns (obj, material, bsdf, normal map node, snapshot of the
    material before the run, the wrinkle node group)."""
    fresh_scene()
    obj = grid_mesh_object()
    material, bsdf, normal = _skin_material(obj, normal_map=normal_map)
    before = _material_snapshot(material)
    writers.write_exr_sequence(np.ones((2, 4, 4, 3), np.float32), tmp_path / "seq")
    group = writers.ensure_wrinkle_material(obj, tmp_path / "seq", n_frames=2, frame_start=1)
    return obj, material, bsdf, normal, before, group


def test_sequence_without_crease_detail_leaves_the_normal_alone(tmp_path):
    """Older weights (no fold maps, no detail map): colour only, as before."""
    obj, material, bsdf, normal_map, before, group = _colour_only_run(tmp_path, normal_map=True)
    assert not any(n.bl_idname == "ShaderNodeBump" for n in group.nodes)
    assert writers.NORMAL_SOCKET not in _group_node(material).inputs
    assert bsdf.inputs["Normal"].links[0].from_node == normal_map
    assert writers.crease_controls(obj) is None
    assert writers.set_crease_controls(obj, 2.0, 1.0) == 0
    writers.remove_textalker_output(obj)
    assert _material_snapshot(material) == before


def test_remove_restores_a_material_saved_by_an_earlier_version(tmp_path):
    """Group nodes recorded before the Normal was wired (only textalker_to/from) are restored."""
    obj, material, _, _, before, _ = _colour_only_run(tmp_path, normal_map=False)
    node = _group_node(material)
    assert "textalker_normal_to" not in node  # what an earlier version's node looks like
    writers.remove_textalker_output(obj)
    assert _material_snapshot(material) == before


def test_world_units_per_mm_follows_object_and_mesh_frame_scale():
    fresh_scene()
    obj = grid_mesh_object()
    assert writers.world_units_per_mm(obj) == pytest.approx(0.001)
    obj.scale = (0.1, 0.1, 0.1)
    bpy.context.view_layer.update()
    assert writers.world_units_per_mm(obj) == pytest.approx(0.0001)
    decimetres = np.eye(3) * 10.0  # the hm08 OBJ in decimetres: template metres -> mesh units
    assert writers.world_units_per_mm(obj, decimetres) == pytest.approx(0.001)
    assert writers.world_units_per_mm(obj, np.zeros((3, 3))) == pytest.approx(0.001)  # degenerate


class _RecordingLayout:
    """Stands in for UILayout (background mode has none): records the properties drawn."""

    def __init__(self, log):
        self.log = log
        self.enabled = self.active = True
        self.scale_y = 1.0

    def _child(self, **kwargs):
        return _RecordingLayout(self.log)

    row = column = box = split = _child

    def prop(self, data, name, **kwargs):
        assert name in data.bl_rna.properties, name
        self.log.append(("prop", data, name))

    def prop_search(self, data, name, *args, **kwargs):
        self.log.append(("prop", data, name))

    def operator(self, idname, **kwargs):
        self.log.append(("operator", idname))
        return SimpleNamespace()

    def label(self, text="", **kwargs):
        self.log.append(("label", text))


def test_crease_settings_change_the_group_inputs_and_sit_next_to_the_wrinkle_style(tmp_path):
    scene = registered_scene()
    obj = grid_mesh_object()
    _skin_material(obj, normal_map=True)
    bpy.context.view_layer.objects.active = obj
    obj.textalker_creases.strength = 2.5  # set before generating: the new material takes it
    _write_run(tmp_path / "seq")
    writers.ensure_wrinkle_material(obj, tmp_path / "seq", n_frames=2, frame_start=1)
    assert writers.crease_controls(obj) == pytest.approx((2.5, writers.DEFAULT_CAVITY))

    obj.textalker_creases.strength = 0.75  # after generation: no regeneration needed
    obj.textalker_creases.cavity = 1.5
    node = _group_node(obj.data.materials[0])
    assert node.inputs[writers.CREASE_STRENGTH_SOCKET].default_value == pytest.approx(0.75)
    assert node.inputs[writers.CAVITY_SOCKET].default_value == pytest.approx(1.5)

    log = []
    panel.TEXTALKER_PT_main.draw(SimpleNamespace(layout=_RecordingLayout(log)), bpy.context)
    drawn = [entry[2] for entry in log if entry[0] == "prop"]
    at = drawn.index("wrinkle_style")
    assert drawn[at + 1 : at + 3] == ["strength", "cavity"]
    assert [entry[1] for entry in log if entry[0] == "prop"][at + 1] == obj.textalker_creases
    assert scene.textalker is not None


# --------------------------------------------------------------------------------------------
# Render


def _render_luminance(scene, frame, path):
    return render_frame(scene, frame, path) @ np.array([0.2126, 0.7152, 0.0722])  # bottom row first


def crease_scene(tmp_path, engine: str = "CYCLES"):
    """A grey plane (1 m, facing the orthographic camera) under a grazing sun, with a run whose
    frame 1 is fully folded and frame 2 flat over the left half of the UV square. The detail map
    is a synthetic array: grooves 30 mm deep (large enough to span pixels of a 32 px render).
    Returns (scene, plane)."""
    scene, plane = render_test_scene(engine, world_colour=None, world_strength=0.2, grey=0.6)
    sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
    sun.data.energy = 3.0
    sun.rotation_euler = (math.radians(20.0), 0.0, 0.0)  # grazing, from above the plane
    scene.collection.objects.link(sun)

    rows = (np.arange(256) + 0.5) / 256
    grooves = -15.0 * (1.0 + np.cos(2 * np.pi * 6 * rows))  # 6 grooves down the region, mm
    detail = np.repeat(grooves[:, None], 128, axis=1).astype(np.float32)
    folds = np.zeros((2, 8, 8), np.float32)
    folds[0] = 1.0
    writers.write_exr_sequence(np.ones((2, 8, 8, 3), np.float32), tmp_path / "seq", folds=folds)
    outputs.write_crease_detail(detail, tmp_path / "seq")
    writers.ensure_wrinkle_material(
        plane, tmp_path / "seq", n_frames=2, frame_start=1, uv_region=(0.0, 0.0, 0.5, 1.0)
    )
    return scene, plane


def test_cycles_render_shows_creases_where_the_skin_folds_and_nowhere_else(tmp_path):
    scene, plane = crease_scene(tmp_path)
    writers.set_crease_controls(plane, crease_strength=1.0, cavity=0.0)

    folded = _render_luminance(scene, 1, tmp_path / "folded.png")
    flat = _render_luminance(scene, 2, tmp_path / "flat.png")
    left, right, rows_in = slice(2, 14), slice(18, 30), slice(2, 30)
    assert flat[rows_in, left].mean() > 0.15  # lit, not black
    change = np.abs(folded - flat) * 255
    assert (change[rows_in, left] >= 10).mean() > 0.3, change[rows_in, left].mean()
    assert change[rows_in, right].max() < 3  # outside the UV region: flat and unchanged

    # The cavity darkens the grooves on top of the bump; strength 0 turns every crease off.
    writers.set_crease_controls(plane, crease_strength=1.0, cavity=0.02)
    with_cavity = _render_luminance(scene, 1, tmp_path / "cavity.png")
    assert with_cavity[rows_in, left].mean() < folded[rows_in, left].mean() - 0.02
    writers.set_crease_controls(plane, crease_strength=0.0, cavity=0.02)
    off = _render_luminance(scene, 1, tmp_path / "off.png")
    assert np.abs(off - flat).max() * 255 < 3


def test_generation_writes_the_chosen_styles_crease_detail_and_the_bump(crease_weights, one_second_speech, tmp_path):
    """The whole add-on path: the sequence carries fold activations, the wrinkle style's detail
    map lands beside it (the style's own, in millimetres), the BSDF's Normal is bumped, and
    Remove takes every file and restores the material."""
    from textalker_blender.blender import api
    from textalker_blender.core.pipeline import Pipeline

    registered_scene()
    bpy.ops.textalker.add_template_head()
    head = bpy.context.active_object
    material = head.active_material
    bsdf = next(n for n in material.node_tree.nodes if n.bl_idname == "ShaderNodeBsdfPrincipled")
    before = _material_snapshot(material)

    summaries = {}
    for style in (0, 1):
        summaries[style] = api.generate(head, one_second_speech, steps=1, seed=2, wrinkle_style=style,
                                        weights=str(crease_weights), output_folder=str(tmp_path))
    folder = summaries[1].sequence_folder
    assert not summaries[0].sequence_folder.exists()  # the second run replaced the first
    detail_path = writers.crease_detail_path(folder)
    detail = _read_exr(detail_path)[..., 0].astype(np.float32)
    expected = Pipeline.load(crease_weights, "cpu").crease_detail_mm(1)
    assert detail.shape == expected.shape == (2048, 2048)
    np.testing.assert_allclose(detail, expected.astype(np.float16), atol=1e-3)
    assert detail.min() < -0.05  # real grooves, not an empty map

    frames = [_read_exr(path) for path in sorted(folder.glob(f"{writers.IMAGE_PREFIX}[0-9]*.exr"))]
    assert len(frames) == summaries[1].exr_files == 30
    assert all(frame.shape[-1] == 4 for frame in frames)
    folds = np.stack([frame[..., 3] for frame in frames]).astype(np.float32)
    assert folds.min() >= 0.0 and folds.max() <= 1.0 and folds.max() > 0.0

    group_node = _group_node(material)
    assert bsdf.inputs["Normal"].links[0].from_node == group_node
    assert group_node.node_tree.nodes[writers.CREASE_DETAIL_NODE].image.filepath_raw.endswith(writers.CREASE_DETAIL_NAME)

    counts = api.remove_output(head)
    assert counts["files"] == 31 and not folder.exists()
    assert _material_snapshot(material) == before


def test_the_default_wrinkle_style_is_the_most_lined_one_everywhere(crease_weights, one_second_speech):
    """No wrinkle style asked for: the core, the panel's default and the catalog agree on the
    style whose creases hold the most groove, so the wrinkles show without choosing one."""
    from textalker_blender.blender import catalog
    from textalker_blender.core.creases import Crease, groove_amount, most_lined_style
    from textalker_blender.core.pipeline import Pipeline

    line = np.array([[0.0, 0.0], [0.02, 0.0]])
    shallow, deep = [Crease("forehead", line, 0.2, 0.5)], [Crease("forehead", line, 0.2, 0.5),
                                                          Crease("glabella", line, 1.0, 0.5)]
    assert groove_amount(deep) > groove_amount(shallow) > 0
    assert most_lined_style([shallow, deep, shallow]) == 1 and most_lined_style(None) == 0

    pipeline = Pipeline.load(crease_weights, "cpu")
    expected = most_lined_style(pipeline.model.style_creases)
    assert pipeline.default_wrinkle_style == expected == catalog.read_default_wrinkle_style(crease_weights)
    result = pipeline.generate(str(one_second_speech), steps=1, seed=0)
    assert result.wrinkle_style.id == expected
    chosen = pipeline.generate(str(one_second_speech), steps=1, seed=0, wrinkle_style=1 - expected)
    assert chosen.wrinkle_style.id == 1 - expected  # an explicit choice still wins
    np.testing.assert_array_equal(pipeline.crease_detail_mm(None, 256), pipeline.crease_detail_mm(expected, 256))


def test_the_panel_starts_on_the_bundled_weights_most_lined_wrinkle_style():
    from textalker_blender.blender import catalog

    scene = registered_scene()
    styles = catalog.read_style_names()
    if not styles:
        pytest.skip("no bundled weights")
    assert scene.textalker.wrinkle_style == styles[catalog.read_default_wrinkle_style()].key

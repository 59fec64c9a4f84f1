"""Writers on synthetic arrays, in real Blender (bpy module): shape keys, keyframes, EXR, nodes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from blender_support import action_curve_paths, bpy, fresh_scene, grid_mesh_object, key_values, skin_material
from textalker_blender.blender import writers

pytestmark = pytest.mark.blender

OpenEXR = pytest.importorskip("OpenEXR")


def _offsets(n_frames, n_vertices, seed=0):
    return np.random.default_rng(seed).normal(0, 0.01, (n_frames, n_vertices, 3)).astype(np.float32)


@pytest.mark.parametrize("fps,fps_base", [(24, 1.0), (25, 1.0), (30, 1.001), (60, 1.0)])
def test_one_key_per_frame_with_value_one_on_its_frame(fps, fps_base):
    scene = fresh_scene(fps, fps_base)
    obj = grid_mesh_object()
    offsets = _offsets(6, len(obj.data.vertices))
    names = writers.write_shape_keys(obj, offsets, fps / fps_base, frame_start=10)

    assert names == [f"TT_{i:04d}" for i in range(1, 7)]
    assert obj.data.shape_keys.key_blocks[0].name == "Basis"
    for i in range(6):
        scene.frame_set(10 + i)
        expected = np.zeros(6)
        expected[i] = 1.0
        np.testing.assert_allclose(key_values(obj, names), expected, atol=1e-6)
    # Half way between two frames the two neighbouring keys blend linearly (motion blur).
    scene.frame_set(12, subframe=0.5)
    np.testing.assert_allclose(key_values(obj, names), [0, 0, 0.5, 0.5, 0, 0], atol=1e-6)
    # Before the first and after the last frame the face is neutral.
    for frame in (8, 17):
        scene.frame_set(frame)
        np.testing.assert_allclose(key_values(obj, names), 0.0, atol=1e-6)
    record = json.loads(obj.data.shape_keys[writers.KEY_RECORD])
    assert record["fps"] == pytest.approx(fps / fps_base)


def test_key_positions_are_basis_plus_offsets_in_local_coordinates():
    fresh_scene()
    obj = grid_mesh_object()
    obj.scale = (0.5, 2.0, 1.0)  # the object transform applies on top, as to any shape key
    offsets = _offsets(3, len(obj.data.vertices))
    names = writers.write_shape_keys(obj, offsets, 30.0, frame_start=1)
    blocks = obj.data.shape_keys.key_blocks
    basis = np.array([v.co for v in blocks["Basis"].data])
    for i, name in enumerate(names):
        co = np.array([v.co for v in blocks[name].data])
        np.testing.assert_allclose(co - basis, offsets[i], atol=1e-6)


def test_rerun_replaces_only_generated_keys_and_keeps_user_animation():
    scene = fresh_scene()
    obj = grid_mesh_object()
    obj.shape_key_add(name="Basis", from_mix=False)
    smile = obj.shape_key_add(name="Smile", from_mix=False)
    smile.value = 0.0
    smile.keyframe_insert("value", frame=1)
    smile.value = 0.7
    smile.keyframe_insert("value", frame=20)
    user_action = obj.data.shape_keys.animation_data.action
    n_vertices = len(obj.data.vertices)

    writers.write_shape_keys(obj, _offsets(8, n_vertices), 30.0, frame_start=1)
    names = writers.write_shape_keys(obj, _offsets(4, n_vertices, seed=1), 30.0, frame_start=1)
    blocks = obj.data.shape_keys.key_blocks
    assert [b.name for b in blocks] == ["Basis", "Smile"] + names
    assert len(names) == 4
    assert obj.data.shape_keys.animation_data.action == user_action
    scene.frame_set(20)
    assert blocks["Smile"].value == pytest.approx(0.7)
    scene.frame_set(3)
    np.testing.assert_allclose(key_values(obj, names), [0, 0, 1, 0], atol=1e-6)

    removed = writers.remove_shape_keys(obj)
    assert removed == 4
    assert [b.name for b in obj.data.shape_keys.key_blocks] == ["Basis", "Smile"]
    assert user_action.name in bpy.data.actions
    paths = action_curve_paths(user_action)
    assert paths == {'key_blocks["Smile"].value'}
    scene.frame_set(20)
    assert obj.data.shape_keys.key_blocks["Smile"].value == pytest.approx(0.7)


def test_removal_on_a_mesh_without_keys_restores_no_keys_and_deletes_action():
    fresh_scene()
    obj = grid_mesh_object()
    writers.write_shape_keys(obj, _offsets(3, len(obj.data.vertices)), 30.0, frame_start=1)
    action_name = f"TexTalker_{obj.name}"
    assert bpy.data.actions[action_name].get(writers.TAG)
    writers.remove_shape_keys(obj)
    assert obj.data.shape_keys is None
    assert action_name not in bpy.data.actions


def test_exr_sequence_is_half_float_in_image_row_order(tmp_path):
    scene = fresh_scene()
    scene.render.image_settings.file_format = "JPEG"  # the user's own output settings
    rng = np.random.default_rng(3)
    maps = rng.uniform(0.3, 1.7, (3, 16, 24, 3)).astype(np.float32)
    maps[:, 0, :, :] = 2.0  # row 0 is the top of the UV square
    paths = writers.write_exr_sequence(maps, tmp_path / "seq")
    assert [p.name for p in paths] == ["wrinkle_0001.exr", "wrinkle_0002.exr", "wrinkle_0003.exr"]
    assert len(bpy.data.scenes) == 1 and len(bpy.data.images) == 0  # temporaries removed
    assert scene.render.image_settings.file_format == "JPEG"
    for t, path in enumerate(paths):
        with OpenEXR.File(str(path)) as exr:
            channels = exr.channels()
            header = exr.header()
            assert header["compression"] == OpenEXR.ZIP_COMPRESSION
            assert sorted(c.name for c in header["channels"]) == ["A", "B", "G", "R"]
            rgba = channels["RGBA"].pixels  # OpenEXR 3 groups R, G, B, A into one array
        assert rgba.dtype == np.float16
        assert rgba.shape == (16, 24, 4)
        np.testing.assert_allclose(rgba[..., :3].astype(np.float32), maps[t].astype(np.float16), rtol=0, atol=0)
        assert not rgba[..., 3].any()  # no fold maps given: no fold anywhere


def test_node_group_is_inserted_and_removal_restores_the_original_link(tmp_path):
    fresh_scene()
    obj = grid_mesh_object()
    material, bsdf, albedo, _ = skin_material(obj)
    writers.write_exr_sequence(np.ones((4, 8, 8, 3), np.float32), tmp_path / "seq")
    group = writers.ensure_wrinkle_material(
        obj, tmp_path / "seq", n_frames=4, frame_start=5, uv_region=(0.1, 0.2, 0.6, 0.9)
    )
    assert group.name == writers.NODE_GROUP_NAME
    link = bsdf.inputs["Base Color"].links[0]
    assert link.from_node.bl_idname == "ShaderNodeGroup" and link.from_node.node_tree == group
    assert link.from_node.inputs["Albedo"].links[0].from_node == albedo
    texture = group.nodes["TexTalker Wrinkle Sequence"]
    assert texture.image.source == "SEQUENCE"
    assert texture.image.colorspace_settings.name == "Non-Color"
    assert texture.image_user.frame_duration == 4 and texture.image_user.frame_start == 5
    divide = next(n for n in group.nodes if n.bl_idname == "ShaderNodeVectorMath" and n.operation == "DIVIDE")
    assert tuple(divide.inputs[1].default_value) == pytest.approx((0.5, 0.7, 1.0))

    # A second run replaces the first: still exactly one group node in the material.
    writers.ensure_wrinkle_material(obj, tmp_path / "seq", n_frames=4, frame_start=5)
    assert sum(1 for n in material.node_tree.nodes if n.bl_idname == "ShaderNodeGroup") == 1

    counts = writers.remove_textalker_output(obj)
    assert counts["files"] == 4
    assert not (tmp_path / "seq").exists()
    assert [n.bl_idname for n in material.node_tree.nodes].count("ShaderNodeGroup") == 0
    assert bsdf.inputs["Base Color"].links[0].from_node == albedo
    assert not any(g.get(writers.TAG) for g in bpy.data.node_groups)
    assert not any(i.get(writers.TAG) for i in bpy.data.images)
    assert writers.OBJECT_RECORD not in obj


def test_unlinked_base_color_keeps_its_colour_and_object_without_material_gets_one(tmp_path):
    fresh_scene()
    obj = grid_mesh_object()
    writers.write_exr_sequence(np.ones((2, 4, 4, 3), np.float32), tmp_path / "seq")
    writers.ensure_wrinkle_material(obj, tmp_path / "seq", n_frames=2, frame_start=1)
    assert len(obj.data.materials) == 1 and obj.data.materials[0].get(writers.TAG)
    writers.remove_textalker_output(obj, delete_files=False)
    assert len(obj.data.materials) == 0
    assert not any(m.get(writers.TAG) for m in bpy.data.materials)
    assert (tmp_path / "seq" / "wrinkle_0001.exr").is_file()

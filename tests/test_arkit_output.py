"""The "ARKit curves" output mode in real Blender (bpy module, background mode), through the
operator and the API with the untrained bundled Pipeline on ~1 s of audio."""

from __future__ import annotations

import json

import numpy as np
import pytest

from blender_support import (
    add_speech,
    bpy,
    grid_mesh_object,
    registered_scene,
)
from robustness_support import needs_assets
from textalker_blender.blender import api, arkit_writer, cli, compat, writers
from textalker_blender.core.arkit import ARKIT_NAMES, ArkitNameError
from textalker_blender.core.arkit_export import read_csv, read_json
from textalker_blender.core.errors import MeshError, TexTalkerError

pytestmark = [pytest.mark.blender, needs_assets]


def _curves(key):
    """{data path: F-curve} of the Key's action (all channelbags)."""
    action = key.animation_data.action if key.animation_data else None
    if action is None:
        return {}
    return {c.data_path: c for _, c in compat.action_curves(action)}


def _keyframes(curve):
    co = np.empty(2 * len(curve.keyframe_points), np.float32)
    curve.keyframe_points.foreach_get("co", co)
    return co.reshape(-1, 2)


def _path(name):
    return f'key_blocks["{name}"].value'


def _snapshot():
    """Shape keys (names, values, positions), actions, curves and drivers of every mesh."""
    state = {"actions": sorted(a.name for a in bpy.data.actions),
             "materials": sorted(m.name for m in bpy.data.materials),
             "node_groups": sorted(g.name for g in bpy.data.node_groups)}
    for obj in bpy.data.objects:
        key = obj.data.shape_keys if obj.type == "MESH" else None
        if key is None:
            continue
        blocks = []
        for block in key.key_blocks:
            co = np.empty(len(block.data) * 3, np.float32)
            block.data.foreach_get("co", co)
            blocks.append((block.name, round(block.value, 6), co.tobytes()))
        curves = sorted(
            (path, _keyframes(c).round(6).tobytes(), c.keyframe_points[0].interpolation if len(c.keyframe_points) else "")
            for path, c in _curves(key).items()
        )
        drivers = sorted(d.data_path for d in key.animation_data.drivers) if key.animation_data else []
        action = key.animation_data.action.name if key.animation_data and key.animation_data.action else None
        state[obj.name] = (blocks, curves, drivers, action)
    return state


def _rigged_mesh(name="Rigged", with_uv_layout=False):
    """A grid with a user's shape keys in several ARKit spellings, plus non-ARKit keys."""
    obj = grid_mesh_object(name, n=5)
    obj.shape_key_add(name="Basis", from_mix=False)
    spellings = ["JawOpen", "mouthSmile_L", "MouthSmileRight", "eyeBlink.L", "EyeBlinkRight",
                 "mouth_funnel", "Smile", "Custom Brow"]
    for i, name in enumerate(spellings):
        block = obj.shape_key_add(name=name, from_mix=False)
        block.value = 0.0
        co = np.empty(len(block.data) * 3, np.float32)
        block.data.foreach_get("co", co)
        co[3 * i + 1] += 0.01  # each key moves one vertex
        block.data.foreach_set("co", co)
    return obj


EXPECTED = {"jawOpen": "JawOpen", "mouthSmileLeft": "mouthSmile_L", "mouthSmileRight": "MouthSmileRight",
            "eyeBlinkLeft": "eyeBlink.L", "eyeBlinkRight": "EyeBlinkRight", "mouthFunnel": "mouth_funnel"}


def test_template_head_in_arkit_mode_gets_52_keys_with_one_curve_each(tmp_path, one_second_speech):
    from textalker_blender.core.resample import output_frame_count
    from textalker_blender.core.template import load_template

    scene = registered_scene(24)
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "scene.blend"))
    bpy.ops.textalker.add_template_head()
    head = bpy.context.active_object
    add_speech(scene, one_second_speech, 5)
    before = _snapshot()
    settings = scene.textalker
    settings.steps = 1
    settings.output_mode = "ARKIT"
    settings.arkit_export_path = str(tmp_path / "weights.csv")

    assert bpy.ops.textalker.generate() == {"FINISHED"}

    n_frames = output_frame_count(1.0, 24.0)
    key = head.data.shape_keys
    assert [b.name for b in key.key_blocks] == ["Basis", *ARKIT_NAMES]
    assert writers.generated_key_names(head) == []  # no per-frame keys in this mode
    curves = _curves(key)
    assert set(curves) == {_path(n) for n in ARKIT_NAMES}
    frames = []
    for name in ARKIT_NAMES:
        points = _keyframes(curves[_path(name)])
        np.testing.assert_array_equal(points[:, 0], np.arange(5, 5 + n_frames))
        assert points[:, 1].min() >= 0.0 and points[:, 1].max() <= 1.0
        assert {p.interpolation for p in curves[_path(name)].keyframe_points} == {"LINEAR"}
        frames.append(points[:, 1])
    weights = np.stack(frames, axis=1)
    assert weights.max() > 0.0  # the untrained model still moves the face a little

    # Each key is the template's face unit; the curves reproduce the solved weights.
    template = load_template()
    basis = np.empty(template.n_vertices * 3, np.float32)
    key.key_blocks["Basis"].data.foreach_get("co", basis)
    jaw = np.empty_like(basis)
    key.key_blocks["jawOpen"].data.foreach_get("co", jaw)
    np.testing.assert_allclose((jaw - basis).reshape(-1, 3), template.unit_offsets[template.unit_index("jawOpen")], atol=1e-6)

    # The teeth follow the head's jawOpen curve through drivers (so editing it moves them too).
    teeth = api.template_parts(head)["teeth_lower"]
    teeth_key = teeth.data.shape_keys
    assert "jawOpen" in teeth_key.key_blocks
    jaw_column = ARKIT_NAMES.index("jawOpen")
    busiest = int(np.argmax(weights[:, jaw_column]))
    scene.frame_set(5 + busiest)
    assert teeth_key.key_blocks["jawOpen"].value == pytest.approx(weights[busiest, jaw_column], abs=1e-4)
    assert api.template_parts(head)["eye_left"].data.shape_keys is None

    # Wrinkles: same path as the per-frame mode.
    folder = writers.output_folder_of(head)
    assert len(list(folder.glob("wrinkle_*.exr"))) == n_frames
    assert writers.NODE_GROUP_NAME in bpy.data.node_groups

    # The export holds the same weights.
    track = read_csv(tmp_path / "weights.csv", fps=24)
    np.testing.assert_allclose(track.weights, weights, atol=1e-5)
    assert api.output_timing(head) == (5, 4 + n_frames, 24.0)

    # Re-run in per-frame mode replaces the ARKit output; removal restores the scene.
    settings.output_mode = "SHAPE_KEYS"
    assert bpy.ops.textalker.generate() == {"FINISHED"}
    assert "jawOpen" not in head.data.shape_keys.key_blocks
    assert len(writers.generated_key_names(head)) == n_frames
    settings.output_mode = "ARKIT"
    assert bpy.ops.textalker.generate() == {"FINISHED"}
    assert writers.generated_key_names(head) == []
    assert bpy.ops.textalker.remove_output() == {"FINISHED"}
    assert _snapshot() == before
    assert not folder.exists()


def test_user_arkit_keys_in_any_spelling_are_driven_and_others_untouched(tmp_path, one_second_speech):
    from textalker_blender.core.resample import output_frame_count

    scene = registered_scene(30)
    obj = _rigged_mesh()
    key = obj.data.shape_keys
    key.key_blocks["Smile"].value = 0.3  # a user's static value on a key TexTalker must not touch
    # The user's own animation: one of the matched keys and one unmatched key are keyed already.
    action = bpy.data.actions.new("UserFace")
    key.animation_data_create()
    key.animation_data.action = action
    for path, points in ((_path("JawOpen"), [(1, 0.2), (20, 0.9)]), (_path("Custom Brow"), [(1, 0.0), (10, 1.0)])):
        curve = compat.ensure_fcurve(action, key, path)
        for frame, value in points:
            curve.keyframe_points.insert(frame, value)
    key.key_blocks["EyeBlinkRight"].value = 0.7
    before = _snapshot()

    summary = api.generate(obj, one_second_speech, steps=1, output_mode="ARKIT",
                           arkit_export=str(tmp_path / "out" / "weights.json"))

    n_frames = output_frame_count(1.0, 30.0)
    assert summary.arkit_keys == EXPECTED
    assert [b.name for b in key.key_blocks] == [b[0] for b in before[obj.name][0]]  # no new keys
    assert "no wrinkle maps" in summary.note and summary.exr_files == 0
    curves = _curves(key)
    assert key.animation_data.action == action  # the user's action, extended
    for arkit, user_name in EXPECTED.items():
        points = _keyframes(curves[_path(user_name)])
        assert len(points) == n_frames
        np.testing.assert_array_equal(points[:, 0], np.arange(scene.frame_start, scene.frame_start + n_frames))
        assert points[:, 1].min() >= 0.0 and points[:, 1].max() <= 1.0
    # Unmatched keys: their curve and values are as they were.
    np.testing.assert_allclose(_keyframes(curves[_path("Custom Brow")]), [[1, 0.0], [10, 1.0]])
    assert _path("Smile") not in curves and key.key_blocks["Smile"].value == pytest.approx(0.3)

    track = read_json(tmp_path / "out" / "weights.json")
    assert track.fps == 30.0 and track.n_frames == n_frames
    jaw = _keyframes(curves[_path("JawOpen")])[:, 1]
    np.testing.assert_allclose(track.weights[:, ARKIT_NAMES.index("jawOpen")], jaw, atol=1e-5)

    # A re-run replaces only the add-on's curves; removal restores the user's animation.
    api.generate(obj, one_second_speech, steps=1, seed=4, output_mode="ARKIT")
    assert len(_keyframes(_curves(key)[_path("JawOpen")])) == n_frames
    counts = api.remove_output(obj)
    assert counts["arkit_curves"] == len(EXPECTED)
    assert _snapshot() == before
    assert not arkit_writer.has_arkit_output(obj)


def test_mesh_without_any_animation_gets_a_removable_action(one_second_speech):
    registered_scene(25)
    obj = _rigged_mesh("Plain")
    before = _snapshot()
    summary = api.generate(obj, one_second_speech, steps=1, output_mode="ARKIT")
    assert "drivers" not in summary.note and "6 of 52 ARKit units found" in summary.note
    action = obj.data.shape_keys.animation_data.action
    assert action is not None and action.get(writers.TAG)
    assert len(_curves(obj.data.shape_keys)) == len(EXPECTED)
    action_name = action.name
    api.remove_output(obj)
    assert _snapshot() == before and action_name not in bpy.data.actions


def test_arkit_mode_failures_leave_the_scene_unchanged(tmp_path, one_second_speech):
    registered_scene()
    ambiguous = _rigged_mesh("Ambiguous")
    ambiguous.shape_key_add(name="jaw_open", from_mix=False)
    no_keys = grid_mesh_object("NoKeys", n=6)
    rigged = _rigged_mesh("Rigged2")
    before = _snapshot()
    with pytest.raises(ArkitNameError, match="'JawOpen', 'jaw_open' both stand for 'jawOpen'"):
        api.generate(ambiguous, one_second_speech, output_mode="ARKIT")
    with pytest.raises(MeshError, match="no ARKit-named shape keys"):
        api.generate(no_keys, one_second_speech, output_mode="ARKIT")
    with pytest.raises(TexTalkerError, match=".csv or .json"):
        api.generate(rigged, one_second_speech, output_mode="ARKIT", arkit_export=str(tmp_path / "w.txt"))
    with pytest.raises(TexTalkerError, match="needs the output mode"):
        api.generate(rigged, one_second_speech, arkit_export=str(tmp_path / "w.csv"))
    with pytest.raises(TexTalkerError, match="Unknown output mode"):
        api.generate(rigged, one_second_speech, output_mode="BONES")
    # A failure while writing (the export cannot be written: its parent is a file) rolls back.
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(Exception):
        api.generate(rigged, one_second_speech, steps=1, output_mode="ARKIT",
                     arkit_export=str(blocker / "w.csv"))
    assert _snapshot() == before
    assert not arkit_writer.has_arkit_output(rigged)
    assert not (blocker / "w.csv").exists()


def test_cli_arkit_mode_writes_curves_and_csv(tmp_path, one_second_speech, capsys):
    registered_scene()
    obj = _rigged_mesh("CliRig")
    blend = tmp_path / "rig.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    assert obj.name == "CliRig"
    code = cli.main(["--blend", str(blend), "--object", "CliRig", "--audio", str(one_second_speech),
                     "--steps", "1", "--output-mode", "arkit", "--arkit-export", str(tmp_path / "w.csv")])
    assert code == 0
    out = capsys.readouterr().out
    printed = json.loads(out[out.index("{\n"):])  # Blender prints "Info: Saved ..." first
    assert printed["output_mode"] == "ARKIT" and printed["arkit_keys"] == len(EXPECTED)
    track = read_csv(tmp_path / "w.csv", fps=30)
    assert track.n_frames == printed["frames"]
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    reopened = bpy.data.objects["CliRig"]
    assert arkit_writer.has_arkit_output(reopened)
    assert _path("JawOpen") in _curves(reopened.data.shape_keys)


def test_panel_offers_the_output_mode_and_the_export_path_only_in_arkit_mode():
    from test_addon import _draw  # the recording layout that checks property names

    from textalker_blender.blender import panel

    scene = registered_scene()
    props = lambda: [entry[1] for entry in _draw(panel.TEXTALKER_PT_main, bpy.context) if entry[0] == "prop"]  # noqa: E731
    assert "output_mode" in props() and "arkit_export_path" not in props()
    scene.textalker.output_mode = "ARKIT"
    assert "arkit_export_path" in props()
    # A rigged mesh without UVs may use ARKit mode; the per-frame mode still asks for a UV map.
    obj = _rigged_mesh("NoUVRig")
    obj.data.uv_layers.remove(obj.data.uv_layers[0])
    bpy.context.view_layer.objects.active = obj
    assert "UV" not in (api.blocking_reason(bpy.context) or "")
    scene.textalker.output_mode = "SHAPE_KEYS"
    assert "no UV map" in api.blocking_reason(bpy.context)


def test_character_with_the_template_layout_gets_52_keys_in_its_own_frame(tmp_path, one_second_speech):
    """An MPFB-like character (other vertex order and count, decimetres, rotated) without ARKit
    keys: the 52 keys are created from the template's units carried into the mesh's frame."""
    import bmesh
    from mathutils import Matrix

    from textalker_blender.blender.operators import build_mesh
    from textalker_blender.core.template import load_template

    registered_scene()
    template = load_template()
    rotation = np.asarray(Matrix.Rotation(np.pi / 2, 3, "X"), dtype=np.float64)  # Z up -> Y up
    mesh = build_mesh("Character", 10.0 * template.vertices @ rotation.T, template.loop_vertex_indices,
                      template.polygon_sizes, template.loop_uvs)
    bm = bmesh.new()
    bm.from_mesh(mesh)
    bm.verts.ensure_lookup_table()
    bmesh.ops.delete(bm, geom=[bm.verts[i] for i in range(0, 300, 3)], context="VERTS")
    bm.to_mesh(mesh)
    bm.free()
    character = bpy.data.objects.new("Character", mesh)
    bpy.context.scene.collection.objects.link(character)

    summary = api.generate(character, one_second_speech, steps=1, output_mode="ARKIT",
                           output_folder=str(tmp_path))
    key = character.data.shape_keys
    assert [b.name for b in key.key_blocks] == ["Basis", *ARKIT_NAMES]
    assert summary.exr_files == summary.n_frames  # the layout is the template's: wrinkles too
    kept = np.empty(len(mesh.vertices) * 3, np.float32)
    key.key_blocks["Basis"].data.foreach_get("co", kept)
    kept = kept.reshape(-1, 3) @ rotation / 10.0  # back in the template frame
    source = np.delete(np.arange(template.n_vertices), np.arange(0, 300, 3))  # bmesh keeps the order
    np.testing.assert_allclose(kept, template.vertices[source], atol=1e-5)
    jaw = np.empty_like(kept.ravel())
    key.key_blocks["jawOpen"].data.foreach_get("co", jaw)
    jaw_offsets = (jaw.reshape(-1, 3) @ rotation / 10.0) - kept
    expected = template.unit_offsets[template.unit_index("jawOpen")][source]
    assert np.abs(expected).max() > 0.005  # the jaw really moves
    # Vertices that lost all their faces with the deleted ones have no UV: they stay still.
    used = np.zeros(len(mesh.vertices), bool)
    used[[loop.vertex_index for loop in mesh.loops]] = True
    assert used.sum() > 4000
    np.testing.assert_allclose(jaw_offsets[used], expected[used], atol=2e-4)
    assert np.abs(jaw_offsets[~used]).max(initial=0.0) == 0.0
    assert len(_keyframes(_curves(key)[_path("jawOpen")])) == summary.n_frames
    api.remove_output(character)
    assert character.data.shape_keys is None


def test_keys_with_drivers_are_named_in_the_note(one_second_speech):
    registered_scene()
    obj = _rigged_mesh("DrivenRig")
    driver = obj.data.shape_keys.driver_add(_path("JawOpen")).driver
    driver.expression = "0.5"
    summary = api.generate(obj, one_second_speech, steps=1, output_mode="ARKIT")
    assert "1 keys have drivers, which override their curves (JawOpen)" in summary.note
    api.remove_output(obj)
    assert [d.data_path for d in obj.data.shape_keys.animation_data.drivers] == [_path("JawOpen")]

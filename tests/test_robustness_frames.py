"""Robustness, round 2 (issue #17): the face moves in the mesh's own frame, whatever the artist
applied to it (Object > Apply > Rotation & Scale, mirroring), in both output modes, for the head
and for the mouth parts parented to it.

The reference is a generation on the untransformed template head; the same generation (same
audio, seed and steps: deterministic) on a head whose vertices were transformed by M must move
every vertex by M times the reference motion, in world space.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from robustness_support import (
    needs_assets,
    snapshot,
    template_head,
)

bpy = pytest.importorskip("bpy")

from textalker_blender.blender import api, writers  # noqa: E402
from textalker_blender.core import mesh_match  # noqa: E402
from textalker_blender.core.errors import MeshError  # noqa: E402

pytestmark = [pytest.mark.blender, needs_assets]

# Rotation (XYZ Euler, degrees) and scale set on the head before Apply > Rotation & Scale.
TRANSFORMS = {
    "rotated": ((30.0, -50.0, 80.0), (1.0, 1.0, 1.0)),
    "non_uniform_scale": ((0.0, 0.0, 35.0), (1.0, 2.5, 0.5)),
    "mirrored": ((0.0, 0.0, 0.0), (-1.0, 1.0, 1.0)),
    "decimetres_and_z_forward": ((90.0, 0.0, 180.0), (10.0, 10.0, 10.0)),
}


def _matrix(rotation_deg, scale) -> np.ndarray:
    from mathutils import Euler, Matrix

    rotation = Euler([math.radians(a) for a in rotation_deg], "XYZ").to_matrix()
    return np.array(rotation @ Matrix.Diagonal(scale))


def _world_motion(obj, frame: int) -> np.ndarray:
    """World-space displacement of every vertex at `frame`: the evaluated mesh (keys, curves)
    minus its rest vertices (the mesh's own, which shape keys do not change)."""
    world = np.array(obj.matrix_world)

    def to_world(vertices) -> np.ndarray:
        co = np.empty(len(vertices) * 3, np.float32)
        vertices.foreach_get("co", co)
        return co.reshape(-1, 3) @ world[:3, :3].T + world[:3, 3]

    rest = to_world(obj.data.vertices)
    bpy.context.scene.frame_set(frame)
    evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    moved = to_world(evaluated.to_mesh().vertices)
    evaluated.to_mesh_clear()
    return moved - rest


def _apply(objects, rotation_deg, scale) -> None:
    for obj in bpy.context.view_layer.objects:
        obj.select_set(False)
    head = objects[0]
    head.rotation_euler = [math.radians(a) for a in rotation_deg]
    head.scale = scale
    for obj in objects:
        obj.select_set(True)
    bpy.context.view_layer.objects.active = head
    assert bpy.ops.object.transform_apply(location=False, rotation=True, scale=True) == {"FINISHED"}
    assert np.allclose(np.array(head.matrix_world), np.eye(4), atol=1e-6)


def _reference(speech_file, output_mode):
    head = template_head()
    summary = api.generate(head, str(speech_file), steps=1, seed=3, output_mode=output_mode)
    frame = summary.frame_start + summary.n_frames // 2
    parts = api.template_parts(head)
    motion = {"head": _world_motion(head, frame)}
    motion.update({name: _world_motion(part, frame) for name, part in parts.items() if name in ("teeth_lower", "tongue")})
    api.remove_output(head)
    for obj in [head, *parts.values()]:
        bpy.data.objects.remove(obj)
    return frame, motion


@pytest.mark.parametrize("output_mode", ["SHAPE_KEYS", "ARKIT"])
@pytest.mark.parametrize("with_parts", [False, True], ids=["head_only", "head_and_parts"])
def test_applied_rotation_scale_and_mirroring_keep_the_motion_in_the_meshs_frame(
    tmp_path, saved_scene, speech_file, output_mode, with_parts
):
    frame, reference = _reference(speech_file, output_mode)
    assert np.abs(reference["head"]).max() > 1e-4  # the reference moves
    for name, (rotation_deg, scale) in TRANSFORMS.items():
        head = template_head()
        parts = api.template_parts(head)
        _apply([head, *parts.values()] if with_parts else [head], rotation_deg, scale)
        api.generate(head, str(speech_file), steps=1, seed=3, output_mode=output_mode)
        matrix = _matrix(rotation_deg, scale)
        for part_name, expected in reference.items():
            obj = head if part_name == "head" else parts[part_name]
            motion = _world_motion(obj, frame)
            wanted = expected @ matrix.T
            error = np.abs(motion - wanted).max()
            size = np.abs(wanted).max()
            assert error <= 0.01 * size + 1e-6, (
                f"{name}: {part_name} moved {error:.2e} away from the transformed reference ({size:.2e})"
            )
        api.remove_output(head)
        for obj in [head, *parts.values()]:
            bpy.data.objects.remove(obj)


def test_template_frame_is_recovered_for_rotation_non_uniform_scale_and_mirroring():
    from textalker_blender.core.template import load_template

    template = load_template()
    rng = np.random.default_rng(0)
    for rotation_deg, scale in TRANSFORMS.values():
        matrix = _matrix(rotation_deg, scale)
        moved = template.vertices @ matrix.T + [0.1, -0.2, 0.3]
        np.testing.assert_allclose(mesh_match.template_mesh_frame(template.vertices, moved), matrix, atol=1e-5)
    assert mesh_match.template_mesh_frame(template.vertices, template.vertices.copy()) is None
    offsets = rng.normal(0, 0.003, (2, 5, 3)).astype(np.float32)
    mirror = np.diag([-1.0, 1.0, 1.0])
    np.testing.assert_allclose(mesh_match.offsets_to_mesh_frame(offsets, mirror), offsets * [-1, 1, 1], atol=1e-7)


def test_head_squashed_flat_is_refused_with_a_clear_message(tmp_path, saved_scene, speech_file):
    head = template_head()
    _apply([head], (0.0, 0.0, 0.0), (1.0, 0.0, 1.0))
    before = snapshot()
    with pytest.raises(MeshError, match="squashed flat"):
        api.generate(head, str(speech_file), steps=1)
    assert snapshot() == before


# --------------------------------------------------------------------------------------------
# More of what artists do (found while working on issue #17)


def test_render_uv_map_of_another_layout_falls_back_to_the_template_uv_map(tmp_path, saved_scene, speech_file):
    """A second UV map (a lightmap) set as the render one: the mesh is driven through the UV map
    that has the template layout, and the wrinkle material reads that one."""
    head = template_head()
    lightmap = head.data.uv_layers.new(name="Lightmap")
    lightmap.data.foreach_set("uv", np.random.default_rng(0).uniform(0, 1, len(head.data.loops) * 2).astype(np.float32))
    lightmap.active_render = True
    summary = api.generate(head, str(speech_file), steps=1)
    assert summary.n_frames > 0
    uv_nodes = [node for group in bpy.data.node_groups if group.get(writers.TAG)
                for node in group.nodes if node.bl_idname == "ShaderNodeUVMap"]
    assert uv_nodes and {node.uv_map for node in uv_nodes} == {"UVMap"}
    assert head.data.uv_layers["Lightmap"].active_render  # the user's choice is not changed


def test_only_a_foreign_uv_layout_is_still_refused(tmp_path, saved_scene, speech_file):
    head = template_head()
    for layer in head.data.uv_layers:
        layer.data.foreach_set("uv", np.random.default_rng(1).uniform(0, 1, len(head.data.loops) * 2).astype(np.float32))
    head.data.uv_layers.new(name="Second").active_render = True
    before = snapshot()
    with pytest.raises(MeshError, match="UV layout does not match"):
        api.generate(head, str(speech_file), steps=1)
    assert snapshot() == before


def test_relative_paths_in_an_unsaved_file_say_what_to_do(tmp_path, speech_file):
    from robustness_support import registered_scene

    from textalker_blender.core.errors import TexTalkerError

    registered_scene()
    head = template_head()
    assert not bpy.data.filepath
    before = snapshot()
    with pytest.raises(TexTalkerError, match="relative to the .blend file, which is not saved yet"):
        api.generate(head, "//speech.wav", steps=1)
    with pytest.raises(TexTalkerError, match="output folder //maps is relative to the .blend file"):
        api.generate(head, str(speech_file), steps=1, output_folder="//maps")
    assert snapshot() == before
    scene = bpy.context.scene
    strip = scene.sequence_editor_create().strips.new_sound("voice", str(speech_file), 1, 1)
    strip.sound.filepath = "//speech.wav"
    with pytest.raises(TexTalkerError, match="strip 'voice' has a path relative to the .blend file"):
        api.generate(head, strip, steps=1)
    scene.sequence_editor.strips.remove(strip)


def test_relative_output_folder_is_made_absolute(tmp_path, saved_scene, speech_file, monkeypatch):
    """A batch job's relative --output-folder is the working directory's, made absolute, so the
    .blend finds its maps from any other directory (a render node)."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    head = template_head()
    summary = api.generate(head, str(speech_file), steps=1, output_folder="maps")
    assert summary.sequence_folder.is_absolute() and summary.sequence_folder.is_relative_to(work / "maps")
    monkeypatch.chdir(tmp_path)
    image = next(i for i in bpy.data.images if i.get(writers.TAG))
    assert Path(bpy.path.abspath(image.filepath)).parent == summary.sequence_folder


def test_linked_duplicate_of_an_animated_head_is_refused_until_its_output_is_removed(tmp_path, saved_scene,
                                                                                      speech_file):
    """Alt+D shares the mesh: a second run on the twin used to wipe the head's keys and leave its
    material and EXR record behind."""
    head = template_head()
    first = api.generate(head, str(speech_file), steps=1)
    twin = head.copy()
    saved_scene.collection.objects.link(twin)
    before = snapshot()
    with pytest.raises(MeshError, match="shares its mesh with 'TexTalker Head'"):
        api.generate(twin, str(speech_file), steps=1)
    assert snapshot() == before
    assert first.sequence_folder.is_dir() and api.has_output(head)
    api.remove_output(head)
    assert api.generate(twin, str(speech_file), steps=1).n_frames == first.n_frames


def test_target_renamed_while_the_model_runs_still_gets_the_animation(tmp_path, saved_scene, speech_file):
    """The modal operator keeps the UI live: renaming the head meanwhile used to read as its
    deletion at apply ('was deleted during generation') and threw the run away."""
    head = template_head()
    request = api.prepare(head, str(speech_file), steps=1)
    head.name = "Renamed while generating"
    summary = api.run(request)
    assert summary.object_name == "Renamed while generating"
    assert writers.generated_key_names(head)
    request = api.prepare(head, str(speech_file), steps=1)
    bpy.data.objects.remove(head)  # a real deletion is still refused, by id, not by name
    template_head().name = "Renamed while generating"
    with pytest.raises(MeshError, match="was deleted during generation"):
        api.run(request)


@pytest.mark.filterwarnings("ignore:TexTalkerSettings.audio_file:RuntimeWarning")  # Blender stores it anyway
def test_panel_says_to_save_first_for_a_relative_audio_path(tmp_path, speech_file):
    from robustness_support import registered_scene

    scene = registered_scene()
    head = template_head()
    settings = scene.textalker
    settings.audio_source, settings.audio_file, settings.target = "FILE", "//speech.wav", head
    assert api.blocking_reason(bpy.context) == "Save the .blend first: the audio path is relative to it"


def test_folder_of_an_undone_run_is_deleted_by_the_next_generation_unless_a_saved_file_uses_it(
    tmp_path, saved_scene, speech_file
):
    """Ctrl+Z after Generate removes the keys and the material, not the EXR folder; once a new
    generation succeeds the undone run can never come back (the redo history is gone), so its
    folder is deleted then. A folder a saved .blend used is kept (that file still needs it)."""
    head_name = template_head().name
    bpy.ops.ed.undo_push(message="before the first run")
    undone = api.generate(bpy.data.objects[head_name], str(speech_file), steps=1)
    bpy.ops.ed.undo_push(message="first run")
    assert bpy.ops.ed.undo() == {"FINISHED"}  # what Ctrl+Z does
    assert not writers.generated_key_names(bpy.data.objects[head_name]) and undone.sequence_folder.is_dir()
    second = api.generate(bpy.data.objects[head_name], str(speech_file), steps=1)
    assert not undone.sequence_folder.exists() and second.sequence_folder.is_dir()

    api.remove_output(bpy.data.objects[head_name])
    bpy.ops.ed.undo_push(message="before the saved run")
    saved = api.generate(bpy.data.objects[head_name], str(speech_file), steps=1)
    bpy.ops.wm.save_mainfile()  # the file on disk uses this run's folder
    bpy.ops.ed.undo_push(message="saved run")
    assert bpy.ops.ed.undo() == {"FINISHED"}
    api.generate(bpy.data.objects[head_name], str(speech_file), steps=1)
    assert saved.sequence_folder.is_dir()  # head.blend on disk still needs it

"""Robustness, part 2: bad targets (issue #8), in real Blender scenes (bpy module).

No object, a non-mesh, a mesh without UVs or with another UV layout, modifiers, the user's own
shape keys and animation, linked and overridden library data, Edit Mode, a target deleted or
changed while the model runs. Each is refused with a clear message and an unchanged scene, or
handled correctly (the user's data survives the generation and its removal).
"""

from __future__ import annotations

import numpy as np
import pytest
from robustness_support import (
    files_under,
    needs_assets,
    registered_scene,
    snapshot,
    template_head,
)

bpy = pytest.importorskip("bpy")

from blender_support import grid_mesh_object  # noqa: E402

from textalker_blender.blender import api, writers  # noqa: E402
from textalker_blender.core.errors import MeshError, TexTalkerError  # noqa: E402

pytestmark = [pytest.mark.blender, needs_assets]


def _refused(tmp_path, target, speech_file, match, **options):
    """`generate` raises a MeshError matching `match`, changes nothing, writes nothing."""
    before = snapshot()
    with pytest.raises(TexTalkerError, match=match) as raised:
        api.generate(target, str(speech_file), steps=1, **options)
    assert snapshot() == before
    assert files_under(tmp_path / "textalker") == []
    return raised.value


def test_no_target_object(tmp_path, saved_scene, speech_file):
    error = _refused(tmp_path, None, speech_file, "No target object")
    assert isinstance(error, MeshError)
    for obj in list(bpy.context.view_layer.objects):
        obj.select_set(False)
    bpy.context.view_layer.objects.active = None
    assert api.blocking_reason(bpy.context) == "Select a mesh (or set a target)"


@pytest.mark.parametrize("kind", ["EMPTY", "CAMERA", "CURVE", "ARMATURE"])
def test_non_mesh_target(tmp_path, saved_scene, speech_file, kind):
    data = {
        "EMPTY": None,
        "CAMERA": lambda: bpy.data.cameras.new("Cam"),
        "CURVE": lambda: bpy.data.curves.new("Curve", "CURVE"),
        "ARMATURE": lambda: bpy.data.armatures.new("Rig"),
    }[kind]
    obj = bpy.data.objects.new(f"Not a mesh ({kind})", data() if data else None)
    saved_scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    _refused(tmp_path, obj, speech_file, "is not a mesh")
    assert api.blocking_reason(bpy.context) == f"'{obj.name}' is not a mesh"


def test_mesh_without_uvs(tmp_path, saved_scene, speech_file):
    head = template_head()
    head.data.uv_layers.remove(head.data.uv_layers[0])
    _refused(tmp_path, head, speech_file, "has no UV map")
    assert api.blocking_reason(bpy.context) == f"'{head.name}' has no UV map"


def test_mesh_with_another_uv_layout(tmp_path, saved_scene, speech_file):
    grid = grid_mesh_object("Plane with its own UVs", n=8)
    _refused(tmp_path, grid, speech_file, "UV layout does not match the MakeHuman template")
    head = template_head()
    uvs = np.empty(len(head.data.loops) * 2, np.float32)
    head.data.uv_layers[0].data.foreach_get("uv", uvs)
    head.data.uv_layers[0].data.foreach_set("uv", 1.0 - uvs)  # same mesh, scrambled UV layout
    _refused(tmp_path, head, speech_file, "UV layout")


def test_mesh_in_edit_mode(tmp_path, saved_scene, speech_file):
    head = template_head()
    bpy.ops.object.mode_set(mode="EDIT")
    try:
        _refused(tmp_path, head, speech_file, "Edit Mode")
        assert api.blocking_reason(bpy.context) == "Switch to Object Mode"
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")


def test_mesh_with_modifiers_is_animated_and_keeps_its_modifiers(tmp_path, saved_scene, speech_file):
    head = template_head()
    subdivision = head.modifiers.new("Smooth", "SUBSURF")
    subdivision.levels = 1
    head.modifiers.new("Thicken", "DISPLACE").strength = 0.001
    before = snapshot()
    summary = api.generate(head, str(speech_file), steps=1)
    assert [m.name for m in head.modifiers] == ["Smooth", "Thicken"]
    assert head.modifiers["Smooth"].levels == 1
    # The keys act below the modifiers: the evaluated (subdivided) mesh follows the animation.
    depsgraph = bpy.context.evaluated_depsgraph_get()
    saved_scene.frame_set(summary.frame_start)
    first = np.array([v.co[:] for v in head.evaluated_get(depsgraph).to_mesh().vertices])
    head.evaluated_get(depsgraph).to_mesh_clear()
    moved = False
    for frame in range(summary.frame_start + 1, summary.frame_end + 1):
        saved_scene.frame_set(frame)
        depsgraph = bpy.context.evaluated_depsgraph_get()
        evaluated = head.evaluated_get(depsgraph)
        now = np.array([v.co[:] for v in evaluated.to_mesh().vertices])
        evaluated.to_mesh_clear()
        assert now.shape == first.shape and now.shape[0] > len(head.data.vertices)  # still subdivided
        moved |= bool(np.abs(now - first).max() > 1e-6)
    assert moved
    api.remove_output(head)
    assert snapshot() == before


def test_users_shape_keys_and_animation_survive_generation_and_removal(tmp_path, saved_scene, speech_file):
    head = template_head()
    head.shape_key_add(name="Basis", from_mix=False)
    smile = head.shape_key_add(name="Smile", from_mix=False)
    co = np.empty(len(smile.data) * 3, np.float32)
    smile.data.foreach_get("co", co)
    smile.data.foreach_set("co", co + 0.002)
    smile.value = 0.3
    smile.keyframe_insert("value", frame=1)
    smile.value = 0.9
    smile.keyframe_insert("value", frame=20)
    head.keyframe_insert("location", frame=1)  # object-level animation too
    head.location.x = 0.5
    head.keyframe_insert("location", frame=20)
    before = snapshot()
    user_action = head.data.shape_keys.animation_data.action.name

    summary = api.generate(head, str(speech_file), steps=1)
    blocks = head.data.shape_keys.key_blocks
    assert "Smile" in blocks and blocks[0].name == "Basis"
    assert len(writers.generated_key_names(head)) == summary.n_frames
    assert head.data.shape_keys.animation_data.action.name == user_action  # the user's action kept
    saved_scene.frame_set(20)
    assert blocks["Smile"].value == pytest.approx(0.9)
    assert head.location.x == pytest.approx(0.5)

    api.remove_output(head)
    assert snapshot() == before


def _library_with_head(tmp_path) -> str:
    """A saved .blend holding the template head, to link from."""
    registered_scene()
    template_head()
    path = tmp_path / "library.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    return str(path)


def _link_head(library_path: str, scene):
    with bpy.data.libraries.load(library_path, link=True) as (source, linked):
        linked.objects = ["TexTalker Head"]
    head = linked.objects[0]
    scene.collection.objects.link(head)
    return head


def test_linked_library_object_is_refused(tmp_path, speech_file):
    library_path = _library_with_head(tmp_path)
    scene = registered_scene()
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "shot.blend"))
    head = _link_head(library_path, scene)
    assert head.library is not None
    error = _refused(tmp_path, head, speech_file, "linked from the library")
    assert "Make Local" in str(error)
    scene.textalker.target = head
    assert api.blocking_reason(bpy.context) == "'TexTalker Head' is linked from a library: make it local"


def test_library_override_with_linked_mesh_is_refused(tmp_path, speech_file):
    library_path = _library_with_head(tmp_path)
    scene = registered_scene()
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "shot.blend"))
    linked = _link_head(library_path, scene)
    override = linked.override_create(remap_local_usages=True)
    assert override.library is None and override.data.library is not None
    _refused(tmp_path, override, speech_file, "mesh 'TexTalker Head' is linked")


def test_made_local_library_object_generates(tmp_path, speech_file):
    library_path = _library_with_head(tmp_path)
    scene = registered_scene()
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "shot.blend"))
    head = _link_head(library_path, scene)
    head = head.make_local()
    head.data = head.data.make_local()
    summary = api.generate(head, str(speech_file), steps=1)
    assert summary.n_frames == 15


def test_target_deleted_or_changed_during_generation(tmp_path, saved_scene, speech_file):
    head = template_head()
    request = api.prepare(head, str(speech_file), steps=1)
    animation = api.compute(request)

    # The user edits the mesh while the model runs: the result no longer fits.
    import bmesh

    mesh = head.data
    editor = bmesh.new()
    editor.from_mesh(mesh)
    editor.verts.ensure_lookup_table()
    bmesh.ops.delete(editor, geom=[editor.verts[0]], context="VERTS")
    editor.to_mesh(mesh)
    editor.free()
    before = snapshot()
    with pytest.raises(MeshError, match="changed during generation"):
        api.apply(request, animation)
    assert snapshot() == before

    bpy.data.objects.remove(head)
    before = snapshot()
    with pytest.raises(MeshError, match="deleted during generation"):
        api.apply(request, animation)
    assert snapshot() == before
    assert files_under(tmp_path / "textalker") == []

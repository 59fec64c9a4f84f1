"""Smoke generation on any supported Blender (4.2 LTS to 5.3), the way an artist works: Add
Template Head, an audio file (works on every build, also the bpy 4.2 module that cannot load
sounds), Generate, then Remove. Checks the shape keys and their keyframes, the EXR sequence and
the wrinkle material.

The full suite runs it on the pinned Blender; `tools/compat_matrix.py --smoke` (called by the
README's test command, so by CI) runs it on the oldest and the newest supported Blender."""

from __future__ import annotations

import numpy as np
import pytest

from blender_support import (
    bpy,
    registered_scene,
)
from robustness_support import needs_assets
from textalker_blender.blender import api, writers

pytestmark = [pytest.mark.blender, needs_assets]


def _base_color_source(material):
    """The node feeding the Base Color of the material's Principled BSDF."""
    bsdf = next(n for n in material.node_tree.nodes if n.bl_idname == "ShaderNodeBsdfPrincipled")
    links = bsdf.inputs["Base Color"].links
    return links[0].from_node if links else None


def test_add_head_generate_from_a_file_and_remove(tmp_path, one_second_speech):
    from textalker_blender.core.resample import output_frame_count

    scene = registered_scene(24)
    scene.frame_start = 5
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "smoke.blend"))  # EXRs go beside it
    print(f"Blender {bpy.app.version_string}")

    assert bpy.ops.textalker.add_template_head() == {"FINISHED"}
    head = bpy.context.active_object
    skin = head.data.materials[0]
    assert _base_color_source(skin).name == "Neutral Albedo"  # the material has its node tree
    settings = scene.textalker
    settings.audio_source = "FILE"
    settings.audio_file = str(one_second_speech)
    settings.target = head
    settings.steps = 1
    assert api.blocking_reason(bpy.context) is None

    assert bpy.ops.textalker.generate() == {"FINISHED"}, bpy.context.window_manager.textalker_job.last_message

    # One shape key per frame, keyed 1 on its own frame only (a file's keys start on frame_start).
    n_frames = output_frame_count(1.0, 24.0)
    names = writers.generated_key_names(head)
    assert len(names) == n_frames
    blocks = head.data.shape_keys.key_blocks
    for index in (0, 3, n_frames - 1):
        scene.frame_set(5 + index)
        values = np.array([blocks[name].value for name in names])
        assert values[index] == pytest.approx(1.0) and np.abs(np.delete(values, index)).max() == 0.0
    moved = np.empty(3 * len(head.data.vertices), np.float32)
    basis = np.empty_like(moved)
    blocks[names[n_frames // 2]].data.foreach_get("co", moved)
    blocks["Basis"].data.foreach_get("co", basis)
    assert 0.0 < np.abs(moved - basis).max() < 0.05  # metres: the face moves, and stays a face

    # The EXR sequence, beside the .blend, one half-float file per frame that Blender reads back.
    folder = writers.output_folder_of(head)
    files = sorted(folder.glob("wrinkle_*.exr"))
    assert len(files) == n_frames and folder.is_relative_to(tmp_path / "textalker")
    frame = bpy.data.images.load(str(files[0]), check_existing=False)
    assert frame.file_format == "OPEN_EXR" and frame.is_float and min(frame.size) >= 32
    bpy.data.images.remove(frame)

    # The material: albedo -> "TexTalker Wrinkles" group -> Base Color, reading the sequence.
    group_node = _base_color_source(skin)
    assert group_node.bl_idname == "ShaderNodeGroup" and group_node.node_tree.name == writers.NODE_GROUP_NAME
    assert group_node.inputs["Albedo"].links[0].from_node.name == "Neutral Albedo"
    texture = group_node.node_tree.nodes["TexTalker Wrinkle Sequence"]
    assert texture.image.source == "SEQUENCE" and texture.image.filepath.startswith("//textalker/")
    assert (texture.image_user.frame_start, texture.image_user.frame_duration) == (5, n_frames)

    # Remove: keys, action, files and the group go; the albedo feeds Base Color again.
    assert bpy.ops.textalker.remove_output() == {"FINISHED"}
    assert writers.generated_key_names(head) == [] and head.data.shape_keys is None
    assert not any(a.get(writers.TAG) for a in bpy.data.actions)
    assert _base_color_source(skin).name == "Neutral Albedo"
    assert writers.NODE_GROUP_NAME not in bpy.data.node_groups
    assert not folder.exists()


def test_process_exits_cleanly_while_the_addon_is_registered(tmp_path, one_second_speech):
    """A script that registers the add-on, generates and never unregisters must still exit with
    status 0 (the bpy 4.2 module segfaulted and 4.5 deadlocked at exit with the add-on still
    registered; 4.5 only after a generation. The add-on now unregisters itself as Python shuts
    down: tests/test_compat_smoke.py runs this on the oldest and the newest Blender in CI)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo_root = Path(__file__).resolve().parents[1]
    script = (
        "import sys, bpy, textalker_blender as addon\n"
        "from textalker_blender.blender import api\n"
        "addon.register()\n"
        "bpy.ops.wm.read_factory_settings(use_empty=True)\n"
        "assert bpy.ops.textalker.add_template_head() == {'FINISHED'}\n"
        "summary = api.generate(bpy.context.active_object, sys.argv[1], steps=1, output_folder=sys.argv[2])\n"
        "print('generated', summary.n_frames, 'frames')\n"
    )
    environment = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "user"), PYTHONPATH=str(repo_root))
    try:
        result = subprocess.run([sys.executable, "-c", script, str(one_second_speech), str(tmp_path)],
                                capture_output=True, text=True, timeout=300, env=environment, cwd=tmp_path)
    except subprocess.TimeoutExpired as error:
        raise AssertionError(f"the process did not exit within 300 s (a hang at exit?):\n{error.stdout}") from None
    assert "generated 24 frames" in result.stdout, result.stdout + result.stderr  # factory scene: 24 fps
    assert result.returncode == 0, f"exit status {result.returncode}:\n{result.stderr[-3000:]}"

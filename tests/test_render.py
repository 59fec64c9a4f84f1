"""A real Cycles render proves that the wrinkle sequence reaches the image, frame by frame."""

from __future__ import annotations

import math

import numpy as np
import pytest

from blender_support import bpy, fresh_scene, grid_mesh_object
from textalker_blender.blender import compat, writers

pytestmark = pytest.mark.blender


def _render(scene, frame, path):
    scene.frame_set(frame)
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    image = bpy.data.images.load(str(path))
    pixels = np.array(image.pixels[:], dtype=np.float32).reshape(image.size[1], image.size[0], 4)
    bpy.data.images.remove(image)
    return pixels[..., :3].mean(axis=-1)  # bottom row first, as Blender stores it


def test_wrinkle_sequence_changes_rendered_brightness_inside_uv_region_only(tmp_path):
    scene = fresh_scene()
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 4
    scene.cycles.use_denoising = False
    scene.render.resolution_x = scene.render.resolution_y = 32
    scene.render.image_settings.file_format = "PNG"
    scene.view_settings.view_transform = "Standard"
    world = compat.new_world("World")
    background = next(n for n in world.node_tree.nodes if n.bl_idname == "ShaderNodeBackground")
    background.inputs["Color"].default_value = (1.0, 1.0, 1.0, 1.0)
    scene.world = world

    plane = grid_mesh_object("Plane", n=2)  # x, z in [0, 1], facing -Y
    material = compat.new_material("Grey")
    bsdf = next(n for n in material.node_tree.nodes if n.bl_idname == "ShaderNodeBsdfPrincipled")
    bsdf.inputs["Base Color"].default_value = (0.8, 0.8, 0.8, 1.0)
    bsdf.inputs["Roughness"].default_value = 1.0
    plane.data.materials.append(material)
    camera_data = bpy.data.cameras.new("Camera")
    camera_data.type = "ORTHO"
    camera_data.ortho_scale = 1.0
    camera = bpy.data.objects.new("Camera", camera_data)
    camera.location = (0.5, -3.0, 0.5)
    camera.rotation_euler = (math.pi / 2, 0.0, 0.0)
    scene.collection.objects.link(camera)
    scene.camera = camera

    # Frame 1 darkens to half, frame 2 is neutral; the maps cover the left half of the UV square.
    maps = np.ones((2, 8, 8, 3), np.float32)
    maps[0] = 0.5
    writers.write_exr_sequence(maps, tmp_path / "seq")
    writers.ensure_wrinkle_material(
        plane, tmp_path / "seq", n_frames=2, frame_start=1, uv_region=(0.0, 0.0, 0.5, 1.0)
    )

    dark = _render(scene, 1, tmp_path / "f1.png")
    neutral = _render(scene, 2, tmp_path / "f2.png")
    left, right = slice(2, 14), slice(18, 30)  # columns, away from the region border
    rows = slice(2, 30)
    assert neutral[rows, left].mean() > 0.3  # lit, not black
    ratio_left = dark[rows, left].mean() / neutral[rows, left].mean()
    ratio_right = dark[rows, right].mean() / neutral[rows, right].mean()
    # Ratio 0.5 halves the linear radiance: about 0.5 ** (1 / 2.4) = 0.75 after the sRGB encoding.
    assert 0.65 < ratio_left < 0.82, ratio_left
    assert ratio_right == pytest.approx(1.0, abs=0.03)  # outside the UV region: albedo unchanged

"""Helpers for the tests that run real Blender (bpy as a Python module).

Importing this module sets BLENDER_USER_RESOURCES to a temporary folder before bpy is imported,
so nothing is written under the home directory.
"""

from __future__ import annotations

import os
import tempfile
from types import SimpleNamespace

os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="textalker-bres-"))

import bpy  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


from textalker_blender.blender import compat  # noqa: E402

# The bpy 4.2 module from PyPI is built without Audaspace: no sound strips (full Blender has them).
SOUND_SUPPORT = compat.has_sound_support()
needs_sound = pytest.mark.skipif(
    not SOUND_SUPPORT, reason="this Blender build cannot load sounds (bpy 4.2 module: no Audaspace)"
)


def add_speech(scene, audio_path, frame_start: int, name: str = "voice"):
    """The speech as the add-on's input, starting on `frame_start`: a sound strip there, or, where
    this Blender cannot load sounds, the panel's file field with the scene starting on that frame
    (a file's keys start on the scene's first frame). Returns the strip, or None."""
    if SOUND_SUPPORT:
        return compat.new_sound_strip(scene, name, str(audio_path), 1, frame_start)
    scene.frame_start = frame_start
    if hasattr(scene, "textalker"):
        scene.textalker.audio_source = "FILE"
        scene.textalker.audio_file = str(audio_path)
    return None


def action_curve_paths(action) -> set[str]:
    """Data paths of every F-curve of an action (slotted from Blender 4.4, flat before)."""
    return {curve.data_path for _, curve in compat.action_curves(action)}


def fresh_scene(fps: int = 30, fps_base: float = 1.0) -> bpy.types.Scene:
    """Empty factory scene with the given frame rate."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.fps = fps
    scene.render.fps_base = fps_base
    return scene


def grid_mesh_object(name: str = "Grid", n: int = 4, uv_region=(0.0, 0.0, 1.0, 1.0)):
    """An n x n vertex grid in the XZ plane with a UV map spanning `uv_region`, linked to the scene."""
    u0, v0, u1, v1 = uv_region
    xs = np.linspace(0.0, 1.0, n)
    vertices = [(x, 0.0, z) for z in xs for x in xs]
    faces = [
        (r * n + c, r * n + c + 1, (r + 1) * n + c + 1, (r + 1) * n + c)
        for r in range(n - 1)
        for c in range(n - 1)
    ]
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(vertices, [], faces)
    layer = mesh.uv_layers.new(name="UVMap")
    for loop in mesh.loops:
        x, _, z = mesh.vertices[loop.vertex_index].co
        layer.data[loop.index].uv = (u0 + x * (u1 - u0), v0 + z * (v1 - v0))
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    return obj


def key_values(obj, names):
    blocks = obj.data.shape_keys.key_blocks
    return np.array([blocks[n].value for n in names])


def registered_scene(fps: int = 30, fps_base: float = 1.0) -> bpy.types.Scene:
    """A fresh scene with the add-on registered (registered once per process)."""
    from textalker_blender import blender as addon

    scene = fresh_scene(fps, fps_base)
    if not hasattr(bpy.types.Scene, "textalker"):
        addon.register()
    return scene


def unregister_addon() -> None:
    from textalker_blender import blender as addon

    if hasattr(bpy.types.Scene, "textalker"):
        addon.unregister()


def write_one_second_of_sample_speech(folder):
    """One second of the bundled sample voice (from 0.3 s, inside speech) as a WAV in `folder`."""
    import soundfile

    from textalker_blender.blender import catalog

    samples, rate = soundfile.read(str(catalog.SAMPLE_SPEECH_PATH), dtype="float32")
    path = folder / "one_second.wav"
    soundfile.write(str(path), samples[int(0.3 * rate): int(1.3 * rate)], rate)
    return path


# --------------------------------------------------------------------------------------------
# Stand-ins shared by the add-on test modules (their fixtures live in conftest.py).


class ModalOperatorStandIn(SimpleNamespace):
    """What TEXTALKER_OT_generate's modal()/cancel() use on `self`, so a test can drive them by
    hand with a running job (bpy-module mode has no event loop to call them)."""

    def __init__(self, job):
        super().__init__(_job=job, _timer=None, reports=[])

    def report(self, kind, message):
        self.reports.append((kind, message))

    def _finish(self, context, message):
        from textalker_blender.blender.operators import TEXTALKER_OT_generate

        TEXTALKER_OT_generate._finish(self, context, message)

    def _report_success(self, job_state, summary):
        from textalker_blender.blender.operators import TEXTALKER_OT_generate

        TEXTALKER_OT_generate._report_success(self, job_state, summary)


def skin_material(obj, normal_map: bool = False):
    """A user's material on `obj`: an albedo texture into Base Color, an unlinked Normal value
    that Remove must keep and, optionally, a normal map into Normal.
    Returns (material, bsdf, albedo node, normal map node or None)."""
    material = compat.new_material("Skin")
    tree = material.node_tree
    bsdf = next(n for n in tree.nodes if n.bl_idname == "ShaderNodeBsdfPrincipled")
    albedo = tree.nodes.new("ShaderNodeTexImage")
    albedo.name = "Albedo"
    tree.links.new(albedo.outputs["Color"], bsdf.inputs["Base Color"])
    bsdf.inputs["Normal"].default_value = (0.1, 0.2, 0.3)
    normal = None
    if normal_map:
        normal = tree.nodes.new("ShaderNodeNormalMap")
        normal.name = "User Normal Map"
        normal.inputs["Strength"].default_value = 0.7
        tree.links.new(normal.outputs["Normal"], bsdf.inputs["Normal"])
    obj.data.materials.append(material)
    return material, bsdf, albedo, normal


def render_test_scene(engine: str = "CYCLES", size: int = 32, world_colour=(1.0, 1.0, 1.0, 1.0),
                      world_strength: float = 1.0, grey: float = 0.8):
    """A fresh scene that renders `size` px PNGs fast and reproducibly (Cycles on the CPU with 4
    samples and no denoiser, or EEVEE), Standard view transform, a plain-coloured world, and a
    1 m plane of rough `grey` (x, z in [0, 1], facing -Y) filling an orthographic camera. Returns (scene, plane)."""
    import math

    scene = fresh_scene()
    scene.render.engine = engine
    if engine == "CYCLES":
        scene.cycles.device = "CPU"
        scene.cycles.samples = 4
        scene.cycles.use_denoising = False
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.image_settings.file_format = "PNG"
    scene.view_settings.view_transform = "Standard"
    world = compat.new_world("World")
    background = next(n for n in world.node_tree.nodes if n.bl_idname == "ShaderNodeBackground")
    if world_colour is not None:  # None: the Background node's own default
        background.inputs["Color"].default_value = world_colour
    background.inputs["Strength"].default_value = world_strength
    scene.world = world

    plane = grid_mesh_object("Plane", n=2)
    material = compat.new_material("Grey")
    bsdf = next(n for n in material.node_tree.nodes if n.bl_idname == "ShaderNodeBsdfPrincipled")
    bsdf.inputs["Base Color"].default_value = (grey, grey, grey, 1.0)
    bsdf.inputs["Roughness"].default_value = 1.0
    plane.data.materials.append(material)
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    camera.data.type = "ORTHO"
    camera.data.ortho_scale = 1.0
    camera.location = (0.5, -3.0, 0.5)
    camera.rotation_euler = (math.pi / 2, 0.0, 0.0)
    scene.collection.objects.link(camera)
    scene.camera = camera
    return scene, plane


def render_frame(scene, frame: int, path) -> np.ndarray:
    """Renders `frame` to `path` and returns its (H, W, 3) display values, bottom row first (as
    Blender stores pixels)."""
    scene.frame_set(frame)
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    image = bpy.data.images.load(str(path))
    pixels = np.array(image.pixels[:], dtype=np.float32).reshape(image.size[1], image.size[0], 4)
    bpy.data.images.remove(image)
    return pixels[..., :3]

#!/usr/bin/env python3
"""Look at one utterance of the synthetic TexTalk4D: rendered face, motion map, wrinkle map.

    .venv/bin/python tools/preview_dataset.py data/synthetic_textalk4d --utterance S00_0000 --out out/preview

Writes into --out:
    <id>_contact.png        selected frames: face (Cycles), motion map, wrinkle map, phoneme labels
    <id>_frames/0000.png    the clip, one PNG per frame (every --clip-step frames)
    <id>.mp4                the clip with its audio, if ffmpeg is installed
The face is rendered with Cycles through the bpy module (CPU, few samples); `--renderer simple`
uses a quick orthographic point-splat render instead (no bpy needed). Frames are picked to show
lip closure on p/b/m, the jaw on open vowels, the strongest brow raise, a blink and the
strongest creases.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent

from tools.synthetic_textalk4d.geometry import identity_part_offsets  # noqa: E402
from textalker_blender.core.wrinkle_channels import ratio_from_channels  # noqa: E402
from tools.synthetic_textalk4d.reader import SyntheticTextalk4D  # noqa: E402
from tools.synthetic_textalk4d.visemes import BILABIALS, OPEN_VOWELS  # noqa: E402

FACE_CENTRE_Z = 0.705   # metres, between the eyes and the mouth of the template head


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0, 1)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * x ** (1 / 2.4) - 0.055)


# ------------------------------------------------------------------------------------------
# Frame selection


def articulated_phoneme(sample, frame: int, lead_s: float) -> str:
    """The phoneme the mouth is shaping at `frame`: mouth shapes lead the sound by lead_s."""
    t = (frame + 0.5) / sample.fps + lead_s
    for p in sample.phonemes:
        if p.start <= t < p.end:
            return p.label
    return "pau"


def pick_frames(sample, count: int, wrinkle_darkening: np.ndarray, units, lead_s: float) -> list[int]:
    """Frames that show the features a person should check, then evenly spaced ones."""
    t = sample.n_frames
    weights = sample.weights
    chosen: list[int] = []

    def add(frame):
        if frame is not None and 0 <= frame < t and all(abs(frame - c) > 2 for c in chosen):
            chosen.append(int(frame))

    lead = lead_s

    def articulated(labels):
        """Frames whose articulation time (frame centre + the subject's lead) is inside a phoneme
        of `labels`, grouped per phoneme."""
        groups = []
        for p in sample.phonemes:
            if p.label in labels:
                frames = [k for k in range(t) if p.start <= (k + 0.5) / sample.fps + lead < p.end]
                if frames:
                    groups.append(frames)
        return groups

    bilabials = articulated(BILABIALS)
    if bilabials:  # the most clearly closed bilabial: strongest lip press
        add(max((f for g in bilabials for f in g), key=lambda f: weights[f, units["mouthPressLeft"]]))
    open_vowels = articulated(OPEN_VOWELS)
    if open_vowels:
        add(max((f for g in open_vowels for f in g), key=lambda f: weights[f, units["jawOpen"]]))
    add(int(np.argmax(weights[:, units["browInnerUp"]])) if weights[:, units["browInnerUp"]].max() > 0.1 else None)
    add(int(np.argmax(weights[:, units["eyeBlinkLeft"]])) if weights[:, units["eyeBlinkLeft"]].max() > 0.5 else None)
    add(int(np.argmax(wrinkle_darkening)))
    add(0)
    for frame in np.linspace(0, t - 1, count + 2).astype(int)[1:-1]:
        if len(chosen) >= count:
            break
        add(frame)
    return sorted(chosen[:count])


# ------------------------------------------------------------------------------------------
# Cycles renderer (bpy module)


class CyclesFace:
    """A small Cycles scene: the head with a per-frame texture (albedo x wrinkle ratio), eyes,
    teeth and tongue, a camera in front of the face and three lights."""

    def __init__(self, ds: SyntheticTextalk4D, subject: str, resolution: int, samples: int, yaw_deg: float):
        os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="textalker-preview-"))
        import bpy

        self.bpy = bpy
        self.ds = ds
        template = ds.template
        self.template = template
        bpy.ops.wm.read_factory_settings(use_empty=True)
        scene = bpy.context.scene
        self.scene = scene
        scene.render.engine = "CYCLES"
        scene.cycles.device = "CPU"
        scene.cycles.samples = samples
        scene.cycles.use_denoising = True
        scene.render.resolution_x = scene.render.resolution_y = resolution
        scene.render.image_settings.file_format = "PNG"
        scene.view_settings.view_transform = "Standard"
        # Expose for the subject's skin: dark skin would otherwise render nearly black.
        skin = float(np.mean(ds.subjects[subject].skin_tone))
        scene.view_settings.exposure = float(np.clip(np.log2(1.0 / skin), 0.0, 2.0))
        scene.render.film_transparent = False
        world = bpy.data.worlds.new("World")
        background = next(n for n in world.node_tree.nodes if n.bl_idname == "ShaderNodeBackground")
        background.inputs["Color"].default_value = (0.18, 0.19, 0.21, 1.0)
        background.inputs["Strength"].default_value = 1.0
        scene.world = world

        geometry = ds.geometry(subject)
        self.neutral = geometry.neutral
        parts_identity = identity_part_offsets(template, ds.subjects[subject].identity)
        self.head = self._mesh_object("Head", self.neutral, template.loop_vertex_indices,
                                      template.polygon_sizes, uvs=template.loop_uvs)
        # Second UV map: where each corner falls in the wrinkle map (its layout); corners outside
        # every island get (-1, -1), where the CLIP-extended ratio image reads alpha 0 -> ratio 1.
        wrinkle_uvs, _ = template.wrinkle_layout.to_map(template.loop_uvs)
        layer = self.head.data.uv_layers.new(name="WrinkleUV")
        layer.data.foreach_set("uv", wrinkle_uvs.astype(np.float32).ravel())
        self.head.data.uv_layers.active_index = 0
        size = ds.wrinkle_resolution
        self.image = bpy.data.images.new("WrinkleRatio", size, size, alpha=True, float_buffer=True)
        self.image.colorspace_settings.name = "Non-Color"
        skin = np.asarray(ds.subjects[subject].skin_tone, np.float64)
        self.head.data.materials.append(self._skin_material(self.image, srgb_to_linear(np.clip(skin, 0, 1.5))))
        self.parts = {}
        for name, part in template.parts.items():
            neutral = (part["vertices"] + parts_identity[name]).astype(np.float32)
            obj = self._mesh_object(name, neutral, part["loop_vertex_indices"], part["polygon_sizes"],
                                    colors=part.get("vertex_colors"))
            roughness = float(template.metadata.get("part_materials", {}).get(name, {}).get("roughness", 0.4))
            obj.data.materials.append(self._vertex_colour_material(name, roughness))
            self.parts[name] = (obj, neutral)

        target = np.array([0.0, -0.12, FACE_CENTRE_Z - 0.01])
        yaw = np.radians(yaw_deg)
        distance = 0.68
        camera_data = bpy.data.cameras.new("Camera")
        camera_data.lens = 105
        camera = bpy.data.objects.new("Camera", camera_data)
        camera.location = tuple(target + distance * np.array([np.sin(yaw), -np.cos(yaw), 0.0]))
        camera.rotation_euler = (np.pi / 2, 0.0, yaw)
        scene.collection.objects.link(camera)
        scene.camera = camera
        # Key light from above: raking light shows creases (forehead lines, nasolabial folds).
        for name, location, energy, size in (("Key", (-0.35, -0.7, 1.25), 320.0, 0.5),
                                             ("Fill", (0.7, -0.7, 0.75), 90.0, 0.8),
                                             ("Rim", (0.2, 0.6, 1.1), 50.0, 0.4)):
            light_data = bpy.data.lights.new(name, "AREA")
            light_data.energy = energy
            light_data.size = size
            light = bpy.data.objects.new(name, light_data)
            light.location = location
            direction = target - np.array(location)
            light.rotation_euler = _look_rotation(direction)
            scene.collection.objects.link(light)

    def set_quality(self, resolution: int, samples: int) -> None:
        self.scene.render.resolution_x = self.scene.render.resolution_y = resolution
        self.scene.cycles.samples = samples

    def _mesh_object(self, name, vertices, loop_vertex_indices, polygon_sizes, uvs=None, colors=None):
        bpy = self.bpy
        mesh = bpy.data.meshes.new(name)
        mesh.vertices.add(len(vertices))
        mesh.vertices.foreach_set("co", np.asarray(vertices, np.float32).ravel())
        mesh.loops.add(len(loop_vertex_indices))
        mesh.loops.foreach_set("vertex_index", np.asarray(loop_vertex_indices, np.int32))
        mesh.polygons.add(len(polygon_sizes))
        starts = np.concatenate([[0], np.cumsum(polygon_sizes)[:-1]]).astype(np.int32)
        mesh.polygons.foreach_set("loop_start", starts)
        if uvs is not None:
            layer = mesh.uv_layers.new(name="UVMap")
            layer.data.foreach_set("uv", np.asarray(uvs, np.float32).ravel())
        if colors is not None:
            rgb = np.asarray(colors, np.float32) / 255.0
            rgba = np.concatenate([rgb, np.ones((len(rgb), 1), np.float32)], axis=1)
            attribute = mesh.color_attributes.new("Col", "BYTE_COLOR", "POINT")
            attribute.data.foreach_set("color_srgb", rgba.ravel())
        mesh.update(calc_edges=True)
        mesh.polygons.foreach_set("use_smooth", np.ones(len(polygon_sizes), dtype=bool))
        obj = bpy.data.objects.new(name, mesh)
        self.scene.collection.objects.link(obj)
        return obj

    def _skin_material(self, ratio_image, skin_linear):
        """Base colour = template albedo x skin tone x wrinkle ratio (1 outside the wrinkle map)."""
        material = self.bpy.data.materials.new("Skin")
        tree = material.node_tree
        bsdf = next(n for n in tree.nodes if n.bl_idname == "ShaderNodeBsdfPrincipled")
        bsdf.inputs["Roughness"].default_value = 0.5
        bsdf.inputs["Subsurface Weight"].default_value = 0.1
        bsdf.inputs["Subsurface Radius"].default_value = (0.004, 0.002, 0.001)
        albedo = tree.nodes.new("ShaderNodeTexImage")
        albedo.image = self.bpy.data.images.load(str(self.template.albedo_path), check_existing=True)
        albedo.image.colorspace_settings.name = "sRGB"
        wrinkle_uv = tree.nodes.new("ShaderNodeUVMap")
        wrinkle_uv.uv_map = "WrinkleUV"
        ratio = tree.nodes.new("ShaderNodeTexImage")
        ratio.image = ratio_image
        ratio.extension = "CLIP"
        ratio.interpolation = "Linear"
        tree.links.new(wrinkle_uv.outputs["UV"], ratio.inputs["Vector"])
        inside = _mix_node(tree, "MIX")               # ratio inside the map, 1 outside
        _socket(inside.inputs, "A_Color").default_value = (1.0, 1.0, 1.0, 1.0)
        tree.links.new(ratio.outputs["Alpha"], _socket(inside.inputs, "Factor_Float"))
        tree.links.new(ratio.outputs["Color"], _socket(inside.inputs, "B_Color"))
        tone = _mix_node(tree, "MULTIPLY")
        _socket(tone.inputs, "B_Color").default_value = (*[float(c) for c in skin_linear], 1.0)
        tree.links.new(albedo.outputs["Color"], _socket(tone.inputs, "A_Color"))
        wrinkled = _mix_node(tree, "MULTIPLY")
        tree.links.new(_socket(tone.outputs, "Result_Color"), _socket(wrinkled.inputs, "A_Color"))
        tree.links.new(_socket(inside.outputs, "Result_Color"), _socket(wrinkled.inputs, "B_Color"))
        tree.links.new(_socket(wrinkled.outputs, "Result_Color"), bsdf.inputs["Base Color"])
        return material

    def _vertex_colour_material(self, name, roughness):
        material = self.bpy.data.materials.new(name)
        tree = material.node_tree
        bsdf = next(n for n in tree.nodes if n.bl_idname == "ShaderNodeBsdfPrincipled")
        colour = tree.nodes.new("ShaderNodeAttribute")
        colour.attribute_name = "Col"
        tree.links.new(colour.outputs["Color"], bsdf.inputs["Base Color"])
        bsdf.inputs["Roughness"].default_value = roughness
        return material

    def render(self, weights: np.ndarray, offsets: np.ndarray, ratio: np.ndarray, path: Path) -> np.ndarray:
        """Render one frame to `path`; returns the image (H, W, 3) uint8."""
        head_vertices = self.neutral + offsets
        self.head.data.vertices.foreach_set("co", head_vertices.astype(np.float32).ravel())
        self.head.data.update()
        for name, (obj, neutral) in self.parts.items():
            moved = neutral + self.template.apply_part_units(name, weights)
            obj.data.vertices.foreach_set("co", moved.astype(np.float32).ravel())
            obj.data.update()
        rgba = np.concatenate([ratio, np.ones(ratio.shape[:2] + (1,), np.float32)], axis=-1)
        # Blender images start at the bottom row; maps start at the top (image order).
        self.image.pixels.foreach_set(np.ascontiguousarray(rgba[::-1]).astype(np.float32).ravel())
        self.image.update()
        self.scene.render.filepath = str(path)
        with _quiet_stdout():  # Cycles prints a line per tile and sample
            self.bpy.ops.render.render(write_still=True)
        from PIL import Image

        return np.asarray(Image.open(path).convert("RGB"))


def _socket(sockets, identifier: str):
    """Mix-node sockets share names across data types: pick them by identifier."""
    return next(socket for socket in sockets if socket.identifier == identifier)


def _mix_node(tree, blend: str):
    node = tree.nodes.new("ShaderNodeMix")
    node.data_type = "RGBA"
    node.blend_type = blend
    _socket(node.inputs, "Factor_Float").default_value = 1.0
    return node


class _quiet_stdout:
    """Silence C-level stdout (Blender's render log) for the duration of a block."""

    def __enter__(self):
        sys.stdout.flush()
        self._saved = os.dup(1)
        self._null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(self._null, 1)

    def __exit__(self, *exc):
        sys.stdout.flush()
        os.dup2(self._saved, 1)
        os.close(self._saved)
        os.close(self._null)
        return False


def _look_rotation(direction):
    """Euler angles (XYZ) that point an object's -Z axis along `direction`."""
    d = np.asarray(direction, float)
    d = d / np.linalg.norm(d)
    pitch = np.arccos(np.clip(-d[2], -1, 1))
    yaw = np.arctan2(d[0], -d[1])
    return (pitch, 0.0, yaw)


# ------------------------------------------------------------------------------------------
# Fallback renderer (no bpy): orthographic point splats with Lambert shading


class SimpleFace:
    def __init__(self, ds: SyntheticTextalk4D, subject: str, resolution: int):
        from PIL import Image

        self.ds = ds
        self.template = ds.template
        self.neutral = ds.geometry(subject).neutral
        self.resolution = resolution
        image = np.asarray(Image.open(self.template.albedo_path).convert("RGB"), np.float32) / 255.0
        uv = self.template.vertex_uvs.astype(np.float64)
        h, w = image.shape[:2]
        columns = np.clip((uv[:, 0] * w).astype(int), 0, w - 1)
        rows = np.clip(((1 - uv[:, 1]) * h).astype(int), 0, h - 1)
        self.vertex_albedo = image[rows, columns] * np.asarray(ds.subjects[subject].skin_tone, np.float32)
        self.wrinkle_uv, self.in_wrinkle_map = self.template.wrinkle_layout.to_map(uv)
        front = self.neutral[:, 1] < -0.02
        self.visible = front & (np.abs(self.neutral[:, 2] - FACE_CENTRE_Z) < 0.14)

    def set_quality(self, resolution: int, samples: int) -> None:
        self.resolution = resolution

    def render(self, weights, offsets, ratio, path: Path) -> np.ndarray:
        from PIL import Image

        vertices = self.neutral + offsets
        tri = self.template.triangles
        normals = np.zeros_like(vertices)
        face_normals = np.cross(vertices[tri[:, 1]] - vertices[tri[:, 0]], vertices[tri[:, 2]] - vertices[tri[:, 0]])
        for i in range(3):
            np.add.at(normals, tri[:, i], face_normals)
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        light = np.array([-0.4, -0.8, 0.45])
        light /= np.linalg.norm(light)
        shade = 0.25 + 0.75 * np.clip(normals @ light, 0, 1)
        height, width = ratio.shape[:2]
        columns = np.clip((self.wrinkle_uv[:, 0] * width).astype(int), 0, width - 1)
        rows = np.clip(((1 - self.wrinkle_uv[:, 1]) * height).astype(int), 0, height - 1)
        vertex_ratio = np.where(self.in_wrinkle_map[:, None], ratio[rows, columns], 1.0)
        colour = self.vertex_albedo * vertex_ratio * shade[:, None]
        size = self.resolution
        scale = size / 0.3
        x = ((vertices[:, 0]) * scale + size / 2).astype(int)
        y = ((FACE_CENTRE_Z - vertices[:, 2]) * scale + size / 2).astype(int)
        image = np.full((size, size, 3), 0.2, np.float32)
        depth = np.full((size, size), np.inf)
        order = np.argsort(vertices[:, 1])[::-1]     # far (large y) first
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for index in order[self.visible[order]]:
                    px, py = x[index] + dx, y[index] + dy
                    if 0 <= px < size and 0 <= py < size and vertices[index, 1] < depth[py, px]:
                        depth[py, px] = vertices[index, 1]
                        image[py, px] = colour[index]
        result = (np.clip(image, 0, 1) * 255).astype(np.uint8)
        Image.fromarray(result).save(path)
        return result


# ------------------------------------------------------------------------------------------
# Map views


class MapViews:
    """Face crops of the maps, turned upright (the hm08 layout has the forehead on the left).

    Motion maps: the "face" island of the motion layout; wrinkle maps cover only the face."""

    def __init__(self, template):
        self.motion_box = None
        for island in template.motion_layout.islands:
            if island.name == "face":
                self.motion_box = island.destination

    def motion(self, image: np.ndarray) -> np.ndarray:
        if self.motion_box is None:
            return np.rot90(image, k=-1)
        h, w = image.shape[:2]
        x0, y0, x1, y1 = self.motion_box
        c0, c1 = int(np.floor(x0 * w)), int(np.ceil(x1 * w))
        r0, r1 = int(np.floor((1 - y1) * h)), int(np.ceil((1 - y0) * h))
        return np.rot90(image[max(r0, 0):r1, max(c0, 0):c1], k=-1)

    @staticmethod
    def wrinkle(image: np.ndarray) -> np.ndarray:
        return np.rot90(image, k=-1)


def motion_view(motion_map: np.ndarray, scale: float, mask: np.ndarray) -> np.ndarray:
    rgb = np.clip(0.5 + motion_map / (2 * scale), 0, 1)
    rgb[~mask] = 0.12
    return rgb


def crease_view(ratio: np.ndarray, gain: float = 4.0) -> np.ndarray:
    """Darkening (1 - ratio) as a heat map: black none, red to yellow to white deep creases."""
    d = np.clip((1.0 - ratio[..., 1]) * gain, 0, 1)
    return np.stack([np.clip(3 * d, 0, 1), np.clip(3 * d - 1, 0, 1), np.clip(3 * d - 2, 0, 1)], axis=-1)


def _fit(image: np.ndarray, size: int):
    from PIL import Image

    array = (np.clip(image, 0, 1) * 255).astype(np.uint8) if image.dtype != np.uint8 else image
    pil = Image.fromarray(array)
    w, h = pil.size
    scale = size / max(w, h)
    pil = pil.resize((max(1, int(w * scale)), max(1, int(h * scale))), Image.NEAREST if scale > 2 else Image.BILINEAR)
    canvas = Image.new("RGB", (size, size), (30, 30, 34))
    canvas.paste(pil, ((size - pil.size[0]) // 2, (size - pil.size[1]) // 2))
    return canvas


def contact_sheet(columns, size: int, title: str):
    """columns: list of (label lines, [tiles])."""
    from PIL import Image, ImageDraw

    rows = len(columns[0][1])
    label_height = 40
    sheet = Image.new("RGB", (size * len(columns), 28 + rows * size + label_height), (20, 20, 24))
    draw = ImageDraw.Draw(sheet)
    draw.text((6, 6), title, fill=(235, 235, 235))
    for i, (labels, tiles) in enumerate(columns):
        for j, tile in enumerate(tiles):
            sheet.paste(_fit(tile, size), (i * size, 28 + j * size))
        for k, line in enumerate(labels):
            draw.text((i * size + 6, 28 + rows * size + 4 + 16 * k), line,
                      fill=(255, 220, 120) if k == 0 else (220, 220, 220))
    return sheet


# ------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--utterance", required=True, help="utterance id, e.g. S00_0000")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=8, help="frames on the contact sheet")
    parser.add_argument("--renderer", choices=("cycles", "simple"), default="cycles")
    parser.add_argument("--resolution", type=int, default=400, help="face render size (pixels)")
    parser.add_argument("--samples", type=int, default=16, help="Cycles samples")
    parser.add_argument("--wrinkle-resolution", type=int, default=512,
                        help="wrinkle maps for the preview (the dataset default is 128)")
    parser.add_argument("--yaw", type=float, default=18.0, help="camera angle around the head (degrees)")
    parser.add_argument("--clip-frames", type=int, default=-1, help="frames of the clip (0: none, -1: all)")
    parser.add_argument("--clip-resolution", type=int, default=256)
    parser.add_argument("--clip-samples", type=int, default=8)
    parser.add_argument("--clip-step", type=int, default=1)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    ds = SyntheticTextalk4D(args.dataset, "all", maps=False, wrinkle_resolution=args.wrinkle_resolution)
    index = ds.index_of(args.utterance)
    sample = ds.load(index)
    subject = sample.subject
    geometry = ds.geometry(subject)
    offsets = geometry.offsets(sample.weights)
    ratio_maps = ratio_from_channels(geometry.wrinkle_maps(sample.weights))
    dataset = SyntheticTextalk4D(args.dataset, "all", maps=False)      # the dataset's 128 px maps
    dataset_ratio = ratio_from_channels(dataset.geometry(subject).wrinkle_maps(sample.weights))
    motion_rasterizer = ds.template.uv_rasterizer(64, "motion")
    motion_maps = motion_rasterizer.rasterize(offsets)
    darkening = (1 - ratio_maps[..., 1]).reshape(len(offsets), -1).mean(axis=1)
    units = {name: i for i, name in enumerate(ds.unit_names)}
    lead = ds.subjects[subject].speaking.lead_s
    frames = pick_frames(sample, args.frames, darkening, units, lead)

    out = args.out
    frame_dir = out / f"{args.utterance}_frames"
    frame_dir.mkdir(parents=True, exist_ok=True)
    if args.renderer == "cycles":
        try:
            face = CyclesFace(ds, subject, args.resolution, args.samples, args.yaw)
        except ImportError as error:
            print(f"bpy not available ({error}); using the simple renderer", file=sys.stderr)
            face = SimpleFace(ds, subject, args.resolution)
    else:
        face = SimpleFace(ds, subject, args.resolution)

    views = MapViews(ds.template)
    scale = max(float(np.abs(motion_maps).max()), 1e-6)
    albedo = ds.neutral_albedo(subject)
    albedo_small = dataset.neutral_albedo(subject)
    columns = []
    tmp_dir = Path(tempfile.mkdtemp(prefix="preview-"))
    for frame in frames:
        render = face.render(sample.weights[frame], offsets[frame], ratio_maps[frame], tmp_dir / f"{frame}.png")
        motion = views.motion(motion_view(motion_maps[frame], scale, motion_rasterizer.mask))
        textured = views.wrinkle(albedo * ratio_maps[frame])
        crease = views.wrinkle(crease_view(ratio_maps[frame]))
        textured_small = views.wrinkle(albedo_small * dataset_ratio[frame])
        w = sample.weights[frame]
        labels = [f"'{articulated_phoneme(sample, frame, lead)}'  frame {frame}  {(frame + 0.5) / sample.fps:.2f}s",
                  f"jaw {w[units['jawOpen']]:.2f} close {w[units['mouthClose']]:.2f} brow {w[units['browInnerUp']]:.2f}"]
        columns.append((labels, [render, motion, textured, crease, textured_small]))
    title = (f"{args.utterance} ({subject}, {sample.split}): \"{sample.text}\"  labels: phoneme being "
             f"articulated (sound + {lead * 1000:.0f} ms lead)  rows: face | motion map 64 "
             f"(offset xyz -> rgb, +-{scale * 1000:.0f} mm) | albedo x wrinkle {args.wrinkle_resolution} | "
             f"creases (1 - ratio) x4 | albedo x wrinkle 128 (dataset)")
    sheet = contact_sheet(columns, 300, title)
    sheet_path = out / f"{args.utterance}_contact.png"
    sheet.save(sheet_path)
    print(f"wrote {sheet_path}")

    if args.clip_frames:
        clip = range(0, sample.n_frames, args.clip_step)
        if args.clip_frames > 0:
            clip = list(clip)[: args.clip_frames]
        face.set_quality(args.clip_resolution, args.clip_samples)
        for number, frame in enumerate(clip):
            face.render(sample.weights[frame], offsets[frame], ratio_maps[frame], frame_dir / f"{number:04d}.png")
            if number % 10 == 0:
                print(f"clip frame {number + 1}/{len(clip)}", flush=True)
        print(f"wrote {len(clip)} frames to {frame_dir}")
        if shutil.which("ffmpeg"):
            import soundfile

            wav = tmp_dir / "audio.wav"
            soundfile.write(str(wav), sample.audio, sample.sample_rate)
            video = out / f"{args.utterance}.mp4"
            rate = sample.fps / args.clip_step
            subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-framerate", f"{rate}", "-i",
                            str(frame_dir / "%04d.png"), "-i", str(wav), "-c:v", "libx264",
                            "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(video)], check=True)
            print(f"wrote {video}")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    print(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

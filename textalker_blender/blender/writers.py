"""Writes a generation result into Blender data, and removes it again.

- `write_shape_keys`: one shape key per frame (`TT_0001`, ...) keyed 1 on its frame and 0 on its
  neighbours with LINEAR interpolation, so sub-frames and motion blur blend two keys.
- `write_exr_sequence`: half-float (16 bit) ZIP-compressed RGBA OpenEXR files (RGB the albedo
  ratio, A the fold activation), written by Blender's own image writer so the add-on needs no
  extra wheel and Blender reads back exactly what it wrote; `write_crease_detail`: the wrinkle
  style's static high-resolution crease height map (millimetres) beside them.
- `ensure_wrinkle_material`: a node group "TexTalker Wrinkles" that multiplies the albedo feeding
  the Base Color by the wrinkle-ratio sequence, inside the template's UV region only, and, with a
  crease detail map, bumps the BSDF's Normal by the crease height (detail x fold activation x
  "Crease Strength") and darkens the grooves ("Cavity"); `set_crease_controls` changes both after
  generation.
- `remove_textalker_output`: removes all of the above and restores the original node links.

Everything the add-on creates is tagged (custom property `textalker_generated`, or a record on
the object), so a re-run or a removal touches only that: the user's own shape keys, actions,
materials and links survive.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import bpy
import numpy as np

from . import compat

KEY_PREFIX = "TT_"
TAG = "textalker_generated"
NODE_GROUP_NAME = "TexTalker Wrinkles"
IMAGE_PREFIX = "wrinkle_"
# Custom properties: on the Key datablock (the generated key names), on the object (the record
# of images, node groups, materials and files of the last run).
KEY_RECORD = "textalker_keys"
OBJECT_RECORD = "textalker_output"
# On the eyes / teeth / tongue objects of the template head: the part's name in the template.
PART_TAG = "textalker_part"

# The crease detail map of a run, written once beside its wrinkle sequence.
CREASE_DETAIL_NAME = "crease_detail.exr"
# The group's sockets and nodes (Remove, the panel and the tests find them by these names).
ALBEDO_SOCKET = "Albedo"
COLOR_SOCKET = "Color"
NORMAL_SOCKET = "Normal"
CREASE_STRENGTH_SOCKET = "Crease Strength"
CAVITY_SOCKET = "Cavity"
SEQUENCE_NODE = "TexTalker Wrinkle Sequence"
CREASE_DETAIL_NODE = "TexTalker Crease Detail"
BUMP_NODE = "TexTalker Crease Bump"
# Crease Strength scales the model's depth (1 = as deep as the model says, at the head's real
# size); Cavity darkens the albedo to 1 / (1 + Cavity x depth in mm, scaled). Defaults
# chosen from Cycles close-ups, see docs/WRINKLES.md.
DEFAULT_CREASE_STRENGTH = 2.5
MAX_CREASE_STRENGTH = 10.0
DEFAULT_CAVITY = 0.5
MAX_CAVITY = 5.0
# The object's crease settings (`properties.TexTalkerCreaseSettings`, registered by the add-on).
CREASE_SETTINGS = "textalker_creases"

_INTERPOLATION_LINEAR = 1  # enum index of 'LINEAR' in Keyframe.interpolation


# --------------------------------------------------------------------------------------------
# Shape keys


def _offset_blocks(offsets, block_frames: int = 256):
    """(first frame, float32 (n, V, 3)) blocks of an array or a `core.frame_store.FrameStore`
    (which is never expanded to float32 whole: that would double a long clip's memory)."""
    if hasattr(offsets, "blocks"):
        yield from offsets.blocks(block_frames)
        return
    for start in range(0, len(offsets), block_frames):
        yield start, np.asarray(offsets[start : start + block_frames], dtype=np.float32)


def write_shape_keys(
    obj: bpy.types.Object,
    offsets,
    fps_scene: float,
    frame_start: int,
) -> list[str]:
    """Adds one shape key per frame of `offsets` (T, V, 3); frame i sits on frame_start + i.

    `offsets` (an array, or a `core.frame_store.FrameStore` of a streamed run, read block by
    block) are in the mesh's local coordinates (the caller maps them from the template frame,
    see `core.mesh_match`) and already sampled at the scene frame rate (the Pipeline resamples);
    `fps_scene` is recorded with the keys. Previously generated keys of this object are removed
    first. Returns the new key names.
    """
    mesh = obj.data
    if not hasattr(offsets, "blocks"):
        offsets = np.asarray(offsets, dtype=np.float32)
    shape = tuple(offsets.shape)
    if len(shape) != 3 or shape[2] != 3:
        raise ValueError(f"offsets must be (T, V, 3), got {shape}")
    n_frames, n_vertices, _ = shape
    if n_vertices != len(mesh.vertices):
        raise ValueError(
            f"offsets have {n_vertices} vertices, mesh '{mesh.name}' has {len(mesh.vertices)}"
        )
    remove_shape_keys(obj)

    created_basis = mesh.shape_keys is None
    if created_basis:
        obj.shape_key_add(name="Basis", from_mix=False)
    key = mesh.shape_keys
    reference = key.reference_key
    base = np.empty(n_vertices * 3, dtype=np.float32)
    reference.data.foreach_get("co", base)

    names: list[str] = []
    for first, block_offsets in _offset_blocks(offsets):
        flat_offsets = block_offsets.reshape(len(block_offsets), -1)
        for j in range(len(flat_offsets)):
            block = obj.shape_key_add(name=f"{KEY_PREFIX}{first + j + 1:04d}", from_mix=False)
            block.value = 0.0  # Blender 5 creates new keys at 1.0
            block.relative_key = reference
            block.data.foreach_set("co", base + flat_offsets[j])
            names.append(block.name)  # Blender appends .001 if the user owns a key of that name

    action, created_action = ensure_key_action(key, f"TexTalker_{obj.name}")
    for i, name in enumerate(names):
        frame = float(frame_start + i)
        curve = compat.ensure_fcurve(action, key, f'key_blocks["{name}"].value')
        curve.keyframe_points.add(3)
        curve.keyframe_points.foreach_set(
            "co", [frame - 1.0, 0.0, frame, 1.0, frame + 1.0, 0.0]
        )
        curve.keyframe_points.foreach_set("interpolation", [_INTERPOLATION_LINEAR] * 3)
        curve.update()

    key[KEY_RECORD] = json.dumps(
        {
            "names": names,
            "action": action.name,
            "created_action": created_action,
            "created_basis": created_basis,
            "fps": float(fps_scene),
            "frame_start": int(frame_start),
        }
    )
    return names


def ensure_key_action(key: bpy.types.Key, new_name: str) -> tuple[bpy.types.Action, bool]:
    """(the Key's action, whether it was created): the user's own if it has one (our curves are
    added to it and removed later one by one), else a new action `new_name` tagged as ours.
    Both output modes' writers use it."""
    if key.animation_data is not None and key.animation_data.action is not None:
        return key.animation_data.action, False
    action = bpy.data.actions.new(new_name)
    action[TAG] = True
    key.animation_data_create()
    key.animation_data.action = action
    return action, True


def _key_record(key: bpy.types.Key | None) -> dict | None:
    if key is None or KEY_RECORD not in key:
        return None
    return json.loads(key[KEY_RECORD])


def generated_timing(obj: bpy.types.Object) -> tuple[int, int, float] | None:
    """(first frame, last frame, fps) of the generated keys, or None."""
    record = _key_record(getattr(obj.data, "shape_keys", None)) if obj is not None else None
    if not record or not record["names"]:
        return None
    first = int(record["frame_start"])
    return first, first + len(record["names"]) - 1, float(record["fps"])


def generated_key_names(obj: bpy.types.Object) -> list[str]:
    record = _key_record(getattr(obj.data, "shape_keys", None))
    return list(record["names"]) if record else []


def remove_shape_keys(obj: bpy.types.Object) -> int:
    """Removes the keys, curves and action that `write_shape_keys` created; returns keys removed."""
    key = getattr(obj.data, "shape_keys", None)
    record = _key_record(key)
    if record is None:
        return 0
    names = set(record["names"])
    action = bpy.data.actions.get(record["action"])
    if action is not None:
        if record["created_action"] and action.get(TAG):
            if key.animation_data is not None and key.animation_data.action == action:
                key.animation_data.action = None
            bpy.data.actions.remove(action)
        else:
            _remove_curves(action, key, {f'key_blocks["{n}"].value' for n in names})
    removed = 0
    for block in list(key.key_blocks):
        if block.name in names:
            obj.shape_key_remove(block)
            removed += 1
    key = obj.data.shape_keys
    if key is not None:
        del key[KEY_RECORD]
        only_basis = len(key.key_blocks) == 1
        if record["created_basis"] and only_basis:
            if key.animation_data is not None and key.animation_data.action is None:
                key.animation_data_clear()
            obj.shape_key_clear()
    return removed


def _remove_curves(action: bpy.types.Action, key: bpy.types.Key, data_paths: set[str]) -> None:
    for curves, curve in compat.action_curves(action, key):
        if curve.data_path in data_paths:
            curves.remove(curve)


# --------------------------------------------------------------------------------------------
# EXR sequence


def exr_frame_path(folder: str | os.PathLike, frame_number: int) -> Path:
    """Path of the file holding sequence frame `frame_number` (1-based, Blender's numbering)."""
    return Path(folder) / f"{IMAGE_PREFIX}{frame_number:04d}.exr"


def crease_detail_path(folder: str | os.PathLike) -> Path:
    """Path of the run's crease detail map, beside its wrinkle sequence."""
    return Path(folder) / CREASE_DETAIL_NAME


def write_exr_sequence(
    maps: np.ndarray, folder: str | os.PathLike, first_frame: int = 1, folds: np.ndarray | None = None
) -> list[Path]:
    """Writes maps (T, H, W, 3), image row order (row 0 = top), as `wrinkle_0001.exr`, ...
    (numbered from `first_frame`: a streamed run writes its chunks as they come).

    Half float, ZIP, RGBA, through `Image.save_render` with a temporary scene whose image
    settings say so: the user's render settings are never touched (and so need no restoring).
    RGB is the albedo ratio; A is the fold activation `folds` (T, H, W) in [0, 1], same row order
    (how folded the skin is: the crease height rendered is the crease detail map times it), or 0
    everywhere when `folds` is None (weights without fold maps: no crease is drawn). Values
    outside [0, 1] are clipped and NaN reads as 0 (no fold): an overshooting model must not dig
    a crease deeper than its detail map says. The alpha channel is data, not coverage: the
    material reads it with `alpha_mode = 'CHANNEL_PACKED'`.
    """
    maps = np.asarray(maps)
    if maps.ndim != 4 or maps.shape[3] != 3:
        raise ValueError(f"maps must be (T, H, W, 3), got {maps.shape}")
    n_frames, height, width, _ = maps.shape
    if folds is not None:
        folds = np.asarray(folds)
        if folds.shape != (n_frames, height, width):
            raise ValueError(f"folds must be (T, H, W) = {(n_frames, height, width)} like the maps, got {folds.shape}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # Blender's pixel buffer starts at the bottom row and is RGBA.
    rgba = np.zeros((height, width, 4), dtype=np.float32)
    writer_scene = bpy.data.scenes.new("TexTalker EXR writer")
    image = bpy.data.images.new(
        "TexTalker EXR buffer", width, height, alpha=True, float_buffer=True
    )
    paths = []
    try:
        _set_half_float_exr(writer_scene.render.image_settings, "RGBA")
        image.colorspace_settings.name = "Non-Color"
        for t in range(n_frames):
            rgba[:, :, :3] = maps[t, ::-1]
            if folds is not None:
                rgba[:, :, 3] = np.clip(np.nan_to_num(folds[t, ::-1].astype(np.float32), nan=0.0), 0.0, 1.0)
            image.pixels.foreach_set(rgba.ravel())
            path = exr_frame_path(folder, first_frame + t)
            image.save_render(str(path), scene=writer_scene)
            paths.append(path)
    finally:
        bpy.data.images.remove(image)
        bpy.data.scenes.remove(writer_scene)
    return paths


def write_crease_detail(detail_mm: np.ndarray, folder: str | os.PathLike) -> Path:
    """Writes a wrinkle style's crease detail map (Hd, Wd), crease height in millimetres (<= 0 in
    a groove), image row order, as `crease_detail.exr` in `folder`; returns its path.

    Half-float EXR rather than a 16-bit PNG (measured on a 2048 px map with 40 grooves up to
    2.7 mm deep): the EXR holds signed millimetres as they are, so no scale factor has to travel
    with the file and stay in step with the shader; half precision is 0.001 mm at 2.7 mm, far
    below what a render resolves; ZIP keeps it about as small as the PNG (1.8 MB against 1.7 MB,
    mostly flat skin). Blender loads both into the same float buffer, so memory is the same.
    Written once per run (the map is static per wrinkle style); the values are not clipped
    (a ridge above the skin is allowed), NaN reads as 0 (flat skin).
    """
    detail = np.asarray(detail_mm)
    if detail.ndim != 2 or min(detail.shape) < 2:
        raise ValueError(f"the crease detail map must be (H, W), got {detail.shape}")
    height, width = detail.shape
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rgba = np.ones((height, width, 4), dtype=np.float32)
    rgba[:, :, :3] = np.nan_to_num(detail[::-1].astype(np.float32), nan=0.0)[:, :, None]
    writer_scene = bpy.data.scenes.new("TexTalker EXR writer")
    image = bpy.data.images.new("TexTalker crease buffer", width, height, alpha=False, float_buffer=True)
    path = crease_detail_path(folder)
    try:
        # "BW" asks for one channel; Blender 5.0 still writes R, G, B (identical, so ZIP makes the
        # file no larger than one channel would).
        _set_half_float_exr(writer_scene.render.image_settings, "BW")
        image.colorspace_settings.name = "Non-Color"
        image.pixels.foreach_set(rgba.ravel())
        image.save_render(str(path), scene=writer_scene)
    finally:
        bpy.data.images.remove(image)
        bpy.data.scenes.remove(writer_scene)
    return path


def _set_half_float_exr(settings, color_mode: str) -> None:
    settings.file_format = "OPEN_EXR"
    settings.color_mode = color_mode
    settings.color_depth = "16"
    settings.exr_codec = "ZIP"


# --------------------------------------------------------------------------------------------
# Material


def _blend_path(path: Path) -> str:
    """`//relative` when the .blend is saved and the file lies beside it, else absolute."""
    if bpy.data.filepath:
        try:
            return bpy.path.relpath(str(path))
        except ValueError:  # another drive on Windows
            pass
    return str(path)


def _load_data_image(path: Path, name: str) -> bpy.types.Image:
    """An image of data (ratios, millimetres), tagged as ours: no colour transform, and its alpha
    read as a fourth channel (`CHANNEL_PACKED`) rather than as coverage. Measured on 4.2, 5.0 and
    5.3 for half-float EXR: Cycles and EEVEE give the stored RGB and A in every alpha mode, even
    where A is 0; CHANNEL_PACKED says what the channel is, so a Blender that premultiplies
    (as it does for other formats) cannot zero the ratio where the skin is not folded."""
    image = bpy.data.images.load(str(path), check_existing=False)
    image.name = name
    image.filepath = _blend_path(path)
    image.colorspace_settings.name = "Non-Color"
    image.alpha_mode = "CHANNEL_PACKED"
    image[TAG] = True
    return image


def _load_sequence_image(folder: Path, n_frames: int) -> bpy.types.Image:
    first = exr_frame_path(folder, 1)
    if not first.is_file():
        raise FileNotFoundError(f"wrinkle sequence not found: {first}")
    image = _load_data_image(first, f"TexTalker {folder.parent.name} {folder.name}")
    image.source = "SEQUENCE"
    return image


def _socket(node, identifier: str, outputs: bool = False):
    """A node socket by identifier (`ShaderNodeMix` has several sockets named "A")."""
    for s in node.outputs if outputs else node.inputs:
        if s.identifier == identifier:
            return s
    raise KeyError(identifier)


class _GroupBuilder:
    """Adds nodes to a node group in columns, left to right, so the group reads as a diagram."""

    def __init__(self, group: bpy.types.ShaderNodeTree):
        self.nodes, self.links = group.nodes, group.links
        self.column = 0
        self.row = 0

    def next_column(self) -> None:
        self.column += 1
        self.row = 0

    def add(self, bl_idname: str, label: str = "", **settings):
        node = self.nodes.new(bl_idname)
        for name, value in settings.items():
            setattr(node, name, value)
        if label:
            node.label = label
        node.location = (self.column * 220.0, -self.row * 200.0)
        self.row += 1
        return node

    def math(self, operation: str, label: str, a=None, b=None, c=None, clamp: bool = False):
        node = self.add("ShaderNodeMath", label, operation=operation, use_clamp=clamp)
        for index, value in enumerate((a, b, c)):
            self.feed(node.inputs[index], value)
        return node.outputs["Value"]

    def feed(self, target, value) -> None:
        """Links an output socket into `target`, or sets its value; None leaves it."""
        if value is None:
            return
        if isinstance(value, bpy.types.NodeSocket):
            self.links.new(value, target)
        else:
            target.default_value = value


def _build_node_group(
    image: bpy.types.Image,
    n_frames: int,
    frame_start: int,
    uv_region: tuple[float, float, float, float],
    uv_layer: str,
    detail_image: bpy.types.Image | None = None,
    units_per_mm: float = 0.001,
) -> bpy.types.ShaderNodeTree:
    """The "TexTalker Wrinkles" group.

    Color out = Albedo x ratio (x the cavity term), where ratio is the sequence's RGB looked up at
    the mesh UV mapped into `uv_region`, and exactly 1 outside the region. With a crease detail
    image, also Normal out = Bump(height h) of Normal in (the user's normal map, or the shading
    normal when nothing is linked), where h = D x a x Crease Strength in millimetres: D the detail
    map, a the sequence's alpha (fold activation), both 0 outside the region. The Bump node's
    Distance turns millimetres into world units at the object's size (`units_per_mm`), so at
    strength 1 a crease is as deep as the model says; the cavity term 1 / (1 + Cavity x |h|)
    darkens thin lines by about Cavity per millimetre, so they read in flat light too, and deep
    folds towards a shadow, never to black."""
    group = bpy.data.node_groups.new(NODE_GROUP_NAME, "ShaderNodeTree")
    group[TAG] = True
    interface = group.interface
    interface.new_socket(name=ALBEDO_SOCKET, in_out="INPUT", socket_type="NodeSocketColor")
    has_creases = detail_image is not None
    if has_creases:
        normal_input = interface.new_socket(name=NORMAL_SOCKET, in_out="INPUT", socket_type="NodeSocketVector")
        normal_input.hide_value = True  # like a BSDF's Normal: linked or the shading normal
        for name, default, maximum, description in (
            (CREASE_STRENGTH_SOCKET, DEFAULT_CREASE_STRENGTH, MAX_CREASE_STRENGTH,
             "Crease depth: 1 = the model's depth at the head's real size, 0 = no creases"),
            (CAVITY_SOCKET, DEFAULT_CAVITY, MAX_CAVITY,
             "Darkening of the skin per millimetre of crease depth"),
        ):
            control = interface.new_socket(name=name, in_out="INPUT", socket_type="NodeSocketFloat")
            control.default_value = default
            control.min_value = 0.0
            control.max_value = maximum
            control.description = description
    interface.new_socket(name=COLOR_SOCKET, in_out="OUTPUT", socket_type="NodeSocketColor")
    if has_creases:
        interface.new_socket(name=NORMAL_SOCKET, in_out="OUTPUT", socket_type="NodeSocketVector")

    build = _GroupBuilder(group)
    group_in = build.add("NodeGroupInput")
    build.next_column()
    uv = build.add("ShaderNodeUVMap", uv_map=uv_layer)
    u0, v0, u1, v1 = (float(x) for x in uv_region)
    build.next_column()
    to_origin = build.add("ShaderNodeVectorMath", "UV - region origin", operation="SUBTRACT")
    build.feed(to_origin.inputs[0], uv.outputs["UV"])
    to_origin.inputs[1].default_value = (u0, v0, 0.0)
    build.next_column()
    to_unit = build.add("ShaderNodeVectorMath", "/ region size", operation="DIVIDE")
    build.feed(to_unit.inputs[0], to_origin.outputs["Vector"])
    to_unit.inputs[1].default_value = (u1 - u0, v1 - v0, 1.0)
    region_uv = to_unit.outputs["Vector"]

    # Inside the region: max(|x - 0.5|, |y - 0.5|) < 0.5, computed from the UV, so the textures
    # can use EXTEND (no dark seam where CLIP would blend the border texels with black) and the
    # alpha channel is free for the fold activation.
    build.next_column()
    centred = build.add("ShaderNodeVectorMath", "- region centre", operation="SUBTRACT")
    build.feed(centred.inputs[0], region_uv)
    centred.inputs[1].default_value = (0.5, 0.5, 0.0)
    distance = build.add("ShaderNodeVectorMath", "|offset|", operation="ABSOLUTE")
    build.feed(distance.inputs[0], centred.outputs["Vector"])
    split = build.add("ShaderNodeSeparateXYZ")
    build.feed(split.inputs[0], distance.outputs["Vector"])
    build.next_column()
    farthest = build.math("MAXIMUM", "farther axis", split.outputs["X"], split.outputs["Y"])
    inside = build.math("LESS_THAN", "inside region (1) or not (0)", farthest, 0.5)

    build.next_column()
    texture = build.add("ShaderNodeTexImage", image=image, interpolation="Linear", extension="EXTEND")
    texture.name = SEQUENCE_NODE
    build.feed(texture.inputs["Vector"], region_uv)
    user = texture.image_user
    user.frame_duration = int(n_frames)
    user.frame_start = int(frame_start)
    user.frame_offset = 0
    user.use_auto_refresh = True
    user.use_cyclic = False

    build.next_column()
    ratio = build.add("ShaderNodeMix", "ratio inside region, 1 outside", data_type="RGBA", blend_type="MIX")
    build.feed(_socket(ratio, "Factor_Float"), inside)
    _socket(ratio, "A_Color").default_value = (1.0, 1.0, 1.0, 1.0)
    build.feed(_socket(ratio, "B_Color"), texture.outputs["Color"])
    build.next_column()
    multiply = build.add("ShaderNodeMix", "albedo x ratio", data_type="RGBA", blend_type="MULTIPLY")
    _socket(multiply, "Factor_Float").default_value = 1.0
    build.feed(_socket(multiply, "A_Color"), group_in.outputs[ALBEDO_SOCKET])
    build.feed(_socket(multiply, "B_Color"), _socket(ratio, "Result_Color", True))
    colour = _socket(multiply, "Result_Color", True)

    if has_creases:
        colour, normal = _add_crease_nodes(build, group_in, region_uv, inside, texture, detail_image,
                                           colour, units_per_mm)
    build.next_column()
    group_out = build.add("NodeGroupOutput")
    build.feed(group_out.inputs[COLOR_SOCKET], colour)
    if has_creases:
        build.feed(group_out.inputs[NORMAL_SOCKET], normal)
    return group


def _add_crease_nodes(build: _GroupBuilder, group_in, region_uv, inside, sequence, detail_image,
                      colour, units_per_mm: float):
    """The crease part of the group: (colour with the cavity term, bumped normal)."""
    build.next_column()
    detail = build.add("ShaderNodeTexImage", image=detail_image, interpolation="Linear", extension="EXTEND")
    detail.name = CREASE_DETAIL_NODE
    build.feed(detail.inputs["Vector"], region_uv)
    detail_channels = build.add("ShaderNodeSeparateColor", "crease detail D (mm)")
    build.feed(detail_channels.inputs["Color"], detail.outputs["Color"])
    build.next_column()
    fold = build.math("MULTIPLY", "fold activation a, 0 outside", sequence.outputs["Alpha"], inside)
    crease = build.math("MULTIPLY", "D x a (mm)", detail_channels.outputs["Red"], fold)
    height = build.math("MULTIPLY", "h = D x a x strength (mm)", crease,
                        group_in.outputs[CREASE_STRENGTH_SOCKET])

    # The user's normal (their normal map) when linked; a group input left unlinked reads
    # (0, 0, 0), not the shading normal, so that case takes the Geometry node's normal, which is
    # the normal a BSDF uses when its own Normal input is unlinked.
    build.next_column()
    geometry = build.add("ShaderNodeNewGeometry")
    length = build.add("ShaderNodeVectorMath", "|Normal in|", operation="LENGTH")
    build.feed(length.inputs[0], group_in.outputs[NORMAL_SOCKET])
    linked = build.math("GREATER_THAN", "Normal in linked", length.outputs["Value"], 0.5)
    base_normal = build.add("ShaderNodeMix", "normal to bump", data_type="VECTOR")
    build.feed(_socket(base_normal, "Factor_Float"), linked)
    build.feed(_socket(base_normal, "A_Vector"), geometry.outputs["Normal"])
    build.feed(_socket(base_normal, "B_Vector"), group_in.outputs[NORMAL_SOCKET])

    build.next_column()
    bump = build.add("ShaderNodeBump", "crease bump (mm -> world units)")
    bump.name = BUMP_NODE
    # The Bump node works in world space (measured: Cycles 4.2 / 5.0 / 5.3, EEVEE 5.0): a height
    # of 1 at Distance d bumps like a displacement of d world units.
    bump.inputs["Distance"].default_value = float(units_per_mm)
    bump.inputs["Strength"].default_value = 1.0
    build.feed(bump.inputs["Height"], height)
    build.feed(bump.inputs["Normal"], _socket(base_normal, "Result_Vector", True))
    # 1 / (1 + Cavity x |h|) (h <= 0): about 1 - Cavity x |h| for thin lines, and a deep fold
    # darkens towards a shadowed valley, never to black paint.
    minus_denominator = build.math("MULTIPLY_ADD", "cavity x h - 1 = -(1 + cavity x |h|)", height,
                                   group_in.outputs[CAVITY_SOCKET], -1.0)
    cavity = build.math("DIVIDE", "1 / (1 + cavity x |h|)", -1.0, minus_denominator, clamp=True)
    build.next_column()
    shaded = build.add("ShaderNodeMix", "x cavity", data_type="RGBA", blend_type="MULTIPLY")
    _socket(shaded, "Factor_Float").default_value = 1.0
    build.feed(_socket(shaded, "A_Color"), colour)
    build.feed(_socket(shaded, "B_Color"), cavity)
    return _socket(shaded, "Result_Color", True), bump.outputs["Normal"]


def _base_color_socket(material: bpy.types.Material):
    """The Base Color input of the BSDF feeding the material output (else of any node)."""
    tree = material.node_tree
    if tree is None:
        return None
    output = tree.get_output_node("ALL") or tree.get_output_node("CYCLES")
    if output is not None and output.inputs["Surface"].is_linked:
        shader = output.inputs["Surface"].links[0].from_node
        if "Base Color" in shader.inputs:
            return shader.inputs["Base Color"]
    for node in tree.nodes:
        if node.bl_idname == "ShaderNodeBsdfPrincipled":
            return node.inputs["Base Color"]
    return None


# The BSDF inputs the group node takes over, as (the node's input socket, its output socket, the
# custom properties recording the target and the original source). The Base Color record keeps
# its first names so files saved by earlier versions are still restored by Remove.
_REROUTES = (
    (ALBEDO_SOCKET, COLOR_SOCKET, "Base Color", "textalker_to", "textalker_from"),
    (NORMAL_SOCKET, NORMAL_SOCKET, "Normal", "textalker_normal_to", "textalker_normal_from"),
)


def _insert_group(material: bpy.types.Material, group: bpy.types.ShaderNodeTree) -> bool:
    """Puts a group node between the BSDF and what fed its Base Color (and Normal, when the group
    has creases), recording each replaced link on the node so that Remove can restore it."""
    base_color = _base_color_socket(material)
    if base_color is None:
        return False
    tree = material.node_tree
    bsdf = base_color.node
    node = tree.nodes.new("ShaderNodeGroup")
    node.node_tree = group
    node.name = NODE_GROUP_NAME
    node.label = NODE_GROUP_NAME
    node.location = (bsdf.location.x - 250.0, bsdf.location.y)
    node[TAG] = True
    for group_input, group_output, bsdf_input, to_key, from_key in _REROUTES:
        target = _find_input(bsdf, bsdf_input)
        if group_input not in node.inputs or target is None:
            continue
        node[to_key] = json.dumps([bsdf.name, target.identifier])
        if target.is_linked:
            link = target.links[0]
            source = link.from_socket
            node[from_key] = json.dumps([link.from_node.name, source.identifier])
            tree.links.remove(link)
            tree.links.new(source, node.inputs[group_input])
        else:
            node[from_key] = ""
            if group_input == ALBEDO_SOCKET:
                node.inputs[group_input].default_value = tuple(target.default_value)
        tree.links.new(node.outputs[group_output], target)
    return True


def _find_output(node, identifier):
    for s in node.outputs:
        if s.identifier == identifier:
            return s
    return None


def _find_input(node, identifier):
    for s in node.inputs:
        if s.identifier == identifier:
            return s
    return None


def _remove_group_nodes(material: bpy.types.Material) -> int:
    """Removes our group nodes from a material and restores the links they replaced (an input
    that was unlinked is left unlinked, with its own value untouched)."""
    tree = material.node_tree
    if tree is None:
        return 0
    removed = 0
    for node in [n for n in tree.nodes if n.get(TAG)]:
        restore = []
        for _input, _output, _bsdf_input, to_key, from_key in _REROUTES:
            if not node.get(to_key):
                continue
            to_name, to_identifier = json.loads(node[to_key])
            restore.append((to_name, to_identifier, node.get(from_key, "")))
        tree.nodes.remove(node)
        removed += 1
        for to_name, to_identifier, origin in restore:
            target_node = tree.nodes.get(to_name)
            target = _find_input(target_node, to_identifier) if target_node else None
            if target is None or not origin:
                continue
            from_name, from_identifier = json.loads(origin)
            source_node = tree.nodes.get(from_name)
            source = _find_output(source_node, from_identifier) if source_node else None
            if source is not None:
                tree.links.new(source, target)
    return removed


def world_units_per_mm(obj: bpy.types.Object, mesh_frame: np.ndarray | None = None) -> float:
    """World units per millimetre of the template face on `obj` (0.001 for a head at real size in
    metres): the Bump node's Distance that makes the crease maps' millimetres physical.

    `mesh_frame` (3, 3) maps template metres to the mesh's local frame (None: the mesh is in the
    template's frame), and the object's transform maps that to the world; the scale is their
    mean (cube root of the determinant), so a head imported in decimetres or scaled by the user
    gets creases in proportion. A degenerate transform falls back to real size."""
    linear = np.array(obj.matrix_world.to_3x3(), dtype=np.float64)
    if mesh_frame is not None:
        linear = linear @ np.asarray(mesh_frame, dtype=np.float64)
    scale = abs(float(np.linalg.det(linear))) ** (1.0 / 3.0)
    if not np.isfinite(scale) or scale <= 0.0:
        scale = 1.0
    return 0.001 * scale


def _object_crease_settings(obj: bpy.types.Object) -> tuple[float, float]:
    """(crease strength, cavity) the object's settings ask for (the add-on's `textalker_creases`
    property where registered), else the defaults."""
    settings = getattr(obj, CREASE_SETTINGS, None)
    if settings is None:
        return DEFAULT_CREASE_STRENGTH, DEFAULT_CAVITY
    return float(settings.strength), float(settings.cavity)


def _group_nodes(obj: bpy.types.Object) -> list:
    """Our group nodes in the object's materials."""
    found = []
    for material in {slot.material for slot in obj.material_slots if slot.material}:
        if material.node_tree is not None:
            found.extend(n for n in material.node_tree.nodes if n.get(TAG) and n.bl_idname == "ShaderNodeGroup")
    return found


def set_crease_controls(obj: bpy.types.Object, crease_strength: float | None = None,
                        cavity: float | None = None) -> int:
    """Sets the "Crease Strength" and "Cavity" inputs of every TexTalker group node on the
    object's materials (None leaves one as it is); no regeneration needed. Returns the nodes
    changed (0 when the output has no creases: older weights, or nothing generated)."""
    changed = 0
    for node in _group_nodes(obj):
        touched = False
        for name, value in ((CREASE_STRENGTH_SOCKET, crease_strength), (CAVITY_SOCKET, cavity)):
            if value is not None and name in node.inputs:
                node.inputs[name].default_value = float(value)
                touched = True
        changed += touched
    return changed


def crease_controls(obj: bpy.types.Object | None) -> tuple[float, float] | None:
    """(crease strength, cavity) of the object's TexTalker group node, or None when it has no
    crease output."""
    if obj is None or obj.type != "MESH":
        return None
    for node in _group_nodes(obj):
        if CREASE_STRENGTH_SOCKET in node.inputs:
            return (float(node.inputs[CREASE_STRENGTH_SOCKET].default_value),
                    float(node.inputs[CAVITY_SOCKET].default_value))
    return None


def ensure_wrinkle_material(
    obj: bpy.types.Object,
    sequence_folder: str | os.PathLike,
    n_frames: int,
    frame_start: int,
    uv_region: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0),
    uv_layer: str | None = None,
    mesh_frame: np.ndarray | None = None,
    crease_strength: float | None = None,
    cavity: float | None = None,
) -> bpy.types.ShaderNodeTree:
    """Inserts the "TexTalker Wrinkles" group between each material's albedo and Base Color.

    The group reads `sequence_folder/wrinkle_####.exr` (sequence frame 1 on scene frame
    `frame_start`) over the mesh-UV rectangle `uv_region` (the template's wrinkle layout,
    `template.wrinkle_layout.rectangle_source()`). When the folder also holds `crease_detail.exr`
    (`write_crease_detail`), the group bumps the BSDF's Normal too (the user's normal map, when
    linked, is chained into the bump), at the physical depth for the object's size
    (`world_units_per_mm(obj, mesh_frame)`), with the "Crease Strength" and "Cavity" inputs set
    to the given values (None: the object's `textalker_creases` settings, or the defaults).
    An object without a usable material gets a new tagged one. Any previous TexTalker group on
    the object's materials is removed first. Returns the node group.
    """
    folder = Path(sequence_folder)
    mesh = obj.data
    if uv_layer is None:
        active = next((layer for layer in mesh.uv_layers if layer.active_render), None)
        uv_layer = active.name if active else (mesh.uv_layers[0].name if mesh.uv_layers else "")
    record = _object_record(obj)
    _remove_material_output(obj, record)

    image = _load_sequence_image(folder, n_frames)
    detail_file = crease_detail_path(folder)
    detail_image = None
    units_per_mm = world_units_per_mm(obj, mesh_frame)
    try:
        if detail_file.is_file():
            detail_image = _load_data_image(detail_file, f"TexTalker crease {folder.parent.name} {folder.name}")
        group = _build_node_group(image, n_frames, frame_start, uv_region, uv_layer, detail_image, units_per_mm)
    except BaseException:
        for made in (image, detail_image):
            if made is not None:
                bpy.data.images.remove(made)
        raise
    materials = []
    for material in {slot.material for slot in obj.material_slots if slot.material}:
        if _insert_group(material, group):
            materials.append(material.name)
    created_material = ""
    if not materials:
        material = compat.new_material(f"TexTalker {obj.name}")
        material[TAG] = True
        mesh.materials.append(material)
        _insert_group(material, group)
        materials.append(material.name)
        created_material = material.name
    record.update(
        {
            "folder": str(folder),
            "image": image.name,
            "crease_image": detail_image.name if detail_image is not None else "",
            "node_group": group.name,
            "materials": materials,
            "created_material": created_material,
            "n_frames": int(n_frames),
            "frame_start": int(frame_start),
            "units_per_mm": units_per_mm,
        }
    )
    obj[OBJECT_RECORD] = json.dumps(record)
    if detail_image is not None:
        default_strength, default_cavity = _object_crease_settings(obj)
        set_crease_controls(
            obj,
            default_strength if crease_strength is None else crease_strength,
            default_cavity if cavity is None else cavity,
        )
    return group


def _object_record(obj: bpy.types.Object) -> dict:
    return json.loads(obj[OBJECT_RECORD]) if OBJECT_RECORD in obj else {}


def _remove_material_output(obj: bpy.types.Object, record: dict) -> None:
    names = set(record.get("materials", []))
    names.update(slot.material.name for slot in obj.material_slots if slot.material)
    for name in names:
        material = bpy.data.materials.get(name)
        if material is not None:
            _remove_group_nodes(material)
    created = record.get("created_material")
    material = bpy.data.materials.get(created) if created else None
    if material is not None and material.get(TAG):
        mesh = obj.data
        for index in reversed(range(len(mesh.materials))):
            if mesh.materials[index] == material:
                mesh.materials.pop(index=index)
        bpy.data.materials.remove(material)
    group = bpy.data.node_groups.get(record.get("node_group", ""))
    if group is not None and group.get(TAG) and group.users == 0:
        bpy.data.node_groups.remove(group)
    for key in ("image", "crease_image"):
        image = bpy.data.images.get(record.get(key) or "")
        if image is not None and image.get(TAG) and image.users == 0:
            bpy.data.images.remove(image)


def output_folder_of(obj: bpy.types.Object) -> Path | None:
    folder = _object_record(obj).get("folder")
    return Path(folder) if folder else None


def delete_sequence_files(folder: str | os.PathLike) -> int:
    """Deletes the run's files in `folder` (only those: `wrinkle_####.exr` and
    `crease_detail.exr`) and the folder if then empty. Returns the files deleted."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for path in [*folder.glob(f"{IMAGE_PREFIX}[0-9]*.exr"), crease_detail_path(folder)]:
        if path.is_file():
            path.unlink()
            removed += 1
    try:
        folder.rmdir()
    except OSError:
        pass  # the user put something else there: keep it
    return removed


def remove_textalker_output(obj: bpy.types.Object, delete_files: bool = True) -> dict:
    """Removes every key, action, node, node group, image and material the add-on created on
    `obj`, restores the Base Color and Normal links, and (optionally) deletes the EXR files. Returns counts."""
    record = _object_record(obj)
    keys = remove_shape_keys(obj) if obj.type == "MESH" else 0
    for child in obj.children:
        if child.type == "MESH" and PART_TAG in child:
            remove_shape_keys(child)  # the template parts keyed along with the head
    _remove_material_output(obj, record)
    files = 0
    if delete_files and record.get("folder"):
        files = delete_sequence_files(record["folder"])
    if OBJECT_RECORD in obj:
        del obj[OBJECT_RECORD]
    return {"shape_keys": keys, "files": files}


def has_textalker_output(obj: bpy.types.Object | None) -> bool:
    if obj is None or obj.type != "MESH":
        return False
    return OBJECT_RECORD in obj or bool(generated_key_names(obj))

"""Writes a generation result into Blender data, and removes it again.

- `write_shape_keys`: one shape key per frame (`TT_0001`, ...) keyed 1 on its frame and 0 on its
  neighbours with LINEAR interpolation, so sub-frames and motion blur blend two keys.
- `write_exr_sequence`: half-float (16 bit) ZIP-compressed OpenEXR files, written by Blender's own
  image writer so the add-on needs no extra wheel and Blender reads back exactly what it wrote.
- `ensure_wrinkle_material`: a node group "TexTalker Wrinkles" that multiplies the albedo feeding
  the Base Color by the wrinkle-ratio sequence, inside the template's UV region only.
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


def write_exr_sequence(
    maps: np.ndarray, folder: str | os.PathLike, first_frame: int = 1
) -> list[Path]:
    """Writes maps (T, H, W, 3), image row order (row 0 = top), as `wrinkle_0001.exr`, ...
    (numbered from `first_frame`: a streamed run writes its chunks as they come).

    Half float, ZIP, RGB, through `Image.save_render` with a temporary scene whose image
    settings say so: the user's render settings are never touched (and so need no restoring).
    """
    maps = np.asarray(maps)
    if maps.ndim != 4 or maps.shape[3] != 3:
        raise ValueError(f"maps must be (T, H, W, 3), got {maps.shape}")
    n_frames, height, width, _ = maps.shape
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # Blender's pixel buffer starts at the bottom row and is RGBA.
    rgba = np.ones((height, width, 4), dtype=np.float32)
    writer_scene = bpy.data.scenes.new("TexTalker EXR writer")
    image = bpy.data.images.new(
        "TexTalker EXR buffer", width, height, alpha=False, float_buffer=True
    )
    paths = []
    try:
        settings = writer_scene.render.image_settings
        settings.file_format = "OPEN_EXR"
        settings.color_mode = "RGB"
        settings.color_depth = "16"
        settings.exr_codec = "ZIP"
        image.colorspace_settings.name = "Non-Color"
        for t in range(n_frames):
            rgba[:, :, :3] = maps[t, ::-1]
            image.pixels.foreach_set(rgba.ravel())
            path = exr_frame_path(folder, first_frame + t)
            image.save_render(str(path), scene=writer_scene)
            paths.append(path)
    finally:
        bpy.data.images.remove(image)
        bpy.data.scenes.remove(writer_scene)
    return paths


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


def _load_sequence_image(folder: Path, n_frames: int) -> bpy.types.Image:
    first = exr_frame_path(folder, 1)
    if not first.is_file():
        raise FileNotFoundError(f"wrinkle sequence not found: {first}")
    image = bpy.data.images.load(str(first), check_existing=False)
    image.name = f"TexTalker {folder.parent.name} {folder.name}"
    image.filepath = _blend_path(first)
    image.source = "SEQUENCE"
    image.colorspace_settings.name = "Non-Color"
    image[TAG] = True
    return image


def _build_node_group(
    image: bpy.types.Image,
    n_frames: int,
    frame_start: int,
    uv_region: tuple[float, float, float, float],
    uv_layer: str,
) -> bpy.types.ShaderNodeTree:
    """Color out = Albedo in x ratio, where ratio is the sequence looked up at the mesh UV mapped
    into `uv_region`, and exactly 1 outside the region (CLIP gives alpha 0 there)."""
    group = bpy.data.node_groups.new(NODE_GROUP_NAME, "ShaderNodeTree")
    group[TAG] = True
    group.interface.new_socket(name="Albedo", in_out="INPUT", socket_type="NodeSocketColor")
    group.interface.new_socket(name="Color", in_out="OUTPUT", socket_type="NodeSocketColor")
    nodes, links = group.nodes, group.links
    group_in = nodes.new("NodeGroupInput")
    group_out = nodes.new("NodeGroupOutput")
    uv = nodes.new("ShaderNodeUVMap")
    uv.uv_map = uv_layer
    u0, v0, u1, v1 = (float(x) for x in uv_region)
    to_origin = nodes.new("ShaderNodeVectorMath")
    to_origin.operation = "SUBTRACT"
    to_origin.label = "UV - region origin"
    to_origin.inputs[1].default_value = (u0, v0, 0.0)
    to_unit = nodes.new("ShaderNodeVectorMath")
    to_unit.operation = "DIVIDE"
    to_unit.label = "/ region size"
    to_unit.inputs[1].default_value = (u1 - u0, v1 - v0, 1.0)
    texture = nodes.new("ShaderNodeTexImage")
    texture.name = "TexTalker Wrinkle Sequence"
    texture.image = image
    texture.interpolation = "Linear"
    texture.extension = "CLIP"
    texture.image_user.frame_duration = int(n_frames)
    texture.image_user.frame_start = int(frame_start)
    texture.image_user.frame_offset = 0
    texture.image_user.use_auto_refresh = True
    texture.image_user.use_cyclic = False
    inside = nodes.new("ShaderNodeMix")
    inside.data_type = "RGBA"
    inside.blend_type = "MIX"
    inside.label = "ratio inside region, 1 outside"
    multiply = nodes.new("ShaderNodeMix")
    multiply.data_type = "RGBA"
    multiply.blend_type = "MULTIPLY"
    multiply.label = "albedo x ratio"

    def socket(node, identifier, outputs=False):
        for s in node.outputs if outputs else node.inputs:
            if s.identifier == identifier:
                return s
        raise KeyError(identifier)

    links.new(uv.outputs["UV"], to_origin.inputs[0])
    links.new(to_origin.outputs["Vector"], to_unit.inputs[0])
    links.new(to_unit.outputs["Vector"], texture.inputs["Vector"])
    links.new(texture.outputs["Alpha"], socket(inside, "Factor_Float"))
    socket(inside, "A_Color").default_value = (1.0, 1.0, 1.0, 1.0)
    links.new(texture.outputs["Color"], socket(inside, "B_Color"))
    socket(multiply, "Factor_Float").default_value = 1.0
    links.new(group_in.outputs["Albedo"], socket(multiply, "A_Color"))
    links.new(socket(inside, "Result_Color", True), socket(multiply, "B_Color"))
    links.new(socket(multiply, "Result_Color", True), group_out.inputs["Color"])
    for x, node in enumerate((group_in, uv, to_origin, to_unit, texture, inside, multiply, group_out)):
        node.location = (x * 220.0, 0.0)
    return group


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


def _insert_group(material: bpy.types.Material, group: bpy.types.ShaderNodeTree) -> bool:
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
    node["textalker_to"] = json.dumps([bsdf.name, base_color.identifier])
    if base_color.is_linked:
        link = base_color.links[0]
        source = link.from_socket
        node["textalker_from"] = json.dumps([link.from_node.name, source.identifier])
        tree.links.remove(link)
        tree.links.new(source, node.inputs["Albedo"])
    else:
        node["textalker_from"] = ""
        node.inputs["Albedo"].default_value = tuple(base_color.default_value)
    tree.links.new(node.outputs["Color"], base_color)
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
    """Removes our group nodes from a material and restores the links they replaced."""
    tree = material.node_tree
    if tree is None:
        return 0
    removed = 0
    for node in [n for n in tree.nodes if n.get(TAG)]:
        to_name, to_identifier = json.loads(node["textalker_to"])
        origin = node.get("textalker_from", "")
        target_node = tree.nodes.get(to_name)
        target = _find_input(target_node, to_identifier) if target_node else None
        tree.nodes.remove(node)
        removed += 1
        if target is None:
            continue
        if origin:
            from_name, from_identifier = json.loads(origin)
            source_node = tree.nodes.get(from_name)
            source = _find_output(source_node, from_identifier) if source_node else None
            if source is not None:
                tree.links.new(source, target)
    return removed


def ensure_wrinkle_material(
    obj: bpy.types.Object,
    sequence_folder: str | os.PathLike,
    n_frames: int,
    frame_start: int,
    uv_region: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0),
    uv_layer: str | None = None,
) -> bpy.types.ShaderNodeTree:
    """Inserts the "TexTalker Wrinkles" group between each material's albedo and Base Color.

    The group reads `sequence_folder/wrinkle_####.exr` (sequence frame 1 on scene frame
    `frame_start`) over the mesh-UV rectangle `uv_region` (the template's wrinkle layout,
    `template.wrinkle_layout.rectangle_source()`). An object without a usable material gets a new
    tagged one. Any previous TexTalker group on the object's materials is removed first. Returns
    the node group.
    """
    folder = Path(sequence_folder)
    mesh = obj.data
    if uv_layer is None:
        active = next((layer for layer in mesh.uv_layers if layer.active_render), None)
        uv_layer = active.name if active else (mesh.uv_layers[0].name if mesh.uv_layers else "")
    record = _object_record(obj)
    _remove_material_output(obj, record)

    image = _load_sequence_image(folder, n_frames)
    group = _build_node_group(image, n_frames, frame_start, uv_region, uv_layer)
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
            "node_group": group.name,
            "materials": materials,
            "created_material": created_material,
            "n_frames": int(n_frames),
            "frame_start": int(frame_start),
        }
    )
    obj[OBJECT_RECORD] = json.dumps(record)
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
    image = bpy.data.images.get(record.get("image", ""))
    if image is not None and image.get(TAG) and image.users == 0:
        bpy.data.images.remove(image)


def output_folder_of(obj: bpy.types.Object) -> Path | None:
    folder = _object_record(obj).get("folder")
    return Path(folder) if folder else None


def delete_sequence_files(folder: str | os.PathLike) -> int:
    """Deletes `wrinkle_####.exr` files in `folder` (only those) and the folder if then empty."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for path in folder.glob(f"{IMAGE_PREFIX}[0-9]*.exr"):
        path.unlink()
        removed += 1
    try:
        folder.rmdir()
    except OSError:
        pass  # the user put something else there: keep it
    return removed


def remove_textalker_output(obj: bpy.types.Object, delete_files: bool = True) -> dict:
    """Removes every key, action, node, node group, image and material the add-on created on
    `obj`, restores the Base Color links, and (optionally) deletes the EXR files. Returns counts."""
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

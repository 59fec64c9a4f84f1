"""Reading the scene: the target mesh and its UV layout, the audio (a file or a sound strip), the
scene's frame rate, the template head's parts, and the panel's settings. Changes nothing."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import bpy
import numpy as np

from ..core import mesh_match
from ..core.errors import MeshError, TexTalkerError
from . import catalog, compat, writers
from .results import GenerationRequest

# --------------------------------------------------------------------------------------------
# Gathering inputs (main thread)


def scene_fps(scene: bpy.types.Scene) -> float:
    return scene.render.fps / scene.render.fps_base


def sound_strips(scene: bpy.types.Scene | None) -> list:
    editor = scene.sequence_editor if scene is not None else None
    if editor is None:
        return []
    return [s for s in compat.all_strips(editor) if s.type == "SOUND"]


def strip_audio_path(strip) -> str:
    sound = strip.sound
    if sound is None:
        raise TexTalkerError(f"Sound strip '{strip.name}' has no sound data")
    if sound.packed_file is not None:
        # Packed into the .blend: hand the bytes to the audio loader through a temporary copy
        # (one per sound, overwritten on the next run), keeping the extension for the decoder.
        folder = Path(tempfile.gettempdir()) / "textalker_packed_audio"
        folder.mkdir(parents=True, exist_ok=True)
        extension = Path(sound.filepath).suffix or ".wav"
        path = folder / f"{bpy.path.clean_name(sound.name)}{extension}"
        path.write_bytes(sound.packed_file.data)
        return str(path)
    if sound.filepath.startswith("//") and not bpy.data.filepath and sound.library is None:
        raise TexTalkerError(
            f"The sound of strip '{strip.name}' has a path relative to the .blend file ({sound.filepath}), "
            "which is not saved yet: save the .blend first, or load the sound with its full path"
        )
    path = bpy.path.abspath(sound.filepath, library=sound.library)
    return os.path.normpath(path)


def resolve_audio(scene: bpy.types.Scene, audio) -> tuple[object, str, int]:
    """(audio for the pipeline, a label for messages, the frame where frame 0 of the speech sits).

    `audio` is a sound strip (keys start on its start frame), a path or an (array, rate) tuple
    (keys start on the scene's start frame)."""
    if compat.is_strip(audio):
        if audio.type != "SOUND":
            raise TexTalkerError(f"Strip '{audio.name}' is not a sound strip")
        path = strip_audio_path(audio)
        if not os.path.isfile(path):
            raise TexTalkerError(f"The sound of strip '{audio.name}' is missing: {path}")
        # The strip plays second t of the file at frame_start + (t + sound_offset) * fps (measured
        # with a mixdown); trimming (frame_offset_start) only mutes frames, it does not move it.
        start = compat.strip_content_start(audio) + getattr(audio, "sound_offset", 0.0) * scene_fps(scene)
        return path, f"strip '{audio.name}'", int(round(start))
    if isinstance(audio, tuple):
        return audio, "audio array", scene.frame_start
    if str(audio).startswith("//") and not bpy.data.filepath:
        raise TexTalkerError(
            f"The audio path {audio} is relative to the .blend file, which is not saved yet: save "
            "the .blend first, or choose the file with its full path"
        )
    path = bpy.path.abspath(str(audio))
    if not path:
        raise TexTalkerError("No audio file chosen")
    if not os.path.isfile(path):
        raise TexTalkerError(f"Audio file not found: {path}")
    return path, os.path.basename(path), scene.frame_start


def mesh_vertex_uvs(mesh: bpy.types.Mesh, uv_layer: str) -> np.ndarray:
    """One UV per vertex: the UV of the first corner (loop) that uses it, as core.template does.
    Vertices used by no face get (-1, -1), outside every map."""
    loop_vertices = np.empty(len(mesh.loops), dtype=np.int64)
    mesh.loops.foreach_get("vertex_index", loop_vertices)
    loop_uvs = np.empty(len(mesh.loops) * 2, dtype=np.float32)
    mesh.uv_layers[uv_layer].data.foreach_get("uv", loop_uvs)
    loop_uvs = loop_uvs.reshape(-1, 2)
    vertex_uvs = np.full((len(mesh.vertices), 2), -1.0, dtype=np.float32)
    used, first_loop = np.unique(loop_vertices, return_index=True)
    vertex_uvs[used] = loop_uvs[first_loop]
    return vertex_uvs


def template_head():
    from ..core.template import load_template

    return load_template()


def match_template_layout(mesh: bpy.types.Mesh, uv_layer: str, template):
    """(vertex_uvs, mesh_frame) for the Pipeline and the writer: vertex_uvs None for the template
    head itself, with mesh_frame None unless its vertices were transformed (rotation, scale or
    mirroring applied); the mesh's vertex UVs and its linear map from the template for a mesh
    sharing the layout (an MPFB character); MeshError otherwise."""
    vertex_uvs = mesh_vertex_uvs(mesh, uv_layer)
    if mesh_match.is_template_mesh(vertex_uvs, template):
        return None, mesh_match.template_mesh_frame(template.vertices, rest_positions(mesh))
    try:
        match = mesh_match.match_layout(vertex_uvs, template)
    except mesh_match.LayoutMismatch as mismatch:
        raise MeshError(
            f"The mesh's UV layout does not match the MakeHuman template: {mismatch}. Use the "
            "template head (Add Template Head), a MakeHuman/MPFB character with its original UV map, "
            "or fit the template to this head first (Fit to This Head)"
        ) from None
    return vertex_uvs, mesh_match.fit_mesh_frame(template, match, rest_positions(mesh))


def template_uv_layer(mesh: bpy.types.Mesh, template) -> str | None:
    """The UV map to drive the mesh through: the render one (active_render) when it has the
    template's layout, else the first other UV map that has it (a game artist's lightmap or
    second UV set is often the render one), else the render one (prepare then says why it does
    not match); None without UV maps."""
    layers = sorted(mesh.uv_layers, key=lambda layer: not layer.active_render)
    if len(layers) > 1:
        for layer in layers:
            try:
                match_template_layout(mesh, layer.name, template)
            except MeshError:
                continue
            return layer.name
    return layers[0].name if layers else None


def rest_positions(mesh: bpy.types.Mesh) -> np.ndarray:
    """(V, 3) float32 rest vertices: the reference shape key's when the mesh has keys."""
    positions = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
    source = mesh.shape_keys.reference_key.data if mesh.shape_keys else mesh.vertices
    source.foreach_get("co", positions)
    return positions.reshape(-1, 3)


def part_frames(obj: bpy.types.Object, template) -> dict[str, np.ndarray | None]:
    """{part name: template-part-frame -> part-mesh map (None: untransformed)} for the template
    parts (teeth, tongue, eyes) under `obj` that keep their topology; each is fitted on its own
    vertices, so a part that had its rotation or scale applied with or without the head moves in
    its own frame."""
    frames = {}
    for name, part in template_parts(obj).items():
        data = template.parts.get(name)
        if data is not None and len(part.data.vertices) == len(data["vertices"]):
            frames[name] = mesh_match.template_mesh_frame(data["vertices"], rest_positions(part.data))
    return frames


# --------------------------------------------------------------------------------------------
# The target when the result is written (main thread)


def request_target(request: GenerationRequest) -> bpy.types.Object | None:
    """The request's target now: by its session id (a rename while the model ran used to read
    as a deletion and throw the generation away), by name where Blender has no session ids."""
    if request.object_uid is None:
        return bpy.data.objects.get(request.object_name)
    return next((obj for obj in bpy.data.objects if getattr(obj, "session_uid", None) == request.object_uid), None)


def template_parts(obj: bpy.types.Object) -> dict[str, bpy.types.Object]:
    """The part objects `Add Template Head` parented to `obj`, by part name."""
    return {
        child[writers.PART_TAG]: child
        for child in obj.children
        if child.type == "MESH" and writers.PART_TAG in child
    }


def available_styles():
    """Style names recorded in the bundled weights (no model loading)."""
    return catalog.read_style_names()


# --------------------------------------------------------------------------------------------
# The operator's inputs, from the panel settings


def target_object(context) -> bpy.types.Object | None:
    settings = context.scene.textalker
    return settings.target or context.active_object


def selected_audio(context):
    """The sound strip or file path chosen in the panel (None if nothing is chosen)."""
    settings = context.scene.textalker
    if settings.audio_source == "FILE":
        return settings.audio_file or None
    strips = sound_strips(sequencer_scene(context))
    if settings.sound_strip:
        return next((s for s in strips if s.name == settings.sound_strip), None)
    return strips[0] if len(strips) == 1 else None


def sequencer_scene(context) -> bpy.types.Scene:
    """Blender 5 may edit strips of another scene than the 3D view's."""
    return getattr(context, "sequencer_scene", None) or context.scene


def blink_rate_setting(settings) -> float | None:
    """The panel's blink choice as `blink_rate`: the style's rate (None), the custom rate, or 0."""
    if settings.blinks == "CUSTOM":
        return float(settings.blink_rate)
    if settings.blinks == "OFF":
        return 0.0
    return None


def brow_rate_setting(settings) -> float | None:
    """The panel's brow emphasis choice as `brow_rate`: the style's rate (None), the custom rate,
    or 0."""
    if settings.brows == "CUSTOM":
        return float(settings.brow_rate)
    if settings.brows == "OFF":
        return 0.0
    return None


def style_id(key: str) -> int | str:
    for style in catalog.read_style_names():
        if style.key == key:
            return style.id
    return 0

"""Checks before any work (`prepare`): the target, the audio, the options, the disk, memory and
the output folder; gathers them into a `GenerationRequest`. Changes nothing in the scene."""

from __future__ import annotations

import math
import os
import tempfile
import time
import uuid
from pathlib import Path

import bpy
import numpy as np

from ..core import arguments, resources
from ..core.errors import MeshError, ResourceError, TexTalkerError
from ..core.lip_seal import DEFAULT_SEAL_MM
from ..core.options import GenerationOptions
from . import arkit_output, catalog, head_fitting
from .preferences import get_preferences
from .outputs import has_output
from .results import ARKIT, GenerationRequest, OUTPUT_MODES, SHAPE_KEYS
from .scene_inputs import blink_rate_setting, brow_rate_setting, match_template_layout, part_frames, resolve_audio, scene_fps, selected_audio, sequencer_scene, sound_strips, style_id, target_object, template_head, template_uv_layer

# One shape key per frame stores every vertex per frame: refuse clips whose keys alone would
# take more memory than this (Blender would crawl long before running out).
MAX_SHAPE_KEY_BYTES = 2 * 1024**3


def _check_shape_key_memory(audio, n_vertices: int, fps: float) -> None:
    """Refuses audio so long that its shape keys would not fit (the header gives the length)."""
    if isinstance(audio, tuple):
        samples, rate = audio
        duration = len(samples) / float(rate)
    else:
        try:
            import soundfile

            duration = soundfile.info(audio).duration
        except Exception:  # a format soundfile cannot read: the pipeline decodes it and checks
            return
    needed = duration * fps * n_vertices * 3 * 4
    if needed > MAX_SHAPE_KEY_BYTES:
        longest = MAX_SHAPE_KEY_BYTES / (fps * n_vertices * 3 * 4)
        raise TexTalkerError(
            f"The audio is {duration:.0f} s long: one shape key per frame on {n_vertices} vertices "
            f"would need {needed / 1024**3:.1f} GB. Split it into clips of at most {longest:.0f} s"
        )


def _weights_config(weights: str | None) -> dict:
    """The model config recorded in the weights header (no tensor is read); {} when unreadable
    (the Pipeline then reports the weights with a clear message)."""
    import json

    from safetensors import safe_open

    try:
        with safe_open(str(weights or catalog.weights_path()), framework="numpy") as handle:
            return dict(json.loads((handle.metadata() or {})["config"]))
    except Exception:
        return {}


def _wrinkle_resolution(weights: str | None) -> int:
    """The wrinkle maps' size recorded in the weights header (no tensor is read)."""
    try:
        return int(_weights_config(weights)["wrinkle_vq"]["resolution"])
    except (KeyError, TypeError, ValueError):
        return 256  # the largest map the shipped configurations use: a safe bound


def check_steps(steps, weights: str | None = None) -> int | None:
    """Checked `steps` (None: the model's default) against the number of diffusion steps the
    weights were trained with, read from their header before the model loads."""
    config = _weights_config(weights)
    maximum, default = config.get("diffusion_steps"), config.get("sampling_steps")
    return arguments.check_steps_within(steps, int(maximum), default) if maximum else steps


def _check_resources(audio, request_folder: Path, n_points: int, key_vertices: int, fps: float,
                     write_wrinkles: bool, weights: str | None) -> None:
    """Refuses, before any work, audio longer than the Pipeline accepts, a run that would not fit
    in memory, and an output folder that cannot be written or lacks space for the EXR files."""
    from ..core.audio import audio_duration
    from ..core.pipeline import MAX_AUDIO_SECONDS

    duration = audio_duration(audio)
    if duration is None:  # a format whose header gives no length: the Pipeline checks it later
        return
    estimate = resources.estimate_run(
        duration, fps, n_points, _wrinkle_resolution(weights), key_vertices, write_wrinkles
    )
    if duration > MAX_AUDIO_SECONDS:
        raise ResourceError(
            f"The audio is {duration / 60:.1f} minutes long; the limit is "
            f"{MAX_AUDIO_SECONDS / 60:.0f} minutes ({estimate.describe()}). Split it into clips "
            f"of at most {MAX_AUDIO_SECONDS / 60:.0f} minutes"
        )
    resources.check_memory(estimate)
    if write_wrinkles:
        resources.check_writable(request_folder)
        resources.check_disk_space(request_folder, estimate.disk_bytes)


def _check_linked(obj: bpy.types.Object) -> None:
    """Linked (library) data is read-only: keys and materials cannot be added to it."""
    for block, what in ((obj, "object"), (obj.data, "mesh")):
        if block.library is not None:
            raise MeshError(
                f"The {what} '{block.name}' is linked from the library {block.library.filepath}: "
                "it cannot be changed here. Make it local (Object > Relations > Make Local) or "
                "animate it in its own file"
            )
        if what == "mesh" and getattr(block, "override_library", None) is not None:
            raise MeshError(
                f"The mesh '{block.name}' is a library override: its shape keys cannot be edited. "
                "Make the mesh local first"
            )


def _check_shared_mesh(obj: bpy.types.Object) -> None:
    """Shape keys and material slots belong to the mesh: on a mesh shared with another object
    (a linked duplicate, Alt+D) that already carries TexTalker output, a new run would replace
    that object's keys and pile a second wrinkle setup on its material, and removing either
    output would break the other."""
    owners = [other.name for other in bpy.data.objects
              if other is not obj and other.data is obj.data and has_output(other)]
    if owners:
        raise MeshError(
            f"'{obj.name}' shares its mesh with '{owners[0]}', which already has TexTalker output (shape "
            f"keys live on the mesh, so both objects move with it). Remove the output from '{owners[0]}' "
            "first, or give this object its own mesh (Object > Relations > Make Single User > Object & Data)"
        )


def _run_folder(obj: bpy.types.Object, output_folder: str | None) -> tuple[Path, str]:
    """`<.blend folder>/textalker/<object>/<run id>`; unsaved files use the preferences' folder
    (or the temp folder) and say so."""
    run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
    object_part = bpy.path.clean_name(obj.name)
    note = ""
    if output_folder:
        if str(output_folder).startswith("//") and not bpy.data.filepath:
            raise TexTalkerError(
                f"The output folder {output_folder} is relative to the .blend file, which is not saved "
                "yet: save the .blend first, or give a full path"
            )
        # Absolute: a folder relative to the working directory would be a different folder
        # for the next process that opens the .blend (a render node).
        base = Path(os.path.abspath(bpy.path.abspath(output_folder)))
    elif bpy.data.filepath:
        base = Path(bpy.path.abspath("//"))
    else:
        preference = get_preferences().output_folder
        base = Path(bpy.path.abspath(preference)) if preference else Path(tempfile.gettempdir())
        note = (
            f"The .blend file is unsaved: wrinkle maps were written to {base / 'textalker'}; "
            "save the file beside them or set an output folder in the preferences"
        )
    return base / "textalker" / object_part / run_id, note


def _device_name(device: str) -> str:
    device = (device or "DEFAULT").upper()
    if device == "DEFAULT":
        device = get_preferences().default_device
    return device.lower()


def prepare(
    obj: bpy.types.Object,
    audio,
    speaking_style: int | str = 0,
    wrinkle_style: int | str | None = None,
    device: str = "auto",
    steps: int | None = None,
    seed: int = 0,
    scene: bpy.types.Scene | None = None,
    output_folder: str | None = None,
    weights: str | None = None,
    output_mode: str = SHAPE_KEYS,
    arkit_export: str | None = None,
    blink_rate: float | None = None,
    options: GenerationOptions | None = None,
    brow_rate: float | None = None,
    lip_seal_mm: float = DEFAULT_SEAL_MM,
) -> GenerationRequest:
    """Checks the inputs and gathers them; changes nothing. Raises TexTalkerError.

    The generation choices come as keywords (speaking_style ... blink_rate, brow_rate, lip_seal_mm) or, from a caller that
    already made them, as `options` (then those keywords are ignored); either way the frame rate
    is the scene's."""
    scene = scene or bpy.context.scene
    if obj is None:
        raise MeshError("No target object: select a mesh")
    if obj.type != "MESH":
        raise MeshError(f"'{obj.name}' is not a mesh")
    if obj.mode == "EDIT":
        raise MeshError(f"'{obj.name}' is in Edit Mode: switch to Object Mode first")
    _check_linked(obj)
    _check_shared_mesh(obj)
    output_mode = (output_mode or SHAPE_KEYS).upper()
    if output_mode not in OUTPUT_MODES:
        raise TexTalkerError(f"Unknown output mode '{output_mode}': use one of {', '.join(OUTPUT_MODES)}")
    if arkit_export and output_mode != ARKIT:
        raise TexTalkerError("The ARKit export needs the output mode 'ARKit curves'")
    # The one place the add-on's choices are checked (core/options.py); then what the weights know.
    if options is None:
        options = GenerationOptions(speaking_style, wrinkle_style, scene_fps(scene), seed, steps, blink_rate,
                                    brow_rate, lip_seal_mm)
    elif options.fps != scene_fps(scene):
        options = options.replace(fps=scene_fps(scene))
    check_steps(options.steps, weights)
    for role, style in (("speaking", options.speaking_style), ("wrinkle", options.wrinkle_style)):
        if style is not None:  # None: the weights' default wrinkle style
            check_style(style, role, weights)
    mesh = obj.data
    template = template_head()
    # A stored head fit (Fit to This Head) drives the mesh whatever its UV layout (issue #20).
    fitted = head_fitting.fitted_target(obj, template, head_fitting.render_uv_layer(mesh))
    uv_layer = head_fitting.render_uv_layer(mesh) if fitted is not None else template_uv_layer(mesh, template)
    arkit_plan = None
    if fitted is not None:
        if output_mode == ARKIT:
            raise MeshError(
                f"'{obj.name}' is driven through its head fit: ARKit curves need the template's topology "
                "or ARKit-named shape keys. Use the output mode 'Shape keys'"
            )
        if uv_layer is None:
            raise MeshError(
                f"'{obj.name}' has no UV map: the wrinkle textures are made in the mesh's own UV map. "
                "Add one (UV > Smart UV Project is enough)"
            )
        vertex_uvs, mesh_frame = None, None
    elif output_mode == ARKIT:
        # Always generated on the template head (the solver needs its vertices); the mesh only
        # needs the template's UV layout for the wrinkle maps.
        arkit_plan = arkit_output.plan(obj, uv_layer, template, arkit_export)
        vertex_uvs, mesh_frame = None, None
    else:
        if uv_layer is None:
            raise MeshError(f"'{obj.name}' has no UV map: it needs the MakeHuman UV layout")
        vertex_uvs, mesh_frame = match_template_layout(mesh, uv_layer, template)
    pipeline_audio, label, frame_start = resolve_audio(scene, audio)
    folder, note = _run_folder(obj, output_folder)
    write_wrinkles = arkit_plan.write_wrinkles if arkit_plan is not None else True
    _check_resources(
        pipeline_audio,
        folder,
        n_points=len(template.vertices) if output_mode == ARKIT else len(mesh.vertices),
        key_vertices=0 if output_mode == ARKIT else len(mesh.vertices),
        fps=scene_fps(scene),
        write_wrinkles=write_wrinkles,
        weights=weights,
    )
    if output_mode != ARKIT:
        _check_shape_key_memory(pipeline_audio, len(mesh.vertices), scene_fps(scene))
    if arkit_plan is not None and arkit_plan.export_path is not None:
        _check_export_path(arkit_plan.export_path, pipeline_audio, scene_fps(scene))
    if arkit_plan is not None and not arkit_plan.write_wrinkles:
        note = arkit_plan.note  # no wrinkle files: where they would go does not matter
    elif arkit_plan is not None and arkit_plan.note:
        note = f"{arkit_plan.note}. {note}" if note else arkit_plan.note
    hubert = get_preferences().hubert_folder
    return GenerationRequest(
        object_name=obj.name,
        audio=pipeline_audio,
        audio_label=label,
        options=options,
        device=_device_name(device),
        frame_start=int(frame_start),
        vertex_uvs=vertex_uvs,
        mesh_frame=mesh_frame,
        # A fitted head's wrinkle images are made in its own UV layout, over the whole square.
        wrinkle_uv_rect=(0.0, 0.0, 1.0, 1.0) if fitted is not None else template.wrinkle_layout.rectangle_source(),
        uv_layer=uv_layer or "",
        sequence_folder=folder,
        folder_note=note,
        weights=weights,
        hubert_folder=bpy.path.abspath(hubert) if hubert else None,
        output_mode=output_mode,
        arkit=arkit_plan,
        write_wrinkles=write_wrinkles,
        part_frames=part_frames(obj, template) if output_mode != ARKIT and vertex_uvs is None and fitted is None else {},
        object_uid=getattr(obj, "session_uid", None),
        fitted_head=fitted,
    )


def check_style(style, role: str, weights: str | None = None) -> None:
    """TexTalkerError unless `style` is an id, key or name of the weights' styles (the rule of
    `core.style.StylePivots.index`), checked before the model is loaded."""
    known = catalog.read_style_names(weights)
    if not known:  # unreadable weights: the Pipeline reports them
        return
    if isinstance(style, (int, np.integer)) and not isinstance(style, bool):
        if 0 <= int(style) < len(known):
            return
    elif isinstance(style, str) and any(style in (s.key, s.name) for s in known):
        return
    raise TexTalkerError(
        f"Unknown {role} style {style!r}: use an id 0..{len(known) - 1} or one of "
        f"{', '.join(s.key for s in known)}"
    )


# Bytes per frame of an ARKit export (52 weights as text, the frame's timecode): a generous bound.
ARKIT_EXPORT_BYTES_PER_FRAME = 1024


def _check_export_path(path: Path, audio, fps: float) -> None:
    """The ARKit export's folder is writable and has room, checked before the model runs (a
    read-only path or a full disk used to be found after the whole generation)."""
    resources.check_writable(path.parent, what="the ARKit export", hint="another export path")
    duration = _audio_duration_or_none(audio)
    frames = 1 if duration is None else max(1, math.ceil(duration * fps))
    resources.check_disk_space(path.parent, frames * ARKIT_EXPORT_BYTES_PER_FRAME, what="the ARKit export")


def _audio_duration_or_none(audio) -> float | None:
    from ..core.audio import audio_duration

    return audio_duration(audio)


def blocking_reason(context) -> str | None:
    """Why Generate cannot run now (cheap: called on every redraw), or None."""
    if context.scene is None or not hasattr(context.scene, "textalker"):
        return "No scene"
    job = getattr(context.window_manager, "textalker_job", None)
    if job is not None and job.running:
        return "A generation is running"
    if not catalog.weights_path().is_file():
        return "Model weights not found in the add-on"
    obj = target_object(context)
    if obj is None:
        return "Select a mesh (or set a target)"
    if obj.type != "MESH":
        return f"'{obj.name}' is not a mesh"
    settings = context.scene.textalker
    # ARKit curves on the mesh's own ARKit keys need no UV map (the wrinkles are then skipped).
    if not obj.data.uv_layers and getattr(settings, "output_mode", SHAPE_KEYS) != ARKIT:
        return f"'{obj.name}' has no UV map"
    if obj.mode == "EDIT":
        return "Switch to Object Mode"
    if obj.library is not None or obj.data.library is not None:
        return f"'{obj.name}' is linked from a library: make it local"
    if settings.audio_source == "FILE":
        if not settings.audio_file:
            return "Choose an audio file"
        if settings.audio_file.startswith("//") and not bpy.data.filepath:
            return "Save the .blend first: the audio path is relative to it"
        if not os.path.isfile(bpy.path.abspath(settings.audio_file)):
            return "Audio file not found"
        return None
    strips = sound_strips(sequencer_scene(context))
    if not strips:
        return "Add a sound strip to the Sequencer, or use a file"
    if settings.sound_strip and not any(s.name == settings.sound_strip for s in strips):
        return f"No sound strip named '{settings.sound_strip}'"
    if not settings.sound_strip and len(strips) > 1:
        return "Choose a sound strip"
    return None


def request_from_context(context) -> GenerationRequest:
    settings = context.scene.textalker
    audio = selected_audio(context)
    if audio is None:
        raise TexTalkerError(blocking_reason(context) or "Choose the audio")
    # The panel's choices as options (its steps field shows "default" as 0); checked in prepare.
    return prepare(
        target_object(context),
        audio,
        speaking_style=style_id(settings.speaking_style),
        wrinkle_style=style_id(settings.wrinkle_style),
        steps=settings.steps or None,
        seed=settings.seed,
        blink_rate=blink_rate_setting(settings),
        brow_rate=brow_rate_setting(settings),
        lip_seal_mm=settings.lip_seal_mm,
        device=settings.device,
        scene=context.scene,  # its fps and timeline drive the keys, wherever the strip lives
        output_mode=settings.output_mode,
        arkit_export=settings.arkit_export_path if settings.output_mode == ARKIT else None,
    )

"""Python API for scripts, and the one code path shared by the operator, scripts and the CLI.

A generation has three steps:

    request = prepare(obj, audio, ...)          main thread: checks the Blender inputs and copies
                                                 what the model needs into plain Python data
    animation = compute(request, progress, cancel)  any thread: core only (no bpy), the slow part
    summary = apply(request, animation)             main thread: EXR files, then keys, material

`generate()` and the operator stream instead of computing the whole clip first (bounded memory
on long audio, issue #7/#8): `compute_streamed` runs `Pipeline.generate_chunks`, hands each
chunk's wrinkle maps to the main thread, which writes them to the run's new EXR folder at once
(`SequenceWriter`), and keeps only the offsets Blender still needs (half floats of the points
that move, `core.frame_store`; ARKit mode keeps only per-frame projections for the solver); then
`apply` writes the shape keys block by block. `generate()` (scripts, CLI, background mode) runs
them in a row; the modal operator runs `compute_streamed` in a worker thread (`GenerationJob`),
writes the queued maps on its timer, and calls `apply` when the worker is done. `compute` (the
whole clip in memory) stays for callers that want the arrays.

Nothing in the scene changes before `apply` (the EXR files go to a new folder, under a hidden
staging name until the sequence is complete: `core.run_files`), so an error or a cancel leaves the
user's scene as it was, and the files written so far are deleted; a killed run's staging folder
is swept by the next run on the object.

Example (inside Blender, or `import bpy` in Python)::

    from textalker_blender.blender import api
    summary = api.generate(bpy.data.objects["Head"], "/path/speech.wav",
                           speaking_style=0, wrinkle_style=2, device="cpu", steps=6, seed=1,
                           blink_rate=20.0)
    print(summary.n_frames, summary.sequence_folder)
"""

from __future__ import annotations

import atexit
import contextlib
import inspect
import math
import os
import queue
import tempfile
import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import bpy
import numpy as np

from ..core import arguments, mesh_match, part_motion, resources, run_files
from ..core.frame_store import FrameStore
from ..core.options import GenerationOptions
from ..core.errors import MeshError, ResourceError, TexTalkerError
from . import arkit_output, catalog, compat, writers
from .preferences import get_preferences

# One shape key per frame stores every vertex per frame: refuse clips whose keys alone would
# take more memory than this (Blender would crawl long before running out).
MAX_SHAPE_KEY_BYTES = 2 * 1024**3

# Output modes (the panel's enum identifiers; the API and CLI take the same strings).
SHAPE_KEYS = "SHAPE_KEYS"  # one shape key per frame: exact, heavy, not editable
ARKIT = "ARKIT"  # 52 ARKit units with one F-curve each: editable, drives the user's own rig
OUTPUT_MODES = (SHAPE_KEYS, ARKIT)


@dataclass
class GenerationRequest:
    """Everything `compute` and `apply` need, as plain data (safe to hand to a thread)."""

    object_name: str
    audio: object  # a path (str) or (samples, sample_rate)
    audio_label: str
    options: GenerationOptions  # styles, scene fps, seed, steps, blink rate: checked once, in prepare
    device: str  # "auto" | "cuda" | "cpu"
    frame_start: int
    vertex_uvs: np.ndarray | None  # None: the mesh is the template head itself
    mesh_frame: np.ndarray | None  # (3, 3) template-frame offsets -> mesh local frame; None: same
    wrinkle_uv_rect: tuple[float, float, float, float]  # mesh UV rectangle the wrinkle maps cover
    uv_layer: str
    sequence_folder: Path
    folder_note: str = ""  # said to the user when the .blend is unsaved
    weights: str | None = None
    hubert_folder: str | None = None
    output_mode: str = SHAPE_KEYS
    arkit: arkit_output.ArkitPlan | None = None  # ARKit mode: which keys, where to export
    write_wrinkles: bool = True  # False: the mesh lacks the template UV layout (ARKit mode only)
    # {template part: (3, 3) template frame -> the part mesh's frame, or None} (template head only)
    part_frames: dict = field(default_factory=dict)
    # The target's ID.session_uid: `apply` finds it even if the artist renamed it while the
    # model ran (None where Blender lacks it: then by name).
    object_uid: int | None = None



    # Read-only views of the options, for the writers and the summary.
    @property
    def fps(self) -> float:
        return self.options.fps

    @property
    def steps(self) -> int | None:
        return self.options.steps

    @property
    def seed(self) -> int:
        return self.options.seed

    @property
    def speaking_style(self) -> int | str:
        return self.options.speaking_style

    @property
    def wrinkle_style(self) -> int | str:
        return self.options.wrinkle_style

    @property
    def blink_rate(self) -> float | None:
        return self.options.blink_rate

@dataclass
class Animation:
    """What `compute` returns: the Pipeline's result and the offsets of the template's parts.

    From `compute_streamed`: `result.offsets` is None, `mesh_offsets` holds the offsets in the
    mesh's frame (shape-key mode), `part_offsets` holds FrameStores, and `result.wrinkle_maps`
    is the `ExrSequence` already written. `apply` consumes the stores (each block is freed once
    its shape keys exist), so such an animation is applied once."""

    result: object  # core.pipeline.GenerationResult
    part_offsets: dict[str, np.ndarray | FrameStore] = field(default_factory=dict)  # {part: (T, Vp, 3)}
    arkit_weights: np.ndarray | None = None  # ARKit mode: (T, 52) in core.arkit.ARKIT_NAMES order
    arkit_solve_s: float = 0.0
    note: str = ""  # said to the user with the summary (for example a fallback to the CPU)
    mesh_offsets: FrameStore | None = None  # streamed shape-key mode: (T, V, 3), mesh frame


@dataclass(frozen=True)
class ExrSequence:
    """The wrinkle maps of a streamed run: already written as `folder/wrinkle_0001.exr`, ..."""

    folder: Path
    n_frames: int

    @property
    def paths(self) -> list[Path]:
        return [writers.exr_frame_path(self.folder, i + 1) for i in range(self.n_frames)]


@dataclass
class GenerationSummary:
    object_name: str
    n_frames: int
    fps: float
    frame_start: int
    frame_end: int
    shape_keys: list[str]
    sequence_folder: Path
    exr_files: int
    compute_s: float
    apply_s: float
    note: str = ""
    output_mode: str = SHAPE_KEYS
    arkit_keys: dict[str, str] = field(default_factory=dict)  # {ARKit name: key animated}
    arkit_export: Path | None = None
    # Wall seconds per model stage (audio, features, diffusion, vq_decode, uv_sampling, resample),
    # from the Pipeline: what tools/bench.py reports.
    timings: dict[str, float] = field(default_factory=dict)
    # What the audio conditioning found (silent, very quiet, clipped, not speech): the run went
    # ahead, and the panel, the operator's report and the CLI show these.
    warnings: list[str] = field(default_factory=list)

    @property
    def message(self) -> str:
        text = (
            f"TexTalker: {self.n_frames} frames ({self.frame_start}-{self.frame_end} at "
            f"{self.fps:.3g} fps) on '{self.object_name}', {self.exr_files} wrinkle maps in "
            f"{self.sequence_folder}"
        )
        if self.output_mode == ARKIT:
            text += f", {len(self.arkit_keys)} ARKit curves"
            if self.arkit_export is not None:
                text += f", weights exported to {self.arkit_export}"
        text = f"{text}. {self.note}" if self.note else text
        return f"{text}. Audio: {'; '.join(self.warnings)}" if self.warnings else text


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


def _template():
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
            "template head (Add Template Head) or a MakeHuman/MPFB character with its original UV map"
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
    wrinkle_style: int | str = 0,
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
) -> GenerationRequest:
    """Checks the inputs and gathers them; changes nothing. Raises TexTalkerError.

    The generation choices come as keywords (speaking_style ... blink_rate) or, from a caller that
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
        options = GenerationOptions(speaking_style, wrinkle_style, scene_fps(scene), seed, steps, blink_rate)
    elif options.fps != scene_fps(scene):
        options = options.replace(fps=scene_fps(scene))
    check_steps(options.steps, weights)
    for role, style in (("speaking", options.speaking_style), ("wrinkle", options.wrinkle_style)):
        check_style(style, role, weights)
    mesh = obj.data
    template = _template()
    uv_layer = template_uv_layer(mesh, template)
    arkit_plan = None
    if output_mode == ARKIT:
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
        wrinkle_uv_rect=template.wrinkle_layout.rectangle_source(),
        uv_layer=uv_layer or "",
        sequence_folder=folder,
        folder_note=note,
        weights=weights,
        hubert_folder=bpy.path.abspath(hubert) if hubert else None,
        output_mode=output_mode,
        arkit=arkit_plan,
        write_wrinkles=arkit_plan.write_wrinkles if arkit_plan is not None else True,
        part_frames=part_frames(obj, template) if output_mode != ARKIT and vertex_uvs is None else {},
        object_uid=getattr(obj, "session_uid", None),
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


# --------------------------------------------------------------------------------------------
# The model (any thread; core only)


def load_pipeline(request: GenerationRequest):
    from ..core.pipeline import Pipeline

    options = {"weights": request.weights, "device": request.device}
    if request.hubert_folder and "hubert_dir" in inspect.signature(Pipeline.load).parameters:
        options["hubert_dir"] = request.hubert_folder
    return Pipeline.load(**options)


def compute(request: GenerationRequest, progress=None, cancel: threading.Event | None = None) -> Animation:
    """Runs the Pipeline (offsets at the scene fps, wrinkle maps).

    For a mesh other than the template head, the Pipeline gives vertices outside the template's
    moving triangles in UV (the rest of a body) exactly zero offsets. For the template head, the
    offsets of its parts (teeth, tongue, eyes) follow from the face-unit weights that best
    explain the head's.
    """
    result, pipeline, note = _with_cpu_fallback(
        request, lambda pipeline: _generate(pipeline, request, progress, cancel)
    )
    if request.output_mode == ARKIT:
        animation = arkit_output.solve(pipeline.template, result, request)
    elif request.vertex_uvs is not None:
        animation = Animation(result)
    else:
        animation = Animation(result, part_offsets=_part_offsets(pipeline.template, result.offsets, request))
    animation.note = note
    _raise_if_cancelled(cancel)
    return animation


def _with_cpu_fallback(request: GenerationRequest, run):
    """`run(pipeline)` on the request's device -> (its value, the pipeline used, a note). When the
    GPU is full (another program, or a clip too long for its memory) the same run is made on
    the CPU: the same animation, only slower, and the note says so."""
    pipeline = load_pipeline(request)
    try:
        return run(pipeline), pipeline, ""
    except Exception as error:
        if not _is_gpu_out_of_memory(error) or pipeline.device.type == "cpu":
            raise
        _release_gpu_memory()
        note = (
            f"The GPU ran out of memory ({pipeline.device}); TexTalker generated on the CPU "
            "instead (slower). Close other GPU programs or use shorter clips to use the GPU"
        )
        import dataclasses

        pipeline = load_pipeline(dataclasses.replace(request, device="cpu"))
        return run(pipeline), pipeline, note


def _part_offsets(template, head_offsets, request: GenerationRequest) -> dict[str, np.ndarray]:
    """The template parts' offsets that follow the head's, each in its own mesh's frame."""
    return {
        name: mesh_match.offsets_to_mesh_frame(offsets, request.part_frames.get(name))
        for name, offsets in part_motion.part_offsets(template, head_offsets).items()
    }


def _raise_if_cancelled(cancel: threading.Event | None) -> None:
    """The Pipeline checks `cancel` between its stages; a cancel after its last check still wins."""
    if cancel is not None and cancel.is_set():
        from ..core.errors import Cancelled

        raise Cancelled("Generation cancelled.")


def _generate(pipeline, request: GenerationRequest, progress, cancel):
    return pipeline.generate(request.audio, **_generation_options(request, progress, cancel))


def _generation_options(request: GenerationRequest, progress, cancel) -> dict:
    """The request's arguments to `Pipeline.generate` / `generate_chunks`."""
    return {
        "options": request.options,
        "vertex_uvs": request.vertex_uvs,
        "progress": progress,
        "cancel": cancel,
    }


def _is_gpu_out_of_memory(error: BaseException) -> bool:
    """torch.cuda.OutOfMemoryError, or the RuntimeError older or other backends raise."""
    import torch

    out_of_memory = getattr(torch.cuda, "OutOfMemoryError", None)
    if out_of_memory is not None and isinstance(error, out_of_memory):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def _release_gpu_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------
# Streamed generation (bounded memory: the add-on's own path)


def compute_streamed(request: GenerationRequest, write_maps, progress=None,
                     cancel: threading.Event | None = None) -> Animation:
    """Runs the Pipeline chunk by chunk (any thread; core only).

    `write_maps(first_frame, maps (n, H, W, 3) float16, n_frames)` receives each chunk's wrinkle
    maps in order (0-based first frame, the clip's frame count) and must put them on disk or
    hand them to the main thread; it is not called when the run writes no wrinkle maps. What
    stays in memory until `apply` is only what Blender still needs:

    - shape-key mode: the offsets in the mesh's frame as half floats of the points that move
      (`FrameStore`), and the template parts' offsets likewise;
    - ARKit mode: per frame, the 52 projections of the offsets on the face units and their
      squared norm, all the temporally smoothed solver needs (`ArkitSolver.solve_projected`),
      so no offsets are kept at all.

    A GPU out of memory part way restarts the run on the CPU (the same frames are written again).
    """
    animation, _, note = _with_cpu_fallback(
        request, lambda pipeline: _stream(pipeline, request, write_maps, progress, cancel)
    )
    animation.note = note
    _raise_if_cancelled(cancel)
    return animation


def _stream(pipeline, request: GenerationRequest, write_maps, progress, cancel) -> Animation:
    stream = pipeline.generate_chunks(request.audio, **_generation_options(request, progress, cancel))
    keeper = _ChunkKeeper(pipeline.template, request, stream)
    with stream:
        for chunk in stream:
            keeper.keep(chunk)
            if request.write_wrinkles:
                write_maps(chunk.start, chunk.wrinkle_maps, stream.n_frames)
    sequence = ExrSequence(request.sequence_folder, stream.n_frames) if request.write_wrinkles else None
    return keeper.animation(stream.result(None, sequence))


class _ChunkKeeper:
    """Keeps, chunk by chunk, what `apply` will need from the offsets (see `compute_streamed`)."""

    def __init__(self, template, request: GenerationRequest, stream):
        self.request = request
        self.template = template
        self.n_frames = stream.n_frames
        self.mesh_offsets = None
        self.part_offsets: dict[str, FrameStore] = {}
        self.solver = None
        self.arkit_solve_s = 0.0
        if request.output_mode == ARKIT:
            from ..core.arkit import smoothness_at_fps, template_solver

            self.solver = template_solver(template, smooth=smoothness_at_fps(request.fps))
            self.projected = np.zeros((self.n_frames, self.solver.n_units), np.float64)
            self.squared_norm = np.zeros(self.n_frames, np.float64)
        else:
            self.mesh_offsets = FrameStore(self.n_frames, stream.n_points, stream.movable)
            if request.vertex_uvs is None:  # the template head: its mouth parts follow it
                for name in part_motion.MOVING_PARTS:
                    if name in template.parts:
                        n_part = len(template.parts[name]["vertices"])
                        self.part_offsets[name] = FrameStore(self.n_frames, n_part)

    def keep(self, chunk) -> None:
        if self.solver is not None:
            started = time.perf_counter()
            projected, squared_norm = self.solver.project(chunk.offsets)
            self.projected[chunk.start : chunk.stop] = projected
            self.squared_norm[chunk.start : chunk.stop] = squared_norm
            self.arkit_solve_s += time.perf_counter() - started
            return
        self.mesh_offsets.put(chunk.start, mesh_match.offsets_to_mesh_frame(chunk.offsets, self.request.mesh_frame))
        if self.part_offsets:
            for name, offsets in _part_offsets(self.template, chunk.offsets, self.request).items():
                if name in self.part_offsets:
                    self.part_offsets[name].put(chunk.start, offsets)

    def animation(self, result) -> Animation:
        if self.solver is None:
            return Animation(result, part_offsets=self.part_offsets, mesh_offsets=self.mesh_offsets)
        from ..core.arkit import to_arkit_order

        started = time.perf_counter()
        weights, _report = self.solver.solve_projected(self.projected, self.squared_norm)
        weights = to_arkit_order(weights, self.template.unit_names)
        solve_s = self.arkit_solve_s + time.perf_counter() - started
        return Animation(result, arkit_weights=weights, arkit_solve_s=solve_s)


class SequenceWriter:
    """Writes a streamed run's EXR sequence chunk by chunk (main thread: Blender's image writer).

    The files go to a hidden staging folder beside the run's folder (`core.run_files`), renamed
    to the run's folder by `commit()` once the sequence is complete (`apply` does it through
    `write_sequence`): a run killed part-way leaves no folder that looks complete, and the next
    run on the object sweeps the killed run's staging folder. The disk is checked for the whole
    sequence before the first file (it may have filled since `prepare`); any failure deletes
    every file written so far and, for OS errors, says why in a ResourceError. `discard()`
    deletes them too (a cancelled or failed run)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)  # the final folder, as recorded on the object
        self.staged = run_files.StagedFolder(self.folder, writers.delete_sequence_files)
        self.written = 0
        self._checked = False

    def write(self, first_frame: int, maps: np.ndarray, n_frames: int) -> None:
        with _deleted_on_failure(self.staged.folder, self.discard):
            if not self._checked:
                _STAGED_WRITERS[self.folder] = self
                target = self.staged.open()
                size = max(maps.shape[1], maps.shape[2])
                resources.check_disk_space(target, n_frames * resources.exr_bytes_per_frame(size))
                self._checked = True
            paths = writers.write_exr_sequence(maps, self.staged.folder, first_frame=first_frame + 1)
            _check_written(paths)
            self.written = max(self.written, first_frame + len(paths))

    def commit(self) -> Path:
        """The complete sequence under its final name."""
        _STAGED_WRITERS.pop(self.folder, None)
        return self.staged.commit()

    def discard(self) -> int:
        self.written = 0
        _STAGED_WRITERS.pop(self.folder, None)
        removed = writers.delete_sequence_files(self.staged.folder)
        if not self.staged.committed:
            self.staged.abandon()
        return removed


# Final folder -> the SequenceWriter still writing it under its staging name (`write_sequence`
# renames it when `apply` takes the sequence).
_STAGED_WRITERS: dict[Path, SequenceWriter] = {}


def run(request: GenerationRequest, progress=None, cancel: threading.Event | None = None) -> GenerationSummary:
    """Streams the generation of `request` and applies it (main thread, synchronous): the path
    of `generate()`, the CLI and the operator's background mode. On any failure (cancel
    included) the EXR files written so far are deleted and the scene is left as it was."""
    writer = SequenceWriter(request.sequence_folder)
    started = time.perf_counter()
    try:
        animation = compute_streamed(request, writer.write, progress=progress, cancel=cancel)
        return apply(request, animation, compute_s=time.perf_counter() - started)
    except BaseException:
        writer.discard()  # also when apply refused before it got to the files (target gone)
        raise


# --------------------------------------------------------------------------------------------
# Writing the result (main thread)


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


def apply(request: GenerationRequest, animation: Animation, compute_s: float = 0.0) -> GenerationSummary:
    """Writes the EXR files, then replaces the object's previous TexTalker output with the new
    keys and material. On failure the new output is removed again and the error re-raised.
    After a success, the EXR folders of this session's runs that were undone are deleted
    (`sweep_undone_runs`)."""
    summary = _apply_output(request, animation, compute_s)
    if summary.exr_files:
        _SESSION_RUNS.setdefault(Path(summary.sequence_folder), False)
        _watch_saves()
    sweep_undone_runs(keep=Path(summary.sequence_folder))
    return summary


# The EXR folders this Blender session wrote -> whether a saved file referenced them. A run that
# was undone (Ctrl+Z removes its keys and material, not its files) leaves a folder nothing uses;
# once a new generation succeeds the undo history past it is gone, so such a folder can never be
# used again unless a file saved while it was in use refers to it.
_SESSION_RUNS: dict[Path, bool] = {}


def _referenced_folders() -> set[Path]:
    """Folders of the image sequences in the open file (any image, not only the add-on's)."""
    folders = set()
    for image in bpy.data.images:
        if image.filepath:
            path = bpy.path.abspath(image.filepath, library=image.library)
            folders.add(Path(os.path.abspath(path)).parent)
    return folders


def sweep_undone_runs(keep: Path | None = None) -> list[Path]:
    """Deletes the sequence files of this session's runs that no image of the open file uses and
    no saved file used (undone, or from a file closed unsaved); returns their folders."""
    used = _referenced_folders()
    removed = []
    for folder, saved in list(_SESSION_RUNS.items()):
        if saved or folder == keep or Path(os.path.abspath(folder)) in used:
            continue
        writers.delete_sequence_files(folder)
        del _SESSION_RUNS[folder]
        removed.append(folder)
    return removed


@bpy.app.handlers.persistent
def _mark_saved_runs(*_args) -> None:
    """save_post: the session's run folders the saved file uses are never swept."""
    used = _referenced_folders()
    for folder in _SESSION_RUNS:
        if Path(os.path.abspath(folder)) in used:
            _SESSION_RUNS[folder] = True


def _watch_saves() -> None:
    if _mark_saved_runs not in bpy.app.handlers.save_post:
        bpy.app.handlers.save_post.append(_mark_saved_runs)


def _apply_output(request: GenerationRequest, animation: Animation, compute_s: float = 0.0) -> GenerationSummary:
    started = time.perf_counter()
    obj = request_target(request)
    if obj is None or obj.type != "MESH":
        raise MeshError(f"The target '{request.object_name}' was deleted during generation")
    if request.output_mode == ARKIT:
        summary = arkit_output.apply_arkit(request, animation, obj, compute_s)
        summary.timings = dict(getattr(animation.result, "timings", None) or {})
        summary.warnings = list(getattr(animation.result, "warnings", None) or [])
        return _with_note(summary, getattr(animation, "note", ""))
    result = animation.result
    offsets = getattr(animation, "mesh_offsets", None)  # streamed runs: already in the mesh's frame
    if offsets is None:
        offsets = mesh_match.offsets_to_mesh_frame(result.offsets, request.mesh_frame)
    if offsets.shape[1] != len(obj.data.vertices):
        raise MeshError(
            f"'{obj.name}' changed during generation ({len(obj.data.vertices)} vertices now, "
            f"{offsets.shape[1]} generated)"
        )
    folder = request.sequence_folder
    paths = write_sequence(result.wrinkle_maps, folder)
    try:
        remove_all_output(obj, delete_files=True)
        # A streamed run's half-float offsets are freed block by block as their keys are made:
        # the keys grow as the store shrinks (10 min at 30 fps: 0.4 GB less at the peak).
        _release_after_reading(offsets)
        names = writers.write_shape_keys(obj, offsets, request.fps, request.frame_start)
        for part_name, part in template_parts(obj).items():
            part_offsets = animation.part_offsets.get(part_name)
            if part_offsets is not None and part_offsets.shape[1] == len(part.data.vertices):
                _release_after_reading(part_offsets)
                writers.write_shape_keys(part, part_offsets, request.fps, request.frame_start)
        writers.ensure_wrinkle_material(
            obj, folder, len(paths), request.frame_start, request.wrinkle_uv_rect, request.uv_layer
        )
    except BaseException:
        remove_all_output(obj, delete_files=True)
        writers.delete_sequence_files(folder)  # not yet recorded on the object when this failed
        raise
    n_frames = len(names)
    summary = GenerationSummary(
        object_name=obj.name,
        n_frames=n_frames,
        fps=request.fps,
        frame_start=request.frame_start,
        frame_end=request.frame_start + n_frames - 1,
        shape_keys=names,
        sequence_folder=folder,
        exr_files=len(paths),
        compute_s=compute_s,
        apply_s=time.perf_counter() - started,
        note=request.folder_note,
        timings=dict(getattr(result, "timings", None) or {}),
        warnings=list(getattr(result, "warnings", None) or []),
    )
    return _with_note(summary, getattr(animation, "note", ""))


def _release_after_reading(offsets) -> None:
    if isinstance(offsets, FrameStore):
        offsets.release_after_reading = True


def _with_note(summary: GenerationSummary, note: str) -> GenerationSummary:
    if note:
        summary.note = f"{note}. {summary.note}" if summary.note else note
    return summary


def write_sequence(maps, folder: Path) -> list[Path]:
    """The EXR sequence, after checking the disk has room for it; on any failure (disk full,
    folder not writable, cancelled) the files written so far are deleted and the error says why.

    `maps` is (T, H, W, 3), or the `ExrSequence` a streamed run already wrote there: its files
    are checked (all there, all EXR) and returned."""
    if isinstance(maps, ExrSequence):
        with _deleted_on_failure(folder):
            writer = _STAGED_WRITERS.get(Path(maps.folder))
            if writer is not None:
                _check_written([writers.exr_frame_path(writer.staged.folder, i + 1) for i in range(maps.n_frames)])
                writer.commit()
            return _check_written(maps.paths)
    maps = np.asarray(maps)
    if maps.ndim == 4:
        needed = maps.shape[0] * resources.exr_bytes_per_frame(max(maps.shape[1], maps.shape[2]))
        resources.check_disk_space(folder, needed)  # the disk may have filled during compute
    with _deleted_on_failure(folder):
        return _check_written(writers.write_exr_sequence(maps, folder))


@contextlib.contextmanager
def _deleted_on_failure(folder: Path, discard=None):
    """On any failure inside (cancel included) the EXR files written so far are deleted
    (`discard()`, by default every sequence file in `folder`); OS-level failures are re-raised
    as the ResourceError of `_write_error`."""
    try:
        yield
    except BaseException as error:
        if discard is None:
            writers.delete_sequence_files(folder)
        else:
            discard()
        translated = _write_error(error, folder)
        if translated is error:
            raise
        raise translated from error


def _check_written(paths: list[Path]) -> list[Path]:
    """`paths`, after checking each is an EXR file (Blender's writer does not report every
    failed write); OSError otherwise."""
    unwritten = [path.name for path in paths if not _is_exr_file(path)]
    if unwritten:
        raise OSError(f"{len(unwritten)} files were not written ({', '.join(unwritten[:3])})")
    return paths


def _write_error(error: BaseException, folder: Path) -> BaseException:
    """The error to raise for a failed EXR write: OS-level failures become a ResourceError that
    names the folder and its free space; anything else (a cancel, a TexTalkerError) as it is."""
    if isinstance(error, (OSError, RuntimeError)) and not isinstance(error, TexTalkerError):
        free = resources.format_bytes(resources.free_disk_bytes(folder))
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return ResourceError(
            f"Writing the wrinkle maps to {folder} failed ({reason}); {free} free there. "
            "Check that the folder is writable and the disk is not full; nothing was changed"
        )
    return error


def _is_exr_file(path: Path) -> bool:
    """A regular file starting with the OpenEXR magic number."""
    import stat

    try:
        if not stat.S_ISREG(path.stat().st_mode):
            return False
        with open(path, "rb") as handle:
            return handle.read(4) == b"\x76\x2f\x31\x01"
    except OSError:
        return False


def generate(
    obj: bpy.types.Object,
    audio,
    speaking_style: int | str = 0,
    wrinkle_style: int | str = 0,
    device: str = "auto",
    steps: int | None = None,
    seed: int = 0,
    scene: bpy.types.Scene | None = None,
    output_folder: str | None = None,
    weights: str | None = None,
    progress=None,
    output_mode: str = SHAPE_KEYS,
    arkit_export: str | None = None,
    blink_rate: float | None = None,
    options: GenerationOptions | None = None,
) -> GenerationSummary:
    """Animates `obj` from `audio` (a path, a sound strip, or (samples, rate)); synchronous.

    Styles are ids or keys of `Pipeline.styles`; device "auto" | "cuda" | "cpu"; steps None for
    the model's default. Raises TexTalkerError (with a message for the user) and then leaves
    the scene unchanged.

    `output_mode`: "SHAPE_KEYS" (one shape key per frame) or "ARKIT" (52 ARKit curves on the
    template head, or on the mesh's own ARKit-named shape keys; see docs/ARKIT.md).
    `arkit_export`: ARKit mode only, a .csv or .json path the weights are written to when the
    run succeeds.
    `blink_rate`: blinks per minute (0..120) for weights with blink input; None (the default)
    blinks at the rate measured for the speaking style, 0 gives no blinks. Weights without blink
    input ignore it.
    `options`: a `core.options.GenerationOptions` made beforehand; it replaces speaking_style ...
    blink_rate (the frame rate is always the scene's).
    """
    request = prepare(
        obj, audio, speaking_style, wrinkle_style, device, steps, seed, scene, output_folder, weights,
        output_mode, arkit_export, blink_rate, options=options,
    )
    return run(request, progress=progress)


def remove_output(obj: bpy.types.Object, delete_files: bool = True) -> dict:
    """Removes everything TexTalker generated on `obj` (keys, action, nodes, images, files)."""
    return remove_all_output(obj, delete_files=delete_files)


def remove_all_output(obj: bpy.types.Object, delete_files: bool = True) -> dict:
    """Both output modes' keys and curves (restoring the user's ARKit keys), material, files."""
    created_arkit_keys = len(arkit_output.created_key_names(obj))
    arkit_curves = arkit_output.remove_arkit_output(obj)
    counts = writers.remove_textalker_output(obj, delete_files=delete_files)
    counts["shape_keys"] += created_arkit_keys
    counts["arkit_curves"] = arkit_curves
    return counts


def has_output(obj: bpy.types.Object | None) -> bool:
    """The object carries output of either mode (the Remove operator's and panel's test)."""
    return writers.has_textalker_output(obj) or arkit_output.has_arkit_output(obj)


def output_timing(obj: bpy.types.Object | None) -> tuple[int, int, float] | None:
    """(first frame, last frame, fps) of the generated animation of either mode, or None."""
    if obj is None or obj.type != "MESH":
        return None
    return writers.generated_timing(obj) or arkit_output.generated_timing(obj)


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
        speaking_style=_style_id(settings.speaking_style),
        wrinkle_style=_style_id(settings.wrinkle_style),
        steps=settings.steps or None,
        seed=settings.seed,
        blink_rate=blink_rate_setting(settings),
        device=settings.device,
        scene=context.scene,  # its fps and timeline drive the keys, wherever the strip lives
        output_mode=settings.output_mode,
        arkit_export=settings.arkit_export_path if settings.output_mode == ARKIT else None,
    )


def blink_rate_setting(settings) -> float | None:
    """The panel's blink choice as `blink_rate`: the style's rate (None), the custom rate, or 0."""
    if settings.blinks == "CUSTOM":
        return float(settings.blink_rate)
    if settings.blinks == "OFF":
        return 0.0
    return None


def _style_id(key: str) -> int | str:
    for style in catalog.read_style_names():
        if style.key == key:
            return style.id
    return 0


# --------------------------------------------------------------------------------------------
# Background job for the modal operator

# Chunks of wrinkle maps the worker may queue before it waits for the main thread to write them
# (each ~25 MB for the template head): memory stays bounded even when the UI is slow to poll.
MAX_QUEUED_CHUNKS = 2
# Seconds `write_pending` spends writing EXR files per timer event by default, so the UI stays
# responsive while a long clip streams (~2 ms per 128x128 file).
WRITE_BUDGET_S = 0.1


@dataclass
class GenerationJob:
    """Runs `compute_streamed` in a daemon thread; the main thread polls `poll_progress`, writes
    the queued wrinkle maps with `write_pending` and applies the result when `done`.

    The worker hands each chunk's maps over through a small bounded queue (it waits while the
    queue is full, and stops waiting when cancelled), so at most MAX_QUEUED_CHUNKS chunks are in
    memory whatever the clip's length. After a cancel or an error, `discard_output` deletes the
    files written so far."""

    request: GenerationRequest
    cancel_event: threading.Event = field(default_factory=threading.Event)
    result: object = None
    error: BaseException | None = None
    compute_s: float = 0.0
    _progress: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    _maps: queue.Queue = field(default_factory=lambda: queue.Queue(maxsize=MAX_QUEUED_CHUNKS))
    _writing: list = field(default_factory=list)  # [first frame, maps, frames done, n_frames]
    _writer: SequenceWriter | None = None
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._writer = SequenceWriter(self.request.sequence_folder)
        self._thread = threading.Thread(target=self._run, name="TexTalker generation", daemon=True)
        _RUNNING_JOBS.add(self)
        self._thread.start()

    def _run(self) -> None:
        started = time.perf_counter()
        try:
            self.result = compute_streamed(
                self.request,
                self._hand_over,
                progress=lambda fraction, stage: self._progress.put((float(fraction), str(stage))),
                cancel=self.cancel_event,
            )
        except BaseException as error:  # reported on the main thread
            self.error = error
        self.compute_s = time.perf_counter() - started
        _RUNNING_JOBS.discard(self)

    def _hand_over(self, first_frame: int, maps: np.ndarray, n_frames: int) -> None:
        """Worker thread: queues a chunk's maps for the main thread; waits while the queue is full."""
        while True:
            if self.cancel_event.is_set():
                from ..core.errors import Cancelled

                raise Cancelled("Generation cancelled.")
            try:
                self._maps.put((first_frame, maps, n_frames), timeout=0.1)
                return
            except queue.Full:
                continue

    def write_pending(self, budget_s: float | None = WRITE_BUDGET_S) -> int:
        """Main thread: writes queued maps to the EXR sequence for about `budget_s` seconds
        (None: everything queued); returns the frames written. Raises what the writer raises
        (the files are then already deleted)."""
        deadline = None if budget_s is None else time.perf_counter() + budget_s
        written = 0
        while deadline is None or time.perf_counter() < deadline:
            if not self._writing:
                try:
                    first, maps, n_frames = self._maps.get_nowait()
                except queue.Empty:
                    break
                self._writing = [first, maps, 0, n_frames]
            first, maps, done, n_frames = self._writing
            # A few files at a time, so the budget is kept even with large chunks.
            step = len(maps) - done if deadline is None else min(len(maps) - done, 16)
            self._writer.write(first + done, maps[done : done + step], n_frames)
            written += step
            done += step
            self._writing = [] if done >= len(maps) else [first, maps, done, n_frames]
        return written

    def discard_output(self) -> int:
        """Deletes the EXR files this job wrote and forgets the queued maps (main thread)."""
        self._writing = []
        while True:
            try:
                self._maps.get_nowait()
            except queue.Empty:
                break
        return self._writer.discard() if self._writer is not None else 0

    def poll_progress(self) -> tuple[float, str] | None:
        """Latest (fraction, stage) since the last call, or None."""
        latest = None
        while True:
            try:
                latest = self._progress.get_nowait()
            except queue.Empty:
                return latest

    @property
    def done(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    def cancel(self) -> None:
        self.cancel_event.set()

    def wait(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    __hash__ = object.__hash__  # kept in a WeakSet (dataclass equality would disable hashing)


# Jobs whose worker thread is running. When Blender quits, they are cancelled and given a moment
# to stop at their next check, so the interpreter does not finalise under a running model.
_RUNNING_JOBS: "weakref.WeakSet[GenerationJob]" = weakref.WeakSet()
EXIT_WAIT_S = 5.0


def cancel_running_jobs(wait_s: float = EXIT_WAIT_S) -> int:
    """Cancels every running job, waits up to `wait_s` in all for them to stop and deletes the
    EXR files they had written; returns how many were running."""
    jobs = list(_RUNNING_JOBS)
    for job in jobs:
        job.cancel()
    deadline = time.monotonic() + wait_s
    for job in jobs:
        job.wait(max(0.0, deadline - time.monotonic()))
    for job in jobs:
        try:
            job.discard_output()
        except OSError:
            pass  # at exit: nothing left to tell the user
    return len(jobs)


atexit.register(cancel_running_jobs)

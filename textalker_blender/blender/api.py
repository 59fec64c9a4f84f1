"""Python API for scripts, and the one door shared by the operator, scripts and the CLI.

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

Where each part lives: `results` (request, animation, summary types), `scene_inputs` (reading
the target, the audio and the panel settings), `preflight` (`prepare` and its checks), `generation`
(`compute`, `compute_streamed`, `apply`, `run`), `outputs` (the EXR sequence, run folders,
removal), `job` (the modal operator's worker thread). This module re-exports what scripts use.

Example (inside Blender, or `import bpy` in Python)::

    from textalker_blender.blender import api
    summary = api.generate(bpy.data.objects["Head"], "/path/speech.wav",
                           speaking_style=0, wrinkle_style=2, device="cpu", steps=6, seed=1,
                           blink_rate=20.0)
    print(summary.n_frames, summary.sequence_folder)
"""

from __future__ import annotations

import bpy

from ..core.options import GenerationOptions
from .generation import apply, compute, compute_streamed, load_pipeline, run
from .job import EXIT_WAIT_S, MAX_QUEUED_CHUNKS, WRITE_BUDGET_S, GenerationJob, cancel_running_jobs
from .outputs import SequenceWriter, has_output, output_timing, remove_all_output, sweep_undone_runs, write_sequence
from .preflight import MAX_SHAPE_KEY_BYTES, blocking_reason, check_steps, check_style, prepare, request_from_context
from .results import ARKIT, OUTPUT_MODES, SHAPE_KEYS, Animation, ExrSequence, GenerationRequest, GenerationSummary
from .scene_inputs import (
    available_styles,
    blink_rate_setting,
    brow_rate_setting,
    match_template_layout,
    mesh_vertex_uvs,
    part_frames,
    resolve_audio,
    scene_fps,
    selected_audio,
    sequencer_scene,
    sound_strips,
    strip_audio_path,
    style_id,
    target_object,
    template_head,
    template_parts,
    template_uv_layer,
)

# The public API: what scripts, the operator, the panel and the CLI use (defined in the modules above).
__all__ = [
    "generate", "remove_output", "GenerationOptions",
    # generation
    "apply", "compute", "compute_streamed", "load_pipeline", "run",
    # the modal operator's job
    "EXIT_WAIT_S", "MAX_QUEUED_CHUNKS", "WRITE_BUDGET_S", "GenerationJob", "cancel_running_jobs",
    # output files and removal
    "SequenceWriter", "has_output", "output_timing", "remove_all_output", "sweep_undone_runs", "write_sequence",
    # checks before any work
    "MAX_SHAPE_KEY_BYTES", "blocking_reason", "check_steps", "check_style", "prepare", "request_from_context",
    # data types
    "ARKIT", "OUTPUT_MODES", "SHAPE_KEYS", "Animation", "ExrSequence", "GenerationRequest", "GenerationSummary",
    # reading the scene
    "available_styles", "blink_rate_setting", "brow_rate_setting", "match_template_layout", "mesh_vertex_uvs", "part_frames",
    "resolve_audio", "scene_fps", "selected_audio", "sequencer_scene", "sound_strips", "strip_audio_path",
    "style_id", "target_object", "template_head", "template_parts", "template_uv_layer",
]

def generate(obj: bpy.types.Object, audio, progress=None, **choices) -> GenerationSummary:
    """Animates `obj` from `audio` (a path, a sound strip, or (samples, rate)); synchronous.

    `choices` are `prepare`'s keywords: speaking_style, wrinkle_style, device, steps, seed, scene,
    output_folder, weights, output_mode, arkit_export, blink_rate, brow_rate, lip_seal_mm, options.
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
    `brow_rate`: brow emphases (brows raised or knitted on a held syllable) per minute of speech
    (0..120) for weights with brow input, the same way.
    `lip_seal_mm`: how far apart (mm) the lips may be and still be pressed shut where the
    weights' closure detector is sure the lips close (a /p b m/, a pause); scaled per frame by
    its probability (0..20; default 12; 0 shows the model's lips as they are; weights without a
    detector get no seal; core/lip_seal.py, core/closure.py).
    `options`: a `core.options.GenerationOptions` made beforehand; it replaces speaking_style ...
    lip_seal_mm (the frame rate is always the scene's).
    """
    return run(prepare(obj, audio, **choices), progress=progress)


def remove_output(obj: bpy.types.Object, delete_files: bool = True) -> dict:
    """Removes everything TexTalker generated on `obj` (keys, action, nodes, images, files)."""
    return remove_all_output(obj, delete_files=delete_files)

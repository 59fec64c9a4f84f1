"""The generation itself: the model (core only, any thread: `compute`, `compute_streamed`), then
the scene (main thread: `apply` writes the EXR files, keys and material), and `run`, both in a row."""

from __future__ import annotations

import inspect
import threading
import time
from pathlib import Path

import numpy as np

from ..core import mesh_match, part_motion
from ..core.errors import MeshError
from ..core.frame_store import FrameStore
from . import arkit_output, writers
from .outputs import (
    SequenceWriter,
    record_session_run,
    remove_all_output,
    sweep_undone_runs,
    write_crease_detail,
    write_sequence,
)
from .results import ARKIT, Animation, ExrSequence, GenerationRequest, GenerationSummary
from .scene_inputs import request_target, template_parts

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
    elif request.fitted_head is not None:
        animation = _fitted_animation(pipeline.template, result, request)
    elif request.vertex_uvs is not None:
        animation = Animation(result)
    else:
        animation = Animation(result, part_offsets=_part_offsets(pipeline.template, result.offsets, request))
    animation.note = note
    animation.crease_detail_mm = _crease_detail(pipeline, result, request)
    _raise_if_cancelled(cancel)
    return animation


def _crease_detail(pipeline, result, request: GenerationRequest) -> np.ndarray | None:
    """The chosen wrinkle style's crease detail map (mm, full fold) in the layout of the
    target's wrinkle images: the template's wrinkle rectangle, or a fitted head's own UV map.
    None when no wrinkle images are written or the weights have no fold maps."""
    style = getattr(result, "wrinkle_style", None)
    if not request.write_wrinkles or style is None:
        return None
    detail = pipeline.crease_detail_mm(style.key)
    if detail is None or request.fitted_head is None:
        return detail
    return request.fitted_head.crease_detail(detail, pipeline.template)


def _fitted_animation(template, result, request: GenerationRequest) -> Animation:
    """A fitted head (issue #20): the template's offsets carried to the mesh's vertices and its
    wrinkle maps into the mesh's UV layout."""
    import dataclasses

    fitted = request.fitted_head
    if request.write_wrinkles:
        folds = getattr(result, "fold_maps", None)
        changes = {"wrinkle_maps": fitted.wrinkle_maps(result.wrinkle_maps, template)}
        if folds is not None:  # fold activation: 0 where no face is behind a texel
            changes["fold_maps"] = fitted.wrinkle_maps(folds[..., None], template, neutral=0.0)[..., 0]
        result = dataclasses.replace(result, **changes)
    return Animation(result, mesh_offsets=fitted.offsets(result.offsets, template))


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
    animation, pipeline, note = _with_cpu_fallback(
        request, lambda pipeline: _stream(pipeline, request, write_maps, progress, cancel)
    )
    animation.note = note
    animation.crease_detail_mm = _crease_detail(pipeline, animation.result, request)
    _raise_if_cancelled(cancel)
    return animation


def _stream(pipeline, request: GenerationRequest, write_maps, progress, cancel) -> Animation:
    stream = pipeline.generate_chunks(request.audio, **_generation_options(request, progress, cancel))
    keeper = _ChunkKeeper(pipeline.template, request, stream)
    if request.fitted_head is not None:  # the maps go into the fitted head's own UV layout
        write_maps = request.fitted_head.map_writer(write_maps, pipeline.template)
    with stream:
        for chunk in stream:
            keeper.keep(chunk)
            if request.write_wrinkles:
                folds = getattr(chunk, "fold_maps", None)
                if folds is None:  # weights without fold maps: the writer's three-argument form
                    write_maps(chunk.start, chunk.wrinkle_maps, stream.n_frames)
                else:
                    write_maps(chunk.start, chunk.wrinkle_maps, stream.n_frames, folds)
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
        elif request.fitted_head is not None:  # offsets carried to the fitted head's vertices
            fitted = request.fitted_head
            self.mesh_offsets = FrameStore(self.n_frames, len(fitted.influence), fitted.movable)
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
        if self.request.fitted_head is not None:
            self.mesh_offsets.put(chunk.start, self.request.fitted_head.offsets(chunk.offsets, self.template))
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


# --------------------------------------------------------------------------------------------
# Both in a row, and writing the result (main thread)


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


def apply(request: GenerationRequest, animation: Animation, compute_s: float = 0.0) -> GenerationSummary:
    """Writes the EXR files, then replaces the object's previous TexTalker output with the new
    keys and material. On failure the new output is removed again and the error re-raised.
    After a success, the EXR folders of this session's runs that were undone are deleted
    (`sweep_undone_runs`)."""
    summary = _apply_output(request, animation, compute_s)
    if summary.exr_files:
        record_session_run(Path(summary.sequence_folder))
    sweep_undone_runs(keep=Path(summary.sequence_folder))
    return summary


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
    paths = write_sequence(result.wrinkle_maps, folder, folds=getattr(result, "fold_maps", None))
    write_crease_detail(animation.crease_detail_mm, folder)
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

"""The "ARKit curves" output mode, between the shared steps (`preflight`, `generation`) and
`arkit_writer` (Blender data).

    plan(obj, ...)        main thread, in preflight.prepare: which keys to create or drive; changes nothing
    solve(template, ...)  any thread, in generation.compute: ARKit weights from the template offsets (core)
    apply_arkit(...)      main thread, in generation.apply: EXR files, curves, material, export file

The Pipeline always runs on the template head in this mode (the solver fits the template's face
units to template vertices), so the target mesh needs no particular topology: a Faceit, VRM or
Ready Player Me character with ARKit-named shape keys works. Wrinkle maps need the template's
UV layout; meshes without it get the curves and a note.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import bpy
import numpy as np

from ..core.arkit import ARKIT_NAMES, match_arkit_names, solve_arkit_weights, unit_offsets_for_mesh
from ..core.arkit_export import write_track
from ..core.errors import MeshError, TexTalkerError
from ..core.mesh_match import offsets_to_mesh_frame
from . import writers
from .outputs import remove_all_output, write_crease_detail, write_sequence
from .results import ArkitPlan, GenerationSummary
from .scene_inputs import match_template_layout, part_frames, template_head, template_parts
from .arkit_writer import _value_path, created_key_names, write_arkit_curves

EXPORT_SUFFIXES = (".csv", ".json")


def _user_key_names(obj: bpy.types.Object) -> list[str]:
    """The mesh's shape key names, without the reference key and without keys TexTalker made."""
    key = obj.data.shape_keys
    if key is None:
        return []
    ours = created_key_names(obj) | set(writers.generated_key_names(obj))
    return [block.name for block in key.key_blocks if block != key.reference_key and block.name not in ours]


def export_path(path: str | os.PathLike | None) -> Path | None:
    """The absolute export path, checked (suffix, not a folder) before any work; None if unset."""
    if not path:
        return None
    resolved = Path(bpy.path.abspath(str(path)))
    if resolved.suffix.lower() not in EXPORT_SUFFIXES:
        raise TexTalkerError(f"The ARKit export file must end in .csv or .json: {resolved}")
    if resolved.is_dir():
        raise TexTalkerError(f"The ARKit export path is a folder: {resolved}")
    return resolved


def plan(obj: bpy.types.Object, uv_layer: str | None, template, export: str | None) -> ArkitPlan:
    """Drive the mesh's ARKit-named keys, or create 52 keys on a mesh with the template's UV
    layout (the template head, an MPFB character); MeshError if neither applies. Raises
    `core.arkit.ArkitNameError` for two keys naming the same unit."""
    matches = match_arkit_names(_user_key_names(obj))
    shares_layout, vertex_uvs, mesh_frame = False, None, None
    if uv_layer is not None:
        try:
            vertex_uvs, mesh_frame = match_template_layout(obj.data, uv_layer, template)
            shares_layout = True
        except MeshError:
            pass
    if not matches and not shares_layout:
        raise MeshError(
            f"'{obj.name}' has no ARKit-named shape keys (jawOpen, eyeBlinkLeft, mouthSmile_L, ...) "
            "and not the MakeHuman UV layout. 'ARKit Curves' drives such keys (Faceit, MPFB face rig, "
            "VRM / Ready Player Me rigs) or creates them on the template head or an MPFB character; "
            "use 'Per-frame Shape Keys' for this mesh"
        )
    notes = []
    missing = [name for name in ARKIT_NAMES if name not in matches] if matches else []
    if matches and missing:
        notes.append(f"{len(matches)} of 52 ARKit units found on '{obj.name}' ({len(missing)} missing)")
    key = obj.data.shape_keys
    if matches and key is not None and key.animation_data is not None:
        driven = {driver.data_path for driver in key.animation_data.drivers}
        overridden = [name for name in matches.values() if _value_path(name) in driven]
        if overridden:
            notes.append(
                f"{len(overridden)} keys have drivers, which override their curves "
                f"({', '.join(overridden[:3])}{', ...' if len(overridden) > 3 else ''})"
            )
    if not shares_layout:
        notes.append(f"'{obj.name}' does not use the MakeHuman UV layout: no wrinkle maps")
    return ArkitPlan(
        key_names=matches or None,
        export_path=export_path(export),
        write_wrinkles=shares_layout,
        missing=missing,
        note="; ".join(notes),
        vertex_uvs=None if matches else vertex_uvs,
        mesh_frame=None if matches else mesh_frame,
    )


def solve(template, result, request):
    """The Pipeline's template offsets -> ARKit weights at the scene fps (core only)."""
    from .results import Animation

    started = time.perf_counter()
    weights, _report = solve_arkit_weights(template, result.offsets, fps=request.fps)
    return Animation(result, arkit_weights=weights, arkit_solve_s=time.perf_counter() - started)


def _template_unit_offsets(unit_offsets: np.ndarray, unit_names) -> np.ndarray:
    """(U, V, 3) in the template's unit order -> (52, V, 3) in ARKit order (zeros if absent)."""
    index = {name: i for i, name in enumerate(unit_names)}
    out = np.zeros((len(ARKIT_NAMES),) + unit_offsets.shape[1:], dtype=np.float32)
    for j, name in enumerate(ARKIT_NAMES):
        if name in index:
            out[j] = unit_offsets[index[name]]
    return out


def _write_export(path: Path, weights: np.ndarray, fps: float, frame_start: int) -> Path:
    """Written beside the target and renamed over it: a failed write leaves no half file."""
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        write_track(partial, weights, fps, frame_start)
        os.replace(partial, path)
    finally:
        if partial.exists():
            partial.unlink()
    return path


def apply_arkit(request, animation, obj: bpy.types.Object, compute_s: float):
    """Writes the EXR files, then replaces the previous output with the ARKit curves (and the
    wrinkle material, and the export file). On failure everything new is removed again."""
    started = time.perf_counter()
    plan_ = request.arkit
    weights = animation.arkit_weights
    result = animation.result
    template = template_head()
    if plan_.key_names is not None:
        key = obj.data.shape_keys
        gone = [name for name in plan_.key_names.values() if key is None or name not in key.key_blocks]
        if gone:
            raise MeshError(f"Shape keys of '{obj.name}' were removed during generation: {', '.join(gone)}")
    elif len(obj.data.vertices) != (template.n_vertices if plan_.vertex_uvs is None else len(plan_.vertex_uvs)):
        raise MeshError(f"'{obj.name}' changed during generation ({len(obj.data.vertices)} vertices now)")

    folder = request.sequence_folder
    paths = []
    if request.write_wrinkles:
        # checks space, cleans up on failure
        paths = write_sequence(result.wrinkle_maps, folder, folds=getattr(result, "fold_maps", None))
        write_crease_detail(animation.crease_detail_mm, folder)
    written = None
    try:
        remove_all_output(obj, delete_files=True)
        if plan_.key_names is None:
            parts = {}
            frames = part_frames(obj, template)
            for part_name, part in template_parts(obj).items():
                data = template.parts.get(part_name)
                # Eyeballs (helper parts) stay still as in the other mode: the model makes no gaze.
                if data is None or "helper_source_indices" in data or "unit_offsets" not in data:
                    continue
                if len(part.data.vertices) == len(data["vertices"]):
                    parts[part] = offsets_to_mesh_frame(
                        _template_unit_offsets(data["unit_offsets"], template.unit_names), frames.get(part_name)
                    )
            if plan_.vertex_uvs is None:  # the template head itself, in its own frame (rotation or
                # scale applied to it: plan_.mesh_frame)
                unit_offsets = offsets_to_mesh_frame(
                    _template_unit_offsets(template.unit_offsets, template.unit_names), plan_.mesh_frame
                )
            else:
                unit_offsets = offsets_to_mesh_frame(
                    unit_offsets_for_mesh(template, plan_.vertex_uvs), plan_.mesh_frame
                )
            keys = write_arkit_curves(
                obj, weights, request.fps, request.frame_start, unit_offsets=unit_offsets, parts=parts,
            )
        else:
            keys = write_arkit_curves(obj, weights, request.fps, request.frame_start, key_names=plan_.key_names)
        if paths:
            writers.ensure_wrinkle_material(
                obj, folder, len(paths), request.frame_start, request.wrinkle_uv_rect, request.uv_layer
            )
        if plan_.export_path is not None:
            written = _write_export(plan_.export_path, weights, request.fps, request.frame_start)
    except Exception:
        remove_all_output(obj, delete_files=True)
        writers.delete_sequence_files(folder)
        raise
    n_frames = len(weights)
    return GenerationSummary(
        object_name=obj.name,
        n_frames=n_frames,
        fps=request.fps,
        frame_start=request.frame_start,
        frame_end=request.frame_start + n_frames - 1,
        shape_keys=list(keys.values()),
        sequence_folder=folder,
        exr_files=len(paths),
        compute_s=compute_s,
        apply_s=time.perf_counter() - started,
        note=request.folder_note,
        output_mode="ARKIT",
        arkit_keys=keys,
        arkit_export=written,
    )

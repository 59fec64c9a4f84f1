"""What a generation is asked for and what it gives back: plain data, no Blender state.

`GenerationRequest` (made by `preflight.prepare`; ARKit mode adds its `ArkitPlan`), `Animation` (made by `generation.compute*`),
`GenerationSummary` (returned by `generation.apply`), and the output-mode names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.frame_store import FrameStore
from ..core.options import GenerationOptions
from . import writers

# Output modes (the panel's enum identifiers; the API and CLI take the same strings).
SHAPE_KEYS = "SHAPE_KEYS"  # one shape key per frame: exact, heavy, not editable
ARKIT = "ARKIT"  # 52 ARKit units with one F-curve each: editable, drives the user's own rig
OUTPUT_MODES = (SHAPE_KEYS, ARKIT)


@dataclass
class ArkitPlan:
    """What ARKit mode will do on the target (plain data, decided before anything changes)."""

    key_names: dict[str, str] | None  # {ARKit name: the user's key} to drive; None: create keys
    export_path: Path | None = None
    write_wrinkles: bool = True
    # Creating keys on a mesh with the template's UV layout that is not the template head itself:
    vertex_uvs: np.ndarray | None = None  # (N, 2) the mesh's vertex UVs
    mesh_frame: np.ndarray | None = None  # (3, 3) template-frame offsets -> mesh local frame
    missing: list[str] = field(default_factory=list)  # ARKit units the user's rig lacks
    note: str = ""


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
    arkit: ArkitPlan | None = None  # ARKit mode: which keys, where to export
    write_wrinkles: bool = True  # False: the mesh lacks the template UV layout (ARKit mode only)
    # {template part: (3, 3) template frame -> the part mesh's frame, or None} (template head only)
    part_frames: dict = field(default_factory=dict)
    # The target's ID.session_uid: `apply` finds it even if the artist renamed it while the
    # model ran (None where Blender lacks it: then by name).
    object_uid: int | None = None
    # A head with its own topology driven through its stored fit of the template (issue #20):
    # blender.head_fitting.FittedTarget (the Pipeline then generates on the template head).
    fitted_head: object | None = None

    @property
    def fps(self) -> float:
        """The scene's frame rate the keys are written at (the options' fps)."""
        return self.options.fps


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
    crease_detail_mm: np.ndarray | None = None  # the wrinkle style's crease heights (mm) in the
    # target's wrinkle image layout; None: weights without fold maps, or no wrinkle output


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

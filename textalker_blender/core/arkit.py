"""Solve ARKit face-unit weights that reproduce generated vertex offsets.

The template head carries the 52 ARKit face units as linear offset targets ``B`` (52, V, 3).
For generated offsets ``O`` (T, V, 3) we solve, for all frames at once,

    min_W  sum_t ||B^T w_t - o_t||^2 + smooth * sum_t ||w_t - w_{t-1}||^2 + ridge * ||W||^2
    s.t.   0 <= W <= 1

with ADMM. The unconstrained step is a linear system with Kronecker structure
(A x I_T + smooth * I_52 x L_T), where A = B B^T (52x52) and L_T is the path-graph Laplacian
over time. A's eigenvectors and the DCT-II (which diagonalises L_T) turn that solve into an
element-wise division, so each iteration costs two small matrix products and two DCTs:
no Python loop over frames, and cost linear in T (up to the FFT's log factor).

Also here (all pure numpy / string logic, used by the add-on's "ARKit curves" mode and by the
evaluation tools; see docs/ARKIT.md): `solve_arkit_weights` (template offsets -> weights in
Apple's order), `arkit_fit_errors` (vertex and weight errors of solved weights),
`match_arkit_names` (a rig's shape key names -> ARKit units, any common spelling) and
`unit_offsets_for_mesh` (the units on another mesh with the template's UV layout).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import scipy.fft

from .errors import TexTalkerError

__all__ = [
    "ARKIT_NAMES", "ArkitFitErrors", "ArkitNameError", "ArkitSolver", "SolveReport", "arkit_fit_errors",
    "arkit_name_of", "from_arkit_order", "match_arkit_names", "smoothness_at_fps", "solve_arkit_weights",
    "template_solver", "to_arkit_order", "unit_offsets_for_mesh",
]

# Apple ARKit blendshape order (ARFaceAnchor.BlendShapeLocation), as used by Live Link Face
# CSV exports and most game engines.
ARKIT_NAMES = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft",
    "eyeSquintLeft", "eyeWideLeft", "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight",
    "eyeLookOutRight", "eyeLookUpRight", "eyeSquintRight", "eyeWideRight", "jawForward",
    "jawLeft", "jawRight", "jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthLeft",
    "mouthRight", "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthPressLeft",
    "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft",
    "mouthUpperUpRight", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft",
    "browOuterUpRight", "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "noseSneerLeft",
    "noseSneerRight", "tongueOut",
)


@dataclass(frozen=True)
class SolveReport:
    iterations: int
    primal_residual: float
    fit_rmse_m: float  # root mean square vertex error of the solved reconstruction, metres


class ArkitSolver:
    """Bounded, temporally smooth least-squares fit of face-unit weights.

    ``unit_offsets``: (U, V, 3) offsets of each unit at weight 1, metres.
    ``vertex_mask``: optional (V,) bool; only these vertices enter the fit (e.g. the face).
    ``smooth``: weight of the first-difference penalty (in units of the data term per frame).
    """

    def __init__(self, unit_offsets: np.ndarray, unit_names, vertex_mask: np.ndarray | None = None,
                 smooth: float = 0.05, ridge: float = 1e-4):
        unit_offsets = np.asarray(unit_offsets, dtype=np.float64)
        if unit_offsets.ndim != 3 or unit_offsets.shape[2] != 3:
            raise TexTalkerError(f"unit_offsets must be (U, V, 3), got {unit_offsets.shape}")
        self.unit_names = tuple(unit_names)
        if len(self.unit_names) != unit_offsets.shape[0]:
            raise TexTalkerError("one name per face unit is required")
        self.vertex_mask = None if vertex_mask is None else np.asarray(vertex_mask, dtype=bool)
        basis = unit_offsets if self.vertex_mask is None else unit_offsets[:, self.vertex_mask]
        self._basis = basis.reshape(basis.shape[0], -1)  # (U, D)
        # Scale so that `smooth` and `ridge` mean the same thing whatever the mesh size/units.
        gram = self._basis @ self._basis.T
        self._scale = float(np.trace(gram) / gram.shape[0]) or 1.0
        self._gram = gram / self._scale
        self.smooth = float(smooth)
        self.ridge = float(ridge)
        self._eigval, self._eigvec = np.linalg.eigh(self._gram + self.ridge * np.eye(gram.shape[0]))

    @property
    def n_units(self) -> int:
        return self._basis.shape[0]

    def reconstruct(self, weights: np.ndarray) -> np.ndarray:
        """Offsets (T, V', 3) of the masked vertices for weights (T, U)."""
        flat = np.asarray(weights, dtype=np.float64) @ self._basis
        return flat.reshape(flat.shape[0], -1, 3)

    def project(self, offsets: np.ndarray, chunk_frames: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """(B o_t per frame (T, U), ||o_t||^2 per frame (T,)) over the masked vertices.

        Chunked over frames: a 10-minute clip is never copied whole into float64 (its offsets
        alone are ~1 GB in float32). float32 inputs are projected in float32 (the model's
        precision), float64 inputs in float64.
        """
        offsets = np.asarray(offsets)
        if offsets.ndim != 3 or offsets.shape[2] != 3:
            raise TexTalkerError(f"offsets must be (T, V, 3), got {offsets.shape}")
        dtype = np.float64 if offsets.dtype == np.float64 else np.float32
        basis = self._basis.astype(dtype)
        n_frames = offsets.shape[0]
        projected = np.empty((n_frames, self.n_units), np.float64)
        squared_norm = np.empty(n_frames, np.float64)
        for start in range(0, n_frames, chunk_frames):
            chunk = np.asarray(offsets[start:start + chunk_frames], dtype=dtype)
            if self.vertex_mask is not None:
                chunk = chunk[:, self.vertex_mask]
            flat = chunk.reshape(len(chunk), -1)
            if flat.shape[1] != basis.shape[1]:
                raise TexTalkerError("offsets do not match the face units' vertex count")
            projected[start:start + len(chunk)] = flat @ basis.T
            squared_norm[start:start + len(chunk)] = np.einsum("td,td->t", flat, flat)
        return projected, squared_norm

    def frame_errors(self, weights: np.ndarray, projected: np.ndarray, squared_norm: np.ndarray) -> np.ndarray:
        """Per frame ||B^T w_t - o_t||^2 from the projections, without rebuilding any mesh."""
        weights = np.asarray(weights, dtype=np.float64)
        gram = self._gram * self._scale
        error = np.einsum("tu,uv,tv->t", weights, gram, weights) - 2.0 * np.einsum(
            "tu,tu->t", weights, projected) + squared_norm
        return np.maximum(error, 0.0)

    def solve(self, offsets: np.ndarray, iterations: int = 100, rho: float = 0.05,
              tolerance: float = 2e-4) -> tuple[np.ndarray, SolveReport]:
        """Weights (T, U) in [0, 1] for offsets (T, V, 3) (all template vertices).

        Stops when the bound violation and the change of the weights per iteration are both
        below `tolerance` (root mean square, in weight units), or after `iterations`.
        Defaults measured on the template head (docs/ARKIT.md, tools/bench_arkit.py): the solve
        stops after ~50 iterations, its weights differ from a 2,000-iteration solve by 0.001-0.004
        on average (up to ~0.1 only along unit combinations the face hardly distinguishes) with
        the same reconstruction error. `rho` 0.05 converged fastest in a scan from 0.01 to 3.
        """
        offsets = np.asarray(offsets)
        if offsets.ndim != 3:
            raise TexTalkerError(f"offsets must be (T, V, 3), got {offsets.shape}")
        if offsets.shape[0] == 0:
            return np.zeros((0, self.n_units), np.float32), SolveReport(0, 0.0, 0.0)
        return self.solve_projected(*self.project(offsets), iterations=iterations, rho=rho, tolerance=tolerance)

    def solve_projected(self, projected: np.ndarray, squared_norm: np.ndarray, iterations: int = 100,
                        rho: float = 0.05, tolerance: float = 2e-4) -> tuple[np.ndarray, SolveReport]:
        """`solve` from `project`'s output: the fit needs only B o_t and ||o_t||^2 per frame, so a
        streamed generation projects each chunk as it comes and never keeps the offsets."""
        projected = np.asarray(projected, dtype=np.float64)
        squared_norm = np.asarray(squared_norm, dtype=np.float64)
        n_frames = projected.shape[0]
        if n_frames == 0:
            return np.zeros((0, self.n_units), np.float32), SolveReport(0, 0.0, 0.0)

        data_rhs = projected / self._scale  # (T, U)
        # Eigenvalues of the path-graph Laplacian in the DCT-II basis (Neumann ends).
        laplacian_eig = 2.0 - 2.0 * np.cos(np.pi * np.arange(n_frames) / n_frames)
        denominator = (self._eigval[None, :] + self.smooth * laplacian_eig[:, None] + rho)

        def solve_unconstrained(rhs):
            # (gram + ridge + rho) x + smooth * L x = rhs, in the joint eigenbasis.
            spectral = scipy.fft.dct(rhs @ self._eigvec, type=2, norm="ortho", axis=0)
            spectral /= denominator
            return scipy.fft.idct(spectral, type=2, norm="ortho", axis=0) @ self._eigvec.T

        clipped = np.clip(solve_unconstrained(data_rhs), 0.0, 1.0)
        dual = np.zeros_like(clipped)
        residual = 0.0
        iteration = 0
        for iteration in range(1, iterations + 1):
            free = solve_unconstrained(data_rhs + rho * (clipped - dual))
            previous = clipped
            clipped = np.clip(free + dual, 0.0, 1.0)
            dual += free - clipped
            residual = float(np.sqrt(np.mean((free - clipped) ** 2)))
            change = float(np.sqrt(np.mean((clipped - previous) ** 2)))
            if residual < tolerance and change < tolerance:
                break
        n_values = self._basis.shape[1] // 3
        fit_rmse = float(np.sqrt(self.frame_errors(clipped, projected, squared_norm).sum() / (n_frames * n_values)))
        return clipped.astype(np.float32), SolveReport(iteration, residual, fit_rmse)


# --------------------------------------------------------------------------------------------
# Solving for the template head, in ARKit order


def template_solver(template, smooth: float = 0.05) -> ArkitSolver:
    """Solver over the template's face vertices (the neck and the back of the head carry no
    face-unit motion, and would only dilute the fit)."""
    return ArkitSolver(template.unit_offsets, template.unit_names, template.face_mask, smooth=smooth)


def smoothness_at_fps(fps: float, smooth_at_model_fps: float = 0.05) -> float:
    """The smoothness weight that penalises the same motion per second at any frame rate.

    Frame differences shrink as 1/fps while the number of frames grows as fps, so the penalty
    relative to the data term falls as 1/fps^2: scaling by (fps / 30)^2 keeps curves at 60 fps
    as smooth (in time) as at 30 fps.
    """
    from .config import MODEL_FPS

    return float(smooth_at_model_fps) * (float(fps) / MODEL_FPS) ** 2


def solve_arkit_weights(template, offsets: np.ndarray, fps: float = 30.0,
                        **solve_options) -> tuple[np.ndarray, SolveReport]:
    """Offsets (T, V, 3) of the template head -> weights (T, 52) in `ARKIT_NAMES` order, in [0, 1].

    The template stores its units in its own order; every output of this module (curves, CSV,
    JSON) uses Apple's order, so the reordering happens here once.
    """
    solver = template_solver(template, smooth=smoothness_at_fps(fps))
    weights, report = solver.solve(offsets, **solve_options)
    return to_arkit_order(weights, template.unit_names), report


def to_arkit_order(weights: np.ndarray, unit_names) -> np.ndarray:
    """Weights (..., U) in `unit_names` order -> (..., 52) in `ARKIT_NAMES` order.

    Units the rig lacks get weight 0; units outside ARKit are dropped."""
    weights = np.asarray(weights)
    index = {name: i for i, name in enumerate(unit_names)}
    out = np.zeros(weights.shape[:-1] + (len(ARKIT_NAMES),), dtype=weights.dtype)
    for j, name in enumerate(ARKIT_NAMES):
        if name in index:
            out[..., j] = weights[..., index[name]]
    return out


def from_arkit_order(weights: np.ndarray, unit_names) -> np.ndarray:
    """Inverse of `to_arkit_order`: (..., 52) ARKit order -> (..., U) in `unit_names` order."""
    weights = np.asarray(weights)
    position = {name: j for j, name in enumerate(ARKIT_NAMES)}
    out = np.zeros(weights.shape[:-1] + (len(unit_names),), dtype=weights.dtype)
    for i, name in enumerate(unit_names):
        if name in position:
            out[..., i] = weights[..., position[name]]
    return out


@dataclass(frozen=True)
class ArkitFitErrors:
    """How well solved weights explain offsets (and, given ground truth, how close they are)."""

    vertex_rmse_m: float  # root mean square per-vertex L2 error over frames and face vertices
    vertex_mean_m: float  # mean per-vertex L2 error (MVE-style), metres
    vertex_max_m: float  # largest per-vertex L2 error of any frame, metres
    weight_mae: float | None = None  # mean |w - w_true| over frames and units
    weight_rmse: float | None = None
    weight_max: float | None = None

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def arkit_fit_errors(template, weights: np.ndarray, offsets: np.ndarray,
                     true_weights: np.ndarray | None = None, chunk_frames: int = 512) -> ArkitFitErrors:
    """Errors of weights (T, 52) in ARKit order against the offsets (T, V, 3) they were solved
    from, over the template's face vertices; and against `true_weights` (T, 52, ARKit order)
    when given (e.g. the synthetic dataset's face-unit weights). For the evaluation tool."""
    weights = np.asarray(weights, dtype=np.float32)
    offsets = np.asarray(offsets)
    if weights.ndim != 2 or weights.shape[1] != len(ARKIT_NAMES):
        raise TexTalkerError(f"weights must be (T, {len(ARKIT_NAMES)}) in ARKit order, got {weights.shape}")
    if len(weights) != len(offsets):
        raise TexTalkerError(f"{len(weights)} frames of weights but {len(offsets)} of offsets")
    unit_weights = from_arkit_order(weights, template.unit_names)
    basis = np.asarray(template.unit_offsets, dtype=np.float32)[:, template.face_mask]  # (U, Vf, 3)
    total_squared, total_norm, largest, count = 0.0, 0.0, 0.0, 0
    for start in range(0, len(weights), chunk_frames):
        stop = start + chunk_frames
        rebuilt = np.einsum("tu,uvc->tvc", unit_weights[start:stop], basis)
        error = np.linalg.norm(rebuilt - np.asarray(offsets[start:stop], np.float32)[:, template.face_mask], axis=-1)
        total_squared += float(np.sum(error.astype(np.float64) ** 2))
        total_norm += float(np.sum(error, dtype=np.float64))
        largest = max(largest, float(error.max(initial=0.0)))
        count += error.size
    count = max(count, 1)
    errors = dict(vertex_rmse_m=float(np.sqrt(total_squared / count)), vertex_mean_m=total_norm / count,
                  vertex_max_m=largest)
    if true_weights is not None:
        true_weights = np.asarray(true_weights, dtype=np.float32)
        if true_weights.shape != weights.shape:
            raise TexTalkerError(f"true weights {true_weights.shape} do not match weights {weights.shape}")
        difference = np.abs(weights - true_weights)
        errors.update(weight_mae=float(difference.mean()) if difference.size else 0.0,
                      weight_rmse=float(np.sqrt(np.mean(difference ** 2))) if difference.size else 0.0,
                      weight_max=float(difference.max(initial=0.0)))
    return ArkitFitErrors(**errors)


# --------------------------------------------------------------------------------------------
# Matching a user's shape key names to ARKit names (pure string logic)


class ArkitNameError(TexTalkerError):
    """Two of the user's shape keys claim the same ARKit unit."""


# Side markers at the end of a name: "Left"/"Right" words, or one letter after a separator
# ("_L", ".R", " L") or after a lower-case letter ("eyeBlinkL"). A bare lower-case "r"/"l" is
# never a side: "mouthShrugUpper" must stay itself.
_SIDE_PATTERN = re.compile(
    r"^(?P<base>.*?)(?:[\s_.\-]*(?P<word>(?i:left|right))|[\s_.\-]+(?P<letter>(?i:[lr]))"
    r"|(?<=[a-z])(?P<camel>[LR]))$"
)
_SIDES = {"l": "left", "r": "right", "left": "left", "right": "right"}
_CANONICAL = {name.lower(): name for name in ARKIT_NAMES}


def arkit_name_of(name: str) -> str | None:
    """The ARKit unit a shape key name stands for (`jaw_open` -> `jawOpen`,
    `MouthSmile_L` -> `mouthSmileLeft`, `blendShape1.eyeBlink_R` -> `eyeBlinkRight`), or None.

    Case, separators (space _ . -), side spellings (Left/L, at the end) and a namespace before
    the last dot (FBX/Maya exports) do not matter.
    """
    text = name.strip()
    candidates = [text]
    if "." in text:
        head, _, tail = text.rpartition(".")
        # "eyeBlink.L" keeps its dot (a side); "blendShape1.eyeBlink_L" loses its namespace.
        if tail.lower() not in _SIDES:
            candidates.append(tail)
        elif "." in head:
            candidates.append(head.rpartition(".")[2] + "." + tail)
    for candidate in candidates:
        found = _canonical(candidate)
        if found is not None:
            return found
    return None


def _canonical(text: str) -> str | None:
    match = _SIDE_PATTERN.match(text)
    if match and match.group("base"):
        marker = match.group("word") or match.group("letter") or match.group("camel")
        key = _squash(match.group("base")) + _SIDES[marker.lower()]
        if key in _CANONICAL:
            return _CANONICAL[key]
    return _CANONICAL.get(_squash(text))


def _squash(text: str) -> str:
    return re.sub(r"[^0-9a-z]", "", text.lower())


def match_arkit_names(names) -> dict[str, str]:
    """{ARKit name: user key name} for the user's shape key names that stand for ARKit units.

    Names that are no ARKit unit are left out. Two names for the same unit (`jawOpen` and
    `Jaw_Open`) raise ArkitNameError naming both: driving either would be a guess.
    """
    claims: dict[str, list[str]] = {}
    for name in names:
        arkit = arkit_name_of(name)
        if arkit is not None:
            claims.setdefault(arkit, []).append(name)
    duplicates = {arkit: found for arkit, found in claims.items() if len(found) > 1}
    if duplicates:
        details = "; ".join(
            f"{', '.join(repr(n) for n in found)} {'both' if len(found) == 2 else 'all'} stand for '{arkit}'"
            for arkit, found in sorted(duplicates.items(), key=lambda item: ARKIT_NAMES.index(item[0]))
        )
        raise ArkitNameError(
            f"Ambiguous ARKit shape keys: {details}. Rename or delete the extra keys so that each "
            "ARKit unit has one shape key"
        )
    return {arkit: found[0] for arkit, found in sorted(claims.items(), key=lambda item: ARKIT_NAMES.index(item[0]))}


# --------------------------------------------------------------------------------------------
# Face units on another mesh with the template's UV layout


def unit_offsets_for_mesh(template, vertex_uvs: np.ndarray, tolerance: float = 2e-3) -> np.ndarray:
    """(52, N, 3) face-unit offsets in ARKit order, template frame, for a mesh whose vertices have
    `vertex_uvs` (N, 2) in the template's UV layout (an MPFB character, a re-meshed head).

    Each mesh vertex takes the offsets of the template vertex owning the nearest template UV
    corner (corners, not one UV per vertex: a vertex on a UV seam has one UV per island); vertices
    farther than `tolerance` in UV from every corner (the rest of a body) get zero. Map the result
    into the mesh's local frame with `core.mesh_match.offsets_to_mesh_frame`.
    """
    from scipy.spatial import cKDTree

    vertex_uvs = np.asarray(vertex_uvs, dtype=np.float64)
    distance, corner = cKDTree(np.asarray(template.loop_uvs, dtype=np.float64)).query(
        vertex_uvs, distance_upper_bound=tolerance
    )
    found = np.isfinite(distance)
    source = np.asarray(template.loop_vertex_indices)[corner[found]]
    units = to_arkit_order(np.moveaxis(np.asarray(template.unit_offsets, np.float32), 0, -1), template.unit_names)
    out = np.zeros((len(ARKIT_NAMES), len(vertex_uvs), 3), dtype=np.float32)
    out[:, found] = np.moveaxis(units[source], -1, 0)
    return out

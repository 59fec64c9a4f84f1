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
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft

from .errors import TexTalkerError

__all__ = ["ARKIT_NAMES", "ArkitSolver", "SolveReport"]

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

    def solve(self, offsets: np.ndarray, iterations: int = 200, rho: float = 1.0,
              tolerance: float = 1e-5) -> tuple[np.ndarray, SolveReport]:
        """Weights (T, U) in [0, 1] for offsets (T, V, 3) (all template vertices)."""
        offsets = np.asarray(offsets, dtype=np.float64)
        if offsets.ndim != 3:
            raise TexTalkerError(f"offsets must be (T, V, 3), got {offsets.shape}")
        if self.vertex_mask is not None:
            offsets = offsets[:, self.vertex_mask]
        n_frames = offsets.shape[0]
        target = offsets.reshape(n_frames, -1)
        if target.shape[1] != self._basis.shape[1]:
            raise TexTalkerError("offsets do not match the face units' vertex count")
        if n_frames == 0:
            return np.zeros((0, self.n_units), np.float32), SolveReport(0, 0.0, 0.0)

        data_rhs = (target @ self._basis.T) / self._scale  # (T, U)
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
        fit = self.reconstruct(clipped) - offsets
        report = SolveReport(iteration, residual, float(np.sqrt(np.mean(np.sum(fit ** 2, axis=-1)))))
        return clipped.astype(np.float32), report

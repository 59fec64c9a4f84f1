"""Moves the template's extra parts (lower teeth, tongue, eyes) along with the generated face.

The Pipeline only returns offsets of the head mesh; the parts carry their own offsets for each
of the 52 ARKit face units. Projecting the head offsets of every frame on the face-unit basis
(least squares, weights clipped to the units' 0..1 range) gives unit weights, and those move the
mouth parts: the lower teeth and the tongue follow the jaw. The eyeballs stay still: the model
learns no gaze (its training speech has none), and a gaze fitted to eyelid motion rolls the eyes
at random (seen in renders).
"""

from __future__ import annotations

import numpy as np

MOVING_PARTS = ("teeth_upper", "teeth_lower", "tongue")


# Frames per least-squares chunk: a float64 copy of a 10-minute clip's head offsets alone would
# take ~1.9 GB; chunks keep the extra memory at a few tens of MB (tools/bench.py, issue #7).
_FIT_CHUNK_FRAMES = 512


def fit_unit_weights(head_offsets: np.ndarray, unit_offsets: np.ndarray) -> np.ndarray:
    """Head offsets (T, V, 3) -> face-unit weights (T, U) in 0..1 (least squares on all vertices)."""
    basis = np.asarray(unit_offsets, dtype=np.float64).reshape(len(unit_offsets), -1)  # (U, 3V)
    frames = np.asarray(head_offsets).reshape(len(head_offsets), -1)  # (T, 3V)
    # The minimum-norm least-squares solution is the same linear map for every frame: the
    # pseudo-inverse, with lstsq's default singular-value cutoff (eps * max(M, N)).
    cutoff = np.finfo(np.float64).eps * max(basis.shape)
    solve = np.linalg.pinv(basis.T, rcond=cutoff)  # (U, 3V)
    weights = np.empty((len(frames), len(basis)), np.float32)
    for start in range(0, len(frames), _FIT_CHUNK_FRAMES):
        chunk = frames[start : start + _FIT_CHUNK_FRAMES].astype(np.float64)
        weights[start : start + len(chunk)] = np.clip(chunk @ solve.T, 0.0, 1.0)
    return weights


def part_offsets(template, head_offsets: np.ndarray) -> dict[str, np.ndarray]:
    """{part name: offsets (T, Vp, 3) metres} for the template's mouth parts (MOVING_PARTS)."""
    names = [name for name in MOVING_PARTS if name in template.parts]
    if not names:
        return {}
    weights = fit_unit_weights(head_offsets, template.unit_offsets)
    return {name: template.apply_part_units(name, weights).astype(np.float32) for name in names}

"""Lip seal: near-closures of the generated lips are pressed shut (issue #19).

The diffusion model is least sure of itself exactly where lip-sync is judged hardest: a /p b m/
lasts two or three frames, and where the audio leaves the timing or the closure uncertain
(telephone audio, a language the model never heard) the model predicts lips a few millimetres
apart rather than shut. Animators fix this by hand with a "lip seal" (Audio2Face exposes a
similar *lip close offset*), and this module does it per frame on the decoded motion maps:

- the midline lip gap of a frame is read from the motion map at the template's upper and lower
  midline lip vertices (the map-to-vertex sampling the add-on itself uses, so it is the gap the
  user's head shows too: every head samples the same maps);
- a gap between the template's rest gap and the frame's seal distance is mapped to a smaller one
  by a convex curve (`sealed_gap_mm`): the closer the lips, the harder they are pressed; gaps at
  or below rest and at or above the distance are left as they are. The Pipeline gives each frame
  the option `lip_seal_mm` times the probability, heard in the audio by the weights' closure
  detector (core/closure.py), that the lips are shut there, so a /p b m/ or a pause is sealed and
  an open vowel keeps its opening;
- the difference is made up by adding the template's mouthClose field (the face unit the
  synthetic dataset closes its lips with; ARKit's mouthClose closes the lips against the open
  jaw), rendered into the motion map layout, so the lips meet the way the training data's lips
  meet and the jaw stays where the model put it.

It is a monotone map of the gap, so whatever the model gets right about *when* the lips move is
kept; it only decides how firmly near-closures shut. The default distance and the curve were
chosen by measurement (docs/REAL_SPEECH.md, docs/RESULTS.md).
"""

from __future__ import annotations

import numpy as np

# The seal distance where a closure is certain (mm): the Pipeline scales it per frame by the
# closure detector's probability (core/closure.py), so vowels, where the probability is low, keep
# their opening. Chosen on the real recordings and synthetic test-A (docs/REAL_SPEECH.md, the
# lip_seal_off row of docs/RESULTS.md). 0 switches the seal off.
DEFAULT_SEAL_MM = 12.0
MAX_SEAL_MM = 20.0
# Exponent of the curve: 1 leaves the gap alone; larger presses near-closures harder. With 4, a
# sure closure (distance 12 mm) takes a 6 mm gap to 1.2 mm, under the 1.67 mm "closed" line of
# the real-speech check, and an 8 mm one to 2.7 mm.
SEAL_EXPONENT = 4.0


def midline_lip_pair(template) -> tuple[int, int]:
    """(upper, lower) vertices at the lips' midline: the lower-lip vertex jawOpen moves most and
    the upper-lip vertex right above it (the pair whose gap says whether the mouth is shut)."""
    x = template.vertices.astype(np.float64)
    jaw = template.unit_offsets[template.unit_index("jawOpen")].astype(np.float64)
    mid_x = float(np.median(x[template.lip_mask, 0]))
    lips = np.nonzero(template.lip_mask & (np.abs(x[:, 0] - mid_x) < 0.004))[0]
    lower = lips[np.argmin(jaw[lips, 2])]
    upper_candidates = lips[(jaw[lips, 2] > -0.005) & (x[lips, 2] > x[lower, 2])]
    upper = upper_candidates[np.argmin(x[upper_candidates, 2])]
    return int(upper), int(lower)


def sealed_gap_mm(gap_mm, rest_mm: float, seal_mm, exponent: float = SEAL_EXPONENT):
    """The gap (mm, numpy or torch) after sealing: rest + (seal - rest) * x**exponent for
    x = (gap - rest) / (seal - rest) in (0, 1); unchanged outside (rest, seal). `seal_mm` is one
    distance or one per frame (same shape as the gap). Monotone and continuous in the gap, so
    lips still open and close when the model's lips do."""
    if type(gap_mm).__module__.startswith("torch"):  # torch imported only where tensors come in
        import torch

        span = torch.as_tensor(seal_mm, dtype=gap_mm.dtype, device=gap_mm.device) - rest_mm
        valid = span > 0
        x = (gap_mm - rest_mm) / torch.where(valid, span, torch.ones_like(span))
        inside = valid & (x > 0) & (x < 1)
        return torch.where(inside, rest_mm + span * x.clamp(0, 1) ** exponent, gap_mm)
    gap = np.asarray(gap_mm, dtype=np.float64)
    span = np.asarray(seal_mm, dtype=np.float64) - rest_mm
    valid = span > 0
    if not np.any(valid):
        return gap_mm
    x = (gap - rest_mm) / np.where(valid, span, 1.0)
    inside = valid & (x > 0) & (x < 1)
    return np.where(inside, rest_mm + span * np.clip(x, 0, 1) ** exponent, gap)


def torch_like(values: np.ndarray, like):
    import torch

    return torch.tensor(np.array(values, dtype=np.float64), dtype=like.dtype, device=like.device)


class LipGapReader:
    """The midline lip gap (mm) of motion maps, as the add-on's map-to-vertex sampler shows it at
    the two midline lip vertices; differentiable (stage 2's lip-closure term reads it too)."""

    def __init__(self, template, resolution: int):
        upper, lower = midline_lip_pair(template)
        rows = template.uv_sampler(resolution).matrix[[upper, lower]].toarray()
        # gap (m) = rest + maps[..., 2] . difference: the two vertices as the sampler reads them
        self._difference = (rows[0] - rows[1]).astype(np.float32)
        self.rest_mm = float(1000.0 * (template.vertices[upper, 2] - template.vertices[lower, 2]))
        self._torch: dict = {}

    def _as_torch(self, name: str, like):
        """The numpy array attribute `name` as a tensor on `like`'s device and dtype (cached)."""
        import torch

        key = (name, str(like.device), like.dtype)
        if key not in self._torch:
            self._torch[key] = torch.from_numpy(getattr(self, name)).to(like.device, like.dtype)
        return self._torch[key]

    def gap_mm(self, maps):
        """(N, H, W, 3) motion maps (metres, torch) -> (N,) midline lip gap in mm."""
        return self.rest_mm + 1000.0 * maps[..., 2].reshape(len(maps), -1) @ self._as_torch("_difference", maps)


class LipSeal(LipGapReader):
    """Reads the midline lip gap of motion maps and presses near-closures shut (module doc)."""

    def __init__(self, template, resolution: int):
        super().__init__(template, resolution)
        close = np.asarray(template.unit_offsets[template.unit_index("mouthClose")], np.float32)
        field = template.uv_rasterizer(resolution).rasterize(close)  # (H, W, 3) metres
        self._field = field.astype(np.float32)
        self.gap_per_close_mm = float(1000.0 * field[..., 2].reshape(-1) @ self._difference)
        if self.gap_per_close_mm >= 0.0:
            raise ValueError("mouthClose does not close the lips in the motion maps of this template")

    def apply(self, maps, seal_mm):
        """Motion maps (N, H, W, 3) with near-closures pressed shut (a new tensor). `seal_mm`: one
        distance, or one per frame (N,) (the closure detector's probability times the option);
        `maps` itself when no frame's distance exceeds the rest gap."""
        distances = np.broadcast_to(np.asarray(seal_mm, dtype=np.float64), (len(maps),))
        if len(maps) == 0 or not np.any(distances > self.rest_mm):
            return maps
        gap = self.gap_mm(maps)
        target = sealed_gap_mm(gap, self.rest_mm, torch_like(distances, gap))
        weight = (target - gap) / self.gap_per_close_mm  # >= 0: how much mouthClose to add
        return maps + weight[:, None, None, None] * self._as_torch("_field", maps)

